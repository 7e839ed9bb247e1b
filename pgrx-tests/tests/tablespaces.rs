//! Clusters with tablespaces: a full and an incremental backup take every tablespace;
//! `admin-toolkit restore --tablespace-mapping` puts each in a new place and the copy recovers
//! to a time with exactly the source's rows then; without a mapping, the original locations
//! (in use) are refused; a drill of the chain passes and writes nothing into production's
//! tablespaces, and a drill is refused once a tablespace was created after its backup.

use admin_toolkit_it::fixtures::{output_text as text, run_backup, BackupSchedule};
use admin_toolkit_it::{
    archive_now, drill_settings, run_as_postgres_in, run_cli_as_postgres, wait_until_promoted,
    Cluster, ClusterOptions, ScratchDir,
};
use postgres::Client;
use std::collections::BTreeSet;
use std::path::Path;

fn backup(db: &mut Client, location: &str, kind: &str) -> (i64, String) {
    let schedule = BackupSchedule::new(kind, location).insert(db);
    let id = run_backup(db, schedule);
    let r = db
        .query_one(
            "SELECT status, backup_path, error_message, metadata->>'tablespaces' \
               FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(
        r.get::<_, String>(0),
        "completed",
        "{:?}",
        r.get::<_, Option<String>>(2)
    );
    assert_eq!(r.get::<_, Option<String>>(3).as_deref(), Some("2"));
    (id, r.get(1))
}

/// What each table holds, as one digest per table (rows in key order, read through its index).
fn contents(postgres: &mut Client, other: &mut Client) -> Vec<(String, i64, String)> {
    let digest = |db: &mut Client, table: &str| -> (String, i64, String) {
        db.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            .unwrap();
        let r = db
            .query_one(
                &format!(
                    "SELECT count(*), md5(string_agg(t::text, ',')) FROM (SELECT * FROM {table} ORDER BY id) t"
                ),
                &[],
            )
            .unwrap();
        (table.to_string(), r.get(0), r.get(1))
    };
    vec![
        digest(postgres, "a"),
        digest(postgres, "plain"),
        digest(other, "b"),
    ]
}

/// Runs a drill to `target` and waits: its status, reason and checks.
fn run_drill(db: &mut Client, target: &str) -> (String, Option<String>, String) {
    let id: i64 = db
        .query_one(
            "SELECT admin_toolkit.run_restore_drill(NULL, $1::text::timestamptz, true)",
            &[&target],
        )
        .unwrap()
        .get(0);
    let r = db
        .query_one(
            "SELECT status, failure_reason, checks::text FROM admin_toolkit.restore_drills WHERE drill_id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// The files under a directory, recursively.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                found.insert(entry.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_cluster_with_two_tablespaces_is_backed_up_restored_elsewhere_and_drilled() {
    let store = ScratchDir::new("admin_toolkit_tablespaces_");
    let mut options = ClusterOptions::archiving_to(&store.path().join("wal"));
    options
        .settings
        .extend(drill_settings(&store.path().join("drills")));
    let cluster = Cluster::start_with(options);
    let (ts1, ts2) = (store.join("ts1"), store.join("ts2"));
    for dir in [&ts1, &ts2] {
        let out = run_as_postgres_in(Path::new("/usr/bin"), &[], "mkdir", &[dir.as_str()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut db = cluster.connect("postgres");
    // One statement at a time: CREATE TABLESPACE and CREATE DATABASE refuse a transaction.
    for statement in [
        "CREATE EXTENSION admin_toolkit".to_string(),
        format!("CREATE TABLESPACE ts1 LOCATION '{ts1}'"),
        format!("CREATE TABLESPACE ts2 LOCATION '{ts2}'"),
        "CREATE TABLE a (id int PRIMARY KEY USING INDEX TABLESPACE ts2, v text) TABLESPACE ts1"
            .into(),
        "CREATE TABLE plain (id int PRIMARY KEY USING INDEX TABLESPACE ts1, v text)".into(),
        "CREATE UNLOGGED TABLE scratch_rows (id int) TABLESPACE ts1".into(),
        "INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 20000) g".into(),
        "INSERT INTO plain SELECT g, md5(g::text) FROM generate_series(1, 1000) g".into(),
        "INSERT INTO scratch_rows SELECT generate_series(1, 100)".into(),
        "CREATE DATABASE other TABLESPACE ts2".into(),
    ] {
        db.batch_execute(&statement).unwrap();
    }
    let mut other = cluster.connect("other");
    other
        .batch_execute(
            "CREATE TABLE b (id int PRIMARY KEY, v text);
             INSERT INTO b SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    let location = store.join("backups");
    let (_full, _) = backup(&mut db, &location, "full");
    db.batch_execute(
        "UPDATE a SET v = 'changed' WHERE id % 7 = 0; INSERT INTO a VALUES (20001, 'x')",
    )
    .unwrap();
    other
        .batch_execute("DELETE FROM b WHERE id > 4000")
        .unwrap();
    let (_incremental, incremental_path) = backup(&mut db, &location, "incremental");
    db.batch_execute("UPDATE a SET v = 'after the incremental' WHERE id < 100")
        .unwrap();
    other
        .batch_execute("INSERT INTO b VALUES (9001, 'after the incremental')")
        .unwrap();
    let expected = contents(&mut db, &mut other);
    let target: String = db
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    db.batch_execute("DELETE FROM a; DELETE FROM plain")
        .unwrap();
    other.batch_execute("DELETE FROM b").unwrap();
    archive_now(&mut db);

    let archive = store.join("wal");
    // Without a mapping, the tablespaces would go back where production's are: refused.
    let refused_into = store.join("refused");
    let out = run_cli_as_postgres(&[
        "restore",
        "--backup",
        &incremental_path,
        "--target-dir",
        &refused_into,
        "--archive",
        &archive,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not empty") && text(&out).contains(&ts1),
        "{}",
        text(&out)
    );
    assert!(
        !Path::new(&refused_into).exists()
            || std::fs::read_dir(&refused_into).unwrap().next().is_none()
    );

    let restored = ScratchDir::new("admin_toolkit_tablespaces_restored_");
    let (new1, new2) = (restored.join("new_ts1"), restored.join("new_ts2"));
    let data = restored.join("data");
    let out = run_cli_as_postgres(&[
        "restore",
        "--backup",
        &incremental_path,
        "--target-dir",
        &data,
        "--archive",
        &archive,
        "--target-time",
        &target,
        &format!("--tablespace-mapping={ts1}={new1}"),
        "--tablespace-mapping",
        &format!("{ts2}={new2}"),
    ]);
    assert!(out.status.success(), "restore failed: {}", text(&out));
    assert!(
        text(&out).contains(&format!("restored into \"{new1}\"")),
        "{}",
        text(&out)
    );
    let copy = Cluster::from_data_dir(restored, &["archive_mode = off".into()]);
    let mut copy_db = copy.connect("postgres");
    wait_until_promoted(&mut copy_db);
    let mut copy_other = copy.connect("other");
    assert_eq!(contents(&mut copy_db, &mut copy_other), expected);
    let locations: Vec<String> = copy_db
        .query(
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname IN ('ts1', 'ts2') ORDER BY spcname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(locations, [new1.clone(), new2.clone()]);
    // The unlogged table comes back empty, as after a crash; its init fork came with the backup.
    assert_eq!(
        copy_db
            .query_one("SELECT count(*) FROM scratch_rows", &[])
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    drop((copy_db, copy_other));
    drop(copy);

    // A drill restores the chain into its scratch directory and writes nothing into ts1/ts2.
    let before = (files_under(Path::new(&ts1)), files_under(Path::new(&ts2)));
    let drill = run_drill(&mut db, &target);
    assert_eq!(drill.0, "passed", "{:?}", drill.1);
    let checks: serde_json::Value = serde_json::from_str(&drill.2).unwrap();
    let rows = |database: &str, table: &str| {
        checks["databases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["database"] == database)
            .map(|d| d["row_counts"][table].as_i64())
    };
    assert_eq!(rows("postgres", "public.a"), Some(Some(20001)), "{checks}");
    assert_eq!(rows("other", "public.b"), Some(Some(4001)), "{checks}");
    assert_eq!(
        (files_under(Path::new(&ts1)), files_under(Path::new(&ts2))),
        before,
        "the drill wrote into production's tablespaces"
    );
    // A tablespace created since the backup: replaying its creation would link the drill's
    // server to its live location, so the drill refuses before restoring anything.
    let ts3 = store.join("ts3");
    let out = run_as_postgres_in(Path::new("/usr/bin"), &[], "mkdir", &[ts3.as_str()]);
    assert!(out.status.success(), "{}", text(&out));
    db.batch_execute(&format!("CREATE TABLESPACE ts3 LOCATION '{ts3}'"))
        .unwrap();
    archive_now(&mut db);
    let (status, reason, _) = run_drill(&mut db, &target);
    assert_eq!(status, "failed");
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("was created after backup") && reason.contains(&ts3),
        "{reason}"
    );
}
