//! Least privilege against a real server: every job runs as its owner, so a grant of a toolkit
//! function never gives more than the grantee could do by hand. A matrix of functions × roles
//! (superuser, a schedule's owner, a role granted EXECUTE on everything, PUBLIC), row-level
//! security on the schedules and runs, protections only superusers may switch off, and the
//! errors that name what is wrong.

use admin_toolkit_it::{count, wait_for, Cluster, ClusterOptions, ScratchDir};
use postgres::Client;
use std::path::Path;

/// What a call must do for one role: succeed, succeed with a result containing this text
/// (a function that reports a refusal as a row succeeds too), or fail with this SQLSTATE.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Ok,
    Gives(&'static str),
    Err(&'static str),
}
use Expect::{Err as Refused, Gives, Ok as Allowed};

/// The call's result, every value of every row, or its error as "SQLSTATE: message".
fn outcome(db: &mut Client, sql: &str) -> Result<String, String> {
    let messages = db.simple_query(sql).map_err(|e| {
        e.as_db_error()
            .map(|d| format!("{}: {}", d.code().code(), d.message()))
            .unwrap_or_else(|| e.to_string())
    })?;
    let mut values = Vec::new();
    for message in messages {
        if let postgres::SimpleQueryMessage::Row(row) = message {
            values.extend((0..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_string()));
        }
    }
    Ok(values.join(" | "))
}

fn check(db: &mut Client, role: &str, sql: &str, expect: Expect) {
    let got = outcome(db, sql);
    match (expect, &got) {
        (Allowed, Ok(_)) => {}
        (Gives(text), Ok(result)) if result.contains(text) => {}
        (Refused(code), Err(message)) if message.starts_with(code) => {}
        _ => panic!("{role}: {sql}: expected {expect:?}, got {got:?}"),
    }
}

struct Setup {
    cluster: Cluster,
    db: Client,
    store: ScratchDir,
}

fn setup() -> Setup {
    let store = ScratchDir::new("admin_toolkit_privilege_");
    let cluster = Cluster::start_with(ClusterOptions::archiving_to(&store.path().join("wal")));
    let mut db = cluster.connect("postgres");
    // alice may write server files and take backups, and owns a table; carol is granted
    // EXECUTE on every toolkit function and the schedule tables, nothing more; dave is PUBLIC.
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; \
         CREATE TABLE secret (id int); INSERT INTO secret SELECT generate_series(1, 2000); \
         DELETE FROM secret WHERE id % 2 = 0; \
         CREATE ROLE alice LOGIN IN ROLE pg_write_server_files; \
         GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean) TO alice; \
         CREATE TABLE alice_t (id int); ALTER TABLE alice_t OWNER TO alice; \
         INSERT INTO alice_t SELECT generate_series(1, 2000); DELETE FROM alice_t WHERE id % 2 = 0; \
         CREATE ROLE carol LOGIN; \
         CREATE ROLE dave LOGIN; \
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA admin_toolkit TO alice, carol; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON admin_toolkit.maintenance_schedules, admin_toolkit.backup_schedules, \
               admin_toolkit.maintenance_runs, admin_toolkit.backup_history, \
               admin_toolkit.restore_drill_schedules, admin_toolkit.restore_drills TO alice, carol; \
         GRANT SELECT ON admin_toolkit.recovery_points TO alice, carol; \
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA admin_toolkit TO alice, carol;",
    )
    .unwrap();
    Setup { cluster, db, store }
}

fn connect(cluster: &Cluster, role: &str) -> Client {
    cluster.connect_as("postgres", role, "").unwrap()
}

fn insert_schedule(db: &mut Client, sql: &str) -> i32 {
    db.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn every_function_by_every_role_does_no_more_than_the_role_could_by_hand() {
    let Setup {
        cluster,
        mut db,
        store,
    } = setup();
    let location = store.path().join("backups").display().to_string();
    let mut alice = connect(&cluster, "alice");
    let mut carol = connect(&cluster, "carol");
    let mut dave = connect(&cluster, "dave");

    // Schedules of the superuser, and of alice (made by alice herself).
    let su_vacuum = insert_schedule(
        &mut db,
        "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, target_schema, target_table, schedule_expression) \
         VALUES ('vacuum', 'public', 'secret', '0 3 * * *') RETURNING schedule_id",
    );
    let su_backup = insert_schedule(
        &mut db,
        &format!("INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) \
                  VALUES ('full', '0 3 * * *', 7, '{location}', 1) RETURNING schedule_id"),
    );
    let alice_vacuum = insert_schedule(
        &mut alice,
        "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, target_schema, target_table, schedule_expression) \
         VALUES ('vacuum', 'public', 'alice_t', '0 3 * * *') RETURNING schedule_id",
    );
    let alice_on_secret = insert_schedule(
        &mut alice,
        "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, target_schema, target_table, schedule_expression) \
         VALUES ('vacuum', 'public', 'secret', '0 3 * * *') RETURNING schedule_id",
    );
    let alice_backup = insert_schedule(
        &mut alice,
        &format!("INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) \
                  VALUES ('full', '0 3 * * *', 7, '{location}', 1) RETURNING schedule_id"),
    );
    let carol_on_secret = insert_schedule(
        &mut carol,
        "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, target_schema, target_table, schedule_expression) \
         VALUES ('vacuum', 'public', 'secret', '0 3 * * *') RETURNING schedule_id",
    );
    let auto_conf = Path::new(&cluster.data_dir()).join("postgresql.auto.conf");
    let auto_conf_before = std::fs::read_to_string(&auto_conf).unwrap();

    // The escalation of 0.1.0: EXECUTE on track_config_change made archive_command (an OS
    // command) anyone's to set. Refused, and postgresql.auto.conf is untouched.
    for (client, role) in [
        (&mut alice, "alice"),
        (&mut carol, "carol"),
        (&mut dave, "dave"),
    ] {
        check(
            client,
            role,
            "SELECT admin_toolkit.track_config_change('archive_command', 'touch /tmp/admin_toolkit_pwned', 'r')",
            Refused("42501"),
        );
    }
    assert_eq!(
        std::fs::read_to_string(&auto_conf).unwrap(),
        auto_conf_before
    );

    // Each row: a call, then the outcome for superuser, alice (owner), carol (EXECUTE granted),
    // dave (PUBLIC).
    let matrix: Vec<(String, [Expect; 4])> = vec![
        (
            "SELECT admin_toolkit.track_config_change('archive_cleanup_command', '/bin/true', 'r')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        // With archive_library = 'admin_toolkit', archive_command beside it would stop
        // archiving (16+): refused for everyone, the superuser included.
        (
            "SELECT admin_toolkit.track_config_change('archive_command', '/bin/true', 'r')".into(),
            [Refused("22023"), Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT admin_toolkit.track_config_change('work_mem', '8MB', 'r')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            format!("SELECT admin_toolkit.execute_backup({su_backup}, true)"),
            [Allowed, Refused("42704"), Refused("42704"), Refused("42501")],
        ),
        (
            format!("SELECT admin_toolkit.execute_backup({alice_backup}, true)"),
            [Allowed, Allowed, Refused("42704"), Refused("42501")],
        ),
        // carol may call it but cannot see alice's schedule (row-level security): the
        // specification's "not found" row, and nothing runs.
        (
            format!("SELECT status, details FROM admin_toolkit.execute_maintenance({alice_vacuum})"),
            [
                Gives("success"),
                Gives("success"),
                Gives("Schedule not found or inactive"),
                Refused("42501"),
            ],
        ),
        (
            "SELECT * FROM admin_toolkit.cleanup_old_backups()".into(),
            [Allowed, Allowed, Allowed, Refused("42501")],
        ),
        (
            "SELECT admin_toolkit.create_restore_point('matrix')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT * FROM admin_toolkit.setup_role_hierarchy('public')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT * FROM admin_toolkit.detect_suspicious_activity()".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT admin_toolkit.log_security_event('APP_EVENT')".into(),
            [Allowed, Allowed, Allowed, Refused("42501")],
        ),
        (
            "SELECT admin_toolkit.enable_tenant_isolation('secret', 'id', 'app.tenant')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT admin_toolkit.maintain_partitions()".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT admin_toolkit.collect_performance_metrics()".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT * FROM admin_toolkit.process_alerts()".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT * FROM admin_toolkit.security_audit_log".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "SELECT * FROM admin_toolkit.get_config_recommendations()".into(),
            [Allowed, Allowed, Allowed, Allowed],
        ),
        // Row-level security: nobody but a superuser writes a schedule for another role.
        (
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression, owner) \
             VALUES ('vacuum', '0 3 * * *', 'postgres')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            format!("INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
                     VALUES ('full', '0 3 * * *', 7, '{location}')"),
            [Allowed, Allowed, Refused("42501"), Refused("42501")],
        ),
        // Drill schedules: for a superuser only (a drill reads every backup and starts a
        // server), nobody writes one for another role, and the drill itself is superusers'.
        (
            "INSERT INTO admin_toolkit.restore_drill_schedules (schedule_name, schedule_expression, owner) \
             VALUES ('for postgres', '0 4 * * *', 'postgres')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "INSERT INTO admin_toolkit.restore_drill_schedules (schedule_name, schedule_expression) \
             VALUES ('own', '0 4 * * *')".into(),
            [Allowed, Refused("42501"), Refused("42501"), Refused("42501")],
        ),
        (
            "UPDATE admin_toolkit.restore_drill_schedules SET owner = current_user".into(),
            [Allowed, Allowed, Allowed, Refused("42501")],
        ),
        (
            "SELECT admin_toolkit.run_restore_drill()".into(),
            [Refused("55000"), Refused("42501"), Refused("42501"), Refused("42501")],
        ),
    ];
    let roles = ["postgres", "alice", "carol", "dave"];
    for (sql, expected) in &matrix {
        for (i, client) in [&mut db, &mut alice, &mut carol, &mut dave]
            .into_iter()
            .enumerate()
        {
            check(client, roles[i], sql, expected[i]);
        }
    }
    assert!(!std::fs::read_to_string(&auto_conf)
        .unwrap()
        .contains("admin_toolkit_pwned"));

    // Retention deletes what the caller owns, nothing else: an expired backup of alice's
    // schedule (older than its 7 days, and not her newest full backup) is not carol's to
    // delete, and is alice's.
    let expired: i64 = db
        .query_one(
            "INSERT INTO admin_toolkit.backup_history (schedule_id, backup_type, status, backup_path, \
               start_time, end_time, owner) \
             VALUES ($1, 'full', 'completed', $2, now() - interval '30 days', \
                     now() - interval '30 days' + interval '1 minute', 'alice') RETURNING backup_id",
            &[&alice_backup, &format!("{location}/expired")],
        )
        .unwrap()
        .get(0);
    let deleted_by = |client: &mut Client| -> Vec<i64> {
        client
            .query(
                "SELECT deleted_backup_id FROM admin_toolkit.cleanup_old_backups()",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let status_of_expired = |db: &mut Client| -> String {
        db.query_one(
            "SELECT status FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&expired],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(deleted_by(&mut carol), Vec::<i64>::new());
    assert_eq!(status_of_expired(&mut db), "completed");
    assert_eq!(deleted_by(&mut alice), vec![expired]);
    assert_ne!(status_of_expired(&mut db), "completed");

    // Jobs run as their owners: alice's backup and vacuum are hers; her VACUUM of a table she
    // may not maintain, and carol's, are refused by PostgreSQL and the runs say so.
    let owners: Vec<String> = db
        .query(
            "SELECT DISTINCT owner::text FROM admin_toolkit.backup_history WHERE schedule_id = $1",
            &[&alice_backup],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, vec!["alice"]);
    for (client, role, schedule) in [
        (&mut alice, "alice", alice_on_secret),
        (&mut carol, "carol", carol_on_secret),
    ] {
        let row = client
            .query_one(
                "SELECT status, details->>'error' FROM admin_toolkit.execute_maintenance($1)",
                &[&schedule],
            )
            .unwrap();
        let (status, error): (String, Option<String>) = (row.get(0), row.get(1));
        assert_eq!(status, "error", "{role}");
        let error = error.unwrap_or_default();
        assert!(
            error.contains("permission denied") && error.contains("secret"),
            "{role}: {error}"
        );
    }
    let runs: Vec<(String, String)> = db
        .query(
            "SELECT owner::text, status FROM admin_toolkit.maintenance_runs WHERE schedule_id = $1",
            &[&alice_vacuum],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        !runs.is_empty() && runs.iter().all(|(o, s)| o == "alice" && s == "success"),
        "{runs:?}"
    );
    // The superuser's schedule on `secret` still vacuums it.
    let row = db
        .query_one(
            "SELECT status FROM admin_toolkit.execute_maintenance($1)",
            &[&su_vacuum],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "success");

    // Row-level security on drill schedules: the superuser's two are invisible to alice and
    // carol (their UPDATE above changed nothing), and still the superuser's.
    for client in [&mut alice, &mut carol] {
        assert_eq!(
            count(
                client,
                "SELECT count(*) FROM admin_toolkit.restore_drill_schedules"
            ),
            0
        );
    }
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.restore_drill_schedules WHERE owner = 'postgres'"
        ),
        2
    );

    // Row-level security: carol sees her schedule only; alice cannot touch the superuser's.
    assert_eq!(
        count(
            &mut carol,
            "SELECT count(*) FROM admin_toolkit.maintenance_schedules"
        ),
        1
    );
    assert_eq!(
        alice
            .execute(
                "UPDATE admin_toolkit.maintenance_schedules SET target_table = 'alice_t' WHERE schedule_id = $1",
                &[&su_vacuum],
            )
            .unwrap(),
        0
    );
    assert_eq!(
        count(
            &mut alice,
            "SELECT count(*) FROM admin_toolkit.backup_history WHERE owner <> 'alice'"
        ),
        0
    );
    // pg_monitor members read every run.
    db.batch_execute("GRANT pg_monitor TO dave").unwrap();
    let mut dave = connect(&cluster, "dave");
    assert!(
        count(
            &mut dave,
            "SELECT count(*) FROM admin_toolkit.backup_history"
        ) >= 2
    );
    // A superuser cannot hand a backup schedule to a role that may not write server files.
    check(
        &mut db,
        "postgres",
        &format!("INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, owner) \
                  VALUES ('full', '0 3 * * *', 7, '{location}', 'carol')"),
        Refused("42501"),
    );
}

#[test]
fn a_granted_role_may_change_only_its_parameters_and_protections_are_superusers() {
    let Setup {
        cluster, mut db, ..
    } = setup();
    db.batch_execute(
        "GRANT ALTER SYSTEM ON PARAMETER work_mem, shared_preload_libraries, admin_toolkit.audit_ddl TO carol",
    )
    .unwrap();
    let mut carol = connect(&cluster, "carol");
    // Its own parameter: applied as carol, recorded as hers.
    let id: i64 = carol
        .query_one(
            "SELECT admin_toolkit.track_config_change('work_mem', '16MB', 'more sort memory')",
            &[],
        )
        .unwrap()
        .get(0);
    let by: String = db
        .query_one(
            "SELECT changed_by FROM admin_toolkit.configuration_history WHERE config_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(by, "carol");
    // Switching off the toolkit's protections is for superusers, even with the grant.
    let history = count(
        &mut db,
        "SELECT count(*) FROM admin_toolkit.configuration_history",
    );
    for sql in [
        "SELECT admin_toolkit.track_config_change('shared_preload_libraries', '', 'x')",
        "SELECT admin_toolkit.track_config_change('admin_toolkit.audit_ddl', 'off', 'x')",
    ] {
        let err = carol.batch_execute(sql).unwrap_err();
        let e = err.as_db_error().unwrap();
        assert_eq!(e.code().code(), "42501", "{sql}");
        assert!(e.message().contains("only superusers"), "{}", e.message());
    }
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.configuration_history"
        ),
        history
    );
    // A superuser may, with a WARNING naming the consequence, recorded in the audit log.
    let (mut su, notices) = cluster.connect_collecting_notices("postgres");
    su.batch_execute(
        "SELECT admin_toolkit.track_config_change('shared_preload_libraries', 'pg_stat_statements', 'decommission')",
    )
    .unwrap();
    let said = notices.lock().unwrap().join("\n");
    assert!(
        said.contains("switches off") && said.contains("audit"),
        "{said}"
    );
    wait_for("the PROTECTION_DISABLED audit event", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.security_audit_log \
             WHERE operation_type = 'PROTECTION_DISABLED' AND object_name = 'shared_preload_libraries'",
        ) == 1)
            .then_some(())
    });
    // Leave the cluster able to restart with the library.
    db.batch_execute("ALTER SYSTEM RESET shared_preload_libraries")
        .unwrap();
}

#[test]
fn role_hierarchy_refuses_the_toolkit_and_system_schemas() {
    let Setup {
        cluster: _cluster,
        mut db,
        ..
    } = setup();
    for schema in [
        "admin_toolkit",
        "pg_catalog",
        "information_schema",
        "pg_toast",
    ] {
        let err = db
            .query(
                &format!("SELECT * FROM admin_toolkit.setup_role_hierarchy('{schema}')"),
                &[],
            )
            .unwrap_err();
        assert_eq!(
            err.as_db_error().map(|e| e.code().code()),
            Some("22023"),
            "{schema}: {err:?}"
        );
    }
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_roles WHERE rolname = 'app_readwrite'"
        ),
        0,
        "nothing was created"
    );
}

#[test]
fn recovery_planning_names_the_parameter_and_the_unknown_restore_point() {
    let Setup {
        cluster: _cluster,
        mut db,
        ..
    } = setup();
    for (sql, code, words) in [
        (
            "SELECT * FROM admin_toolkit.plan_recovery_to_restore_point('no such point')",
            "42704",
            "no such point",
        ),
        (
            "SELECT * FROM admin_toolkit.plan_recovery_to_restore_point(NULL)",
            "22004",
            "restore_point",
        ),
        (
            "SELECT * FROM admin_toolkit.plan_recovery_to_lsn(NULL)",
            "22004",
            "target_lsn",
        ),
        (
            "SELECT * FROM admin_toolkit.plan_recovery(NULL)",
            "22004",
            "target_time",
        ),
    ] {
        let err = db.batch_execute(sql).unwrap_err();
        let e = err.as_db_error().unwrap();
        assert_eq!(e.code().code(), code, "{sql}: {}", e.message());
        assert!(e.message().contains(words), "{sql}: {}", e.message());
    }
}

#[test]
fn backups_are_refused_while_wal_is_not_archived() {
    let store = ScratchDir::new("admin_toolkit_noarchive_");
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    let location = store.path().join("b").display().to_string();
    let schedule = insert_schedule(
        &mut db,
        &format!("INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
                  VALUES ('full', '0 3 * * *', 7, '{location}') RETURNING schedule_id"),
    );
    let err = db
        .batch_execute(&format!(
            "SELECT admin_toolkit.execute_backup({schedule}, true)"
        ))
        .unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code().code(), "55000");
    assert!(
        e.message().contains("archive_mode is off"),
        "{}",
        e.message()
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin_toolkit.backup_history"),
        0
    );
    assert!(!Path::new(&location).exists());
}

#[test]
fn audit_events_and_read_counts_survive_a_fast_shutdown_right_after_a_burst() {
    let mut cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; CREATE TABLE t (id int); CREATE ROLE reader LOGIN; \
         GRANT SELECT ON t TO reader;",
    )
    .unwrap();
    wait_for("the worker to write the setup's events", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'GRANT'",
        ) == 1)
            .then_some(())
    });
    const BURST: i64 = 1500;
    let burst: String = (0..BURST)
        .map(|i| format!("COMMENT ON TABLE t IS 'burst {i}'; GRANT SELECT ON t TO reader;"))
        .collect();
    db.batch_execute(&burst).unwrap();
    let mut reader = cluster.connect_as("postgres", "reader", "").unwrap();
    for _ in 0..40 {
        reader.batch_execute("SELECT * FROM t").unwrap();
    }
    drop(reader);
    drop(db);
    cluster.restart(); // pg_ctl stop -m fast, at once
    let mut db = cluster.connect("postgres");
    let grants = count(
        &mut db,
        "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'GRANT'",
    );
    assert_eq!(
        grants,
        BURST + 1,
        "every GRANT of the burst was written before the shutdown"
    );
    let reads = count(
        &mut db,
        "SELECT coalesce(sum((additional_info->>'count')::bigint), 0)::bigint FROM admin_toolkit.security_audit_log \
         WHERE operation_type = 'SELECT' AND username = 'reader' AND object_name = 't'",
    );
    assert_eq!(reads, 40, "the read counts were summarised at shutdown");
    assert!(cluster
        .server_log()
        .contains("admin_toolkit worker stopped"));
}
