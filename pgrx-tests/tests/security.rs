//! Security against a real server with scram-sha-256 on 127.0.0.1: events captured by the hooks,
//! detection, the enforced password policy, privileges, role and RLS helpers.

use admin_toolkit_it::{
    assert_secrets_nowhere, audit_count, count, secure_cluster, wait_for, wait_for_audit,
};
use postgres::error::SqlState;

const STRONG: &str = "Corr3ct-Horse-Battery!";

#[test]
fn failed_logins_are_captured_and_detected() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!("CREATE ROLE mallory LOGIN PASSWORD '{STRONG}'"))
        .unwrap();
    for _ in 0..7 {
        let err = cluster
            .connect_as("postgres", "mallory", "wrong-password")
            .err()
            .expect("login must fail");
        assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
    }
    cluster
        .connect_as("postgres", "mallory", STRONG)
        .expect("right password logs in");
    // The worker writes events in batches: wait for the last login (after the failures in
    // the queue), so that every one of them is in.
    wait_for_audit(
        &mut db,
        "operation_type = 'LOGIN' AND username = 'mallory' AND success",
        1,
    );
    assert_eq!(
        audit_count(
            &mut db,
            "operation_type = 'LOGIN' AND username = 'mallory' AND NOT success"
        ),
        7
    );
    assert_eq!(
        audit_count(
            &mut db,
            "operation_type = 'LOGIN' AND username = 'mallory' AND success"
        ),
        1
    );
    let row = db
        .query_one(
            "SELECT alert_severity, event_count, details->>'client_ips' FROM admin_toolkit.detect_suspicious_activity() \
             WHERE alert_type = 'failed_login_attempts' AND username = 'mallory'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "warning");
    assert_eq!(row.get::<_, i64>(1), 7);
    assert!(row.get::<_, String>(2).contains("127.0.0.1"));
    assert_eq!(
        audit_count(
            &mut db,
            "operation_type = 'LOGIN' AND username = 'mallory' AND client_ip = '127.0.0.1' \
                              AND application_name = 'admin_toolkit_it'"
        ),
        8
    );
}

#[test]
fn grants_are_captured_even_rolled_back_or_failed_and_detected() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE TABLE ledger (id int); CREATE ROLE clerk NOLOGIN")
        .unwrap();
    for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        db.batch_execute(&format!("GRANT {privilege} ON ledger TO clerk"))
            .unwrap();
    }
    db.batch_execute("BEGIN; GRANT TRUNCATE ON ledger TO clerk; ROLLBACK;")
        .unwrap();
    let err = db
        .batch_execute("GRANT SELECT ON no_such_table TO clerk")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));

    wait_for_audit(&mut db, "operation_type = 'GRANT'", 6);
    assert_eq!(
        audit_count(
            &mut db,
            "operation_type = 'GRANT' AND query_text LIKE 'GRANT TRUNCATE%' AND success"
        ),
        1,
        "a GRANT inside a rolled-back transaction is still in the log"
    );
    let failed = db
        .query_one(
            "SELECT object_name, error_message FROM admin_toolkit.security_audit_log \
             WHERE operation_type = 'GRANT' AND NOT success",
            &[],
        )
        .unwrap();
    assert_eq!(failed.get::<_, String>(0), "no_such_table");
    assert!(failed.get::<_, String>(1).contains("does not exist"));
    assert_eq!(
        audit_count(
            &mut db,
            "operation_type = 'GRANT' AND object_type = 'table' AND object_name = 'ledger'"
        ),
        5
    );

    let detected: i64 = db
        .query_one(
            "SELECT event_count FROM admin_toolkit.detect_suspicious_activity() \
             WHERE alert_type = 'privilege_escalation' AND username = 'postgres'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        detected, 5,
        "four GRANTs and the rolled-back one succeeded; the failed one is not counted"
    );
}

#[test]
fn password_policy_is_enforced_and_passwords_never_stored_or_logged() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    let weak = "weakpass1";
    let err = db
        .batch_execute(&format!("CREATE ROLE alice LOGIN PASSWORD '{weak}'"))
        .unwrap_err();
    let err = err.as_db_error().unwrap();
    assert_eq!(err.code(), &SqlState::INVALID_PARAMETER_VALUE);
    let detail = err.detail().unwrap();
    for rule in ["at least 12 characters", "uppercase", "special character"] {
        assert!(detail.contains(rule), "{detail}");
    }
    assert!(!detail.contains(weak) && !err.message().contains(weak));

    db.batch_execute(&format!("CREATE ROLE alice LOGIN PASSWORD '{STRONG}'"))
        .unwrap();
    cluster
        .connect_as("postgres", "alice", STRONG)
        .expect("alice logs in with the accepted password");
    let err = db
        .batch_execute(&format!("ALTER ROLE alice PASSWORD 'Alice-{STRONG}'"))
        .unwrap_err();
    assert!(err
        .as_db_error()
        .unwrap()
        .detail()
        .unwrap()
        .contains("must not contain username"));

    // A pre-hashed password cannot be checked: by default a superuser's is accepted (psql's
    // \password sends such a verifier), anyone else's refused; `refuse` refuses it for everyone.
    let md5 = "md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let already_hashed = |err: postgres::Error| {
        let db_error = err.as_db_error().unwrap().clone();
        assert_eq!(db_error.code(), &SqlState::INVALID_PARAMETER_VALUE);
        assert!(
            db_error.message().contains("already hashed"),
            "{db_error:?}"
        );
        assert!(
            db_error.hint().unwrap().contains("plain text"),
            "{db_error:?}"
        );
    };
    db.batch_execute("SET admin_toolkit.password_prehashed = refuse")
        .unwrap();
    already_hashed(
        db.batch_execute(&format!("ALTER ROLE alice PASSWORD '{md5}'"))
            .unwrap_err(),
    );
    db.batch_execute("RESET admin_toolkit.password_prehashed")
        .unwrap();
    db.batch_execute(&format!("ALTER ROLE alice PASSWORD '{md5}'"))
        .unwrap();
    db.batch_execute(&format!(
        "CREATE ROLE hr LOGIN CREATEROLE PASSWORD '{STRONG}'"
    ))
    .unwrap();
    let mut hr = cluster.connect_as("postgres", "hr", STRONG).unwrap();
    already_hashed(
        hr.batch_execute(&format!("CREATE ROLE temp_worker PASSWORD '{md5}'"))
            .unwrap_err(),
    );

    wait_for_audit(
        &mut db,
        "operation_type IN ('CREATE ROLE', 'ALTER ROLE')",
        7,
    );
    assert_secrets_nowhere(&cluster, &mut db, &[weak, STRONG, md5]);
    // The weak password's CREATE ROLE and the pre-hashed one's by hr.
    assert_eq!(
        audit_count(&mut db, "operation_type = 'CREATE ROLE' AND NOT success AND query_text LIKE '%PASSWORD ''********''%'"),
        2
    );
    assert!(
        cluster.server_log().contains("PASSWORD '********'"),
        "log_statement = all logs the redacted statement"
    );
}

#[test]
fn ordinary_roles_cannot_read_the_audit_log() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!("CREATE ROLE bob LOGIN PASSWORD '{STRONG}'"))
        .unwrap();
    let mut bob = cluster.connect_as("postgres", "bob", STRONG).unwrap();
    for sql in [
        "SELECT * FROM admin_toolkit.security_audit_log",
        "SELECT * FROM admin_toolkit.detect_suspicious_activity()",
        "SELECT admin_toolkit.log_security_event('FORGED')",
        "SELECT * FROM admin_toolkit.setup_role_hierarchy()",
    ] {
        let err = bob.batch_execute(sql).unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}");
    }
}

#[test]
fn application_events_carry_the_real_identity_and_survive_rollback() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!(
        "CREATE ROLE shop LOGIN PASSWORD '{STRONG}'; \
         GRANT EXECUTE ON FUNCTION admin_toolkit.log_security_event(text, text, text, boolean, text, jsonb) TO shop"
    ))
    .unwrap();
    let mut shop = cluster.connect_as("postgres", "shop", STRONG).unwrap();
    shop.batch_execute(
        "BEGIN; \
         SELECT admin_toolkit.log_security_event('TOKEN_REJECTED', 'checkout', 'endpoint', false, 'expired', '{\"username\": \"root\"}'); \
         ROLLBACK;",
    )
    .unwrap();
    wait_for_audit(&mut db, "operation_type = 'TOKEN_REJECTED'", 1);
    let row = db
        .query_one(
            "SELECT username, database_name, client_ip::text, success, error_message, additional_info->>'source' \
             FROM admin_toolkit.security_audit_log WHERE operation_type = 'TOKEN_REJECTED'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "shop");
    assert_eq!(row.get::<_, String>(1), "postgres");
    assert_eq!(row.get::<_, String>(2), "127.0.0.1/32");
    assert!(!row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "expired");
    assert_eq!(row.get::<_, String>(5), "application");
}

#[test]
fn table_reads_are_summarised_and_excessive_access_detected() {
    let cluster = secure_cluster(&["admin_toolkit.read_count_threshold = 20"]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!(
        "CREATE TABLE payroll (id int); CREATE ROLE eve LOGIN PASSWORD '{STRONG}'; GRANT SELECT ON payroll TO eve"
    ))
    .unwrap();
    let mut eve = cluster.connect_as("postgres", "eve", STRONG).unwrap();
    for _ in 0..25 {
        eve.batch_execute("SELECT * FROM payroll").unwrap();
    }
    wait_for("25 reads summarised", || {
        (count(
            &mut db,
            "SELECT coalesce(sum((additional_info->>'count')::bigint), 0)::bigint FROM admin_toolkit.security_audit_log \
             WHERE operation_type = 'SELECT' AND username = 'eve' AND object_name = 'payroll' AND schema_name = 'public'",
        ) >= 25)
            .then_some(())
    });
    let reads: i64 = db
        .query_one(
            "SELECT event_count FROM admin_toolkit.detect_suspicious_activity() \
             WHERE alert_type = 'excessive_data_access' AND username = 'eve'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(reads, 25);
}

#[test]
fn tenant_isolation_fails_closed_and_quotes_identifiers() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!(
        "CREATE TABLE \"Odd; Orders\" (\"Tenant Id\" int, item text);
         INSERT INTO \"Odd; Orders\" VALUES (1, 'a'), (1, 'b'), (2, 'c');
         CREATE ROLE tenant_app LOGIN PASSWORD '{STRONG}';
         GRANT SELECT ON \"Odd; Orders\" TO tenant_app;"
    ))
    .unwrap();
    db.batch_execute(
        "SELECT admin_toolkit.enable_tenant_isolation('\"Odd; Orders\"', 'Tenant Id', 'app.tenant_id')",
    )
    .unwrap();
    let mut app = cluster
        .connect_as("postgres", "tenant_app", STRONG)
        .unwrap();
    let visible = |app: &mut postgres::Client| count(app, "SELECT count(*) FROM \"Odd; Orders\"");
    assert_eq!(visible(&mut app), 0, "unset setting: no rows");
    app.batch_execute("SET app.tenant_id = '1'").unwrap();
    assert_eq!(visible(&mut app), 2);
    app.batch_execute("RESET app.tenant_id").unwrap();
    assert_eq!(visible(&mut app), 0, "reset setting: no rows");

    let err = db
        .batch_execute("SELECT admin_toolkit.enable_tenant_isolation('\"Odd; Orders\"', 'Tenant Id', 'x; DROP TABLE y')")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    let err = db
        .batch_execute("SELECT admin_toolkit.enable_tenant_isolation('\"Odd; Orders\"', 'nope', 'app.tenant_id')")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_COLUMN));
    // Covered now: enabled, forced, with a policy.
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.rls_coverage() WHERE table_name = 'Odd; Orders'"
        ),
        0
    );
    db.batch_execute("CREATE TABLE open_table (id int)")
        .unwrap();
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin_toolkit.rls_coverage() WHERE table_name = 'open_table' AND NOT rls_enabled"),
        1
    );
}

#[test]
fn role_hierarchy_is_nologin_and_idempotent() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE SCHEMA \"Sales Data\"; CREATE TABLE \"Sales Data\".deals (id int)")
        .unwrap();
    let created = count(
        &mut db,
        "SELECT count(*) FROM admin_toolkit.setup_role_hierarchy('Sales Data') WHERE step = 'create role'",
    );
    assert_eq!(created, 7);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin_toolkit.setup_role_hierarchy('Sales Data') WHERE step IN ('create role', 'grant role')"),
        0
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM pg_authid WHERE rolname IN ('app_roles', 'app_readonly', 'app_readwrite', \
               'app_admin', 'data_analyst', 'data_engineer', 'backup_operator') AND NOT rolcanlogin AND rolpassword IS NULL"),
        7
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_roles WHERE rolname = 'alice_analyst'"
        ),
        0
    );
    let can_read: bool = db
        .query_one(
            "SELECT has_table_privilege('data_analyst', '\"Sales Data\".deals', 'SELECT')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(can_read);
    let err = db
        .batch_execute("SELECT * FROM admin_toolkit.setup_role_hierarchy('no such schema')")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_SCHEMA_NAME));
}

/// Issue #15: sessions in every database of the cluster are audited, with their database.
#[test]
fn events_from_every_database_reach_the_audit_log_with_their_database() {
    let cluster = secure_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE DATABASE sales").unwrap();
    db.batch_execute(&format!(
        "CREATE ROLE clerk LOGIN PASSWORD '{STRONG}'; GRANT CREATE ON DATABASE sales TO clerk"
    ))
    .unwrap();
    // A login and DDL in the second database, where the extension is not created.
    let mut sales = cluster.connect_as("sales", "clerk", STRONG).unwrap();
    sales
        .batch_execute("CREATE SCHEMA ledger; CREATE TABLE ledger.invoices (id int)")
        .unwrap();
    let failed = cluster.connect_as("sales", "clerk", "wrong-password");
    assert!(failed.is_err());
    wait_for_audit(
        &mut db,
        "database_name = 'sales' AND object_name = 'invoices' AND username = 'clerk'",
        1,
    );
    assert_eq!(
        audit_count(
            &mut db,
            "database_name = 'sales' AND operation_type = 'LOGIN' AND username = 'clerk' AND success"
        ),
        1
    );
    wait_for_audit(
        &mut db,
        "database_name = 'sales' AND operation_type = 'LOGIN' AND username = 'clerk' AND NOT success",
        1,
    );
    let row = db
        .query_one(
            "SELECT schema_name, object_type FROM admin_toolkit.security_audit_log \
             WHERE database_name = 'sales' AND object_name = 'invoices'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("ledger"));
    assert_eq!(
        audit_count(
            &mut db,
            "database_name = 'postgres' AND object_name = 'invoices'"
        ),
        0,
        "recorded with the database it happened in"
    );
}

/// Switched off, the hooks capture nothing and the policy lets a weak password in; the switches
/// cannot change in a session or for a role or database; switched on again for the server, the
/// same cluster captures, so the "nothing" is the switches' doing. Events are written in the order captured: once an application event
/// logged after the rest is in the log, whatever was captured before it is too.
#[test]
fn switched_off_nothing_is_captured_and_weak_passwords_pass() {
    let cluster = secure_cluster(&[
        "admin_toolkit.audit_ddl = off",
        "admin_toolkit.audit_logins = off",
        "admin_toolkit.password_policy = off",
        "admin_toolkit.audit_reads = off",
    ]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE TABLE quiet_t (id int); GRANT SELECT ON quiet_t TO PUBLIC; \
         CREATE ROLE weakling LOGIN PASSWORD 'abc'",
    )
    .expect("the policy is off: a weak password is accepted");
    assert!(cluster.connect_as("postgres", "weakling", "wrong").is_err());
    let mut weakling = cluster
        .connect_as("postgres", "weakling", "abc")
        .expect("its password works");
    weakling.batch_execute("SELECT * FROM quiet_t").unwrap();
    db.batch_execute("SELECT admin_toolkit.log_security_event('MARKER_OFF')")
        .unwrap();
    wait_for_audit(&mut db, "operation_type = 'MARKER_OFF'", 1);
    assert_eq!(
        audit_count(
            &mut db,
            "object_name = 'quiet_t' OR username = 'weakling' OR query_text LIKE '%weakling%'"
        ),
        0
    );
    // The switches change server-wide only: not in a session, not for a role or a database,
    // so no one turns auditing off (or on) for itself alone.
    for change in [
        "SET admin_toolkit.audit_ddl = on",
        "SET admin_toolkit.audit_logins = off",
        "ALTER ROLE postgres SET admin_toolkit.audit_reads = off",
        "ALTER DATABASE postgres SET admin_toolkit.audit_ddl = off",
    ] {
        let refused = db.batch_execute(change).unwrap_err();
        assert_eq!(
            refused.code(),
            Some(&postgres::error::SqlState::CANT_CHANGE_RUNTIME_PARAM),
            "{change}: {refused}"
        );
    }
    // On again for the server: the same statements are captured, and a read counted
    // (summarised with whatever reads were counted before it: none of quiet_t).
    db.batch_execute("ALTER SYSTEM SET admin_toolkit.audit_ddl = on")
        .unwrap();
    db.batch_execute("ALTER SYSTEM SET admin_toolkit.audit_reads = on")
        .unwrap();
    cluster.reload_until("admin_toolkit.audit_reads", Some("on"));
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE TABLE loud_t (id int); GRANT SELECT ON loud_t TO PUBLIC; SELECT * FROM loud_t",
    )
    .unwrap();
    wait_for_audit(&mut db, "object_name = 'loud_t'", 2);
    wait_for_audit(
        &mut db,
        "object_name = 'loud_t' AND operation_type = 'SELECT'",
        1,
    );
    assert_eq!(audit_count(&mut db, "object_name = 'quiet_t'"), 0);
}
