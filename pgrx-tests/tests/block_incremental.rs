//! Block-level incrementals against a real server: after a full backup, incrementals read only
//! the blocks WAL names (the backup's record says so), read whole what WAL cannot vouch for
//! (relations truncated, rewritten, created anew, a new database), compare files whole when
//! the block maps are gone, and a chain of full + three incrementals recovered to a named
//! point equals the source there: every table's rows, every page's checksum (pg_checksums),
//! and amcheck where the server has it.

use admin_toolkit_it::fixtures::{completed_backup, output_text as text, BackupSchedule};
use admin_toolkit_it::{
    archive_now, count, run_as_postgres, run_cli_as_postgres, wait_until_promoted, Cluster,
    ClusterOptions, ScratchDir,
};
use postgres::Client;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Backs up with schedule `schedule_id`; the backup's path and recorded facts.
fn backup(db: &mut Client, schedule_id: i32) -> (String, Value) {
    let done = completed_backup(db, schedule_id);
    (done.path, done.metadata)
}

/// Every user table of a database but `moved`: its row count and a digest of its rows.
/// `moved` is never read on the source after its update: a read would set hint bits, whose
/// WAL (with checksums on) names its pages again and would mend a page a backup missed.
fn digests(db: &mut Client) -> BTreeMap<String, (i64, String)> {
    let tables: Vec<String> = db
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace AND c.relname <> 'moved'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let r = db
                .query_one(
                    &format!("SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {t} x"),
                    &[],
                )
                .unwrap();
            (t, (r.get(0), r.get(1)))
        })
        .collect()
}

fn tracking(facts: &Value) -> &Value {
    &facts["change_tracking"]
}

#[test]
fn block_incrementals_read_what_changed_and_restore_exactly() {
    let store = ScratchDir::new("admin_toolkit_blocks_");
    let archive = store.path().join("wal");
    let location = store.path().join("backups").display().to_string();
    // No replication slots: the audit journal's slot would keep the WAL whose recycling the
    // fallback case below needs.
    let mut options = ClusterOptions::archiving_to(&archive);
    options.settings.push("max_replication_slots = 0".into());
    options.settings.push("max_wal_senders = 0".into());
    let mut cluster = Cluster::start_with(options);
    let data_dir = cluster.data_dir();
    cluster.restart_with(|| {
        let out = run_as_postgres("pg_checksums", &["--enable", "-D", &data_dir]);
        assert!(
            out.status.success() || text(&out).contains("already enabled"),
            "{}",
            text(&out)
        );
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit;
         CREATE TABLE hot (id int PRIMARY KEY, v int, pad text);
         INSERT INTO hot SELECT g, 0, repeat('x', 200) FROM generate_series(1, 200000) g;
         CREATE TABLE shrinks (id int, pad text);
         INSERT INTO shrinks SELECT g, repeat('s', 200) FROM generate_series(1, 5000) g;
         CREATE TABLE rewritten (id int, pad text);
         INSERT INTO rewritten SELECT g, repeat('r', 100) FROM generate_series(1, 5000) g;
         CREATE TABLE clustered (id int, pad text);
         CREATE INDEX clustered_id ON clustered (id);
         INSERT INTO clustered SELECT (g * 7919) % 5000, 'c' FROM generate_series(1, 5000) g;
         CREATE UNLOGGED TABLE made_logged (id int);
         INSERT INTO made_logged SELECT generate_series(1, 3000);
         CREATE TABLE emptied (id int);
         INSERT INTO emptied SELECT generate_series(1, 3000);
         CREATE TABLE moved (id int, pad text);
         INSERT INTO moved SELECT g, repeat('m', 200) FROM generate_series(1, 20000) g;
         CREATE TABLE quiet (id int);
         INSERT INTO quiet SELECT generate_series(1, 3000);",
    )
    .unwrap();
    db.batch_execute("VACUUM").unwrap();
    db.batch_execute("CREATE DATABASE second").unwrap();
    let mut second = cluster.connect("second");
    // Files unchanged for over a second before a backup are referenced by their times, as
    // most of a real cluster's are: what is left to read is what changed.
    std::thread::sleep(Duration::from_millis(1100));
    let full = BackupSchedule::new("full", &location).insert(&mut db);
    let incremental = BackupSchedule::new("incremental", &location).insert(&mut db);
    let (_, full_facts) = backup(&mut db, full);
    assert!(tracking(&full_facts).is_null(), "{full_facts}");

    // A contiguous 1 % of hot, and every kind of change WAL block references cannot vouch for.
    for change in [
        "UPDATE hot SET v = 1 WHERE id BETWEEN 1000 AND 1600",
        // Its new version goes to the table's last pages, 3 MB away: the old page, in a
        // chunk nothing else changes, is named only as the record's second block.
        "UPDATE moved SET pad = repeat('n', 200) WHERE id = 7200",
        "DELETE FROM shrinks WHERE id > 1000",
        "VACUUM shrinks", // truncates its file
        // and grows it past its old size again: only the truncation says to read it whole
        "INSERT INTO shrinks SELECT g, repeat('g', 200) FROM generate_series(1, 6000) g",
        "VACUUM FULL rewritten",
        "CLUSTER clustered USING clustered_id",
        "ALTER TABLE made_logged SET LOGGED",
        "TRUNCATE emptied",
        "INSERT INTO emptied SELECT generate_series(1, 10)",
    ] {
        db.batch_execute(change).unwrap();
    }
    second
        .batch_execute("CREATE TABLE s (id int); INSERT INTO s SELECT generate_series(1, 2000)")
        .unwrap();
    let (_, first) = backup(&mut db, incremental);
    let first_tracking = tracking(&first);
    assert_eq!(first_tracking["source"], "wal", "{first}");
    assert!(
        first_tracking["files_by_block"].as_u64().unwrap() > 0,
        "{first}"
    );
    assert!(
        first_tracking["read_whole"].as_u64().unwrap() > 0,
        "{first}"
    );
    let hot_bytes = count(&mut db, "SELECT pg_relation_size('hot')") as u64;
    let read = first["bytes_read"].as_u64().unwrap();
    // hot changed in a few 1 MiB chunks: it alone would be more than everything read.
    assert!(
        read < hot_bytes,
        "the incremental read {read} bytes; hot alone is {hot_bytes}: {first}"
    );

    // More changes in another part of hot, a dropped table, a new database.
    db.batch_execute(
        "UPDATE hot SET v = 2 WHERE id BETWEEN 40000 AND 40500;
         UPDATE hot SET v = 3 WHERE id % 997 = 0;
         DROP TABLE rewritten;
         INSERT INTO shrinks SELECT g, 'again' FROM generate_series(1, 100) g;",
    )
    .unwrap();
    second
        .batch_execute("CREATE TABLE s2 AS SELECT generate_series(1, 500) AS id")
        .unwrap();
    db.batch_execute("CREATE DATABASE third").unwrap();
    let mut third = cluster.connect("third");
    third
        .batch_execute("CREATE TABLE t3 AS SELECT generate_series(1, 700) AS id")
        .unwrap();
    let (_, second_facts) = backup(&mut db, incremental);
    assert_eq!(tracking(&second_facts)["source"], "wal", "{second_facts}");

    // Without the block maps (and their segments recycled), the next incremental compares
    // changed files whole, and says why.
    let maps = Path::new(&data_dir).join("pg_wal/admin_toolkit_blocks");
    for map in std::fs::read_dir(&maps).unwrap() {
        std::fs::remove_file(map.unwrap().path()).unwrap();
    }
    db.batch_execute("UPDATE hot SET v = 6 WHERE id BETWEEN 20000 AND 20100")
        .unwrap();
    let (last_path, last) = backup(&mut db, incremental);
    assert_eq!(tracking(&last)["source"], "file comparison", "{last}");
    assert!(
        tracking(&last)["reason"]
            .as_str()
            .unwrap()
            .contains("no block map"),
        "{last}"
    );
    db.batch_execute("UPDATE hot SET v = 4 WHERE id = 7")
        .unwrap();
    let expected = digests(&mut db);
    let expected_second = digests(&mut second);
    let expected_third = digests(&mut third);
    db.batch_execute("SELECT pg_create_restore_point('after_chain')")
        .unwrap();
    db.batch_execute("UPDATE hot SET v = 5 WHERE id < 100")
        .unwrap();
    archive_now(&mut db);

    let restored = ScratchDir::new("admin_toolkit_blocks_restored_");
    let target = restored.join("data");
    let archive_text = archive.display().to_string();
    let out = run_cli_as_postgres(&[
        "restore",
        "--backup",
        &last_path,
        "--target-dir",
        &target,
        "--archive",
        &archive_text,
        "--target-name",
        "after_chain",
    ]);
    assert!(out.status.success(), "restore failed: {}", text(&out));
    let mut copy = Cluster::from_data_dir(restored, &["archive_mode = off".into()]);
    let mut copy_db = copy.connect("postgres");
    wait_until_promoted(&mut copy_db);
    assert_eq!(digests(&mut copy_db), expected);
    assert_eq!(
        count(&mut copy_db, "SELECT count(*) FROM moved"),
        20000,
        "the updated row's old version is gone"
    );
    assert_eq!(
        count(
            &mut copy_db,
            "SELECT count(*) FROM moved WHERE id = 7200 AND pad LIKE 'n%'"
        ),
        1
    );
    assert_eq!(digests(&mut copy.connect("second")), expected_second);
    assert_eq!(digests(&mut copy.connect("third")), expected_third);
    let amcheck = count(
        &mut copy_db,
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'",
    );
    if amcheck > 0 {
        let out = run_as_postgres(
            "pg_amcheck",
            &[
                "--all",
                "--install-missing",
                "--heapallindexed",
                "-h",
                &copy.scratch().path().display().to_string(),
                "-p",
                &copy.port.to_string(),
                "-U",
                "postgres",
            ],
        );
        assert!(out.status.success(), "pg_amcheck: {}", text(&out));
    }
    drop(copy_db);
    copy.stop_within(Duration::from_secs(60));
    let out = run_as_postgres("pg_checksums", &["--check", "-D", &copy.data_dir()]);
    assert!(out.status.success(), "pg_checksums: {}", text(&out));
    assert!(Path::new(&copy.data_dir())
        .join("global/pg_control")
        .exists());
    drop(store);
}
