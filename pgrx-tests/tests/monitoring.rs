//! Monitoring against a real server: the worker collects and alerts on its own, LISTEN sessions
//! hear fire and resolve, views work with and without pg_stat_statements, privileges hold.

use admin_toolkit_it::{count, occurrences, wait_for, Cluster, ClusterOptions};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use std::time::Duration;

fn next_notification(listener: &mut postgres::Client) -> serde_json::Value {
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(30));
    let n = iter
        .next()
        .expect("notification stream")
        .expect("a notification within 30 s");
    assert_eq!(n.channel(), "admin_toolkit_alerts");
    serde_json::from_str(n.payload()).expect("JSON payload")
}

#[test]
fn worker_collects_every_second_by_itself() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for("three collections", || {
        (count(
            &mut db,
            "SELECT count(DISTINCT collected_at) FROM admin_toolkit.performance_metrics \
             WHERE metric_name = 'database_size_bytes'",
        ) >= 3)
            .then_some(())
    });
    // Rates need two readings: from the second collection on they are numbers.
    assert!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.performance_metrics \
             WHERE metric_name = 'commits_per_second' AND metric_value IS NOT NULL"
        ) >= 1
    );
    // Without pg_stat_statements the query metric is skipped with one log line, not one per cycle.
    let log = cluster.server_log();
    assert_eq!(occurrences(&log, "query metrics skipped"), 1, "{log}");
    // The seed rule on a metric that is never collected here is reported once.
    assert_eq!(occurrences(&log, "alert rules without data"), 1, "{log}");
    assert!(log.contains("Slow query performance"));
}

#[test]
fn alert_fires_once_resolves_once_and_listeners_hear_both() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let mut listener = cluster.connect("postgres");
    listener
        .batch_execute("LISTEN admin_toolkit_alerts")
        .unwrap();
    db.batch_execute(
        "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, \
                                                threshold_value, severity, notification_channels) \
         VALUES ('Database exists', 'storage', 'database_size_bytes', '>', 0, 'critical', ARRAY['pagerduty'])",
    )
    .unwrap();
    let fired = next_notification(&mut listener);
    assert_eq!(fired["event"], "fired");
    assert_eq!(fired["rule"], "Database exists");
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["threshold"], 0.0);
    assert!(fired["value"].as_f64().unwrap() > 0.0);
    assert_eq!(
        fired["notification_channels"],
        serde_json::json!(["pagerduty"])
    );
    assert!(fired["message"]
        .as_str()
        .unwrap()
        .starts_with("Database exists: database_size_bytes > 0"));

    // Several more cycles while it still holds: no new event.
    let collections = |db: &mut postgres::Client| {
        count(
            db,
            "SELECT count(DISTINCT collected_at) FROM admin_toolkit.performance_metrics",
        )
    };
    let seen = collections(&mut db);
    wait_for("three more collections", || {
        (collections(&mut db) >= seen + 3).then_some(())
    });
    let events = "SELECT count(*) FROM admin_toolkit.alert_events e JOIN admin_toolkit.alert_rules r USING (rule_id) \
                  WHERE r.rule_name = 'Database exists'";
    assert_eq!(count(&mut db, events), 1);

    db.batch_execute(
        "UPDATE admin_toolkit.alert_rules SET threshold_value = 1e30 WHERE rule_name = 'Database exists'",
    )
    .unwrap();
    let resolved = next_notification(&mut listener);
    assert_eq!(resolved["event"], "resolved");
    assert_eq!(resolved["event_id"], fired["event_id"]);
    assert_eq!(count(&mut db, events), 1);
    assert_eq!(
        count(&mut db, &format!("{events} AND e.resolved_at IS NOT NULL")),
        1
    );
}

#[test]
fn views_and_query_metric_with_pg_stat_statements() {
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            "admin_toolkit.collection_interval = 1".into(),
            "shared_preload_libraries = 'admin_toolkit, pg_stat_statements'".into(),
        ],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION pg_stat_statements")
        .unwrap();
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    db.batch_execute("SELECT count(*) FROM pg_class").unwrap();
    assert!(count(&mut db, "SELECT count(*) FROM admin_toolkit.slow_queries") > 0);
    let pct: f64 = db
        .query_one(
            "SELECT sum(time_percent)::float8 FROM admin_toolkit.slow_queries",
            &[],
        )
        .unwrap()
        .get(0);
    assert!((pct - 100.0).abs() < 0.01, "time_percent sums to {pct}");
    wait_for("query metric collected", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.performance_metrics WHERE metric_name = 'avg_query_time_ms'",
        ) >= 2)
            .then_some(())
    });
    assert!(cluster
        .server_log()
        .contains("query metrics collected from pg_stat_statements"));
}

#[test]
fn slow_queries_without_pg_stat_statements_is_a_clear_55000() {
    let cluster = Cluster::start_with(ClusterOptions::not_preloaded());
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let err = db
        .batch_execute("SELECT * FROM admin_toolkit.slow_queries")
        .unwrap_err();
    let err = err.as_db_error().unwrap();
    assert_eq!(err.code(), &SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert!(err
        .hint()
        .unwrap()
        .contains("CREATE EXTENSION pg_stat_statements"));
    // Installed but not preloaded: the other half of the message.
    db.batch_execute("CREATE EXTENSION pg_stat_statements")
        .unwrap();
    let err = db
        .batch_execute("SELECT * FROM admin_toolkit.slow_queries")
        .unwrap_err();
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("shared_preload_libraries"));
}

#[test]
fn pg_monitor_reads_metrics_and_only_superusers_change_rules() {
    let cluster = Cluster::start_with(ClusterOptions::not_preloaded());
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit;
         SELECT admin_toolkit.collect_performance_metrics();
         CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
         CREATE ROLE nobody LOGIN;",
    )
    .unwrap();
    let mut watcher = cluster.connect_as("postgres", "watcher", "").unwrap();
    for relation in [
        "performance_metrics",
        "alert_rules",
        "alert_events",
        "table_bloat_analysis",
        "index_usage_analysis",
        "connection_analysis",
    ] {
        watcher
            .batch_execute(&format!("SELECT * FROM admin_toolkit.{relation} LIMIT 1"))
            .unwrap_or_else(|e| panic!("pg_monitor reading {relation}: {e}"));
    }
    let err = watcher
        .batch_execute("UPDATE admin_toolkit.alert_rules SET threshold_value = 1")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let err = watcher
        .batch_execute("SELECT admin_toolkit.process_alerts()")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    let mut nobody = cluster.connect_as("postgres", "nobody", "").unwrap();
    let err = nobody
        .batch_execute("SELECT * FROM admin_toolkit.performance_metrics")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}

/// The built-in alerts on backups fire on collected data: archiving into a location that cannot
/// be written, a backup of a schedule that fails (its last segment is never archived), a weekly
/// schedule with no backup for ten days; archiving fixed, its alert resolves. With no drill
/// schedule and no drill run, no drill age is stored, so "Restore drill overdue" cannot fire.
#[test]
fn built_in_backup_alerts_fire_on_failed_archiving_failed_and_overdue_backups() {
    let scratch = admin_toolkit_it::ScratchDir::new("admin_toolkit_backup_alerts_");
    let not_a_directory = scratch.path().join("wal");
    std::fs::write(&not_a_directory, "a file where the archive should be").unwrap();
    let mut options = ClusterOptions::archiving_to(&not_a_directory);
    options.settings.extend([
        "admin_toolkit.backup_archive_wait = 3".to_string(),
        "admin_toolkit.collection_interval = 1".to_string(),
    ]);
    let cluster = Cluster::start_with(options);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit; SELECT pg_switch_wal()")
        .unwrap();
    let fired = |db: &mut postgres::Client, rule: &str| -> bool {
        count(
            db,
            &format!(
                "SELECT count(*) FROM admin_toolkit.alert_events e JOIN admin_toolkit.alert_rules r USING (rule_id) \
                 WHERE r.rule_name = '{rule}' AND e.resolved_at IS NULL"
            ),
        ) == 1
    };
    wait_for("WAL archiving failing", || {
        fired(&mut db, "WAL archiving failing").then_some(())
    });

    let location = scratch.path().join("backups").display().to_string();
    let schedule: i32 = db
        .query_one(
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
             VALUES ('full', '0 2 * * 0', 7, $1) RETURNING schedule_id",
            &[&location],
        )
        .unwrap()
        .get(0);
    let _ = db.query_one(
        "SELECT admin_toolkit.execute_backup($1, true)",
        &[&schedule],
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.backup_history WHERE status = 'failed'"
        ),
        1
    );
    wait_for("Backup failed", || {
        fired(&mut db, "Backup failed").then_some(())
    });
    assert!(
        !fired(&mut db, "Backup overdue"),
        "a new weekly schedule is not overdue"
    );
    db.execute(
        "UPDATE admin_toolkit.backup_schedules SET created_at = now() - interval '10 days' WHERE schedule_id = $1",
        &[&schedule],
    )
    .unwrap();
    wait_for("Backup overdue", || {
        fired(&mut db, "Backup overdue").then_some(())
    });
    let ids: String = db
        .query_one(
            "SELECT (additional_data->'schedule_ids')::text FROM admin_toolkit.performance_metrics \
             WHERE metric_name = 'overdue_backup_schedules' ORDER BY collected_at DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ids, format!("[{schedule}]"));

    // Archiving fixed: its alert resolves.
    let wal = scratch.path().join("wal-ok");
    std::fs::create_dir(&wal).unwrap();
    // Writable by the server's OS user, whoever runs the test.
    std::fs::set_permissions(&wal, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    db.batch_execute(&format!(
        "ALTER SYSTEM SET admin_toolkit.archive_location = '{}'",
        wal.display()
    ))
    .unwrap();
    db.batch_execute("SELECT pg_reload_conf(); SELECT pg_switch_wal()")
        .unwrap();
    wait_for("WAL archiving failing resolved", || {
        (!fired(&mut db, "WAL archiving failing")).then_some(())
    });
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.performance_metrics WHERE metric_name = 'restore_drill_age_seconds'"
        ),
        0,
        "no drill age where no drill is scheduled"
    );
}
