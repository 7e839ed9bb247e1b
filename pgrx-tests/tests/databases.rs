//! Every database of the cluster: maintenance schedules run in the database they name, as
//! their owner, under PostgreSQL's own rules there; a schedule whose database is dropped is
//! deactivated with a note and the worker carries on.

use admin_toolkit_it::fixtures::MaintenanceSchedule;
use admin_toolkit_it::{wait_for, Cluster, ClusterOptions};
use postgres::Client;

fn schedule(db: &mut Client, kind: &str, database: &str, table: Option<&str>, owner: &str) -> i32 {
    MaintenanceSchedule {
        table,
        database: Some(database),
        owner: Some(owner),
        ..MaintenanceSchedule::new(kind)
    }
    .insert(db)
}

fn execute(db: &mut Client, schedule_id: i32) -> (String, String, Option<String>, Option<String>) {
    let r = db
        .query_one(
            "SELECT status, target_object, details->>'error', details->>'sql_command' \
               FROM admin_toolkit.execute_maintenance($1)",
            &[&schedule_id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

fn last_vacuum_set(db: &mut Client, table: &str) -> bool {
    db.query_one(
        "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1",
        &[&table],
    )
    .unwrap()
    .get(0)
}

#[test]
fn maintenance_runs_in_the_database_its_schedule_names() {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    db.batch_execute("CREATE DATABASE second").unwrap();
    db.batch_execute("CREATE ROLE tenant LOGIN").unwrap();
    let mut second = cluster.connect("second");
    second
        .batch_execute(
            "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000); DELETE FROM t WHERE id % 2 = 0; \
             CREATE TABLE secret (id int)",
        )
        .unwrap();
    assert!(!last_vacuum_set(&mut second, "t"));

    // An unknown database is refused when the schedule is written.
    let err = db
        .execute(
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression, target_database) \
             VALUES ('vacuum', '0 4 * * *', 'nosuchdb')",
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42704", "{err}");

    // VACUUM of a table in the second database runs there, and is recorded here.
    let vacuum = schedule(&mut db, "vacuum", "second", Some("t"), "postgres");
    let (status, target, error, command) = execute(&mut db, vacuum);
    assert_eq!(status, "success", "{error:?}");
    assert_eq!(target, "public.t");
    assert_eq!(command.as_deref(), Some("VACUUM \"public\".\"t\""));
    wait_for("last_vacuum in the second database", || {
        last_vacuum_set(&mut second, "t").then_some(())
    });
    let recorded: (String, String) = {
        let r = db
            .query_one(
                "SELECT target_database::text, owner::text FROM admin_toolkit.maintenance_runs \
                  WHERE schedule_id = $1",
                &[&vacuum],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(recorded, ("second".to_string(), "postgres".to_string()));

    // An owner without rights there is refused by PostgreSQL's own rules, and the run says so.
    let refused = schedule(&mut db, "vacuum", "second", Some("secret"), "tenant");
    let (status, _, error, _) = execute(&mut db, refused);
    assert_eq!(status, "error");
    let error = error.unwrap();
    assert!(
        error.contains("permission denied") && error.contains("secret"),
        "{error}"
    );
    // ... and one that may not connect there never gets in.
    db.batch_execute("REVOKE CONNECT ON DATABASE second FROM PUBLIC")
        .unwrap();
    let (status, _, error, _) = execute(&mut db, refused);
    assert_eq!(status, "error");
    assert!(
        error
            .as_deref()
            .unwrap()
            .contains("may not connect to database \"second\""),
        "{error:?}"
    );

    // Scheduled runs go there too: make the VACUUM due and wait for the worker's run.
    db.execute(
        "UPDATE admin_toolkit.maintenance_schedules SET next_run = now() WHERE schedule_id = $1",
        &[&vacuum],
    )
    .unwrap();
    wait_for("the scheduled run", || {
        let runs: i64 = db
            .query_one(
                "SELECT count(*) FROM admin_toolkit.maintenance_runs \
                  WHERE schedule_id = $1 AND status = 'success' AND target_database = 'second'",
                &[&vacuum],
            )
            .unwrap()
            .get(0);
        (runs == 2).then_some(())
    });

    // A dropped database: its schedules become inactive with a note; the worker keeps running.
    drop(second);
    db.batch_execute("CREATE DATABASE third").unwrap();
    let orphan = schedule(&mut db, "analyze", "third", None, "postgres");
    db.batch_execute("DROP DATABASE third").unwrap();
    db.execute(
        "UPDATE admin_toolkit.maintenance_schedules SET next_run = now() WHERE schedule_id = $1",
        &[&orphan],
    )
    .unwrap();
    let note = wait_for("the schedule deactivated", || {
        let r = db
            .query_one(
                "SELECT is_active, note FROM admin_toolkit.maintenance_schedules WHERE schedule_id = $1",
                &[&orphan],
            )
            .unwrap();
        (!r.get::<_, bool>(0)).then(|| r.get::<_, Option<String>>(1).unwrap_or_default())
    });
    assert!(note.contains("database third no longer exists"), "{note}");
    let worker: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'admin_toolkit worker'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(worker, 1);
    // Activating it again is refused while the database is missing.
    let err = db
        .execute(
            "UPDATE admin_toolkit.maintenance_schedules SET is_active = true WHERE schedule_id = $1",
            &[&orphan],
        )
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42704", "{err}");
    let log = cluster.server_log();
    assert!(log.contains(&format!(
        "maintenance schedule {orphan} deactivated: database \"third\" no longer exists"
    )));
    assert!(!log.contains("terminated by signal"));
}

#[test]
fn health_checks_and_views_cover_every_database() {
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            "admin_toolkit.collection_interval = 1".into(),
            "admin_toolkit.database_facts_interval = 1".into(),
        ],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    db.batch_execute("CREATE DATABASE second").unwrap();
    db.batch_execute("CREATE ROLE plain LOGIN").unwrap();
    let mut second = cluster.connect("second");
    second
        .batch_execute(
            "CREATE TABLE bloated (id int) WITH (autovacuum_enabled = off); \
             INSERT INTO bloated SELECT generate_series(1, 10000); DELETE FROM bloated WHERE id % 2 = 0; \
             CREATE TABLE dup (x int); INSERT INTO dup VALUES (1), (1); \
             CREATE INDEX same_a ON bloated (id); CREATE INDEX same_b ON bloated (id); \
             CREATE SEQUENCE nearly_full MAXVALUE 10; SELECT setval('nearly_full', 9)",
        )
        .unwrap();
    // A failed CREATE INDEX CONCURRENTLY leaves an invalid index behind.
    second
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY dup_x ON dup (x)")
        .unwrap_err();
    drop(second);

    let health = |db: &mut Client| -> Vec<(String, String, String)> {
        db.query(
            "SELECT check_name, status, recommendation FROM admin_toolkit.check_maintenance_health()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let found = wait_for("the second database's facts in the health checks", || {
        let checks = health(&mut db);
        let bloat = checks.iter().find(|c| c.0 == "table_bloat")?;
        let invalid = checks.iter().find(|c| c.0 == "invalid_indexes")?;
        (bloat.2.contains("second.public.bloated") && invalid.2.contains("second.public.dup_x"))
            .then_some(checks)
    });
    let check = |name: &str| found.iter().find(|c| c.0 == name).unwrap();
    assert_eq!(check("table_bloat").1, "critical", "{found:?}");
    assert_eq!(check("invalid_indexes").1, "warning", "{found:?}");
    // Duplicate indexes and a sequence near its limit there, with the database in the name.
    let duplicates = check("duplicate_indexes");
    assert!(
        duplicates
            .2
            .contains("second: public.same_a = public.same_b"),
        "{duplicates:?}"
    );
    let sequences = check("sequence_exhaustion");
    assert_eq!(sequences.1, "warning", "{sequences:?}");
    assert!(
        sequences.2.contains("second.public.nearly_full (88.9%)"),
        "{sequences:?}"
    );

    // The companion views: the seed's columns, with the database.
    let r = db
        .query_one(
            "SELECT bloat_level, dead_tuple_percent::float8, n_dead_tup FROM admin_toolkit.cluster_table_bloat_analysis \
              WHERE database = 'second' AND tablename = 'bloated'",
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "HIGH");
    assert!((r.get::<_, f64>(1) - 50.0).abs() < 0.5);
    let valid: bool = db
        .query_one(
            "SELECT is_valid FROM admin_toolkit.cluster_index_usage_analysis \
              WHERE database = 'second' AND indexname = 'dup_x'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!valid);
    // One collection per database per round; every connectable database is there.
    let databases: Vec<String> = db
        .query(
            "SELECT database::text FROM admin_toolkit.database_facts ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(databases, ["postgres", "second"]);

    // Metrics per database, labelled with it.
    let metrics = |db: &mut Client| -> Vec<String> {
        db.query(
            "SELECT DISTINCT metric_name FROM admin_toolkit.performance_metrics \
              WHERE metric_type = 'database' AND database = 'second' AND metric_value IS NOT NULL ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let names = wait_for("per-database metrics of the second database", || {
        let names = metrics(&mut db);
        (names.len() == 6).then_some(names)
    });
    assert_eq!(
        names,
        [
            "connections",
            "deadlocks",
            "size_bytes",
            "temp_bytes",
            "transactions_per_second",
            "xid_age"
        ]
    );

    // Other databases' names are for superusers and pg_monitor members only.
    let mut plain = cluster.connect_as("postgres", "plain", "").unwrap();
    let checks = health(&mut plain);
    assert!(
        checks.iter().all(|c| !c.2.contains("second.")),
        "{checks:?}"
    );
    db.batch_execute("GRANT pg_monitor TO plain").unwrap();
    let mut plain = cluster.connect_as("postgres", "plain", "").unwrap();
    assert!(health(&mut plain)
        .iter()
        .any(|c| c.2.contains("second.public.bloated")));

    // A dropped database's facts go at the next round.
    db.batch_execute("DROP DATABASE second").unwrap();
    wait_for("the dropped database's facts to go", || {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM admin_toolkit.database_table_facts WHERE database = 'second'",
                &[],
            )
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    });
    cluster.assert_no_crash();
}
