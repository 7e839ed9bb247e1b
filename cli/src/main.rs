//! `admin-toolkit`: the command-line half of admin_toolkit, for work outside the server —
//! restoring a backup, fetching archived WAL for restore_command, verifying a backup. It shares
//! the backup format and recovery planning with the extension through admin_toolkit_core.

mod args;
mod commands;
mod wal_get;

use args::{Cli, Command};
use clap::{CommandFactory, Parser};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit 2 with clap's message; --help and --version exit 0.
    let cli = Cli::parse();
    match &cli.command {
        Command::Restore(r) => commands::restore(r),
        Command::WalGet(w) => wal_get::wal_get(w),
        Command::Verify(v) => commands::verify(v),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "admin-toolkit",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}
