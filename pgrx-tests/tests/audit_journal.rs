//! The audit journal: events are WAL records, so that a crash (an immediate stop, a backend
//! killed) loses none of those committed, none is written twice, and a standby promoted after
//! a failover writes the old primary's events.

use admin_toolkit_it::{audit_count, count, wait_for, Cluster, ClusterOptions};
use postgres::error::SqlState;

const STRONG: &str = "Corr3ct-Horse-Battery!";
const ROUNDS: usize = 20;
const TABLES_PER_ROUND: usize = 25;
const FAILED_LOGINS_PER_ROUND: usize = 5;

fn audited_cluster() -> Cluster {
    let cluster = Cluster::start_with(ClusterOptions {
        scram: true,
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute(&format!(
        "CREATE EXTENSION admin_toolkit; CREATE ROLE mallory LOGIN PASSWORD '{STRONG}'"
    ))
    .unwrap();
    cluster
}

fn failed_login(cluster: &Cluster) {
    let err = cluster
        .connect_as("postgres", "mallory", "wrong-password")
        .err()
        .expect("a wrong password is refused");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
}

/// Waits until `expected` rows match, then checks that no more come (each exactly once).
fn wait_for_exactly(db: &mut postgres::Client, condition: &str, expected: i64) {
    wait_for(&format!("{expected} audit rows where {condition}"), || {
        (audit_count(db, condition) >= expected).then_some(())
    });
    assert_eq!(audit_count(db, condition), expected, "{condition}");
}

fn no_table_twice(db: &mut postgres::Client) {
    let twice = count(
        db,
        "SELECT count(*) FROM (SELECT object_name FROM admin_toolkit.security_audit_log \
          WHERE operation_type = 'CREATE TABLE' GROUP BY object_name HAVING count(*) > 1) t",
    );
    assert_eq!(twice, 0, "events written twice");
}

#[test]
fn committed_events_and_failed_logins_survive_crashes_each_exactly_once() {
    let mut cluster = audited_cluster();
    for round in 0..ROUNDS {
        let mut db = cluster.connect("postgres");
        for i in 0..TABLES_PER_ROUND {
            db.batch_execute(&format!("CREATE TABLE crash_{round}_{i} (id int)"))
                .unwrap();
        }
        for _ in 0..FAILED_LOGINS_PER_ROUND {
            failed_login(&cluster);
        }
        if round % 2 == 0 {
            cluster.crash_and_restart();
        } else {
            // A backend killed: the postmaster resets shared memory and runs crash recovery.
            let victim = cluster.connect("postgres");
            let pid: i32 = db
                .query_one(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
                     AND pid <> pg_backend_pid() LIMIT 1",
                    &[],
                )
                .unwrap()
                .get(0);
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("kill -9");
            drop(victim);
            wait_for("the server back after crash recovery", || {
                postgres::Client::connect(&cluster.conninfo("postgres"), postgres::NoTls)
                    .ok()
                    .and_then(|mut c| c.batch_execute("SELECT 1").ok())
            });
        }
    }
    let mut db = cluster.connect("postgres");
    let tables = (ROUNDS * TABLES_PER_ROUND) as i64;
    wait_for_exactly(
        &mut db,
        "operation_type = 'CREATE TABLE' AND object_name LIKE 'crash\\_%' AND success",
        tables,
    );
    no_table_twice(&mut db);
    wait_for_exactly(
        &mut db,
        "operation_type = 'LOGIN' AND username = 'mallory' AND NOT success",
        (ROUNDS * FAILED_LOGINS_PER_ROUND) as i64,
    );
    // Every row says where the journal held it; committed DDL has its transaction.
    assert_eq!(
        audit_count(
            &mut db,
            "operation_type = 'CREATE TABLE' AND object_name LIKE 'crash\\_%' \
             AND (wal_lsn IS NULL OR transaction_id IS NULL OR session_username <> 'postgres')"
        ),
        0
    );
    let log = cluster.server_log();
    assert!(
        log.contains("terminated by signal 9"),
        "a backend was killed"
    );
    assert!(
        !log.contains("AUDIT_GAP") && !log.contains("audit queue full"),
        "{log}"
    );
}

#[test]
fn a_standby_promoted_after_a_failover_writes_the_old_primarys_events() {
    let mut primary = audited_cluster();
    let mut db = primary.connect("postgres");
    let standby = Cluster::standby_of(&primary, &[]);
    // The primary's worker is held off writing rows: its events exist only in WAL.
    let mut holder = primary.connect("postgres");
    holder
        .batch_execute(
            "BEGIN; LOCK TABLE admin_toolkit.security_audit_log IN ACCESS EXCLUSIVE MODE",
        )
        .unwrap();
    for i in 0..40 {
        db.batch_execute(&format!("CREATE TABLE failover_{i} (id int)"))
            .unwrap();
    }
    for _ in 0..3 {
        failed_login(&primary);
    }
    let flushed: String = db
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .unwrap()
        .get(0);
    let mut replica = standby.connect("postgres");
    wait_for("the standby to replay the primary's WAL", || {
        replica
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&flushed],
            )
            .unwrap()
            .get::<_, bool>(0)
            .then_some(())
    });
    drop(holder);
    primary.crash(); // the failover
    replica.batch_execute("SELECT pg_promote()").unwrap();
    wait_for_exactly(
        &mut replica,
        "operation_type = 'CREATE TABLE' AND object_name LIKE 'failover\\_%'",
        40,
    );
    wait_for_exactly(
        &mut replica,
        "operation_type = 'LOGIN' AND username = 'mallory' AND NOT success",
        3,
    );
}

#[test]
fn a_burst_larger_than_any_buffer_is_written_in_full() {
    const SENT: i64 = 20_000;
    let cluster = audited_cluster();
    let mut db = cluster.connect("postgres");
    let mut holder = cluster.connect("postgres");
    holder
        .batch_execute(
            "BEGIN; LOCK TABLE admin_toolkit.security_audit_log IN ACCESS EXCLUSIVE MODE",
        )
        .unwrap();
    db.batch_execute(&format!(
        "SELECT admin_toolkit.log_security_event('FLOOD', g::text) FROM generate_series(1, {SENT}) g"
    ))
    .unwrap();
    holder.batch_execute("COMMIT").unwrap();
    wait_for_exactly(&mut db, "operation_type = 'FLOOD'", SENT);
    let distinct = count(
        &mut db,
        "SELECT count(DISTINCT object_name) FROM admin_toolkit.security_audit_log WHERE operation_type = 'FLOOD'",
    );
    assert_eq!(distinct, SENT);
    assert!(!cluster.server_log().contains("audit queue full"));
}

fn problems(db: &mut postgres::Client) -> Vec<(i64, String)> {
    db.query(
        "SELECT audit_id, problem FROM admin_toolkit.verify_audit_log()",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn id_of(db: &mut postgres::Client, table: &str) -> i64 {
    db.query_one(
        "SELECT audit_id FROM admin_toolkit.security_audit_log \
          WHERE operation_type = 'CREATE TABLE' AND object_name = $1",
        &[&table],
    )
    .unwrap()
    .get(0)
}

/// Each kind of tampering is named by verify_audit_log(); undone, the log verifies clean again.
#[test]
fn verify_audit_log_names_each_altered_removed_or_inserted_row() {
    let cluster = audited_cluster();
    let mut db = cluster.connect("postgres");
    for i in 1..=5 {
        db.batch_execute(&format!("CREATE TABLE chained_{i} (id int)"))
            .unwrap();
    }
    wait_for_exactly(&mut db, "object_name LIKE 'chained\\_%'", 5);
    assert_eq!(problems(&mut db), vec![], "an untouched log verifies clean");
    let hashed = audit_count(&mut db, "row_hash IS NULL OR previous_hash IS NULL");
    assert_eq!(hashed, 0, "every row is chained");

    // Altered: the row itself is named; put back, it verifies again.
    let altered = id_of(&mut db, "chained_2");
    db.batch_execute(
        "UPDATE admin_toolkit.security_audit_log SET username = 'someone_else' WHERE object_name = 'chained_2'",
    )
    .unwrap();
    let found = problems(&mut db);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, altered);
    assert!(found[0].1.starts_with("altered"), "{found:?}");
    db.batch_execute(
        "UPDATE admin_toolkit.security_audit_log SET username = 'postgres' WHERE object_name = 'chained_2'",
    )
    .unwrap();
    assert_eq!(problems(&mut db), vec![]);

    // Removed: the row after it names the break; put back, it verifies again.
    let next = id_of(&mut db, "chained_4");
    db.batch_execute(
        "CREATE TEMP TABLE kept AS SELECT * FROM admin_toolkit.security_audit_log WHERE object_name = 'chained_3'; \
         DELETE FROM admin_toolkit.security_audit_log WHERE object_name = 'chained_3'",
    )
    .unwrap();
    let found = problems(&mut db);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, next);
    assert!(found[0].1.contains("chain breaks"), "{found:?}");
    db.batch_execute("INSERT INTO admin_toolkit.security_audit_log SELECT * FROM kept")
        .unwrap();
    assert_eq!(problems(&mut db), vec![]);

    // Inserted: a forged row, even one that copies another row's hashes, is named.
    let forged: i64 = db
        .query_one(
            "INSERT INTO admin_toolkit.security_audit_log (audit_id, username, database_name, operation_type, success, previous_hash, row_hash) \
             SELECT (SELECT max(audit_id) + 1000 FROM admin_toolkit.security_audit_log), 'postgres', 'postgres', 'FORGED', true, previous_hash, row_hash \
               FROM admin_toolkit.security_audit_log WHERE object_name = 'chained_1' \
             RETURNING audit_id",
            &[],
        )
        .unwrap()
        .get(0);
    let found = problems(&mut db);
    assert!(found.iter().any(|(id, _)| *id == forged), "{found:?}");
    db.batch_execute(
        "DELETE FROM admin_toolkit.security_audit_log WHERE operation_type = 'FORGED'",
    )
    .unwrap();
    assert_eq!(problems(&mut db), vec![]);

    // Hashes removed to pass an altered row off as one written before the chain: named.
    let stripped = id_of(&mut db, "chained_1");
    db.batch_execute(
        "CREATE TEMP TABLE first_row AS SELECT * FROM admin_toolkit.security_audit_log WHERE object_name = 'chained_1'; \
         UPDATE admin_toolkit.security_audit_log SET row_hash = NULL, previous_hash = NULL, username = 'nobody' \
          WHERE object_name = 'chained_1'",
    )
    .unwrap();
    let found = problems(&mut db);
    assert!(
        found
            .iter()
            .any(|(id, p)| *id == stripped && p.starts_with("not written")),
        "{found:?}"
    );
    db.batch_execute(
        "DELETE FROM admin_toolkit.security_audit_log WHERE object_name = 'chained_1'; \
         INSERT INTO admin_toolkit.security_audit_log SELECT * FROM first_row",
    )
    .unwrap();
    assert_eq!(problems(&mut db), vec![]);

    // A truncated partition: the chain's head is gone.
    let partition: String = db
        .query_one(
            "SELECT tableoid::regclass::text FROM admin_toolkit.security_audit_log WHERE object_name = 'chained_5'",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute(&format!("TRUNCATE {partition}")).unwrap();
    let found = problems(&mut db);
    assert!(
        found.iter().any(|(_, p)| p.contains("head of the chain")),
        "{found:?}"
    );
}

/// An audit row's operation, object type, schema and object.
type Filed = (String, Option<String>, Option<String>, Option<String>);

/// DDL that names its object through a kind and a name (COMMENT ON, ALTER ... RENAME / OWNER /
/// SET SCHEMA) is filed under that object; under SET ROLE the row names both users.
#[test]
fn ddl_events_name_their_object_and_both_users() {
    let cluster = audited_cluster();
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE TABLE burst (x int); CREATE SCHEMA archive; CREATE ROLE clerk NOLOGIN; \
         GRANT CREATE ON SCHEMA public TO clerk; \
         COMMENT ON TABLE burst IS 'x'; COMMENT ON COLUMN burst.x IS 'y'; \
         ALTER TABLE burst RENAME TO burst_old; ALTER TABLE burst_old OWNER TO clerk; \
         ALTER TABLE burst_old SET SCHEMA archive; COMMENT ON SCHEMA archive IS 'z'",
    )
    .unwrap();
    db.batch_execute("CREATE DATABASE sales").unwrap();
    db.batch_execute("SET ROLE clerk; CREATE TABLE clerks_own (id int); RESET ROLE")
        .unwrap();
    wait_for_exactly(&mut db, "object_name = 'clerks_own'", 1);
    let rows: Vec<Filed> = db
        .query(
            "SELECT operation_type, object_type, schema_name, object_name \
               FROM admin_toolkit.security_audit_log \
              WHERE operation_type IN ('COMMENT', 'ALTER TABLE', 'CREATE DATABASE') ORDER BY audit_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expected = |op: &str, kind: &str, schema: Option<&str>, name: &str| {
        (
            op.to_string(),
            Some(kind.to_string()),
            schema.map(str::to_string),
            Some(name.to_string()),
        )
    };
    assert_eq!(
        rows,
        vec![
            expected("COMMENT", "table", None, "burst"),
            expected("COMMENT", "column", None, "burst.x"),
            expected("ALTER TABLE", "table", None, "burst"),
            expected("ALTER TABLE", "table", None, "burst_old"),
            expected("ALTER TABLE", "table", None, "burst_old"),
            expected("COMMENT", "schema", None, "archive"),
            expected("CREATE DATABASE", "database", None, "sales"),
        ]
    );
    let (user, session_user): (String, Option<String>) = {
        let r = db
            .query_one(
                "SELECT username, session_username FROM admin_toolkit.security_audit_log WHERE object_name = 'clerks_own'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (user.as_str(), session_user.as_deref()),
        ("clerk", Some("postgres"))
    );
}

/// Without a slot (max_replication_slots = 0), WAL removed at checkpoints before the worker
/// read it is named by an AUDIT_GAP event, and the worker goes on after it.
#[test]
fn wal_removed_before_it_was_read_is_recorded_as_a_gap() {
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            "max_replication_slots = 0".into(),
            "max_wal_senders = 0".into(),
            "admin_toolkit.collection_interval = 1".into(),
        ],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit; CREATE TABLE gap_1 (id int)")
        .unwrap();
    wait_for_exactly(&mut db, "object_name = 'gap_1'", 1);
    // The worker reads the next event and waits for the lock to write it; the one after is
    // in WAL that checkpoints remove meanwhile.
    let mut holder = cluster.connect("postgres");
    holder
        .batch_execute(
            "BEGIN; LOCK TABLE admin_toolkit.security_audit_log IN ACCESS EXCLUSIVE MODE",
        )
        .unwrap();
    db.batch_execute("CREATE TABLE gap_2 (id int)").unwrap();
    wait_for("the worker to wait for the lock with gap_2 read", || {
        (count(
            &mut db,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'admin_toolkit worker' \
              AND wait_event_type = 'Lock'",
        ) == 1)
            .then_some(())
    });
    db.batch_execute("CREATE TABLE gap_3 (id int)").unwrap();
    for _ in 0..4 {
        db.batch_execute("SELECT pg_switch_wal(); CREATE TABLE filler AS SELECT 1 AS x; DROP TABLE filler; CHECKPOINT")
            .unwrap();
    }
    holder.batch_execute("COMMIT").unwrap();
    wait_for_exactly(&mut db, "operation_type = 'AUDIT_GAP'", 1);
    db.batch_execute("CREATE TABLE gap_4 (id int)").unwrap();
    wait_for_exactly(&mut db, "object_name = 'gap_4'", 1);
    assert_eq!(audit_count(&mut db, "object_name = 'gap_2'"), 1);
    assert_eq!(
        audit_count(&mut db, "object_name = 'gap_3'"),
        0,
        "lost with its WAL"
    );
}
