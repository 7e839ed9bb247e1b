//! Base backups: what is copied, the manifest, the chunked pack format with incremental
//! references, verification, restore and retention.

pub mod copy;
pub mod delta;
pub mod label;
pub mod layout;
pub mod manifest;
pub mod overdue;
mod parallel;
pub mod read;
pub mod recovery_conf;
pub mod restore;
pub mod retention;
pub mod store;
pub mod tracking;

pub use parallel::default_threads;

#[cfg(test)]
mod tests;
