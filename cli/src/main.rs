//! `admin-toolkit`: the command-line half of admin_toolkit, for work outside the server
//! (restoring backups, fetching WAL for restore_command, verifying backups). Subcommands land with
//! the backup and recovery features; they share `admin_toolkit_core` with the extension.

use std::process::ExitCode;

const USAGE: &str = "\
usage: admin-toolkit <command> [options]

Commands:
  help        show this text
  version     show the version

Restore, WAL fetch and verification commands arrive with admin_toolkit's backup features.";

/// What a command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    Help,
    Version,
    Unknown(String),
}

fn parse(args: &[String]) -> Invocation {
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => Invocation::Help,
        Some("version" | "--version" | "-V") => Invocation::Version,
        Some(other) => Invocation::Unknown(other.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Invocation::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Invocation::Version => {
            println!("admin-toolkit {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Invocation::Unknown(cmd) => {
            eprintln!("admin-toolkit: unknown command '{cmd}'\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_help_version_and_unknown() {
        assert_eq!(parse(&args(&[])), Invocation::Help);
        assert_eq!(parse(&args(&["--help"])), Invocation::Help);
        assert_eq!(parse(&args(&["-V"])), Invocation::Version);
        assert_eq!(
            parse(&args(&["restore"])),
            Invocation::Unknown("restore".into())
        );
    }
}
