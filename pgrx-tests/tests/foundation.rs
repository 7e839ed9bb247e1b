//! The foundation against a real server: worker lifecycle, install / drop / reinstall,
//! pg_dump round trip, constraint errors.

use admin_toolkit_it::{count, occurrences, wait_for, Cluster, ClusterOptions};
use postgres::error::SqlState;
use std::time::Duration;

const PARTITIONS_OF_METRICS: &str = "SELECT count(*) FROM pg_inherits \
     WHERE inhparent = 'admin_toolkit.performance_metrics'::regclass";

/// PID of the process of that backend type; `None` also when the query fails (a server in crash
/// recovery terminates connections), so that `wait_for` simply tries again.
fn worker_pid(client: &mut postgres::Client, backend_type: &str) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = $1",
            &[&backend_type],
        )
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

/// Partitions of a log for `days_ahead` days from today (UTC), plus today, that exist.
fn premade_partitions(client: &mut postgres::Client, table: &str, days_ahead: i32) -> i64 {
    count(
        client,
        &format!(
            "SELECT count(*) FROM generate_series(0, {days_ahead}) AS d \
             WHERE to_regclass(format('admin_toolkit.{table}_p%s', \
                   to_char((now() AT TIME ZONE 'UTC')::date + d, 'YYYYMMDD'))) IS NOT NULL"
        ),
    )
}

#[test]
fn worker_runs_and_keeps_partitions() {
    let mut cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    wait_for("launcher in pg_stat_activity", || {
        worker_pid(&mut db, "admin_toolkit launcher")
    });
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let worker = wait_for("worker in pg_stat_activity", || {
        worker_pid(&mut db, "admin_toolkit worker")
    });
    let datname: String = db
        .query_one(
            "SELECT datname::text FROM pg_stat_activity WHERE pid = $1",
            &[&worker],
        )
        .unwrap()
        .get(0);
    assert_eq!(datname, "postgres");
    for table in ["performance_metrics", "security_audit_log"] {
        wait_for("today's and 3 days' partitions", || {
            (premade_partitions(&mut db, table, 3) == 4).then_some(())
        });
    }
    // After a restart (which removes the shared relcache init file) both processes come back
    // and neither ever exits with an error.
    cluster.restart();
    let mut db = cluster.connect("postgres");
    wait_for("worker after restart", || {
        worker_pid(&mut db, "admin_toolkit worker")
    });
    let failures = cluster.our_failures();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn waits_quietly_for_its_database_and_the_extension() {
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            "admin_toolkit.collection_interval = 1".into(),
            "admin_toolkit.database = 'later_db'".into(),
            "log_min_messages = debug1".into(),
        ],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    // Two more launcher polls (5 s each) pass without the database: said once.
    cluster.wait_for_passes("admin_toolkit launcher: still no database \"later_db\"", 2);
    let log = cluster.server_log();
    assert_eq!(
        occurrences(&log, "database \"later_db\" does not exist; waiting"),
        1,
        "{log}"
    );
    assert!(worker_pid(&mut db, "admin_toolkit worker").is_none());

    db.batch_execute("CREATE DATABASE later_db").unwrap();
    let mut later = cluster.connect("later_db");
    wait_for("worker in later_db", || {
        worker_pid(&mut later, "admin_toolkit worker")
    });
    cluster.wait_for_passes("admin_toolkit worker: still no extension", 3);
    let log = cluster.server_log();
    assert_eq!(
        occurrences(&log, "waiting for CREATE EXTENSION admin_toolkit"),
        1,
        "{log}"
    );

    later
        .batch_execute("CREATE EXTENSION admin_toolkit")
        .unwrap();
    wait_for("partitions made by the worker", || {
        (count(&mut later, PARTITIONS_OF_METRICS) >= 4).then_some(())
    });
}

#[test]
fn create_drop_cascade_create_again_is_clean() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for("partitions", || {
        (count(&mut db, PARTITIONS_OF_METRICS) >= 4).then_some(())
    });
    db.batch_execute(
        "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
         VALUES ('full', '0 2 * * 0', 7, '/var/backups/pg')",
    )
    .unwrap();
    db.batch_execute("DROP EXTENSION admin_toolkit CASCADE")
        .unwrap();
    // PostgreSQL keeps the schema named in the control file (the extension depends on it and
    // it cannot be a member), but nothing may remain in it.
    for catalog in [
        "pg_class WHERE relnamespace",
        "pg_proc WHERE pronamespace",
        "pg_type WHERE typnamespace",
    ] {
        assert_eq!(
            count(
                &mut db,
                &format!("SELECT count(*) FROM {catalog} = 'admin_toolkit'::regnamespace")
            ),
            0,
            "{catalog}"
        );
    }
    let leftovers: Vec<String> = db
        .query(
            "SELECT format('%s (kind %s, namespace %s)', relname, relkind, relnamespace) FROM pg_class \
             WHERE relname LIKE 'performance_metrics%' OR relname LIKE 'security_audit_log%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        leftovers.is_empty(),
        "left after DROP EXTENSION: {leftovers:?}"
    );
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.backup_schedules"
        ),
        0
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin_toolkit.alert_rules"),
        10,
        "the specification's five rules, the two on restore drills and the three on backups"
    );
    wait_for("partitions after re-creation", || {
        (count(&mut db, PARTITIONS_OF_METRICS) >= 4).then_some(())
    });
    // Dropped and created again in one transaction, the extension is never missing when the
    // worker looks: it must still see a new extension and make its partitions again.
    db.batch_execute(
        "BEGIN; DROP EXTENSION admin_toolkit CASCADE; CREATE EXTENSION admin_toolkit; COMMIT",
    )
    .unwrap();
    wait_for("partitions after re-creation in one transaction", || {
        (count(&mut db, PARTITIONS_OF_METRICS) >= 4).then_some(())
    });
}

#[test]
fn user_rows_survive_pg_dump_and_restore() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE DATABASE source_db").unwrap();
    db.batch_execute("CREATE DATABASE target_db").unwrap();
    let mut source = cluster.connect("source_db");
    source
        .batch_execute(
            "CREATE EXTENSION admin_toolkit;
             SELECT * FROM admin_toolkit.maintain_partitions();
             INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location)
                  VALUES ('incremental', '0 2 * * 1-6', 30, '/var/backups/pg/incr');
             INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value)
                  VALUES ('Huge database', 'storage', 'database_size_bytes', '>', 1e12);
             INSERT INTO admin_toolkit.performance_metrics (metric_type, metric_name, metric_value)
                  VALUES ('storage', 'database_size_bytes', 42);
             INSERT INTO admin_toolkit.alert_channels (channel_name, kind, target)
                  VALUES ('ops-hook', 'webhook', 'https://hooks.example.com/pg');
             INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value, notification_channels)
                  VALUES ('Big database', 'storage', 'database_size_bytes', '>', 1, ARRAY['ops-hook', 'email']);
             INSERT INTO admin_toolkit.alert_events (rule_id, value_at_firing, threshold_value, message)
                  SELECT rule_id, 42, 1, 'big' FROM admin_toolkit.alert_rules WHERE rule_name = 'Big database';
             INSERT INTO admin_toolkit.alert_deliveries (event_id, channel_name, action, status, attempts, delivered_at)
                  SELECT event_id, 'ops-hook', 'trigger', 'delivered', 1, now() FROM admin_toolkit.alert_events;",
        )
        .unwrap();
    let dump = cluster.scratch().join("source.dump");
    let out = cluster.client_program("pg_dump", &["-Fc", "-f", &dump, "source_db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.client_program("pg_restore", &["--exit-on-error", "-d", "target_db", &dump]);
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut target = cluster.connect("target_db");
    let row = target
        .query_one(
            "SELECT backup_type, storage_location FROM admin_toolkit.backup_schedules",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "incremental");
    assert_eq!(row.get::<_, String>(1), "/var/backups/pg/incr");
    assert_eq!(
        count(
            &mut target,
            "SELECT count(*) FROM admin_toolkit.alert_rules WHERE builtin"
        ),
        10
    );
    assert_eq!(
        count(
            &mut target,
            "SELECT count(*) FROM admin_toolkit.alert_rules WHERE rule_name = 'Huge database'"
        ),
        1
    );
    assert_eq!(
        count(
            &mut target,
            "SELECT count(*) FROM admin_toolkit.performance_metrics"
        ),
        1
    );
    // A user channel comes back before the rule that names it (restore order), with the
    // event and its delivery.
    assert_eq!(
        count(
            &mut target,
            "SELECT count(*) FROM admin_toolkit.alert_deliveries d JOIN admin_toolkit.alert_channels c USING (channel_name) \
              JOIN admin_toolkit.alert_events e USING (event_id) JOIN admin_toolkit.alert_rules r USING (rule_id) \
             WHERE c.target = 'https://hooks.example.com/pg' AND r.rule_name = 'Big database' AND d.status = 'delivered'"
        ),
        1
    );
    // The serial continues after the restored rows instead of colliding with them.
    target
        .batch_execute(
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location)
             VALUES ('full', '0 3 * * 0', 90, '/var/backups/pg/full')",
        )
        .unwrap();
}

#[test]
fn bad_rows_fail_with_constraint_errors_naming_the_column() {
    let cluster = Cluster::start_with(ClusterOptions::not_preloaded());
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let cases = [
        (
            "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value) \
             VALUES ('r', 'connection', 'active_connections', '=~', 1)",
            "alert_rules_condition_operator_check",
        ),
        (
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
             VALUES ('weekly', '0 2 * * 0', 7, '/b')",
            "backup_schedules_backup_type_check",
        ),
        (
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
             VALUES ('full', '0 2 * * 0', -1, '/b')",
            "backup_schedules_retention_days_check",
        ),
        (
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) \
             VALUES ('full', '0 2 * * 0', 7, '/b', 42)",
            "backup_schedules_compression_level_check",
        ),
        (
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression) \
             VALUES ('defrag', '0 2 * * *')",
            "maintenance_schedules_maintenance_type_check",
        ),
        (
            "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value, severity) \
             VALUES ('r', 'connection', 'active_connections', '>', 1, 'panic')",
            "alert_rules_severity_check",
        ),
    ];
    for (sql, constraint) in cases {
        let err = db.batch_execute(sql).expect_err(sql);
        let db_err = err.as_db_error().expect("a server error");
        assert_eq!(db_err.code(), &SqlState::CHECK_VIOLATION, "{sql}");
        assert_eq!(db_err.constraint(), Some(constraint), "{sql}");
    }
    let err = db
        .batch_execute(
            "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value) \
             VALUES ('r', 'connection', 'no_such_metric', '>', 1)",
        )
        .expect_err("unknown metric");
    assert_eq!(err.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION));
    let err = db
        .batch_execute(
            "INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator) \
             VALUES ('r', 'connection', 'active_connections', '>')",
        )
        .expect_err("NULL threshold");
    assert_eq!(err.code(), Some(&SqlState::NOT_NULL_VIOLATION));
}

#[test]
fn without_preloading_create_extension_notices_and_functions_work() {
    let cluster = Cluster::start_with(ClusterOptions::not_preloaded());
    let (mut db, notices) = cluster.connect_collecting_notices("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("not in shared_preload_libraries")),
        "{notices:?}"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.validate_password_policy('u', 'Str0ng&Secret!')"
        ),
        6
    );
    assert!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.maintain_partitions()"
        ) >= 8
    );
    assert!(worker_pid(&mut db, "admin_toolkit launcher").is_none());
}

#[test]
fn failing_step_is_logged_and_retried_without_killing_the_worker() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    // A plain table squats on tomorrow's partition name, so metrics upkeep fails every tick.
    let squatter: String = db
        .query_one(
            "SELECT 'performance_metrics_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD')",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute(&format!(
        "BEGIN; CREATE EXTENSION admin_toolkit; CREATE TABLE admin_toolkit.\"{squatter}\" (x int); COMMIT;"
    ))
    .unwrap();
    let pid = wait_for("worker", || worker_pid(&mut db, "admin_toolkit worker"));
    wait_for("two logged failures", || {
        (occurrences(
            &cluster.server_log(),
            "\"performance_metrics partition upkeep\" failed",
        ) >= 2)
            .then_some(())
    });
    assert_eq!(
        worker_pid(&mut db, "admin_toolkit worker"),
        Some(pid),
        "worker was restarted"
    );
    // The other log's upkeep still ran.
    assert_eq!(premade_partitions(&mut db, "security_audit_log", 3), 4);

    db.batch_execute(&format!("DROP TABLE admin_toolkit.\"{squatter}\""))
        .unwrap();
    wait_for("metrics partitions after the fix", || {
        (premade_partitions(&mut db, "performance_metrics", 3) == 4).then_some(())
    });
    assert_eq!(worker_pid(&mut db, "admin_toolkit worker"), Some(pid));
}

#[test]
fn reload_applies_new_settings() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for("default premade partitions", || {
        (premade_partitions(&mut db, "performance_metrics", 3) == 4).then_some(())
    });
    db.batch_execute("ALTER SYSTEM SET admin_toolkit.partition_premake_days = 6")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for("partitions 6 days ahead", || {
        (premade_partitions(&mut db, "performance_metrics", 6) == 7).then_some(())
    });
}

#[test]
fn worker_comes_back_after_a_crash_and_stops_promptly() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        settings: vec!["admin_toolkit.collection_interval = 1".into()],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let pid = wait_for("worker", || worker_pid(&mut db, "admin_toolkit worker"));
    // SIGKILL makes the postmaster reinitialize everything, as after any backend crash.
    let out = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Each look connects afresh: a session opened before the postmaster has noticed the crash
    // is ended with the rest.
    let mut db = wait_for("a worker after crash recovery", || {
        let mut db = cluster_connect_retry(&cluster)?;
        worker_pid(&mut db, "admin_toolkit worker")
            .filter(|p| *p != pid)
            .map(|_| db)
    });
    // The new worker works: it collects metrics (every second here) after the crash.
    let recovered_at: std::time::SystemTime = db.query_one("SELECT now()", &[]).unwrap().get(0);
    wait_for("a collection by the new worker", || {
        let n = db
            .query_one(
                "SELECT count(*) FROM admin_toolkit.performance_metrics WHERE collected_at > $1",
                &[&recovered_at],
            )
            .unwrap()
            .get::<_, i64>(0);
        (n > 0).then_some(())
    });
    cluster.stop_within(Duration::from_secs(15));
}

fn cluster_connect_retry(cluster: &Cluster) -> Option<postgres::Client> {
    postgres::Client::connect(&cluster.conninfo("postgres"), postgres::NoTls).ok()
}

/// A worker that exits (terminated here, as an administrator might) is started again by the
/// launcher, and the new one works.
#[test]
fn the_launcher_starts_a_new_worker_when_its_worker_exits() {
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec!["admin_toolkit.collection_interval = 1".into()],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let pid = wait_for("worker", || worker_pid(&mut db, "admin_toolkit worker"));
    let launcher = worker_pid(&mut db, "admin_toolkit launcher").expect("the launcher");
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_for("a new worker", || {
        worker_pid(&mut db, "admin_toolkit worker").filter(|p| *p != pid)
    });
    assert_eq!(
        worker_pid(&mut db, "admin_toolkit launcher"),
        Some(launcher),
        "the same launcher"
    );
    let restarted_at: std::time::SystemTime = db.query_one("SELECT now()", &[]).unwrap().get(0);
    wait_for("a collection by the new worker", || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM admin_toolkit.performance_metrics WHERE collected_at > $1",
                &[&restarted_at],
            )
            .unwrap()
            .get(0);
        (n > 0).then_some(())
    });
}
