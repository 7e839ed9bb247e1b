//! The built-in metrics, in one place: what the collector records under each name and what
//! `metric_definitions` says of it. The extension's SQL seeds the table with these rows (a test
//! compares them), and the collector names every reading by one of these constants.

/// One built-in metric (a row of `metric_definitions`).
#[derive(Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// `metric_type`: the family (`storage`, `connection`, `database`: one series per database).
    pub kind: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
}

pub const DATABASE_SIZE_BYTES: MetricDef = MetricDef {
    kind: "storage",
    name: "database_size_bytes",
    unit: "bytes",
    description: "Size of the current database",
};
pub const ACTIVE_CONNECTIONS: MetricDef = MetricDef {
    kind: "connection",
    name: "active_connections",
    unit: "count",
    description: "Client sessions with a state, by state and by database",
};
pub const AVG_QUERY_TIME_MS: MetricDef = MetricDef {
    kind: "query",
    name: "avg_query_time_ms",
    unit: "milliseconds",
    description: "Mean execution time over pg_stat_statements",
};
pub const WAITING_LOCKS: MetricDef = MetricDef {
    kind: "locks",
    name: "waiting_locks",
    unit: "count",
    description: "Lock requests not granted, by mode and by type",
};
pub const REPLICA_LAG_BYTES: MetricDef = MetricDef {
    kind: "replication",
    name: "replica_lag_bytes",
    unit: "bytes",
    description: "Largest replay lag among streaming replicas",
};
pub const CACHE_HIT_RATIO: MetricDef = MetricDef {
    kind: "performance",
    name: "cache_hit_ratio",
    unit: "percent",
    description: "Buffer cache hit ratio of the current database over the interval",
};
pub const IDLE_IN_TRANSACTION_SESSIONS: MetricDef = MetricDef {
    kind: "connection",
    name: "idle_in_transaction_sessions",
    unit: "count",
    description: "Sessions idle inside an open transaction",
};
pub const CONNECTION_USAGE_PERCENT: MetricDef = MetricDef {
    kind: "connection",
    name: "connection_usage_percent",
    unit: "percent",
    description: "Client backends as a percentage of max_connections",
};
pub const XID_AGE_PERCENT: MetricDef = MetricDef {
    kind: "transactions",
    name: "xid_age_percent",
    unit: "percent",
    description: "Oldest datfrozenxid age as a percentage of the 2^31 wraparound limit",
};
pub const LONGEST_TRANSACTION_SECONDS: MetricDef = MetricDef {
    kind: "transactions",
    name: "longest_transaction_seconds",
    unit: "seconds",
    description: "Age of the oldest open transaction of a client",
};
pub const COMMITS_PER_SECOND: MetricDef = MetricDef {
    kind: "transactions",
    name: "commits_per_second",
    unit: "per_second",
    description: "Commits per second over the interval, all databases",
};
pub const ROLLBACKS_PER_SECOND: MetricDef = MetricDef {
    kind: "transactions",
    name: "rollbacks_per_second",
    unit: "per_second",
    description: "Rollbacks per second over the interval, all databases",
};
pub const DEADLOCKS: MetricDef = MetricDef {
    kind: "transactions",
    name: "deadlocks",
    unit: "count",
    description: "Deadlocks detected during the interval, all databases",
};
pub const TEMP_BYTES: MetricDef = MetricDef {
    kind: "io",
    name: "temp_bytes",
    unit: "bytes",
    description: "Bytes written to temporary files during the interval, all databases",
};
pub const REQUESTED_CHECKPOINTS: MetricDef = MetricDef {
    kind: "checkpoint",
    name: "requested_checkpoints",
    unit: "count",
    description: "Checkpoints requested (not timed) during the interval",
};
pub const TIMED_CHECKPOINTS: MetricDef = MetricDef {
    kind: "checkpoint",
    name: "timed_checkpoints",
    unit: "count",
    description: "Timed checkpoints during the interval",
};
pub const WAL_BYTES_PER_SECOND: MetricDef = MetricDef {
    kind: "wal",
    name: "wal_bytes_per_second",
    unit: "bytes_per_second",
    description: "WAL generated per second over the interval",
};
pub const FAILED_ARCHIVES: MetricDef = MetricDef {
    kind: "archiver",
    name: "failed_archives",
    unit: "count",
    description: "Failed WAL archive attempts during the interval",
};
pub const SLOT_RETAINED_WAL_BYTES: MetricDef = MetricDef {
    kind: "replication",
    name: "slot_retained_wal_bytes",
    unit: "bytes",
    description: "Most WAL held back by one replication slot",
};
pub const AUDIT_EVENTS_DROPPED: MetricDef = MetricDef {
    kind: "security",
    name: "audit_events_dropped",
    unit: "count",
    description:
        "Audit events and read counts dropped during the interval because the queue was full",
};
pub const PER_DATABASE_SIZE_BYTES: MetricDef = MetricDef {
    kind: "database",
    name: "size_bytes",
    unit: "bytes",
    description: "Size of each database",
};
pub const PER_DATABASE_CONNECTIONS: MetricDef = MetricDef {
    kind: "database",
    name: "connections",
    unit: "count",
    description: "Sessions connected to each database",
};
pub const PER_DATABASE_TRANSACTIONS_PER_SECOND: MetricDef = MetricDef {
    kind: "database",
    name: "transactions_per_second",
    unit: "per_second",
    description: "Commits and rollbacks per second in each database over the interval",
};
pub const PER_DATABASE_DEADLOCKS: MetricDef = MetricDef {
    kind: "database",
    name: "deadlocks",
    unit: "count",
    description: "Deadlocks in each database during the interval",
};
pub const PER_DATABASE_TEMP_BYTES: MetricDef = MetricDef {
    kind: "database",
    name: "temp_bytes",
    unit: "bytes",
    description: "Bytes written to temporary files in each database during the interval",
};
pub const PER_DATABASE_XID_AGE: MetricDef = MetricDef {
    kind: "database",
    name: "xid_age",
    unit: "count",
    description: "Transaction ID age (of datfrozenxid) of each database",
};
pub const RESTORE_DRILL_AGE_SECONDS: MetricDef = MetricDef {
    kind: "backup",
    name: "restore_drill_age_seconds",
    unit: "seconds",
    description: "Time since the last passed restore drill (with none passed, since the oldest completed backup)",
};
pub const RESTORE_DRILL_RTO_SECONDS: MetricDef = MetricDef {
    kind: "backup",
    name: "restore_drill_rto_seconds",
    unit: "seconds",
    description: "RTO of the last passed restore drill: start of the restore to promotion",
};
pub const RESTORE_DRILL_FAILED: MetricDef = MetricDef {
    kind: "backup",
    name: "restore_drill_failed",
    unit: "count",
    description: "1 when the last finished restore drill failed, 0 when it passed (cancelled drills are skipped)",
};
pub const ARCHIVE_FAILING: MetricDef = MetricDef {
    kind: "backup",
    name: "archive_failing",
    unit: "count",
    description:
        "1 when WAL archiving is on and its last attempt failed (pg_stat_archiver), else 0",
};
pub const FAILED_BACKUP_SCHEDULES: MetricDef = MetricDef {
    kind: "backup",
    name: "failed_backup_schedules",
    unit: "count",
    description: "Active full and incremental backup schedules whose last finished backup failed",
};
pub const OVERDUE_BACKUP_SCHEDULES: MetricDef = MetricDef {
    kind: "backup",
    name: "overdue_backup_schedules",
    unit: "count",
    description: "Active full and incremental backup schedules whose last completed backup is older than the longest gap between two of their runs plus an hour",
};

/// Every built-in metric.
pub const CATALOGUE: [&MetricDef; 32] = [
    &DATABASE_SIZE_BYTES,
    &ACTIVE_CONNECTIONS,
    &AVG_QUERY_TIME_MS,
    &WAITING_LOCKS,
    &REPLICA_LAG_BYTES,
    &CACHE_HIT_RATIO,
    &IDLE_IN_TRANSACTION_SESSIONS,
    &CONNECTION_USAGE_PERCENT,
    &XID_AGE_PERCENT,
    &LONGEST_TRANSACTION_SECONDS,
    &COMMITS_PER_SECOND,
    &ROLLBACKS_PER_SECOND,
    &DEADLOCKS,
    &TEMP_BYTES,
    &REQUESTED_CHECKPOINTS,
    &TIMED_CHECKPOINTS,
    &WAL_BYTES_PER_SECOND,
    &FAILED_ARCHIVES,
    &SLOT_RETAINED_WAL_BYTES,
    &AUDIT_EVENTS_DROPPED,
    &PER_DATABASE_SIZE_BYTES,
    &PER_DATABASE_CONNECTIONS,
    &PER_DATABASE_TRANSACTIONS_PER_SECOND,
    &PER_DATABASE_DEADLOCKS,
    &PER_DATABASE_TEMP_BYTES,
    &PER_DATABASE_XID_AGE,
    &RESTORE_DRILL_AGE_SECONDS,
    &RESTORE_DRILL_RTO_SECONDS,
    &RESTORE_DRILL_FAILED,
    &ARCHIVE_FAILING,
    &FAILED_BACKUP_SCHEDULES,
    &OVERDUE_BACKUP_SCHEDULES,
];

#[cfg(test)]
mod tests {
    use super::CATALOGUE;
    use std::collections::HashSet;

    #[test]
    fn every_metric_is_named_once_with_a_unit_and_a_description() {
        let mut seen = HashSet::new();
        for m in CATALOGUE {
            assert!(seen.insert((m.kind, m.name)), "{}.{} twice", m.kind, m.name);
            assert!(
                !m.unit.is_empty() && !m.description.is_empty(),
                "{}",
                m.name
            );
        }
    }
}
