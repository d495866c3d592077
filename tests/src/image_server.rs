//! A small HTTP/1.1 file server on 127.0.0.1 for image tests and benchmarks: serves registered
//! files, counts the requests for each path, and can slow a path down (so a test can kill an
//! agent in the middle of a download). Stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone)]
struct Served {
    file: PathBuf,
    /// Bytes per second, when throttled.
    rate: Option<u64>,
}

#[derive(Default)]
struct Shared {
    files: HashMap<String, Served>,
    requests: HashMap<String, u32>,
}

pub struct ImageServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ImageServer {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &shared);
                    });
                }
            })
        };
        Ok(Self {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Serves `file` at `path` (e.g. `/disk.qcow2`).
    pub fn serve_file(&self, path: &str, file: &Path) {
        self.shared.lock().expect("server lock").files.insert(
            path.to_owned(),
            Served {
                file: file.to_owned(),
                rate: None,
            },
        );
    }

    /// Limits `path` to `bytes_per_sec`.
    pub fn throttle(&self, path: &str, bytes_per_sec: u64) {
        if let Some(served) = self.shared.lock().expect("server lock").files.get_mut(path) {
            served.rate = Some(bytes_per_sec);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The base URL, to which paths are appended.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests `path` got.
    pub fn requests(&self, path: &str) -> u32 {
        self.shared
            .lock()
            .expect("server lock")
            .requests
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn serve(stream: TcpStream, shared: &Mutex<Shared>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let served = {
        let mut shared = shared.lock().expect("server lock");
        *shared.requests.entry(path.clone()).or_default() += 1;
        shared.files.get(&path).cloned()
    };
    let mut stream = stream;
    let Some(served) = served else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let mut file = std::fs::File::open(&served.file)?;
    let len = file.metadata()?.len();
    write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n")?;
    match served.rate {
        None => {
            std::io::copy(&mut file, &mut stream)?;
        }
        Some(rate) => {
            let chunk = (rate / 10).max(1) as usize;
            let mut buf = vec![0u8; chunk];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n])?;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    stream.flush()
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
