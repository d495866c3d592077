//! `stratus-docgen OUT_DIR`: what the packages ship besides the binaries, generated from the
//! clap definitions so it never drifts from them, in one directory per package
//! (`OUT_DIR/{controller,agent,cli}/`):
//!
//! - `man/`: `stratus-controller.8`, `stratus-agent.8`, and for the CLI `stratus.1` and one
//!   `stratus-X.1` per classic command name;
//! - `completions/{bash,zsh,fish}/`: completions for every one of those names;
//! - `links/stratus-X` (CLI): symbolic links to `stratus`, one per classic name (the package
//!   installs them next to the binary).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// One command name the packages install.
struct Page {
    /// The package that ships it: its directory under OUT_DIR.
    part: &'static str,
    command: Command,
    /// Its man page section: 8 for the daemons, 1 for the CLI.
    section: &'static str,
    /// A classic `stratus-X` name, installed as a link to `stratus`.
    classic: bool,
}

fn pages() -> Vec<Page> {
    let daemon = |part, command| Page {
        part,
        command,
        section: "8",
        classic: false,
    };
    let mut all = vec![
        daemon(
            "controller",
            stratus_controller::command_line::Args::command(),
        ),
        daemon("agent", stratus_agent::command_line::Args::command()),
    ];
    let mut cli = stratus_cli::command();
    // Globals (endpoint, credentials, -S) and the version are copied into every subcommand
    // by build().
    cli.build();
    for sub in cli.get_subcommands().filter(|sub| sub.get_name() != "help") {
        let name = format!("{}{}", stratus_cli::CLASSIC_PREFIX, sub.get_name());
        all.push(Page {
            part: "cli",
            command: sub.clone().name(&name).bin_name(&name).display_name(&name),
            section: "1",
            classic: true,
        });
    }
    all.push(Page {
        part: "cli",
        command: cli,
        section: "1",
        classic: false,
    });
    all
}

fn write_man(command: &Command, section: &str, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(format!("{}.{section}", command.get_name()));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section(section)
        .manual("StratusLab")
        .source(format!(
            "StratusLab {}",
            command.get_version().unwrap_or_default()
        ))
        .render(&mut page)
        .with_context(|| format!("man page of {}", command.get_name()))?;
    fs::write(&path, page).with_context(|| format!("writing {}", path.display()))
}

fn write_completions(command: &Command, dir: &Path) -> anyhow::Result<()> {
    let name = command.get_name().to_owned();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let file = match shell {
            Shell::Zsh => format!("_{name}"),
            Shell::Fish => format!("{name}.fish"),
            _ => name.clone(),
        };
        let path = dir.join(shell.to_string()).join(file);
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), &name, &mut text);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: stratus-docgen OUT_DIR")?
        .into();
    for page in pages() {
        let dir = out.join(page.part);
        let man = dir.join("man");
        let completions = dir.join("completions");
        for sub in [man.clone()]
            .into_iter()
            .chain(["bash", "zsh", "fish"].map(|shell| completions.join(shell)))
        {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        write_man(&page.command, page.section, &man)?;
        write_completions(&page.command, &completions)?;
        if page.classic {
            write_link(&dir.join("links"), page.command.get_name())?;
        }
    }
    Ok(())
}

/// `dir/name`, a symbolic link to `stratus`.
fn write_link(dir: &Path, name: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(name);
    if let Err(e) = fs::remove_file(&link) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("removing {}", link.display()));
        }
    }
    std::os::unix::fs::symlink("stratus", &link)
        .with_context(|| format!("linking {}", link.display()))
}
