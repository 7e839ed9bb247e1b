//! Credentials against a real server with scram-sha-256 on 127.0.0.1: password history and
//! reuse interval, lockout after failed logins (concurrent, across databases, across a restart),
//! exemptions, expiry bounds, psql's `\password`.

use admin_toolkit_core::credentials::{history_hash, SecretKind};
use admin_toolkit_it::{
    assert_secrets_nowhere, audit_count, bindir, count, secure_cluster, wait_for, wait_for_audit,
    Cluster,
};
use postgres::error::SqlState;
use std::io::Write;
use std::process::{Command, Stdio};

const P1: &str = "First-Passw0rd-One!";
const P2: &str = "Second-Passw0rd-Two!";
const P3: &str = "Third-Passw0rd-Three!";
const STRONG: &str = "Corr3ct-Horse-Battery!";

fn sql_state(err: &postgres::Error) -> SqlState {
    err.as_db_error()
        .map(|e| e.code().clone())
        .unwrap_or_else(|| panic!("not a server error: {err}"))
}

fn reused(err: postgres::Error) {
    let e = err.as_db_error().expect("a server error").clone();
    assert_eq!(e.code(), &SqlState::INVALID_PARAMETER_VALUE, "{e:?}");
    assert!(e.message().contains("used this password before"), "{e:?}");
}

#[test]
fn reused_passwords_are_refused_within_history_and_interval_and_only_salted_hashes_are_kept() {
    let mut cluster = secure_cluster(&[
        "admin_toolkit.password_reuse_history = 2",
        "admin_toolkit.password_reuse_interval = 0",
    ]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!("CREATE ROLE carol LOGIN PASSWORD '{P1}'"))
        .unwrap();
    db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P2}'"))
        .unwrap();
    // P1 is one of the last two.
    reused(
        db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P1}'"))
            .unwrap_err(),
    );
    // A change that rolls back is not remembered, nor one rolled back to a savepoint.
    db.batch_execute(&format!(
        "BEGIN; ALTER ROLE carol PASSWORD '{P3}'; ROLLBACK"
    ))
    .unwrap();
    db.batch_execute(&format!(
        "BEGIN; SAVEPOINT s; ALTER ROLE carol PASSWORD '{P3}'; ROLLBACK TO SAVEPOINT s; COMMIT"
    ))
    .unwrap();
    db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P3}'"))
        .unwrap();
    // Now the last two are P2 and P3: P1 may come back, P2 may not.
    reused(
        db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P2}'"))
            .unwrap_err(),
    );
    db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P1}'"))
        .unwrap();
    cluster
        .connect_as("postgres", "carol", P1)
        .expect("carol logs in with the password set last");
    wait_for_audit(
        &mut db,
        "operation_type = 'PASSWORD_REUSE_REFUSED' AND object_name = 'carol' AND NOT success",
        2,
    );

    // The worker persisted the entries still in force (the last two: P3, then P1), salted.
    wait_for("2 persisted history entries", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.password_history h JOIN pg_roles r ON r.oid = h.role_oid WHERE r.rolname = 'carol'",
        ) == 2)
            .then_some(())
    });
    let rows = db
        .query(
            "SELECT secret_kind, salt, hash FROM admin_toolkit.password_history ORDER BY set_at",
            &[],
        )
        .unwrap();
    let entries: Vec<(String, Vec<u8>, Vec<u8>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let matches = |secret: &str| {
        entries
            .iter()
            .filter(|(_, salt, hash)| {
                history_hash(SecretKind::Plain, secret.as_bytes(), salt).as_slice() == hash
            })
            .count()
    };
    assert_eq!((matches(P1), matches(P2), matches(P3)), (1, 0, 1));
    assert!(entries
        .iter()
        .all(|(kind, salt, _)| kind == "password" && salt.len() == 16 && salt != &[0; 16]));
    assert!(entries.iter().all(|(_, _, hash)| {
        hash.as_slice() != history_hash(SecretKind::Plain, P1.as_bytes(), &[]).as_slice()
            && hash.as_slice() != history_hash(SecretKind::Plain, P3.as_bytes(), &[]).as_slice()
    }));

    // Interval: any password set within the last day is refused, whatever the history.
    db.batch_execute("ALTER SYSTEM SET admin_toolkit.password_reuse_history = 0")
        .unwrap();
    db.batch_execute("ALTER SYSTEM SET admin_toolkit.password_reuse_interval = 1")
        .unwrap();
    cluster.reload_until("admin_toolkit.password_reuse_interval", Some("1"));
    reused(
        db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P3}'"))
            .unwrap_err(),
    );
    // Two days later (the persisted entries aged, loaded back at the restart), it is accepted.
    db.batch_execute(
        "UPDATE admin_toolkit.password_history SET set_at = set_at - interval '2 days'",
    )
    .unwrap();
    drop(db);
    cluster.restart();
    let mut db = cluster.connect("postgres");
    wait_for("the credentials loaded after the restart", || {
        cluster
            .server_log()
            .contains("credentials loaded (0 roles with failed logins or a lock, 2 password history entries)")
            .then_some(())
    });
    db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P3}'"))
        .unwrap();
    reused(
        db.batch_execute(&format!("ALTER ROLE carol PASSWORD '{P3}'"))
            .unwrap_err(),
    );

    // A renamed role keeps its history; a dropped one's goes with it.
    db.batch_execute("ALTER ROLE carol RENAME TO caroline")
        .unwrap();
    // (A rename clears an MD5 password only; SCRAM verifiers stay.)
    reused(
        db.batch_execute(&format!("ALTER ROLE caroline PASSWORD '{P3}'"))
            .unwrap_err(),
    );
    db.batch_execute("DROP ROLE caroline").unwrap();
    wait_for("the dropped role's history gone", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.password_history",
        ) == 0)
            .then_some(())
    });

    // No password anywhere: not in a table, not in the server log.
    assert_secrets_nowhere(&cluster, &mut db, &[P1, P2, P3]);
    assert!(
        cluster.our_failures().is_empty(),
        "{:?}",
        cluster.our_failures()
    );
}

/// The error a wrong password gets, to compare the locked role's with.
fn login_error(cluster: &Cluster, db: &str, user: &str, password: &str) -> (SqlState, String) {
    let e = login_error_fields(cluster, db, user, password);
    (e.code().clone(), e.message().to_string())
}

/// Every field of a failed login's error (message, SQLSTATE, and where in the server it came
/// from), to tell whether two refusals can be told apart.
fn login_error_fields(
    cluster: &Cluster,
    db: &str,
    user: &str,
    password: &str,
) -> postgres::error::DbError {
    let err = cluster
        .connect_as(db, user, password)
        .err()
        .unwrap_or_else(|| panic!("{user} logged in with {password}"));
    err.as_db_error().expect("a server error").clone()
}

fn same_refusal(a: &postgres::error::DbError, b: &postgres::error::DbError) -> bool {
    (
        a.severity(),
        a.code(),
        a.message(),
        a.detail(),
        a.hint(),
        a.file(),
        a.line(),
        a.routine(),
    ) == (
        b.severity(),
        b.code(),
        b.message(),
        b.detail(),
        b.hint(),
        b.file(),
        b.line(),
        b.routine(),
    )
}

/// Logs in with psql, no password given and none to prompt for (`-w`): psql hangs up when the
/// server asks for one, which is no failed login.
fn psql_without_password(cluster: &Cluster, user: &str) {
    let out = Command::new(bindir().join("psql"))
        .args([
            "-X",
            "-w",
            "-d",
            &format!(
                "host=127.0.0.1 port={} user={user} dbname=postgres",
                cluster.port
            ),
            "-c",
            "SELECT 1",
        ])
        .env_remove("PGPASSWORD")
        .output()
        .expect("psql");
    assert!(!out.status.success());
}

fn lockout_row(db: &mut postgres::Client, role: &str) -> Option<(i32, bool)> {
    db.query_opt(
        "SELECT failed_logins, locked FROM admin_toolkit.lockout_states() WHERE role_name = $1",
        &[&role],
    )
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

#[test]
fn fifty_concurrent_wrong_passwords_lock_after_exactly_five_until_unlocked_across_a_restart() {
    let mut cluster = secure_cluster(&[
        "admin_toolkit.max_auth_failures = 5",
        "admin_toolkit.auth_failure_window = '1h'",
        "admin_toolkit.lockout_duration = 0",
        "admin_toolkit.lockout_exempt_roles = 'frank'",
    ]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE DATABASE second").unwrap();
    for role in ["dave", "erin", "frank"] {
        db.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{STRONG}'"))
            .unwrap();
    }
    db.batch_execute(&format!(
        "CREATE ROLE boss SUPERUSER LOGIN PASSWORD '{STRONG}'"
    ))
    .unwrap();
    let wrong = login_error(&cluster, "postgres", "dave", "wrong-password");
    assert_eq!(wrong.0, SqlState::INVALID_PASSWORD);
    // That was the first; 49 more at once, half of them to the other database.
    std::thread::scope(|s| {
        for i in 0..49 {
            let cluster = &cluster;
            s.spawn(move || {
                let database = if i % 2 == 0 { "second" } else { "postgres" };
                let (code, _) = login_error(cluster, database, "dave", "wrong-password");
                assert_eq!(code, SqlState::INVALID_PASSWORD);
            });
        }
    });
    assert_eq!(lockout_row(&mut db, "dave"), Some((5, true)));
    // The right password now gets what a wrong one gets: at once (the hook refuses it) ...
    assert_eq!(login_error(&cluster, "postgres", "dave", STRONG), wrong);
    assert_eq!(
        login_error(&cluster, "second", "dave", STRONG).1,
        wrong.1.clone()
    );
    // ... and, once the worker has locked it in the catalog (its password expired), exactly:
    // PostgreSQL's own check refuses it, every field of the error the same.
    wait_for("dave locked in the catalog", || {
        (count(
            &mut db,
            "SELECT count(*) FROM pg_authid WHERE rolname = 'dave' AND rolvaliduntil = '-infinity'",
        ) == 1)
            .then_some(())
    });
    let wrong_fields = login_error_fields(&cluster, "postgres", "dave", "wrong-password");
    let right_fields = login_error_fields(&cluster, "postgres", "dave", STRONG);
    assert!(
        same_refusal(&wrong_fields, &right_fields),
        "{wrong_fields:?} vs {right_fields:?}"
    );
    assert_eq!(lockout_row(&mut db, "dave"), Some((5, true)));
    wait_for_audit(
        &mut db,
        "operation_type = 'ROLE_LOCKED' AND object_name = 'dave'",
        1,
    );
    wait_for_audit(
        &mut db,
        "operation_type = 'LOGIN' AND username = 'dave' AND error_message = 'role is locked'",
        2,
    );
    assert_eq!(
        audit_count(
            &mut db,
            "operation_type = 'ROLE_LOCKED' AND object_name = 'dave'"
        ),
        1
    );
    let detected = count(
        &mut db,
        "SELECT count(*) FROM admin_toolkit.detect_suspicious_activity() WHERE alert_type = 'role_locked' AND username = 'dave'",
    );
    assert_eq!(detected, 1);
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.locked_roles WHERE role_name = 'dave'"
        ),
        1
    );

    // A client that hangs up when asked for a password (psql prompting) is no failure.
    for _ in 0..3 {
        psql_without_password(&cluster, "erin");
    }
    assert_eq!(lockout_row(&mut db, "erin"), None);
    // Counted across databases: four failures here, the fifth in the other database.
    for _ in 0..4 {
        login_error(&cluster, "postgres", "erin", "wrong-password");
    }
    assert_eq!(lockout_row(&mut db, "erin"), Some((4, false)));
    login_error(&cluster, "second", "erin", "wrong-password");
    assert_eq!(lockout_row(&mut db, "erin"), Some((5, true)));

    // Exempt roles and superusers (by default) are never locked.
    for role in ["frank", "boss"] {
        for _ in 0..8 {
            login_error(&cluster, "postgres", role, "wrong-password");
        }
        cluster
            .connect_as("postgres", role, STRONG)
            .unwrap_or_else(|e| panic!("{role} must not be locked: {e}"));
        assert_eq!(lockout_row(&mut db, role), None);
    }

    // The lock survives a restart (persisted by the worker, loaded back before logins go on).
    wait_for("dave's lock persisted", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.role_lockouts l JOIN pg_roles r ON r.oid = l.role_oid \
              WHERE r.rolname = 'dave' AND l.locked_at IS NOT NULL AND l.locked_until IS NULL AND l.failed_logins = 5",
        ) == 1)
            .then_some(())
    });
    drop(db);
    cluster.restart();
    let after_restart = login_error_fields(&cluster, "postgres", "dave", STRONG);
    assert!(
        same_refusal(&wrong_fields, &after_restart),
        "{after_restart:?}"
    );
    let mut db = cluster.connect("postgres");
    assert_eq!(lockout_row(&mut db, "dave"), Some((5, true)));

    // unlock_role lifts it (superusers only), and says whether there was a lock.
    let unlocked: bool = db
        .query_one("SELECT admin_toolkit.unlock_role('dave')", &[])
        .unwrap()
        .get(0);
    assert!(unlocked);
    // A superuser's unlock gives the role its VALID UNTIL back with its own commit.
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_authid WHERE rolname = 'dave' AND rolvaliduntil IS NULL"
        ),
        1
    );
    cluster
        .connect_as("postgres", "dave", STRONG)
        .expect("dave logs in once unlocked");
    assert_eq!(lockout_row(&mut db, "dave"), None);
    let again: bool = db
        .query_one("SELECT admin_toolkit.unlock_role('dave')", &[])
        .unwrap()
        .get(0);
    assert!(!again);
    wait_for_audit(
        &mut db,
        "operation_type = 'ROLE_UNLOCKED' AND object_name = 'dave'",
        2,
    );
    let err = db
        .batch_execute("SELECT admin_toolkit.unlock_role('nobody')")
        .unwrap_err();
    assert_eq!(sql_state(&err), SqlState::UNDEFINED_OBJECT);
    let mut erin = cluster.connect_as("postgres", "frank", STRONG).unwrap();
    let err = erin
        .batch_execute("SELECT admin_toolkit.unlock_role('erin')")
        .unwrap_err();
    assert_eq!(sql_state(&err), SqlState::INSUFFICIENT_PRIVILEGE);

    // A successful login clears the count.
    login_error(&cluster, "postgres", "dave", "wrong-password");
    assert_eq!(lockout_row(&mut db, "dave"), Some((1, false)));
    cluster.connect_as("postgres", "dave", STRONG).unwrap();
    assert_eq!(lockout_row(&mut db, "dave"), None);

    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin_toolkit.locked_roles"),
        1,
        "erin is still locked"
    );
    // A VALID UNTIL set while locked is kept and replaced again; DROP EXTENSION gives it back.
    let erin_locked =
        "SELECT count(*) FROM pg_authid WHERE rolname = 'erin' AND rolvaliduntil = '-infinity'";
    wait_for("erin locked in the catalog", || {
        (count(&mut db, erin_locked) == 1).then_some(())
    });
    db.batch_execute("ALTER ROLE erin VALID UNTIL '2031-01-01 00:00:00+00'")
        .unwrap();
    wait_for("erin locked in the catalog again", || {
        (count(&mut db, erin_locked) == 1).then_some(())
    });
    assert!(login_error(&cluster, "postgres", "erin", STRONG).0 == SqlState::INVALID_PASSWORD);
    db.batch_execute("DROP EXTENSION admin_toolkit").unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_authid WHERE rolname = 'erin' AND rolvaliduntil = '2031-01-01 00:00:00+00'"
        ),
        1
    );
    cluster
        .connect_as("postgres", "erin", STRONG)
        .expect("erin's lock went with the extension");
    assert!(
        cluster.our_failures().is_empty(),
        "{:?}",
        cluster.our_failures()
    );
    cluster.assert_no_crash();
}

/// Runs psql's `\password <role>` with `password` typed twice, as the postgres superuser.
fn psql_password(cluster: &Cluster, settings: &str, role: &str, password: &str) -> (bool, String) {
    let mut child = Command::new(bindir().join("psql"))
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &cluster.conninfo("postgres"),
            "-c",
            settings,
            "-c",
            &format!("\\password {role}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn psql_password_and_expiry_bounds() {
    let cluster = secure_cluster(&["admin_toolkit.password_reuse_history = 3"]);
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!("CREATE ROLE gina LOGIN PASSWORD '{STRONG}'"))
        .unwrap();
    // \password sends a SCRAM verifier: a superuser's is accepted by default.
    let (ok, stderr) = psql_password(&cluster, "SELECT 1", "gina", P1);
    assert!(ok, "{stderr}");
    cluster
        .connect_as("postgres", "gina", P1)
        .expect("the password set by \\password works");
    // With the refusing setting it is refused, saying why and what to do.
    let (ok, stderr) = psql_password(
        &cluster,
        "SET admin_toolkit.password_prehashed = refuse",
        "gina",
        P2,
    );
    assert!(!ok);
    assert!(stderr.contains("already hashed"), "{stderr}");
    assert!(stderr.contains("plain text"), "{stderr}");
    // A verifier identical to one set before is reuse.
    let verifier: String = db
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'gina'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"));
    db.batch_execute(&format!("ALTER ROLE gina PASSWORD '{P2}'"))
        .unwrap();
    reused(
        db.batch_execute(&format!("ALTER ROLE gina PASSWORD '{verifier}'"))
            .unwrap_err(),
    );

    // password_valid_max: a password needs a VALID UNTIL within the bound.
    db.batch_execute("SET admin_toolkit.password_valid_max = 30")
        .unwrap();
    let err = db
        .batch_execute(&format!("CREATE ROLE hank LOGIN PASSWORD '{STRONG}'"))
        .unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code(), &SqlState::INVALID_PARAMETER_VALUE);
    assert!(e.message().contains("must expire within 30 days"), "{e:?}");
    assert!(e.hint().unwrap().contains("VALID UNTIL"), "{e:?}");
    let err = db
        .batch_execute(&format!(
            "CREATE ROLE hank LOGIN PASSWORD '{STRONG}' VALID UNTIL 'infinity'"
        ))
        .unwrap_err();
    assert_eq!(sql_state(&err), SqlState::INVALID_PARAMETER_VALUE);
    let until: String = db
        .query_one("SELECT (now() + interval '10 days')::text", &[])
        .unwrap()
        .get(0);
    db.batch_execute(&format!(
        "CREATE ROLE hank LOGIN PASSWORD '{STRONG}' VALID UNTIL '{until}'"
    ))
    .unwrap();
    // ALTER ROLE keeps the role's VALID UNTIL: a new password within the bound is accepted.
    db.batch_execute(&format!("ALTER ROLE hank PASSWORD '{P3}'"))
        .unwrap();
    // Without a bound kept, refused.
    let err = db
        .batch_execute(&format!("ALTER ROLE gina PASSWORD '{P3}'"))
        .unwrap_err();
    assert_eq!(sql_state(&err), SqlState::INVALID_PARAMETER_VALUE);
    // VALID UNTIL alone cannot stretch a password past the bound either.
    let err = db
        .batch_execute("ALTER ROLE hank VALID UNTIL 'infinity'")
        .unwrap_err();
    assert_eq!(sql_state(&err), SqlState::INVALID_PARAMETER_VALUE);
    db.batch_execute(&format!("ALTER ROLE hank VALID UNTIL '{until}'"))
        .unwrap();
    assert!(
        cluster.our_failures().is_empty(),
        "{:?}",
        cluster.our_failures()
    );
}
