//! Backups: the WAL archive module, base backups (full and incremental) run by job workers,
//! retention, verification and restore drills. Decisions and the file format live in the core crate.

pub mod archive;
pub mod base;
pub mod drill;
pub mod duty;
pub mod jobs;
mod recovery;
pub mod retention;
mod schedule;
mod store;
pub mod verify;
mod wal_switch;
