//! Point-in-time recovery end to end: plan_recovery names the backup and the real segments,
//! validate_recovery_point checks them, and `admin-toolkit restore` brings up a second server
//! with exactly the rows committed before the target — to a time, through an incremental chain
//! to a named restore point — and refuses a damaged backup or a missing segment.

use admin_toolkit_it::fixtures::{output_text as text, run_backup, BackupSchedule};
use admin_toolkit_it::{
    archive_now, count, run_cli_as_postgres, run_cli_as_postgres_in, wait_for, wait_until_promoted,
    Cluster, ClusterOptions, ScratchDir,
};
use postgres::Client;
use std::path::Path;
use std::process::Output;

fn insert(db: &mut Client, from: i32, to: i32) {
    db.execute(
        "INSERT INTO t SELECT g FROM generate_series($1::int, $2::int) g",
        &[&from, &to],
    )
    .unwrap();
}

fn schedule(db: &mut Client, kind: &str, location: &str) -> i32 {
    BackupSchedule::new(kind, location).insert(db)
}

fn backup(db: &mut Client, schedule_id: i32) -> (i64, String) {
    let id: i64 = run_backup(db, schedule_id);
    let r = db
        .query_one("SELECT status, backup_path, error_message FROM admin_toolkit.backup_history WHERE backup_id = $1", &[&id])
        .unwrap();
    assert_eq!(
        r.get::<_, String>(0),
        "completed",
        "{:?}",
        r.get::<_, Option<String>>(2)
    );
    (id, r.get(1))
}

fn cli(args: &[&str]) -> Output {
    run_cli_as_postgres(args)
}

/// Restores into a new scratch directory and starts a server on it (archiving off: a restore
/// drill must not write into the production archive); returns it once promoted.
fn restore_and_start(backup: &str, archive: &Path, target: &[&str]) -> Cluster {
    let scratch = ScratchDir::new("admin_toolkit_restored_");
    let data = scratch.join("data");
    let archive = archive.display().to_string();
    let mut args = vec![
        "restore",
        "--backup",
        backup,
        "--target-dir",
        &data,
        "--archive",
        &archive,
    ];
    args.extend_from_slice(target);
    let out = cli(&args);
    assert!(out.status.success(), "restore failed: {}", text(&out));
    assert!(Path::new(&data).join("recovery.signal").exists());
    let cluster = Cluster::from_data_dir(scratch, &["archive_mode = off".into()]);
    let mut db = cluster.connect("postgres");
    wait_until_promoted(&mut db);
    cluster
}

fn validate(db: &mut Client, recovery_id: i32) -> Vec<(String, String, String)> {
    db.query(
        "SELECT * FROM admin_toolkit.validate_recovery_point($1)",
        &[&recovery_id],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// A cluster archiving into `<scratch>/wal`, with the extension and an empty table `t`; its
/// backups go to the location returned (`<scratch>/backups`).
fn archiving_cluster(prefix: &str) -> (ScratchDir, std::path::PathBuf, String, Cluster, Client) {
    let store = ScratchDir::new(prefix);
    let archive = store.path().join("wal");
    let location = store.path().join("backups").display().to_string();
    let cluster = Cluster::start_with(ClusterOptions::archiving_to(&archive));
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit; CREATE TABLE t (id int)")
        .unwrap();
    (store, archive, location, cluster, db)
}

#[test]
fn point_in_time_recovery_end_to_end() {
    let (store, archive, location, _cluster, mut db) = archiving_cluster("admin_toolkit_pitr_");
    let full_schedule = schedule(&mut db, "full", &location);
    let incr_schedule = schedule(&mut db, "incremental", &location);

    // no backup yet: the specification's error
    let err = db
        .query("SELECT * FROM admin_toolkit.plan_recovery(now())", &[])
        .unwrap_err();
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("No suitable base backup found"));

    insert(&mut db, 1, 100);
    let (full, full_path) = backup(&mut db, full_schedule);
    insert(&mut db, 101, 200);
    let target_text: String = db
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    insert(&mut db, 201, 300);
    archive_now(&mut db);

    // the plan: this backup, real archived segments, an estimate
    let plan = db
        .query_one(
            "SELECT base_backup_id, base_backup_path, wal_files_needed, extract(epoch FROM estimated_recovery_time) > 0 \
             FROM admin_toolkit.plan_recovery($1::text::timestamptz)",
            &[&target_text],
        )
        .unwrap();
    assert_eq!(plan.get::<_, i64>(0), full);
    assert_eq!(plan.get::<_, String>(1), full_path);
    let segments: Vec<String> = plan.get(2);
    assert!(!segments.is_empty());
    for s in &segments {
        assert!(archive.join(format!("{s}.zst")).exists(), "{s}");
    }
    assert!(plan.get::<_, bool>(3));
    // a time after the last archived WAL is refused
    let err = db
        .query(
            "SELECT * FROM admin_toolkit.plan_recovery(now() + interval '1 hour')",
            &[],
        )
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("after the last archived WAL"),
        "{err}"
    );

    let point: i32 = db
        .query_one(
            "INSERT INTO admin_toolkit.recovery_points (recovery_name, recovery_time, base_backup_id, required_wal_files) \
             VALUES ('before 201', $1::text::timestamptz, $2, $3) RETURNING recovery_id",
            &[&target_text, &full, &segments],
        )
        .unwrap()
        .get(0);
    let checks = validate(&mut db, point);
    assert_eq!(
        checks.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["base_backup", "target", "wal_files", "timeline"]
    );
    assert!(checks.iter().all(|c| c.1 == "OK"), "{checks:?}");

    let restored = restore_and_start(&full_path, &archive, &["--target-time", &target_text]);
    let mut r = restored.connect("postgres");
    assert_eq!(count(&mut r, "SELECT count(*) FROM t"), 200);
    assert_eq!(count(&mut r, "SELECT max(id)::bigint FROM t"), 200);
    drop(r);
    drop(restored);

    // through an incremental chain, to a named restore point
    insert(&mut db, 301, 400);
    let (incr, incr_path) = backup(&mut db, incr_schedule);
    insert(&mut db, 401, 500);
    let rp: i32 = db
        .query_one(
            "SELECT admin_toolkit.create_restore_point('before 501')",
            &[],
        )
        .unwrap()
        .get(0);
    insert(&mut db, 501, 600);
    archive_now(&mut db);
    let planned: i64 = db
        .query_one(
            "SELECT base_backup_id FROM admin_toolkit.plan_recovery_to_restore_point('before 501')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(planned, incr);
    let checks = validate(&mut db, rp);
    assert!(checks.iter().all(|c| c.1 == "OK"), "{checks:?}");
    let restored = restore_and_start(&incr_path, &archive, &["--target-name", "before 501"]);
    let mut r = restored.connect("postgres");
    assert_eq!(count(&mut r, "SELECT count(*) FROM t"), 500);
    drop(r);
    drop(restored);

    // to a WAL position: what committed before it, nothing after
    insert(&mut db, 601, 700);
    let lsn: String = db
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    insert(&mut db, 701, 800);
    archive_now(&mut db);
    let restored = restore_and_start(&incr_path, &archive, &["--target-lsn", &lsn]);
    let mut r = restored.connect("postgres");
    assert_eq!(count(&mut r, "SELECT count(*) FROM t"), 700);
    assert_eq!(count(&mut r, "SELECT max(id)::bigint FROM t"), 700);
    drop(r);
    drop(restored);

    // a missing segment: named by validate and plan, restore refuses
    let first = &segments[0];
    let stored = archive.join(format!("{first}.zst"));
    let aside = store.path().join("aside.zst");
    std::fs::rename(&stored, &aside).unwrap();
    let checks = validate(&mut db, point);
    let wal = checks.iter().find(|c| c.0 == "wal_files").unwrap();
    assert_eq!(wal.1, "ERROR");
    assert!(wal.2.contains(first.as_str()), "{wal:?}");
    let err = db
        .query(
            "SELECT * FROM admin_toolkit.plan_recovery($1::text::timestamptz)",
            &[&target_text],
        )
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains(first.as_str()),
        "{err}"
    );
    let target = store.path().join("refused").display().to_string();
    let out = cli(&[
        "restore",
        "--backup",
        &full_path,
        "--target-dir",
        &target,
        "--archive",
        &archive.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains(first.as_str()), "{}", text(&out));
    assert!(!Path::new(&target).exists());
    std::fs::rename(&aside, &stored).unwrap();

    // wal-get: present, missing (exit 1), for restore_command
    let dest = store.path().join("seg").display().to_string();
    let archive_text = archive.display().to_string();
    assert!(cli(&["wal-get", "--archive", &archive_text, first, &dest])
        .status
        .success());
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 << 20);
    assert_eq!(
        cli(&[
            "wal-get",
            "--archive",
            &archive_text,
            "0000000100000000000000FF",
            &dest
        ])
        .status
        .code(),
        Some(1)
    );

    // verify --json, for scripts: one object, ok with the figures
    let out = cli(&["verify", "--json", "--backup", &full_path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["files"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(0));

    // a damaged backup file: validate names it, verify fails, restore refuses and leaves nothing
    let pack = Path::new(&full_path).join("data.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0xff;
    std::fs::write(&pack, &bytes).unwrap();
    let checks = validate(&mut db, point);
    let base = &checks[0];
    assert_eq!(base.1, "ERROR", "{checks:?}");
    assert!(base.2.contains("file "), "{base:?}");
    let out = cli(&["verify", "--backup", &full_path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("ERROR"), "{}", text(&out));
    let out = cli(&["verify", "--backup", &full_path, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["message"].as_str().is_some_and(|m| !m.is_empty())),
        "{report}"
    );
    let out = cli(&[
        "restore",
        "--backup",
        &full_path,
        "--target-dir",
        &target,
        "--archive",
        &archive_text,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("damaged"), "{}", text(&out));
    assert!(!Path::new(&target).exists(), "nothing left behind");
}

/// As on Debian, the configuration lives outside the data directory: the backup holds none.
/// `admin-toolkit restore`, then `pg_ctl start` and nothing else, gives a promoted server with
/// the rows, started beside its running original without colliding with it (no TCP, its own
/// socket); without `--archive` the restore is refused, naming why.
#[test]
fn a_restored_directory_starts_with_pg_ctl_alone_beside_its_original() {
    let (store, archive, location, cluster, mut db) = archiving_cluster("admin_toolkit_startable_");
    insert(&mut db, 1, 100);
    let elsewhere = store.path().join("etc");
    std::fs::create_dir(&elsewhere).unwrap();
    for file in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        std::fs::rename(
            Path::new(&cluster.data_dir()).join(file),
            elsewhere.join(file),
        )
        .unwrap();
    }
    let full = schedule(&mut db, "full", &location);
    let (_, path) = backup(&mut db, full);
    archive_now(&mut db);

    let scratch = ScratchDir::new("admin_toolkit_startable_copy_");
    let data = scratch.join("data");
    let refused = cli(&["restore", "--backup", &path, "--target-dir", &data]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("--archive is needed"),
        "{}",
        text(&refused)
    );
    assert!(!Path::new(&data).exists(), "nothing written");
    let archive_text = archive.display().to_string();
    let out = cli(&[
        "restore",
        "--backup",
        &path,
        "--target-dir",
        &data,
        "--archive",
        &archive_text,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the backup held no postgresql.conf, pg_hba.conf, pg_ident.conf"),
        "{}",
        text(&out)
    );
    let log = scratch.join("server.log");
    let started = admin_toolkit_it::run_as_postgres(
        "pg_ctl",
        &["-D", &data, "-l", &log, "-w", "-t", "120", "start"],
    );
    assert!(
        started.status.success(),
        "pg_ctl start: {}\n{}",
        text(&started),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let psql = |sql: &str| {
        let out = admin_toolkit_it::run_as_postgres(
            "psql",
            &["-X", "-At", "-h", &data, "-d", "postgres", "-c", sql],
        );
        assert!(out.status.success(), "psql: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_for("the copy's promotion", || {
        (psql("SELECT pg_is_in_recovery()") == "f").then_some(())
    });
    assert_eq!(psql("SELECT count(*) FROM t"), "100");
    assert_eq!(psql("SHOW listen_addresses"), "");
    // The original kept running all along.
    assert_eq!(count(&mut db, "SELECT count(*) FROM t"), 100);
    let stopped =
        admin_toolkit_it::run_as_postgres("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
}

/// A failover between the backup and the target: the standby, promoted, continues on timeline
/// 2 and archives into the same archive (the history file, the old timeline's partial
/// segment). A restore of the timeline-1 backup to a time on timeline 2 follows the switch and
/// has exactly the rows committed before the target, those written after the failover too.
#[test]
fn recovery_follows_a_timeline_switch_to_a_target_after_it() {
    let (_store, archive, location, mut primary, mut db) =
        archiving_cluster("admin_toolkit_timeline_");
    let full_schedule = schedule(&mut db, "full", &location);
    insert(&mut db, 1, 100);
    let (_, full_path) = backup(&mut db, full_schedule);
    let standby = Cluster::standby_of(&primary, &[]);
    insert(&mut db, 101, 200);
    let flushed: String = db
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .unwrap()
        .get(0);
    let mut replica = standby.connect("postgres");
    wait_for("the standby to replay the primary's last rows", || {
        replica
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&flushed],
            )
            .unwrap()
            .get::<_, bool>(0)
            .then_some(())
    });
    drop(db);
    primary.stop_within(std::time::Duration::from_secs(60));
    replica.batch_execute("SELECT pg_promote()").unwrap();
    wait_until_promoted(&mut replica);
    // The checkpoint after a promotion comes later; the WAL being written names the timeline.
    let segment: String = replica
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .unwrap()
        .get(0);
    assert!(segment.starts_with("00000002"), "promoted: {segment}");
    insert(&mut replica, 201, 300);
    let target: String = replica
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .unwrap()
        .get(0);
    insert(&mut replica, 301, 400);
    archive_now(&mut replica);
    assert!(archive.join("00000002.history.zst").exists());

    let restored = restore_and_start(&full_path, &archive, &["--target-time", &target]);
    let mut r = restored.connect("postgres");
    assert_eq!(count(&mut r, "SELECT count(*) FROM t"), 300);
    assert_eq!(count(&mut r, "SELECT max(id)::bigint FROM t"), 300);
}

/// `wal-get` keeps the next segments fetched in a spool beside the data directory: the next
/// call is served from there (even once the archive lost the file), and the spool goes away
/// when the directory leaves recovery. `--prefetch 0` makes none.
#[test]
fn wal_get_serves_the_next_segments_from_its_spool_and_removes_it_after_recovery() {
    let (store, archive, _location, cluster, mut db) = archiving_cluster("admin_toolkit_prefetch_");
    for i in 0..12 {
        insert(&mut db, i * 10, i * 10 + 9);
        db.batch_execute("SELECT pg_switch_wal()").unwrap();
    }
    // Something after the last switch: archive_now switches again and waits for that segment.
    insert(&mut db, 1000, 1000);
    archive_now(&mut db);
    let mut segments: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".zst")
                .filter(|n| n.len() == 24)
                .map(str::to_string)
        })
        .collect();
    segments.sort();
    assert!(segments.len() >= 10, "{segments:?}");
    let (first, next) = (&segments[0], &segments[1]);
    let archive_text = archive.display().to_string();
    // A data directory in recovery, as far as wal-get looks: the cluster's control file, a
    // recovery.signal.
    let data = store.path().join("copy");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::copy(
        Path::new(&cluster.data_dir()).join("global/pg_control"),
        data.join("global/pg_control"),
    )
    .unwrap();
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(chown.success());
    let spool = store.path().join("copy.wal-prefetch");
    let expected_next = store.path().join("expected");
    let out = run_cli_as_postgres_in(
        store.path(),
        &[
            "wal-get",
            "--prefetch=0",
            "--archive",
            &archive_text,
            next,
            "expected",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !spool.exists(),
        "--prefetch 0 (and no data directory) makes no spool"
    );

    let out = run_cli_as_postgres_in(
        &data,
        &["wal-get", "--archive", &archive_text, first, "RECOVERYXLOG"],
    );
    assert!(out.status.success(), "{}", text(&out));
    for segment in &segments[1..9] {
        wait_for(&format!("{segment} in the spool"), || {
            spool.join(segment).is_file().then_some(())
        });
    }
    assert!(
        !spool.join(&segments[9]).exists(),
        "the spool holds 8 segments ahead"
    );
    // served from the spool: the archive no longer holds it
    std::fs::remove_file(archive.join(format!("{next}.zst"))).unwrap();
    let out = run_cli_as_postgres_in(
        &data,
        &["wal-get", "--archive", &archive_text, next, "RECOVERYXLOG"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(data.join("RECOVERYXLOG")).unwrap(),
        std::fs::read(&expected_next).unwrap()
    );
    assert!(!spool.join(next).exists());
    // the window moves on with the position
    wait_for("the window after the second segment", || {
        spool.join(&segments[9]).is_file().then_some(())
    });
    // recovery over: the prefetcher removes the spool
    std::fs::remove_file(data.join("recovery.signal")).unwrap();
    wait_for("the spool removed after recovery", || {
        (!spool.exists()).then_some(())
    });
}

/// `restore --delta` brings a copy that diverged after its recovery (rows written, a table
/// created, a new timeline) back to the backup: only what differs is rewritten, and the copy
/// recovers again to exactly the rows of the target.
#[test]
fn a_delta_restore_brings_a_diverged_copy_back_to_the_target() {
    let (store, archive, location, _cluster, mut db) = archiving_cluster("admin_toolkit_delta_");
    let full_schedule = schedule(&mut db, "full", &location);
    insert(&mut db, 1, 500);
    let (_, full_path) = backup(&mut db, full_schedule);
    insert(&mut db, 501, 700);
    let target: String = db
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    insert(&mut db, 701, 900);
    archive_now(&mut db);

    let copy = ScratchDir::new("admin_toolkit_delta_copy_");
    let data = copy.join("data");
    let archive_text = archive.display().to_string();
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--backup",
            &full_path,
            "--target-dir",
            &data,
            "--archive",
            &archive_text,
            "--target-time",
            &target,
        ];
        args.extend_from_slice(extra);
        let out = cli(&args);
        assert!(out.status.success(), "restore failed: {}", text(&out));
        text(&out)
    };
    let pg_ctl = |action: &[&str]| {
        let log = copy.join("server.log");
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-w"];
        args.extend_from_slice(action);
        let out = admin_toolkit_it::run_as_postgres("pg_ctl", &args);
        assert!(out.status.success(), "pg_ctl {action:?}: {}", text(&out));
    };
    let connect = || {
        postgres::Config::new()
            .host_path(&data)
            .port(5432)
            .user("postgres")
            .dbname("postgres")
            .connect(postgres::NoTls)
            .unwrap()
    };
    restore(&[]);
    pg_ctl(&["start"]);
    let mut copy_db = connect();
    wait_until_promoted(&mut copy_db);
    assert_eq!(count(&mut copy_db, "SELECT count(*) FROM t"), 700);
    copy_db
        .batch_execute("INSERT INTO t SELECT generate_series(5000, 9000); CREATE TABLE junk (x int); CHECKPOINT")
        .unwrap();
    drop(copy_db);
    pg_ctl(&["-m", "fast", "stop"]);

    let said = restore(&["--delta"]);
    assert!(
        said.contains("files rewritten") && said.contains("removed"),
        "{said}"
    );
    pg_ctl(&["start"]);
    let mut copy_db = connect();
    wait_until_promoted(&mut copy_db);
    assert_eq!(count(&mut copy_db, "SELECT count(*) FROM t"), 700);
    assert_eq!(
        count(
            &mut copy_db,
            "SELECT count(*) FROM pg_class WHERE relname = 'junk'"
        ),
        0
    );
    drop(copy_db);
    pg_ctl(&["-m", "fast", "stop"]);
    drop(store);
}
