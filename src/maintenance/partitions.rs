//! Daily partitions of `performance_metrics` and `security_audit_log`: made ahead, dropped by
//! retention, and rows that reached the default partition moved into their day.
//! The decisions are `admin_toolkit_core::partitions`; this module only runs them.

use crate::query::read_scalar;
use crate::settings;
use admin_toolkit_core::chrono::NaiveDate;
use admin_toolkit_core::partitions::{
    parse_partition_day, partition_bounds, partition_name, plan_daily_partitions,
};
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, quote_literal, quote_qualified_identifier};

const SCHEMA: &str = "admin_toolkit";

/// One partitioned log the extension keeps.
#[derive(Clone, Copy)]
pub struct PartitionedLog {
    pub table: &'static str,
    time_column: &'static str,
    retention: &'static pgrx::guc::GucSetting<i32>,
    /// Primary key column of each partition (the parent has none: see sql/bootstrap.sql).
    key_column: &'static str,
    /// Column lists of the other indexes every partition gets.
    indexes: &'static [&'static str],
}

pub const LOGS: [PartitionedLog; 2] = [
    PartitionedLog {
        table: "performance_metrics",
        time_column: "collected_at",
        retention: &settings::METRICS_RETENTION_DAYS,
        key_column: "metric_id",
        indexes: &["metric_type, metric_name, collected_at DESC"],
    },
    PartitionedLog {
        table: "security_audit_log",
        time_column: "event_time",
        retention: &settings::AUDIT_RETENTION_DAYS,
        key_column: "audit_id",
        indexes: &[
            "event_time",
            "username, operation_type, event_time",
            "operation_type, event_time",
        ],
    },
];

/// What upkeep did, one row per partition touched.
pub struct UpkeepAction {
    pub table: &'static str,
    pub action: &'static str,
    pub partition: String,
    pub rows: i64,
}

fn qualified(table: &str) -> String {
    quote_qualified_identifier(SCHEMA, table)
}

fn day(text: &str) -> NaiveDate {
    // The server formats these dates itself with to_char(..., 'YYYY-MM-DD').
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .unwrap_or_else(|e| panic!("server returned an unreadable date {text:?}: {e}"))
}

fn text_column(query: &str) -> spi::Result<Vec<String>> {
    Spi::connect(|client| {
        let rows = client.select(query, None, &[])?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(v) = row.get::<String>(1)? {
                out.push(v);
            }
        }
        Ok(out)
    })
}

fn count(query: &str) -> spi::Result<i64> {
    Ok(Spi::get_one::<i64>(query)?.unwrap_or(0))
}

/// Brings one log's partitions in line with the settings. Serialized by an advisory lock, so
/// the worker and a manual `maintain_partitions()` never race to create the same partition.
pub fn upkeep(log: &PartitionedLog) -> spi::Result<Vec<UpkeepAction>> {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('admin_toolkit.partition_upkeep'))")?;
    let parent = qualified(log.table);
    let default_name = format!("{}_default", log.table);
    let default = qualified(&default_name);
    let time = quote_identifier(log.time_column);

    let today = read_scalar::<String>("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')")?
        .map(|d| day(&d))
        .ok_or(spi::Error::NoTupleTable)?;
    let existing: Vec<NaiveDate> = text_column(&format!(
        "SELECT c.relname::text FROM pg_catalog.pg_inherits i \
         JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = {}::regclass",
        quote_literal(&parent)
    ))?
    .iter()
    .filter_map(|name| parse_partition_day(log.table, name))
    .collect();
    let in_default: Vec<NaiveDate> = text_column(&format!(
        "SELECT DISTINCT to_char({time} AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM {default}"
    ))?
    .iter()
    .map(|d| day(d))
    .collect();

    let plan = plan_daily_partitions(
        today,
        &existing,
        &in_default,
        settings::non_negative(&settings::PARTITION_PREMAKE_DAYS),
        settings::non_negative(log.retention),
    );
    let mut actions = Vec::new();

    for d in &plan.create {
        let name = partition_name(log.table, *d);
        let partition = qualified(&name);
        let (lo, hi) = partition_bounds(*d);
        let (lo, hi) = (quote_literal(&lo), quote_literal(&hi));
        // Created detached, filled from the default partition, then attached: attaching a range
        // that still has rows in the default partition would fail.
        Spi::run(&format!(
            "CREATE TABLE {partition} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ))?;
        Spi::run(&format!(
            "ALTER TABLE {partition} ADD PRIMARY KEY ({})",
            quote_identifier(log.key_column)
        ))?;
        for columns in log.indexes {
            Spi::run(&format!("CREATE INDEX ON {partition} ({columns})"))?;
        }
        let mut rows = 0;
        if in_default.contains(d) {
            rows = count(&format!(
                "WITH moved AS (DELETE FROM {default} WHERE {time} >= {lo} AND {time} < {hi} \
                 RETURNING *), ins AS (INSERT INTO {partition} SELECT * FROM moved RETURNING 1) \
                 SELECT count(*) FROM ins"
            ))?;
        }
        Spi::run(&format!(
            "ALTER TABLE {parent} ATTACH PARTITION {partition} FOR VALUES FROM ({lo}) TO ({hi})"
        ))?;
        actions.push(UpkeepAction {
            table: log.table,
            action: "created",
            partition: name,
            rows,
        });
    }

    for d in &plan.drop {
        let name = partition_name(log.table, *d);
        Spi::run(&format!("DROP TABLE {}", qualified(&name)))?;
        actions.push(UpkeepAction {
            table: log.table,
            action: "dropped",
            partition: name,
            rows: 0,
        });
    }

    let (cutoff, _) = partition_bounds(plan.retention_cutoff);
    let expired = count(&format!(
        "WITH gone AS (DELETE FROM {default} WHERE {time} < {} RETURNING 1) SELECT count(*) FROM gone",
        quote_literal(&cutoff)
    ))?;
    if expired > 0 {
        actions.push(UpkeepAction {
            table: log.table,
            action: "expired",
            partition: default_name,
            rows: expired,
        });
    }
    Ok(actions)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// pg_tests run concurrently, each in its own transaction: take the upkeep lock first so
    /// that tests touching partitions run one after the other instead of deadlocking.
    fn serialize_with_other_partition_tests() {
        Spi::run("SELECT pg_advisory_xact_lock(hashtext('admin_toolkit.partition_upkeep'))")
            .unwrap();
    }

    fn partitions_of(table: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'admin_toolkit.{table}'::regclass"
        ))
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn upkeep_creates_today_and_days_ahead_then_is_idempotent() {
        serialize_with_other_partition_tests();
        Spi::run("SELECT * FROM admin_toolkit.maintain_partitions()").unwrap();
        // default partition + today + 3 days ahead (the default premake)
        assert_eq!(partitions_of("performance_metrics"), 5);
        assert_eq!(partitions_of("security_audit_log"), 5);
        let second = Spi::get_one::<i64>(
            "SELECT count(*) FROM admin_toolkit.maintain_partitions() WHERE action = 'created'",
        );
        assert_eq!(second, Ok(Some(0)));
    }

    #[pg_test]
    fn rows_in_default_partition_move_into_their_day() {
        serialize_with_other_partition_tests();
        Spi::run(
            "INSERT INTO admin_toolkit.performance_metrics (collected_at, metric_type, metric_name, metric_value) \
             VALUES (now() - interval '2 days', 'storage', 'database_size_bytes', 1)",
        )
        .unwrap();
        let moved = Spi::get_one::<i64>(
            "SELECT sum(rows_affected)::bigint FROM admin_toolkit.maintain_partitions() \
             WHERE table_name = 'performance_metrics' AND action = 'created'",
        );
        assert_eq!(moved, Ok(Some(1)));
        let in_default = Spi::get_one::<i64>(
            "SELECT count(*) FROM ONLY admin_toolkit.performance_metrics_default",
        );
        assert_eq!(in_default, Ok(Some(0)));
        let total = Spi::get_one::<i64>("SELECT count(*) FROM admin_toolkit.performance_metrics");
        assert_eq!(total, Ok(Some(1)));
    }

    #[pg_test]
    fn partitions_past_retention_are_dropped() {
        serialize_with_other_partition_tests();
        Spi::run(
            "INSERT INTO admin_toolkit.performance_metrics (collected_at, metric_type, metric_name, metric_value) \
             VALUES (now() - interval '40 days', 'storage', 'database_size_bytes', 1)",
        )
        .unwrap();
        // Old row in the default partition, past the default 30-day retention: expired, never given a partition.
        let expired = Spi::get_one::<i64>(
            "SELECT sum(rows_affected)::bigint FROM admin_toolkit.maintain_partitions() \
             WHERE table_name = 'performance_metrics' AND action = 'expired'",
        );
        assert_eq!(expired, Ok(Some(1)));
        // An old partition made by upkeep's naming scheme is dropped.
        Spi::run(
            "CREATE TABLE admin_toolkit.performance_metrics_p20000101 PARTITION OF admin_toolkit.performance_metrics \
             FOR VALUES FROM ('2000-01-01 00:00+00') TO ('2000-01-02 00:00+00')",
        )
        .unwrap();
        let dropped = Spi::get_one::<String>(
            "SELECT partition_name FROM admin_toolkit.maintain_partitions() WHERE action = 'dropped'",
        );
        assert_eq!(dropped, Ok(Some("performance_metrics_p20000101".into())));
    }
}
