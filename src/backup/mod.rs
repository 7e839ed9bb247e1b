//! Backups: the WAL archive module, base backups (full and incremental) run by job workers,
//! retention, verification and restore drills. Decisions and the file format live in the core crate.

pub mod archive;
pub mod base;
pub mod duty;
pub mod jobs;
pub mod retention;
pub(crate) mod schedule;
pub(crate) mod store;
pub(crate) mod verify;
mod wal_switch;
