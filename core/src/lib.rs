//! Everything admin_toolkit decides without a server: password rules, partition planning and,
//! as features land, cron schedules, alert conditions, WAL names and LSN math, retention,
//! tuning formulas and backup manifests. No pgrx here: these are plain, fast unit tests.

pub mod partitions;
/// Re-exported so that callers share one date type with this crate.
pub use chrono;
pub mod password;
