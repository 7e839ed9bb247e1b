//! SQL behaviour of collection, alerts and the monitoring views.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap_or(0)
    }

    /// pg_tests run concurrently: serialize the ones that write metrics and alert events.
    fn serialize() {
        Spi::run("SELECT pg_advisory_xact_lock(hashtext('admin_toolkit.monitoring_tests'))")
            .unwrap();
    }

    #[pg_test]
    fn collection_writes_every_defined_metric_but_the_query_one() {
        serialize();
        Spi::run("SELECT admin_toolkit.collect_performance_metrics()").unwrap();
        // pg_stat_statements is not installed in the test database, archiving is off, and there
        // is no backup schedule, backup or restore drill: every other metric is there.
        let missing = Spi::get_one::<String>(
            "SELECT string_agg(d.metric_type || '/' || d.metric_name, ',' ORDER BY d.metric_type, d.metric_name) \
               FROM admin_toolkit.metric_definitions d \
             WHERE NOT EXISTS (SELECT 1 FROM admin_toolkit.performance_metrics m \
                                WHERE m.metric_type = d.metric_type AND m.metric_name = d.metric_name)",
        );
        assert_eq!(
            missing,
            Ok(Some(
                "backup/archive_failing,backup/failed_backup_schedules,backup/overdue_backup_schedules,\
                 backup/restore_drill_age_seconds,backup/restore_drill_failed,backup/restore_drill_rto_seconds,\
                 query/avg_query_time_ms"
                    .into()
            ))
        );
        // Per-database metrics: one row per database that accepts connections.
        assert_eq!(
            count("SELECT count(*) FROM admin_toolkit.performance_metrics WHERE metric_type = 'database' AND metric_name = 'xid_age'"),
            count("SELECT count(*) FROM pg_database WHERE datallowconn AND NOT datistemplate")
        );
        let size = count(
            "SELECT metric_value::bigint FROM admin_toolkit.performance_metrics \
             WHERE metric_name = 'database_size_bytes'",
        );
        // Read before the collection wrote its rows, which may have added pages since.
        let now = count("SELECT pg_database_size(current_database())");
        assert!(size > 0 && (now - size).abs() < 1 << 20, "{size} vs {now}");
        let per_database = count(
            "SELECT metric_value::bigint FROM admin_toolkit.performance_metrics \
             WHERE metric_type = 'database' AND metric_name = 'size_bytes' AND database = current_database()",
        );
        assert!(
            (per_database - size).abs() < 1 << 20,
            "the per-database metric agrees: {per_database} vs {size}"
        );
        let by_state = Spi::get_one::<bool>(
            "SELECT additional_data ? 'by_state' AND additional_data ? 'by_database' \
             FROM admin_toolkit.performance_metrics WHERE metric_name = 'active_connections'",
        );
        assert_eq!(by_state, Ok(Some(true)));
    }

    /// The commit counter's reading and when it was taken (epoch seconds).
    fn commit_reading() -> (f64, f64) {
        Spi::get_two::<f64, f64>(
            "SELECT value, extract(epoch FROM sampled_at)::float8 \
               FROM admin_toolkit.collector_counters WHERE counter_name = 'xact_commit'",
        )
        .map(|(v, at)| (v.expect("a reading"), at.expect("its time")))
        .unwrap()
    }

    #[pg_test]
    fn counters_are_stored_as_rates_of_their_change_not_totals() {
        serialize();
        Spi::run("SELECT admin_toolkit.collect_performance_metrics()").unwrap();
        // First collection: no previous reading, so no delta.
        assert_eq!(
            count("SELECT count(*) FROM admin_toolkit.performance_metrics WHERE metric_type = 'transactions' AND metric_name = 'deadlocks' AND metric_value IS NULL"),
            1
        );
        // The previous reading of the commit counter, made 7 commits and 7 s before the one
        // just taken (the cluster has committed far more than 7 transactions in all).
        Spi::run(
            "UPDATE admin_toolkit.collector_counters \
                SET value = value - 7, sampled_at = sampled_at - interval '7 s' \
              WHERE counter_name = 'xact_commit'",
        )
        .unwrap();
        let (before, before_at) = commit_reading();
        Spi::run("SELECT admin_toolkit.collect_performance_metrics()").unwrap();
        let (after, after_at) = commit_reading();
        let stored = Spi::get_one::<f64>(
            "SELECT metric_value::float8 FROM admin_toolkit.performance_metrics \
              WHERE metric_type = 'transactions' AND metric_name = 'commits_per_second' \
              ORDER BY collected_at DESC, metric_id DESC LIMIT 1",
        )
        .unwrap()
        .expect("the second collection stores a rate");
        let elapsed = after_at - before_at;
        assert!(elapsed >= 7.0, "{elapsed}");
        let expected = (after - before) / elapsed;
        assert!(
            (stored - expected).abs() <= 1e-3 * expected.max(1.0),
            "stored {stored}, the change was {} in {elapsed} s",
            after - before
        );
        // A total over the same time would be told apart.
        assert!(after / elapsed > expected * 2.0, "{after} commits in all");
    }

    #[pg_test]
    fn alert_fires_once_and_resolves_once() {
        serialize();
        Spi::run(
            "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value) \
             VALUES ('db exists', 'storage', 'database_size_bytes', '>', 0)",
        )
        .unwrap();
        Spi::run("SELECT admin_toolkit.collect_performance_metrics()").unwrap();
        for _ in 0..3 {
            let holding = count(
                "SELECT count(*) FROM admin_toolkit.process_alerts() WHERE rule_name = 'db exists'",
            );
            assert_eq!(holding, 1);
        }
        assert_eq!(count("SELECT count(*) FROM admin_toolkit.alert_events"), 1);
        let msg = Spi::get_one::<String>("SELECT message FROM admin_toolkit.alert_events");
        assert!(msg
            .unwrap()
            .unwrap()
            .starts_with("db exists: database_size_bytes > 0 (current: "));

        Spi::run("UPDATE admin_toolkit.alert_rules SET threshold_value = 1e30 WHERE rule_name = 'db exists'").unwrap();
        assert_eq!(
            count(
                "SELECT count(*) FROM admin_toolkit.process_alerts() WHERE rule_name = 'db exists'"
            ),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM admin_toolkit.alert_events WHERE resolved_at IS NOT NULL"),
            1
        );
        Spi::run("SELECT * FROM admin_toolkit.process_alerts()").unwrap();
        assert_eq!(count("SELECT count(*) FROM admin_toolkit.alert_events"), 1);
    }

    #[pg_test]
    fn huge_threshold_does_not_stop_other_rules() {
        serialize();
        Spi::run(
            "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value) \
             VALUES ('overflowing', 'storage', 'database_size_bytes', '<', 1e400), \
                    ('normal', 'storage', 'database_size_bytes', '>', 0)",
        )
        .unwrap();
        Spi::run("SELECT admin_toolkit.collect_performance_metrics()").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM admin_toolkit.process_alerts() WHERE rule_name IN ('overflowing', 'normal')"),
            2
        );
    }

    #[pg_test(
        error = "slow_queries needs the pg_stat_statements extension, which is not installed in this database"
    )]
    fn slow_queries_without_pg_stat_statements_says_what_is_missing() {
        Spi::run("SELECT * FROM admin_toolkit.slow_queries").unwrap();
    }

    #[pg_test]
    fn views_handle_odd_identifiers() {
        Spi::run(
            "CREATE SCHEMA \"Odd Schema\"; \
             CREATE TABLE \"Odd Schema\".\"Mixed Case; table\" (id int PRIMARY KEY); \
             INSERT INTO \"Odd Schema\".\"Mixed Case; table\" SELECT generate_series(1, 10)",
        )
        .unwrap();
        assert_eq!(
            count("SELECT count(*) FROM admin_toolkit.index_usage_analysis WHERE tablename = 'Mixed Case; table'"),
            1
        );
        // table_bloat_analysis lists tables with tuples counted by the statistics collector, which
        // may lag; it must at least be queryable with such a table present.
        Spi::run("SELECT * FROM admin_toolkit.table_bloat_analysis").unwrap();
        Spi::run("SELECT * FROM admin_toolkit.connection_analysis").unwrap();
    }

    /// The built-in rows of metric_definitions are the catalogue's, row for row.
    #[pg_test]
    fn metric_definitions_are_the_catalogue() {
        use admin_toolkit_core::metric_catalogue::CATALOGUE;
        let mut rows: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT metric_type || '|' || metric_name || '|' || metric_unit || '|' || description \
                   FROM admin_toolkit.metric_definitions WHERE builtin",
                None,
                &[],
            )?
            .map(|r| Ok(r.get::<String>(1)?.unwrap_or_default()))
            .collect::<spi::Result<Vec<_>>>()
        })
        .unwrap();
        let mut catalogue: Vec<String> = CATALOGUE
            .iter()
            .map(|m| format!("{}|{}|{}|{}", m.kind, m.name, m.unit, m.description))
            .collect();
        catalogue.sort();
        rows.sort();
        assert_eq!(rows, catalogue);
    }
}
