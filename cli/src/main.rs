//! `stratus`: the StratusLab command line client, also installed under its classic
//! `stratus-*` names (see the library for the commands).

fn main() -> std::process::ExitCode {
    stratus_cli::main()
}
