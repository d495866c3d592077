//! What the integration tests share: a canned HTTP server on 127.0.0.1, and a scratch HOME where
//! the `stratus` binary runs under its classic `stratus-*` names.

// Each test crate compiles this module and uses its own part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread::{self, JoinHandle};

/// Where `stratus-*` reads its configuration, relative to HOME.
const CONFIG: &str = ".stratuslab/stratuslab-user.cfg";

/// Answers each connection with the next canned response; gives back the requests it saw (head
/// and body).
pub struct CannedServer {
    pub address: String,
    handle: JoinHandle<Vec<String>>,
}

impl CannedServer {
    pub fn start(responses: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            for response in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                seen.push(head + &String::from_utf8(body).unwrap());
                reader.into_inner().write_all(response.as_bytes()).unwrap();
            }
            seen
        });
        Self { address, handle }
    }

    /// The requests, once the server has given every response.
    pub fn requests(self) -> Vec<String> {
        self.handle.join().unwrap()
    }
}

/// An HTTP response with a JSON body.
pub fn reply(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `out` is the single `[ERROR] ` line and exit code 1 of a command that could not reach
/// 127.0.0.1:`port`.
#[track_caller]
pub fn assert_unreachable(out: &Output, port: u16) {
    let err = stderr(out);
    assert!(
        err.starts_with(&format!(
            "[ERROR] cannot reach the cloud endpoint https://127.0.0.1:{port}: "
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(out.status.code(), Some(1));
}

/// A scratch HOME with `stratus-<name>` linked to the binary for each of the names given.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            symlink(
                env!("CARGO_BIN_EXE_stratus"),
                dir.path().join(format!("stratus-{name}")),
            )
            .unwrap();
        }
        Self { dir }
    }

    /// `name` in HOME.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `content` to `name` in HOME; gives back its path.
    pub fn write(&self, name: &str, content: &str) -> String {
        fs::write(self.path(name), content).unwrap();
        self.path(name).display().to_string()
    }

    /// The user configuration file in HOME.
    pub fn config_path(&self) -> PathBuf {
        self.path(CONFIG)
    }

    pub fn write_config(&self, text: &str) {
        fs::create_dir_all(self.config_path().parent().unwrap()).unwrap();
        self.write(CONFIG, text);
    }

    /// Runs `stratus-<name> args...` with only HOME and `env` in the environment.
    pub fn run(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(self.path(&format!("stratus-{name}")));
        command.args(args).env_clear().env("HOME", self.dir.path());
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}
