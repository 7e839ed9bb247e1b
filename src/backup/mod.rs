//! Backups: the WAL archive module, base backups (full and incremental) run by job workers,
//! retention, verification and restore drills. Decisions and the file format live in the core crate.

pub mod api;
pub mod archive;
pub mod base;
mod block_maps;
pub mod duty;
pub(crate) mod locations;
pub mod retention;
pub mod runs;
pub(crate) mod schedule;
pub(crate) mod verify;
mod wal_switch;
