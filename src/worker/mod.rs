//! Background processes.
//!
//! * `admin_toolkit launcher`: static, registered at preload, connected to no database. It waits
//!   (quietly) for `admin_toolkit.database` to exist, then starts and supervises the database
//!   worker, restarting it if it exits. Being connected to no database is what lets it wait
//!   for a database that does not exist yet without failing and being restarted in a loop.
//! * `admin_toolkit worker`: dynamic, connected to `admin_toolkit.database`; does the routine
//!   work tick by tick, each step in its own transaction.
//! * `admin_toolkit job`: dynamic, one per job, connected as the job's owner (see `crate::jobs`);
//!   maintenance and configuration jobs run their command top-level
//!   (`crate::transaction::top_level`), outside any transaction block, so that VACUUM, REINDEX
//!   CONCURRENTLY and ALTER SYSTEM work.

mod database_worker;
pub mod duty;
mod launcher;
pub mod signals;
pub mod wake;

/// Registers the launcher and the worker's shared signals; called while preloading.
pub fn register() {
    signals::install();
    launcher::register();
}
