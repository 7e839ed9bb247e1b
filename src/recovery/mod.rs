//! Recovery: planning a point-in-time recovery and validating a recovery point against the real
//! archive (plan.rs), and restore drills that prove a backup restores (drill/). Backups
//! themselves, and the archive, live in crate::backup.

pub mod api;
pub mod drill;
mod plan;
mod validate;
