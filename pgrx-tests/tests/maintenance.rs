//! Scheduled maintenance against a real server: commands run top-level in job workers, for real.

use admin_toolkit_it::fixtures::MaintenanceSchedule;
use admin_toolkit_it::{count, wait_for, wait_for_within, Cluster, PATIENCE};
use std::time::Duration;

fn setup() -> (Cluster, postgres::Client) {
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit;
         CREATE TABLE public.\"Large Table\" (id int PRIMARY KEY, payload text);
         INSERT INTO public.\"Large Table\" SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CREATE TABLE public.x (id int);",
    )
    .unwrap();
    (cluster, db)
}

fn schedule(
    db: &mut postgres::Client,
    kind: &str,
    table: Option<&str>,
    expression: &str,
    options: &str,
) -> i32 {
    MaintenanceSchedule {
        table,
        expression,
        options,
        ..MaintenanceSchedule::new(kind)
    }
    .insert(db)
}

#[test]
fn execute_maintenance_vacuums_and_reindexes_concurrently_for_real() {
    let (_cluster, mut db) = setup();
    db.batch_execute("DELETE FROM public.\"Large Table\" WHERE id % 2 = 0")
        .unwrap();
    let id = schedule(
        &mut db,
        "vacuum",
        Some("Large Table"),
        "0 3 * * *",
        r#"{"analyze": true}"#,
    );
    let row = db
        .query_one(
            "SELECT status, target_object, details->>'sql_command', duration_seconds \
             FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "success", "{:?}", row);
    assert_eq!(row.get::<_, String>(1), "public.Large Table");
    assert_eq!(
        row.get::<_, String>(2),
        "VACUUM (ANALYZE) \"public\".\"Large Table\""
    );
    wait_for("pg_stat_user_tables shows the vacuum", || {
        (count(
            &mut db,
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'Large Table' \
             AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL",
        ) == 1)
            .then_some(())
    });

    let id = schedule(
        &mut db,
        "reindex",
        Some("Large Table"),
        "0 4 * * 0",
        r#"{"concurrent": true}"#,
    );
    let before: u32 = db
        .query_one("SELECT 'public.\"Large Table_pkey\"'::regclass::oid", &[])
        .unwrap()
        .get(0);
    let status: String = db
        .query_one(
            "SELECT status FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "running", "REINDEX CONCURRENTLY is not waited for");
    wait_for("the concurrent reindex to finish", || {
        db.query_opt(
            "SELECT status FROM admin_toolkit.maintenance_runs WHERE schedule_id = $1 AND status <> 'running'",
            &[&id],
        )
        .unwrap()
        .map(|r| r.get::<_, String>(0))
    });
    let after: u32 = db
        .query_one("SELECT 'public.\"Large Table_pkey\"'::regclass::oid", &[])
        .unwrap()
        .get(0);
    assert_ne!(before, after, "REINDEX CONCURRENTLY builds a new index");
    assert_eq!(
        count(&mut db, &format!("SELECT count(*) FROM admin_toolkit.maintenance_runs WHERE schedule_id = {id} AND status = 'success'")),
        1
    );
}

#[test]
fn a_schedule_runs_by_itself_within_its_minute() {
    let (_cluster, mut db) = setup();
    schedule(&mut db, "analyze", Some("Large Table"), "* * * * *", "{}");
    // Due at the next minute: up to 60 s away, then the worker's look and the job's start.
    wait_for_within(
        "the scheduled ANALYZE",
        Duration::from_secs(60) + PATIENCE,
        || {
            (count(
            &mut db,
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'Large Table' AND last_analyze IS NOT NULL",
        ) == 1)
            .then_some(())
        },
    );
    // The job records its outcome in a transaction after the ANALYZE's own.
    let row = wait_for("the run's outcome", || {
        db.query_opt(
            "SELECT r.status, s.last_run IS NOT NULL, s.next_run > now() FROM admin_toolkit.maintenance_runs r \
             JOIN admin_toolkit.maintenance_schedules s USING (schedule_id) \
             WHERE r.status <> 'running' ORDER BY r.run_id LIMIT 1",
            &[],
        )
        .unwrap()
    });
    assert_eq!(row.get::<_, String>(0), "success");
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
}

#[test]
fn bad_targets_are_recorded_as_errors_and_nothing_else_runs() {
    let (_cluster, mut db) = setup();
    let id = schedule(
        &mut db,
        "analyze",
        Some("x; DROP TABLE x"),
        "0 3 * * *",
        "{}",
    );
    let row = db
        .query_one(
            "SELECT status, details->>'error' FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "error");
    assert!(row.get::<_, String>(1).contains("does not exist"));
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM pg_class WHERE relname = 'x'"),
        1,
        "table x survives"
    );

    let id = schedule(
        &mut db,
        "vacuum",
        Some("Large Table"),
        "0 3 * * *",
        r#"{"analyze": "yes"}"#,
    );
    let row = db
        .query_one(
            "SELECT status, details->>'error' FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "error");
    assert!(row.get::<_, String>(1).contains("must be true or false"));

    let row = db
        .query_one(
            "SELECT status, details->>'error' FROM admin_toolkit.execute_maintenance(424242)",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "error");
    assert_eq!(row.get::<_, String>(1), "Schedule not found or inactive");

    let err = db
        .batch_execute(
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression) VALUES ('analyze', '60 * * * *')",
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
}

#[test]
fn stats_update_analyzes_stale_tables_and_never_resets_statistics() {
    let (_cluster, mut db) = setup();
    // Tables autovacuum leaves alone: one never analyzed, one changed by a third since its
    // ANALYZE, one analyzed and unchanged. The first two are stale, the third is not.
    // Each statement in a transaction of its own: a transaction's changes count towards
    // n_mod_since_analyze when it commits, after an ANALYZE inside it.
    for statement in [
        "CREATE TABLE never_analyzed WITH (autovacuum_enabled = false) AS SELECT g FROM generate_series(1, 1000) g",
        "CREATE TABLE changed WITH (autovacuum_enabled = false) AS SELECT g FROM generate_series(1, 1000) g",
        "CREATE TABLE fresh WITH (autovacuum_enabled = false) AS SELECT g FROM generate_series(1, 1000) g",
        "SELECT pg_stat_force_next_flush()",
    ] {
        db.batch_execute(statement).unwrap();
    }
    wait_for("the new tables' inserts counted", || {
        (count(
            &mut db,
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('changed', 'fresh') AND n_mod_since_analyze >= 1000",
        ) == 2)
            .then_some(())
    });
    for statement in [
        "ANALYZE changed",
        "ANALYZE fresh",
        "UPDATE changed SET g = g + 1 WHERE g <= 300",
        "SELECT count(*) FROM fresh",
        "SELECT pg_stat_force_next_flush()",
    ] {
        db.batch_execute(statement).unwrap();
    }
    let scans_of_fresh = |db: &mut postgres::Client| {
        count(
            db,
            "SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'fresh'",
        )
    };
    wait_for("statistics of the new tables", || {
        (scans_of_fresh(&mut db) > 0
            && count(
                &mut db,
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'changed'",
            ) >= 300
            && count(
                &mut db,
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'fresh'",
            ) == 0)
            .then_some(())
    });
    let scans_before = scans_of_fresh(&mut db);
    let id = schedule(&mut db, "stats_update", None, "0 1 * * *", "{}");
    let row = db
        .query_one(
            "SELECT status, details->>'sql_command' FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "success");
    let command: String = row.get(1);
    assert!(
        command.contains("\"public\".\"never_analyzed\"")
            && command.contains("\"public\".\"changed\""),
        "{command}"
    );
    assert!(
        !command.contains("\"fresh\"") && !command.contains("\"x\""),
        "{command}"
    );
    // Statistics are never reset: fresh's scan count is still there.
    db.batch_execute("SELECT pg_stat_force_next_flush()")
        .unwrap();
    assert!(scans_of_fresh(&mut db) >= scans_before && scans_before > 0);
}

#[test]
fn health_check_names_the_objects() {
    let (_cluster, mut db) = setup();
    db.batch_execute(
        "CREATE INDEX dup_a ON public.\"Large Table\" (payload);
         CREATE INDEX dup_b ON public.\"Large Table\" (payload);
         CREATE SEQUENCE nearly_done MAXVALUE 100;
         SELECT setval('nearly_done', 95);
         ANALYZE;",
    )
    .unwrap();
    let checks: Vec<(String, String, String)> = db
        .query("SELECT check_name, status, recommendation FROM admin_toolkit.check_maintenance_health()", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("{name}: {checks:?}"))
            .clone()
    };
    assert_eq!(checks.len(), 10);
    let dup = find("duplicate_indexes");
    assert_eq!(dup.1, "warning");
    assert!(
        dup.2.contains("dup_a") && dup.2.contains("dup_b"),
        "{dup:?}"
    );
    let seq = find("sequence_exhaustion");
    assert_eq!(seq.1, "critical");
    assert!(seq.2.contains("public.nearly_done"), "{seq:?}");
    assert_eq!(find("xid_wraparound").1, "ok");
    assert_eq!(find("invalid_indexes").1, "ok");
}

#[test]
fn lock_timeout_option_applies_to_the_run() {
    let (cluster, mut db) = setup();
    let id = schedule(
        &mut db,
        "analyze",
        Some("x"),
        "0 3 * * *",
        r#"{"lock_timeout": "200ms"}"#,
    );
    let mut holder = cluster.connect("postgres");
    holder
        .batch_execute("BEGIN; LOCK TABLE public.x IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let row = db
        .query_one(
            "SELECT status, details->>'error' FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(row.get::<_, String>(0), "error");
    assert!(
        row.get::<_, String>(1).contains("lock timeout"),
        "{:?}",
        row.get::<_, String>(1)
    );
}

/// A maintenance job stopped from outside while its command waits (a session holds the table's
/// lock, so the VACUUM is still running when it is stopped): the run is recorded as an error
/// saying so, and the schedule stays usable.
#[test]
fn a_terminated_maintenance_job_records_its_run_as_an_error() {
    let (cluster, mut db) = setup();
    let id = schedule(&mut db, "vacuum", Some("Large Table"), "0 3 * * *", "{}");
    let mut holder = cluster.connect("postgres");
    holder
        .batch_execute("BEGIN; LOCK TABLE public.\"Large Table\" IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let conninfo = cluster.conninfo("postgres");
    let caller = std::thread::spawn(move || {
        let mut db = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
        db.query_one(
            "SELECT status FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .map(|r| r.get::<_, String>(0))
    });
    let pid: i32 = wait_for("the VACUUM waiting for the lock", || {
        db.query_opt(
            "SELECT (r.details->>'pid')::int FROM admin_toolkit.maintenance_runs r \
               JOIN pg_stat_activity a ON a.pid = (r.details->>'pid')::int \
              WHERE r.schedule_id = $1 AND r.status = 'running' AND a.wait_event_type = 'Lock'",
            &[&id],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    // The job ends at once (FATAL, as any backend terminated); the caller sees its run as it
    // stands then, and the worker's upkeep, at its next look, marks it.
    let status = caller.join().unwrap().unwrap();
    assert!(matches!(status.as_str(), "running" | "error"), "{status}");
    let (status, error): (String, Option<String>) = wait_for(
        "the run marked by the worker's upkeep",
        || {
            let r = db
            .query_one(
                "SELECT status, error_message FROM admin_toolkit.maintenance_runs WHERE schedule_id = $1",
                &[&id],
            )
            .unwrap();
            let status: String = r.get(0);
            (status != "running").then(|| (status, r.get(1)))
        },
    );
    assert_eq!(status, "error");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("terminat") || error.contains("interrupted"),
        "{error}"
    );
    holder.batch_execute("ROLLBACK").unwrap();
    let again: String = db
        .query_one(
            "SELECT status FROM admin_toolkit.execute_maintenance($1)",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(again, "success");
}
