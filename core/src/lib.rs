//! Everything admin_toolkit decides without a server: password rules, partition planning, alert
//! conditions, counter deltas and, as features land, cron schedules, WAL names and LSN math,
//! retention, tuning formulas and backup manifests. No pgrx here: plain, fast unit tests.

pub mod alerts;
pub mod audit;
pub mod backup;
pub mod codec;
pub mod config_guard;
pub mod copy_guard;
pub mod counters;
pub mod credentials;
pub mod cron;
pub mod crypto;
pub mod drill;
pub mod facts;
pub mod handoff;
pub mod jobs;
pub mod lsn;
pub mod maintenance;
pub mod metric_catalogue;
pub mod net;
pub mod notify;
pub mod partitions;
pub mod password;
pub mod prometheus;
pub mod recovery;
pub mod runs;
pub mod storage;
pub mod threads;
pub mod tuning;
pub mod wal;
pub mod wal_blocks;
pub mod wal_prefetch;
pub mod wal_push;

/// Re-exported so that callers share one date type with this crate.
pub use chrono;
pub use chrono_tz;
