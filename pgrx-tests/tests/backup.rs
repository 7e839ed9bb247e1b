//! Base backups against a real server with archiving on: full and incremental backups that
//! verify, corruption named by verify_backup, failures recorded with their reason, bad input
//! refused before anything is written, retention that deletes exactly what it says.

use admin_toolkit_core::backup::store::BackupStore;
use admin_toolkit_it::fixtures::{run_backup as backup, BackupSchedule};
use admin_toolkit_it::{count, wait_for, Cluster, ClusterOptions, ScratchDir};
use postgres::Client;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

struct Setup {
    cluster: Cluster,
    db: Client,
    store: ScratchDir,
}

fn setup() -> Setup {
    let store = ScratchDir::new("admin_toolkit_backup_");
    let cluster = Cluster::start_with(ClusterOptions::archiving_to(&store.path().join("wal")));
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; \
         CREATE TABLE items (id int PRIMARY KEY, body text); \
         INSERT INTO items SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g; \
         CHECKPOINT;",
    )
    .unwrap();
    Setup { cluster, db, store }
}

fn schedule(db: &mut Client, kind: &str, location: &str, level: i32) -> i32 {
    BackupSchedule {
        compression_level: level,
        ..BackupSchedule::new(kind, location)
    }
    .insert(db)
}

struct Outcome {
    status: String,
    error: Option<String>,
    size: Option<i64>,
    path: String,
    kind: String,
}

fn outcome(db: &mut Client, backup_id: i64) -> Outcome {
    let r = db
        .query_one(
            "SELECT status, error_message, backup_size_bytes, backup_path, backup_type FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&backup_id],
        )
        .unwrap();
    Outcome {
        status: r.get(0),
        error: r.get(1),
        size: r.get(2),
        path: r.get(3),
        kind: r.get(4),
    }
}

fn verify(db: &mut Client, backup_id: i64) -> Vec<(String, String, String)> {
    db.query(
        "SELECT * FROM admin_toolkit.verify_backup($1)",
        &[&backup_id],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn all_ok(rows: &[(String, String, String)]) -> bool {
    !rows.is_empty() && rows.iter().all(|r| r.1 == "OK")
}

#[test]
fn full_and_incremental_backups_verify_and_corruption_is_named() {
    let Setup {
        cluster: _cluster,
        mut db,
        store,
    } = setup();
    let location = store.path().join("backups").display().to_string();
    let full_schedule = schedule(&mut db, "full", &location, 3);
    let incr_schedule = schedule(&mut db, "incremental", &location, 3);

    // An audit row the backup's record can point to.
    db.batch_execute("SELECT admin_toolkit.log_security_event('BEFORE_BACKUP')")
        .unwrap();
    admin_toolkit_it::wait_for("the event in the audit log", || {
        (admin_toolkit_it::audit_count(&mut db, "operation_type = 'BEFORE_BACKUP'") == 1)
            .then_some(())
    });
    let full = backup(&mut db, full_schedule);
    let f = outcome(&mut db, full);
    assert_eq!(f.status, "completed", "{:?}", f.error);
    assert!(Path::new(&f.path).join("backup.manifest").is_file());
    let row = db
        .query_one(
            "SELECT start_lsn < end_lsn, end_time > start_time, (metadata->>'timeline')::int, \
                    (metadata->>'original_bytes')::bigint, metadata->>'start_wal_file' \
             FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&full],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i32>(2), 1);
    assert!(
        row.get::<_, i64>(3) > 30_000_000,
        "the whole data directory is read"
    );
    assert!(f.size.unwrap() < row.get::<_, i64>(3), "compressed");
    // the segment holding the backup's start is in the archive (pg_backup_stop waited for it)
    let start_wal: String = row.get(4);
    assert!(store
        .path()
        .join("wal")
        .join(format!("{start_wal}.zst"))
        .exists());
    let checks = verify(&mut db, full);
    assert!(all_ok(&checks), "{checks:?}");
    // The audit chain's head when the backup started is recorded with it (and in its manifest).
    let anchored: i64 = db
        .query_one(
            "SELECT count(*) FROM admin_toolkit.backup_history b JOIN admin_toolkit.security_audit_log l \
                 ON l.audit_id = (b.metadata->'audit_chain_head'->>'audit_id')::bigint \
                AND encode(l.row_hash, 'hex') = b.metadata->'audit_chain_head'->>'hash' \
              WHERE b.backup_id = $1",
            &[&full],
        )
        .unwrap()
        .get(0);
    assert_eq!(anchored, 1, "the audit chain's head is recorded");

    db.batch_execute("UPDATE items SET body = 'changed' WHERE id <= 100; CHECKPOINT")
        .unwrap();
    let incr = backup(&mut db, incr_schedule);
    let i = outcome(&mut db, incr);
    assert_eq!(
        (i.status.as_str(), i.kind.as_str()),
        ("completed", "incremental"),
        "{:?}",
        i.error
    );
    assert!(
        i.size.unwrap() * 5 < f.size.unwrap(),
        "incremental {} bytes vs full {} bytes",
        i.size.unwrap(),
        f.size.unwrap()
    );
    let chain: String = db
        .query_one(
            "SELECT metadata->>'chain' FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&incr],
        )
        .unwrap()
        .get(0);
    assert_eq!(chain, format!("[{full}]"));
    assert!(all_ok(&verify(&mut db, incr)));

    // corrupt one byte of a chunk the incremental references in the full backup's pack
    let manifest = BackupStore::open(&i.path, &Default::default())
        .and_then(|s| s.load_manifest(&Default::default(), &Default::default()))
        .unwrap();
    let (file, chunk) = manifest
        .files
        .iter()
        .find_map(|f| {
            f.chunks
                .iter()
                .find(|c| c.link == 1 && c.stored_len > 100)
                .map(|c| (f.path.clone(), c.clone()))
        })
        .expect("a referenced chunk");
    let pack = Path::new(&f.path).join("data.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[(chunk.offset + chunk.stored_len / 2) as usize] ^= 0x5a;
    std::fs::write(&pack, &bytes).unwrap();
    for id in [full, incr] {
        let rows = verify(&mut db, id);
        let bad: Vec<_> = rows.iter().filter(|r| r.1 == "ERROR").collect();
        assert_eq!(bad.len(), 1, "{rows:?}");
        assert_eq!(bad[0].0, format!("file {file}"));
    }
}

#[test]
fn failures_are_recorded_with_their_reason_and_bad_input_writes_nothing() {
    let Setup {
        cluster: _cluster,
        mut db,
        store,
    } = setup();
    // a directory the server (postgres OS user) cannot write: owned by root
    let locked = store.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&locked, Some(0), Some(0)).unwrap();
    }
    let unwritable = schedule(&mut db, "full", &format!("{}/sub", locked.display()), 1);
    let id = backup(&mut db, unwritable);
    let o = outcome(&mut db, id);
    assert_eq!(o.status, "failed");
    assert!(
        o.error.as_deref().unwrap_or("").contains("cannot create"),
        "{:?}",
        o.error
    );

    let s3 = schedule(&mut db, "full", "s3://bucket/pg/", 1);
    let id = backup(&mut db, s3);
    let o = outcome(&mut db, id);
    assert_eq!(o.status, "failed");
    let error = o.error.unwrap_or_default();
    assert!(error.contains("no S3 credentials"), "{error}");
    // No job is left behind (the worker's facts job of its first round may still be ending:
    // wait for it, a leftover backup job would never go).
    wait_for("no admin_toolkit job left", || {
        (count(
            &mut db,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'admin_toolkit job'",
        ) == 0)
            .then_some(())
    });

    let rows_before = count(&mut db, "SELECT count(*) FROM admin_toolkit.backup_history");
    let data_dir = _cluster.data_dir();
    // A relative path and `..` are refused when the schedule is written (22023).
    for bad in [
        "backups/here".to_string(),
        format!("/nonexistent/..{data_dir}/b"),
    ] {
        let err = db
            .execute(
                "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
                 VALUES ('full', '0 3 * * *', 7, $1)",
                &[&bad],
            )
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "22023", "{bad}: {err}");
    }
    let inside = schedule(&mut db, "full", &format!("{data_dir}/backups"), 1);
    // The same place, hidden behind a symbolic link.
    let link = store.path().join("link");
    std::os::unix::fs::symlink(&data_dir, &link).unwrap();
    let linked = schedule(&mut db, "full", &format!("{}/backups", link.display()), 1);
    let encrypted = schedule(
        &mut db,
        "full",
        &store.path().join("enc").display().to_string(),
        1,
    );
    db.execute("UPDATE admin_toolkit.backup_schedules SET encryption_key_id = 'kms-1' WHERE schedule_id = $1", &[&encrypted])
        .unwrap();
    let inactive = schedule(
        &mut db,
        "full",
        &store.path().join("x").display().to_string(),
        1,
    );
    db.execute(
        "UPDATE admin_toolkit.backup_schedules SET is_active = false WHERE schedule_id = $1",
        &[&inactive],
    )
    .unwrap();
    for (sql, code, words) in [
        (
            format!("SELECT admin_toolkit.execute_backup({inside})"),
            "22023",
            "data directory",
        ),
        (
            format!("SELECT admin_toolkit.execute_backup({linked})"),
            "22023",
            "data directory",
        ),
        (
            format!("SELECT admin_toolkit.execute_backup({encrypted})"),
            "22023",
            "encryption key \"kms-1\"",
        ),
        (
            format!("SELECT admin_toolkit.execute_backup({inactive})"),
            "42704",
            "not found or inactive",
        ),
        (
            "SELECT admin_toolkit.execute_backup(424242)".to_string(),
            "42704",
            "Schedule 424242 not found or inactive",
        ),
        (
            "SELECT admin_toolkit.execute_backup(NULL)".to_string(),
            "22004",
            "p_schedule_id",
        ),
        (
            "SELECT admin_toolkit.verify_backup(424242)".to_string(),
            "42704",
            "does not exist",
        ),
    ] {
        let err = db.batch_execute(&sql).unwrap_err();
        let e = err.as_db_error().unwrap();
        assert_eq!(e.code().code(), code, "{sql}: {}", e.message());
        assert!(e.message().contains(words), "{sql}: {}", e.message());
    }
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin_toolkit.backup_history"),
        rows_before
    );
    assert!(!Path::new(&data_dir).join("backups").exists());
    assert!(!Path::new(&data_dir).join("b").exists());
    assert!(!store.path().join("enc").exists());

    // PUBLIC cannot take backups or verify them
    db.batch_execute("CREATE ROLE someone LOGIN").unwrap();
    let mut other = _cluster.connect_as("postgres", "someone", "").unwrap();
    for f in [
        "execute_backup(1)",
        "verify_backup(1)",
        "cleanup_old_backups()",
    ] {
        let err = other
            .batch_execute(&format!("SELECT admin_toolkit.{f}"))
            .unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "42501", "{f}");
    }
}

#[test]
fn a_cancelled_backup_is_cleaned_up_and_one_schedule_runs_one_backup_at_a_time() {
    let Setup {
        cluster: _cluster,
        mut db,
        store,
    } = setup();
    let location = store.path().join("slow").display().to_string();
    // The archive stops taking WAL: the backup copies, then waits for its last segment to be
    // archived (up to admin_toolkit.backup_archive_wait), and is still running whatever the
    // machine's speed when it is cancelled.
    let wal = store.path().join("wal");
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o500)).unwrap();
    let slow = schedule(&mut db, "full", &location, 1);
    let running: i64 = db
        .query_one("SELECT admin_toolkit.execute_backup($1)", &[&slow])
        .unwrap()
        .get(0);
    assert_eq!(outcome(&mut db, running).status, "running");
    let second = backup(&mut db, slow);
    let o = outcome(&mut db, second);
    assert_eq!(o.status, "failed");
    assert!(o.error.unwrap().contains("already running"));
    let pid: i32 = db
        .query_one(
            "SELECT (metadata->>'pid')::int FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&running],
        )
        .unwrap()
        .get(0);
    wait_for("the copy to start", || {
        (count(&mut db, &format!("SELECT count(*) FROM admin_toolkit.backup_history WHERE backup_id = {running} AND start_lsn IS NOT NULL")) == 1)
            .then_some(())
    });
    db.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    let status = wait_for("the cancelled backup recorded", || {
        let o = outcome(&mut db, running);
        (o.status != "running").then_some(o)
    });
    assert_eq!(status.status, "cancelled", "{:?}", status.error);
    assert!(!Path::new(&status.path).exists(), "partial files removed");
    // the server is not left in backup mode: another backup of the schedule works
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o700)).unwrap();
    let again = backup(&mut db, slow);
    assert_eq!(
        outcome(&mut db, again).status,
        "completed",
        "{:?}",
        outcome(&mut db, again).error
    );
}

fn cleanup(db: &mut Client) -> Vec<i64> {
    db.query(
        "SELECT deleted_backup_id FROM admin_toolkit.cleanup_old_backups() ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn cleanup_deletes_exactly_what_retention_says_and_nothing_a_backup_or_restore_point_needs() {
    let Setup {
        cluster: _cluster,
        mut db,
        store,
    } = setup();
    let location = store.path().join("backups").display().to_string();
    let full_schedule = schedule(&mut db, "full", &location, 1);
    let incr_schedule = schedule(&mut db, "incremental", &location, 1);
    let take = |db: &mut Client, s: i32| {
        db.batch_execute("INSERT INTO items SELECT g, 'x' FROM generate_series(1000001 + (random() * 1e6)::int, 1000100 + (random() * 1e6)::int) g ON CONFLICT DO NOTHING; SELECT pg_switch_wal()").unwrap();
        let id = backup(db, s);
        assert_eq!(outcome(db, id).status, "completed");
        id
    };
    let a = take(&mut db, full_schedule);
    let b = take(&mut db, incr_schedule);
    let c = take(&mut db, full_schedule);
    let d = take(&mut db, incr_schedule);
    // a, b, c are past the 7 days of retention; d is recent
    db.execute(
        "UPDATE admin_toolkit.backup_history SET start_time = start_time - interval '30 days', end_time = end_time - interval '30 days' \
         WHERE backup_id = ANY($1)",
        &[&vec![a, b, c]],
    )
    .unwrap();
    let wal_dir = store.path().join("wal");
    let wal_before: Vec<String> = archived(&wal_dir);
    let files_of = |db: &mut Client, ids: &[i64]| -> Vec<(String, bool)> {
        ids.iter()
            .map(|&id| {
                let o = outcome(db, id);
                (o.status, Path::new(&o.path).exists())
            })
            .collect()
    };
    let kept = vec![("completed".to_string(), true); 2];

    // A rollback deletes nothing: the rows stay completed (the deletion job removes only rows
    // marked 'deleting') and the files stay, here and still after the incremental below.
    db.batch_execute("BEGIN").unwrap();
    assert_eq!(cleanup(&mut db), vec![a, b]);
    db.batch_execute("ROLLBACK").unwrap();
    assert_eq!(files_of(&mut db, &[a, b]), kept);

    // While a backup runs (here: an incremental waiting for its last WAL segment to be
    // archived), retention does nothing; the incremental completes with its chain intact.
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let e: i64 = db
        .query_one(
            "SELECT admin_toolkit.execute_backup($1, false)",
            &[&incr_schedule],
        )
        .unwrap()
        .get(0);
    wait_for("the incremental to wait for the archiver", || {
        (count(
            &mut db,
            &format!("SELECT count(*) FROM admin_toolkit.backup_history WHERE backup_id = {e} AND start_lsn IS NOT NULL"),
        ) == 1
            && count(&mut db, "SELECT failed_count FROM pg_stat_archiver") > 0)
            .then_some(())
    });
    assert_eq!(
        cleanup(&mut db),
        Vec::<i64>::new(),
        "retention waits for the running backup"
    );
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    wait_for("the incremental to complete", || {
        (outcome(&mut db, e).status == "completed").then_some(())
    });
    assert_eq!(files_of(&mut db, &[a, b]), kept);

    // A recovery point keeps its base backup (b, and so a) and the WAL from there.
    db.execute(
        "INSERT INTO admin_toolkit.recovery_points (recovery_name, recovery_time, base_backup_id) VALUES ('keep', now(), $1)",
        &[&b],
    )
    .unwrap();
    assert_eq!(
        cleanup(&mut db),
        Vec::<i64>::new(),
        "the restore point needs a and b"
    );
    assert_eq!(files_of(&mut db, &[a, b]), kept);
    assert!(
        wal_before.iter().all(|w| archived(&wal_dir).contains(w)),
        "no WAL went"
    );

    // Without it, a and b go: marked at once, their files removed by the worker after commit.
    db.batch_execute("DELETE FROM admin_toolkit.recovery_points")
        .unwrap();
    assert_eq!(
        cleanup(&mut db),
        vec![a, b],
        "c is the newest full backup and d's base"
    );
    wait_for("the worker to delete a and b", || {
        (files_of(&mut db, &[a, b]) == vec![("deleted".to_string(), false); 2]).then_some(())
    });
    assert_eq!(
        files_of(&mut db, &[c, d, e]),
        vec![("completed".to_string(), true); 3]
    );
    let c_start: String = db
        .query_one("SELECT metadata->>'start_wal_file' FROM admin_toolkit.backup_history WHERE backup_id = $1", &[&c])
        .unwrap()
        .get(0);
    wait_for("the WAL before backup c to be deleted", || {
        let wal_after = archived(&wal_dir);
        wal_after
            .iter()
            .filter(|n| n.len() == 24)
            .all(|n| n[8..] >= c_start[8..])
            .then_some(wal_after)
    });
    assert!(archived(&wal_dir).contains(&c_start));
    assert!(all_ok(&verify(&mut db, d)), "d's chain is intact");
    assert!(all_ok(&verify(&mut db, e)), "e's chain is intact");
}

fn archived(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".zst")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn wal_archive_and_scheduled_backups_run_by_themselves() {
    let Setup {
        cluster: _cluster,
        mut db,
        store,
    } = setup();
    let archive = store.path().join("wal").display().to_string();
    let wal = schedule(&mut db, "wal_archive", &archive, 1);
    db.batch_execute("INSERT INTO items VALUES (0, 'new')")
        .unwrap();
    let id = backup(&mut db, wal);
    let o = outcome(&mut db, id);
    assert_eq!(o.status, "completed", "{:?}", o.error);
    let file: String = db
        .query_one(
            "SELECT metadata->>'wal_file' FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(store
        .path()
        .join("wal")
        .join(format!("{file}.zst"))
        .exists());
    let elsewhere = schedule(
        &mut db,
        "wal_archive",
        &store.path().join("other").display().to_string(),
        1,
    );
    let id = backup(&mut db, elsewhere);
    assert!(outcome(&mut db, id)
        .error
        .unwrap()
        .contains("admin_toolkit.archive_location"));

    let location = store.path().join("scheduled").display().to_string();
    let every_minute = schedule(&mut db, "full", &location, 1);
    db.execute("UPDATE admin_toolkit.backup_schedules SET schedule_expression = '* * * * *' WHERE schedule_id = $1", &[&every_minute])
        .unwrap();
    // due within the minute; the worker looks once a minute, so allow two
    let started = std::time::Instant::now();
    let status = loop {
        let found = db
            .query_opt(
                "SELECT status FROM admin_toolkit.backup_history WHERE schedule_id = $1 AND status <> 'running'",
                &[&every_minute],
            )
            .unwrap()
            .map(|r| r.get::<_, String>(0));
        if let Some(s) = found {
            break s;
        }
        assert!(
            started.elapsed().as_secs() < 150,
            "the scheduled backup did not run"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(status, "completed");
}

/// A backup job stopped from outside: terminated (SIGTERM, as at a server shutdown) it records
/// 'failed' with why and removes its partial files; killed outright (SIGKILL: the postmaster
/// restarts every process) the worker's upkeep marks it failed as interrupted and removes them.
/// The archive is held (unwritable) so that each backup is still running when stopped.
#[test]
fn a_terminated_or_killed_backup_job_is_recorded_failed_and_cleaned_up() {
    let Setup {
        cluster,
        mut db,
        store,
    } = setup();
    let wal = store.path().join("wal");
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o500)).unwrap();
    let location = store.path().join("stopped").display().to_string();
    let id = schedule(&mut db, "full", &location, 1);
    let start = |db: &mut Client| -> (i64, i32) {
        let backup: i64 = db
            .query_one("SELECT admin_toolkit.execute_backup($1)", &[&id])
            .unwrap()
            .get(0);
        wait_for("the copy to start", || {
            db.query_opt(
                "SELECT (metadata->>'pid')::int FROM admin_toolkit.backup_history \
                  WHERE backup_id = $1 AND start_lsn IS NOT NULL",
                &[&backup],
            )
            .unwrap()
            .map(|r| (backup, r.get(0)))
        })
    };

    let (terminated, pid) = start(&mut db);
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let o = wait_for("the terminated backup recorded", || {
        let o = outcome(&mut db, terminated);
        (o.status != "running").then_some(o)
    });
    assert_eq!(o.status, "failed");
    assert!(
        o.error.as_deref().unwrap_or("").contains("server shutdown"),
        "{:?}",
        o.error
    );
    assert!(!Path::new(&o.path).exists(), "partial files removed");

    let (killed, pid) = start(&mut db);
    let out = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The postmaster ends every session and restarts: each look connects afresh.
    drop(db);
    let (status, error, path) = wait_for("the killed backup marked by the worker", || {
        let mut db =
            postgres::Client::connect(&cluster.conninfo("postgres"), postgres::NoTls).ok()?;
        let r = db
            .query_one(
                "SELECT status, error_message, backup_path FROM admin_toolkit.backup_history WHERE backup_id = $1",
                &[&killed],
            )
            .ok()?;
        let status: String = r.get(0);
        (status != "running")
            .then(|| (status, r.get::<_, Option<String>>(1), r.get::<_, String>(2)))
    });
    let o = Outcome {
        status,
        error,
        size: None,
        path,
        kind: String::new(),
    };
    assert_eq!(o.status, "failed");
    assert!(
        o.error.as_deref().unwrap_or("").contains("interrupted"),
        "{:?}",
        o.error
    );
    assert!(!Path::new(&o.path).exists(), "partial files removed");
}
