//! Cumulative statistics, as the server's statistics system keeps them.

use pgrx::pg_sys;

/// A relation's statistics entry, with one name per figure whatever the major (16 renamed
/// `n_live_tuples` to `live_tuples`, `vacuum_timestamp` to `last_vacuum_time`, …).
#[derive(Clone, Copy, Debug, Default)]
pub struct RelationStats {
    pub scans: i64,
    pub tuples_returned: i64,
    pub tuples_fetched: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
    /// 0: never.
    pub last_vacuum: pg_sys::TimestampTz,
    pub last_autovacuum: pg_sys::TimestampTz,
    pub last_analyze: pg_sys::TimestampTz,
    pub last_autoanalyze: pg_sys::TimestampTz,
}

/// The statistics of relation `oid` in this transaction's snapshot; all zero if it has none.
/// Needs a transaction.
pub fn relation_stats(oid: pg_sys::Oid) -> RelationStats {
    // SAFETY: in a transaction; the entry (or NULL) lives in the statistics snapshot of this
    // transaction and is copied at once.
    let entry = unsafe { pg_sys::pgstat_fetch_stat_tabentry(oid).as_ref() };
    let Some(e) = entry.copied() else {
        return RelationStats::default();
    };
    #[cfg(feature = "pg15")]
    let stats = RelationStats {
        scans: e.numscans,
        tuples_returned: e.tuples_returned,
        tuples_fetched: e.tuples_fetched,
        live_tuples: e.n_live_tuples,
        dead_tuples: e.n_dead_tuples,
        last_vacuum: e.vacuum_timestamp,
        last_autovacuum: e.autovac_vacuum_timestamp,
        last_analyze: e.analyze_timestamp,
        last_autoanalyze: e.autovac_analyze_timestamp,
    };
    #[cfg(not(feature = "pg15"))]
    let stats = RelationStats {
        scans: e.numscans,
        tuples_returned: e.tuples_returned,
        tuples_fetched: e.tuples_fetched,
        live_tuples: e.live_tuples,
        dead_tuples: e.dead_tuples,
        last_vacuum: e.last_vacuum_time,
        last_autovacuum: e.last_autovacuum_time,
        last_analyze: e.last_analyze_time,
        last_autoanalyze: e.last_autoanalyze_time,
    };
    stats
}

/// A subquery with the checkpoint counts, columns `requested` and `timed`: in
/// `pg_stat_bgwriter` up to 16, in `pg_stat_checkpointer` from 17.
#[cfg(any(feature = "pg15", feature = "pg16"))]
#[macro_export]
macro_rules! checkpoint_counts {
    () => {
        "(SELECT checkpoints_req AS requested, checkpoints_timed AS timed FROM pg_catalog.pg_stat_bgwriter)"
    };
}

/// A subquery with the checkpoint counts, columns `requested` and `timed`: in
/// `pg_stat_bgwriter` up to 16, in `pg_stat_checkpointer` from 17.
#[cfg(not(any(feature = "pg15", feature = "pg16")))]
#[macro_export]
macro_rules! checkpoint_counts {
    () => {
        "(SELECT num_requested AS requested, num_timed AS timed FROM pg_catalog.pg_stat_checkpointer)"
    };
}
