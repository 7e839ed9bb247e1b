//! `admin-toolkit`: the command-line half of admin_toolkit, for work outside the server —
//! restoring a backup, fetching archived WAL for restore_command, verifying a backup. It shares
//! the backup format and recovery planning with the extension through admin_toolkit_core.

mod args;
mod commands;

use args::{parse, Invocation};
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse(&argv) {
        Ok(Invocation::Help(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Invocation::Version) => {
            println!("admin-toolkit {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Invocation::Restore(r)) => commands::restore(&r),
        Ok(Invocation::WalGet(w)) => commands::wal_get(&w),
        Ok(Invocation::Verify(v)) => commands::verify(&v),
        Err(message) => {
            eprintln!("admin-toolkit: {message}\nTry \"admin-toolkit help\".");
            ExitCode::from(2)
        }
    }
}
