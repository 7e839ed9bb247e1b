//! WAL archiving to S3-compatible object storage, end to end against a real server: the archive
//! module stores WAL under the specification's `s3://mycompany-backups/postgresql/wal/`, its
//! `wal_archive` schedule runs, recovery is planned and validated from the bucket, retention
//! deletes objects there, and `admin-toolkit restore` / `wal-get` recover a second server from
//! it to exactly the rows committed before the target.

use admin_toolkit_core::storage::{S3Storage, Storage};
use admin_toolkit_it::fixtures::{output_text as text, run_backup, BackupSchedule};
use admin_toolkit_it::s3::S3Server;
use admin_toolkit_it::{
    count, drill_settings, run_cli_as_postgres, wait_for, wait_until_promoted, write_key, Cluster,
    ClusterOptions, ScratchDir,
};
use postgres::Client;
use std::path::Path;

const WAL: &str = "s3://mycompany-backups/postgresql/wal/";

struct Setup {
    _server: S3Server,
    cluster: Cluster,
    db: Client,
    store: ScratchDir,
    credentials: String,
    bucket: S3Storage,
    endpoint: String,
}

fn setup() -> Setup {
    setup_with(|_| Vec::new())
}

/// With extra settings, made from the scratch directory.
fn setup_with(extra: impl FnOnce(&ScratchDir) -> Vec<String>) -> Setup {
    let server = S3Server::start();
    let store = ScratchDir::new("admin_toolkit_s3wal_");
    let credentials = S3Server::write_credentials(&store.join("aws-credentials"));
    let settings = server.settings(&credentials);
    server.create_bucket(&settings, "mycompany-backups");
    let extra = extra(&store);
    let cluster = Cluster::start_with(ClusterOptions {
        settings: [
            vec![
                "archive_mode = on".into(),
                "archive_library = 'admin_toolkit'".into(),
                format!("admin_toolkit.archive_location = '{WAL}'"),
                format!("admin_toolkit.s3_endpoint = '{}'", server.endpoint()),
                "admin_toolkit.s3_region = 'us-east-1'".into(),
                "admin_toolkit.s3_force_path_style = on".into(),
                format!("admin_toolkit.s3_credentials_file = '{credentials}'"),
            ],
            extra,
        ]
        .concat(),
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit; CREATE TABLE t (id int)")
        .unwrap();
    let bucket = S3Storage::open("mycompany-backups", "postgresql/wal/", &settings).unwrap();
    Setup {
        endpoint: server.endpoint(),
        _server: server,
        cluster,
        db,
        store,
        credentials,
        bucket,
    }
}

fn insert(db: &mut Client, from: i32, to: i32) {
    db.execute(
        "INSERT INTO t SELECT g FROM generate_series($1::int, $2::int) g",
        &[&from, &to],
    )
    .unwrap();
}

/// A schedule run only by hand here (daily at 03:00: a schedule due every few minutes would
/// start backups of its own in the middle of a test).
fn schedule(db: &mut Client, kind: &str, location: &str) -> i32 {
    BackupSchedule::new(kind, location).insert(db)
}

fn run(db: &mut Client, schedule_id: i32) -> (i64, String, Option<String>, Option<i64>) {
    let id: i64 = run_backup(db, schedule_id);
    let r = db
        .query_one(
            "SELECT status, error_message, backup_size_bytes FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&id],
        )
        .unwrap();
    (id, r.get(0), r.get(1), r.get(2))
}

/// The S3 settings of the test server, as a client outside the server uses them.
fn s3_settings(endpoint: &str, credentials: &str) -> admin_toolkit_core::storage::S3Settings {
    admin_toolkit_core::storage::S3Settings {
        endpoint: endpoint.to_string(),
        region: "us-east-1".into(),
        force_path_style: true,
        credentials_file: credentials.to_string(),
        profile: String::new(),
        ca_file: String::new(),
        timeout_seconds: 0,
    }
}

/// The CLI's S3 options for the test server.
fn cli_s3_flags(endpoint: &str, credentials: &str) -> Vec<String> {
    vec![
        format!("--s3-endpoint={endpoint}"),
        "--s3-path-style=on".to_string(),
        format!("--s3-credentials-file={credentials}"),
    ]
}

#[test]
fn wal_archived_to_s3_plans_validates_and_recovers_a_second_server() {
    let Setup {
        _server,
        cluster: _cluster,
        mut db,
        store,
        credentials,
        bucket,
        endpoint,
    } = setup();
    let wal_schedule = schedule(&mut db, "wal_archive", WAL);
    let full_schedule = schedule(&mut db, "full", &store.join("backups"));
    insert(&mut db, 1, 100);
    let (full, status, error, _) = run(&mut db, full_schedule);
    assert_eq!(status, "completed", "{error:?}");
    let full_path: String = db
        .query_one(
            "SELECT backup_path FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&full],
        )
        .unwrap()
        .get(0);
    insert(&mut db, 101, 200);
    let target: String = db
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .unwrap()
        .get(0);
    // S3 keeps an object's time to the second: let the archive pass the target by more than
    // that, as it would in any real use.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    insert(&mut db, 201, 300);
    // The specification's wal_archive schedule: switch, wait until the segment is in the bucket.
    let (_, status, error, size) = run(&mut db, wal_schedule);
    assert_eq!(status, "completed", "{error:?}");
    assert!(
        size.unwrap_or(0) > 0,
        "the stored segment's size is recorded"
    );
    let objects: Vec<String> = bucket
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(objects.iter().any(|n| n.ends_with(".zst")), "{objects:?}");
    assert!(
        objects.iter().any(|n| n.ends_with(".sha256")),
        "{objects:?}"
    );

    // Planned and validated from the bucket.
    let segments: Vec<String> = db
        .query_one(
            "SELECT wal_files_needed FROM admin_toolkit.plan_recovery($1::text::timestamptz)",
            &[&target],
        )
        .unwrap()
        .get(0);
    assert!(!segments.is_empty());
    for s in &segments {
        assert!(objects.contains(&format!("{s}.zst")), "{s} in {objects:?}");
    }
    let point: i32 = db
        .query_one(
            "INSERT INTO admin_toolkit.recovery_points (recovery_name, recovery_time, base_backup_id, required_wal_files) \
             VALUES ('target', $1::text::timestamptz, $3, $2) RETURNING recovery_id",
            &[&target, &segments, &full],
        )
        .unwrap()
        .get(0);
    let checks: Vec<(String, String)> = db
        .query(
            "SELECT check_name, status FROM admin_toolkit.validate_recovery_point($1)",
            &[&point],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(checks.iter().all(|c| c.1 == "OK"), "{checks:?}");

    // wal-get: present, absent (end of WAL: 1), unreachable (stop recovery: 126).
    let s3_flags = cli_s3_flags(&endpoint, &credentials);
    let got = store.join("got");
    let mut args = vec!["wal-get".to_string(), format!("--archive={WAL}")];
    args.extend(s3_flags.iter().cloned());
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a = args.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run_cli = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run_cli_as_postgres(&refs)
    };
    let out = run_cli(with(&[&segments[0], &got]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(&got).unwrap().len(), 16 * 1024 * 1024);
    let out = run_cli(with(&["0000000100000000000000FF", &got]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let down: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("--s3-endpoint=") {
                format!(
                    "--s3-endpoint=http://127.0.0.1:{}",
                    admin_toolkit_it::free_port()
                )
            } else {
                a.clone()
            }
        })
        .chain([segments[0].clone(), got.clone()])
        .collect();
    let out = run_cli(down);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));

    // Restore the local base backup, recovering from the bucket to the target time.
    let scratch = ScratchDir::new("admin_toolkit_s3_restored_");
    let data = scratch.join("data");
    let restore = vec![
        "restore".to_string(),
        "--backup".into(),
        full_path,
        "--target-dir".into(),
        data.clone(),
        format!("--archive={WAL}"),
        "--target-time".into(),
        target.clone(),
        // No AWS variable says path-style.
        "--s3-path-style=on".into(),
    ];
    // The endpoint, region and credentials as the AWS SDKs' variables name them, no flag; the
    // restore carries them into restore_command, whose environment is the server's.
    let refs: Vec<&str> = restore.iter().map(String::as_str).collect();
    let out = admin_toolkit_it::run_cli_as_postgres_with(
        Path::new("/"),
        &[
            ("AWS_ENDPOINT_URL_S3", &endpoint),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_SHARED_CREDENTIALS_FILE", &credentials),
        ],
        &refs,
    );
    assert!(out.status.success(), "restore failed: {}", text(&out));
    let auto_conf = std::fs::read_to_string(Path::new(&data).join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("wal-get --archive=") && auto_conf.contains(WAL),
        "{auto_conf}"
    );
    assert!(
        auto_conf.contains(&format!("--s3-endpoint=''{endpoint}''"))
            && auto_conf.contains("--s3-credentials-file=")
            && auto_conf.contains(credentials.as_str()),
        "{auto_conf}"
    );
    assert!(
        !auto_conf.contains(admin_toolkit_it::s3::SECRET_KEY),
        "no secret in the configuration"
    );
    let restored = Cluster::from_data_dir(scratch, &["archive_mode = off".into()]);
    let mut r = restored.connect("postgres");
    wait_until_promoted(&mut r);
    assert_eq!(count(&mut r, "SELECT count(*) FROM t"), 200);
    assert_eq!(count(&mut r, "SELECT max(id)::bigint FROM t"), 200);
}

#[test]
fn retention_deletes_archived_wal_objects_in_the_bucket_and_only_those() {
    let Setup {
        _server,
        cluster: _cluster,
        mut db,
        store,
        bucket,
        ..
    } = setup();
    let full_schedule = schedule(&mut db, "full", &store.join("backups"));
    for round in 0..3 {
        insert(&mut db, round * 10, round * 10 + 9);
        db.batch_execute("SELECT pg_switch_wal()").unwrap();
    }
    let (old, status, error, _) = run(&mut db, full_schedule);
    assert_eq!(status, "completed", "{error:?}");
    insert(&mut db, 100, 200);
    let (new, status, error, _) = run(&mut db, full_schedule);
    assert_eq!(status, "completed", "{error:?}");
    db.batch_execute("SELECT pg_switch_wal()").unwrap();
    let new_start: String = db
        .query_one("SELECT metadata->>'start_wal_file' FROM admin_toolkit.backup_history WHERE backup_id = $1", &[&new])
        .unwrap()
        .get(0);
    wait_for("the new backup's first segment in the bucket", || {
        bucket
            .exists(&format!("{new_start}.zst"))
            .unwrap()
            .then_some(())
    });
    let before: Vec<String> = bucket
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(
        before.iter().any(|n| n[..24] < new_start[..]),
        "older WAL exists: {before:?}"
    );
    db.execute(
        "UPDATE admin_toolkit.backup_history SET end_time = end_time - interval '30 days', start_time = start_time - interval '30 days' WHERE backup_id = $1",
        &[&old],
    )
    .unwrap();
    let deleted: Vec<i64> = db
        .query(
            "SELECT deleted_backup_id FROM admin_toolkit.cleanup_old_backups()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(deleted, vec![old]);
    wait_for(
        "the WAL before the retained backup to leave the bucket",
        || {
            let after: Vec<String> = bucket
                .list("")
                .unwrap()
                .into_iter()
                .map(|o| o.name)
                .collect();
            after
                .iter()
                .filter(|n| n.len() >= 24 && n[..24].bytes().all(|b| b.is_ascii_hexdigit()))
                .all(|n| n[8..24] >= new_start[8..])
                .then_some(after)
        },
    );
    let after: Vec<String> = bucket
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(
        after.contains(&format!("{new_start}.zst"))
            && after.contains(&format!("{new_start}.sha256"))
    );
    // The rows are marked when the worker's transaction commits, just after the objects went.
    wait_for("the expired backup marked deleted", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.backup_history WHERE status = 'deleted'",
        ) == 1)
            .then_some(())
    });
}

/// The specification's three sample schedules, exactly as it writes them.
const SAMPLE_SCHEDULES: &str = "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) VALUES \
    ('full', '0 2 * * 0', 90, 's3://mycompany-backups/postgresql/full/'), \
    ('incremental', '0 2 * * 1-6', 30, 's3://mycompany-backups/postgresql/incremental/'), \
    ('wal_archive', '*/5 * * * *', 7, 's3://mycompany-backups/postgresql/wal/') \
    RETURNING schedule_id";

#[test]
fn the_specifications_s3_schedules_back_up_verify_and_restore_through_an_incremental_chain() {
    let Setup {
        _server,
        cluster: _cluster,
        mut db,
        credentials,
        endpoint,
        store: _store,
        ..
    } = setup();
    let ids: Vec<i32> = db
        .query(SAMPLE_SCHEDULES, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (full_schedule, incr_schedule, wal_schedule) = (ids[0], ids[1], ids[2]);
    db.batch_execute("INSERT INTO t SELECT generate_series(1, 100); CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g")
        .unwrap();
    let (full, status, error, full_size) = run(&mut db, full_schedule);
    assert_eq!(status, "completed", "{error:?}");
    insert(&mut db, 101, 200);
    let (incr, status, error, incr_size) = run(&mut db, incr_schedule);
    assert_eq!(status, "completed", "{error:?}");
    let (kind, depends): (String, String) = {
        let r = db
            .query_one("SELECT backup_type, metadata->>'chain' FROM admin_toolkit.backup_history WHERE backup_id = $1", &[&incr])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(kind, "incremental");
    assert_eq!(depends, format!("[{full}]"));
    assert!(
        incr_size.unwrap() * 5 < full_size.unwrap(),
        "{incr_size:?} vs {full_size:?}"
    );
    let target: String = db
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    insert(&mut db, 201, 300);
    let (_, status, error, _) = run(&mut db, wal_schedule);
    assert_eq!(status, "completed", "{error:?}");

    // Real objects in the bucket, under the specification's prefixes; verified by the server.
    let settings = s3_settings(&endpoint, &credentials);
    let bucket = S3Storage::open("mycompany-backups", "postgresql/", &settings).unwrap();
    let names: Vec<String> = bucket
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    for (prefix, object) in [
        ("full/backup_", "/data.pack"),
        ("full/backup_", "/backup.manifest"),
        ("incremental/backup_", "/backup.manifest"),
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(prefix) && n.ends_with(object)),
            "{prefix}*{object} in {names:?}"
        );
    }
    for id in [full, incr] {
        let checks: Vec<(String, String)> = db
            .query(
                "SELECT check_name, status FROM admin_toolkit.verify_backup($1)",
                &[&id],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert!(
            !checks.is_empty() && checks.iter().all(|c| c.1 == "OK"),
            "{checks:?}"
        );
    }

    // PITR from S3 alone: the incremental (and through it the full) and the WAL.
    let incr_path: String = db
        .query_one(
            "SELECT backup_path FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&incr],
        )
        .unwrap()
        .get(0);
    assert!(
        incr_path.starts_with("s3://mycompany-backups/postgresql/incremental/"),
        "{incr_path}"
    );
    let s3_flags = cli_s3_flags(&endpoint, &credentials);
    let mut verify = vec!["verify".to_string(), format!("--backup={incr_path}")];
    verify.extend(s3_flags.iter().cloned());
    let refs: Vec<&str> = verify.iter().map(String::as_str).collect();
    let out = run_cli_as_postgres(&refs);
    assert!(out.status.success(), "{}", text(&out));
    let scratch = ScratchDir::new("admin_toolkit_s3_base_restored_");
    let data = scratch.join("data");
    let mut restore = vec![
        "restore".to_string(),
        format!("--backup={incr_path}"),
        "--target-dir".into(),
        data.clone(),
        format!("--archive={WAL}"),
        "--target-time".into(),
        target,
    ];
    restore.extend(s3_flags.iter().cloned());
    let refs: Vec<&str> = restore.iter().map(String::as_str).collect();
    let out = run_cli_as_postgres(&refs);
    assert!(out.status.success(), "restore failed: {}", text(&out));
    let restored = Cluster::from_data_dir(scratch, &["archive_mode = off".into()]);
    let mut r = restored.connect("postgres");
    wait_until_promoted(&mut r);
    assert_eq!(count(&mut r, "SELECT count(*) FROM t"), 200);
    assert_eq!(count(&mut r, "SELECT count(*) FROM big"), 300000);

    // By the scheduler, as the sample schedules would run: due now, started by the worker.
    db.execute(
        "UPDATE admin_toolkit.backup_schedules SET schedule_expression = '* * * * *' WHERE schedule_id = ANY($1)",
        &[&ids],
    )
    .unwrap();
    let started = std::time::Instant::now();
    loop {
        let done = count(
            &mut db,
            &format!(
                "SELECT count(DISTINCT schedule_id) FROM admin_toolkit.backup_history \
                 WHERE status = 'completed' AND schedule_id = ANY('{{{}}}') AND backup_id > {incr} + 1",
                ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
            ),
        );
        if done == 3 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 150,
            "the scheduled S3 backups did not all complete"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn a_cancelled_upload_leaves_no_manifest_and_retention_deletes_backup_objects() {
    let Setup {
        _server,
        cluster: _cluster,
        mut db,
        credentials,
        endpoint,
        store: _store,
        ..
    } = setup();
    let ids: Vec<i32> = db
        .query(SAMPLE_SCHEDULES, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // More than one 16 MiB part at compression level 0: the pack goes up as a multipart upload.
    db.batch_execute("CREATE TABLE big AS SELECT g, md5(g::text) AS x FROM generate_series(1, 300000) g; CHECKPOINT")
        .unwrap();
    db.execute(
        "UPDATE admin_toolkit.backup_schedules SET compression_level = 0 WHERE schedule_id = $1",
        &[&ids[0]],
    )
    .unwrap();
    // The backup is held where it waits for its last WAL segment: the archive is pointed at a
    // bucket that does not exist, so its pack is stored and its manifest is not, whatever the
    // machine's speed.
    db.batch_execute(
        "ALTER SYSTEM SET admin_toolkit.archive_location = 's3://no-such-bucket/wal/'",
    )
    .unwrap();
    _cluster.reload_until(
        "admin_toolkit.archive_location",
        Some("s3://no-such-bucket/wal/"),
    );
    // The archiver has taken the new location once it fails on a segment switched after it.
    let failed = count(&mut db, "SELECT failed_count FROM pg_stat_archiver");
    db.batch_execute("SELECT pg_switch_wal()").unwrap();
    wait_for("the archiver to fail on the missing bucket", || {
        (count(&mut db, "SELECT failed_count FROM pg_stat_archiver") > failed).then_some(())
    });
    let id: i64 = db
        .query_one("SELECT admin_toolkit.execute_backup($1, false)", &[&ids[0]])
        .unwrap()
        .get(0);
    // Listed with boto3, not with the client under test.
    let stored = wait_for("the pack stored, the manifest not", || {
        let objects = _server.objects("mycompany-backups", "postgresql/full/");
        objects
            .iter()
            .any(|n| n.ends_with("data.pack"))
            .then_some(objects)
    });
    assert!(
        !stored.iter().any(|n| n.ends_with("backup.manifest")),
        "{stored:?}"
    );
    db.batch_execute(&format!(
        "SELECT pg_cancel_backend((metadata->>'pid')::int) FROM admin_toolkit.backup_history WHERE backup_id = {id}"
    ))
    .unwrap();
    let status = wait_for("the cancellation", || {
        let status: String = db
            .query_one(
                "SELECT status FROM admin_toolkit.backup_history WHERE backup_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        (status != "running").then_some(status)
    });
    assert_eq!(status, "cancelled");
    let left = _server.objects("mycompany-backups", "postgresql/full/");
    assert!(
        left.is_empty(),
        "nothing of the cancelled backup is left: {left:?}"
    );
    db.batch_execute(&format!(
        "ALTER SYSTEM SET admin_toolkit.archive_location = '{WAL}'"
    ))
    .unwrap();
    _cluster.reload_until("admin_toolkit.archive_location", Some(WAL));
    let settings = s3_settings(&endpoint, &credentials);
    let full = S3Storage::open("mycompany-backups", "postgresql/full/", &settings).unwrap();

    // Two completed backups; the older one expires and its objects (only those) are deleted.
    db.execute(
        "UPDATE admin_toolkit.backup_schedules SET compression_level = 1 WHERE schedule_id = $1",
        &[&ids[0]],
    )
    .unwrap();
    let (old, status, error, _) = run(&mut db, ids[0]);
    assert_eq!(status, "completed", "{error:?}");
    let (new, status, error, _) = run(&mut db, ids[0]);
    assert_eq!(status, "completed", "{error:?}");
    let path_of = |db: &mut Client, id: i64| -> String {
        db.query_one(
            "SELECT backup_path FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0)
    };
    let (old_path, new_path) = (path_of(&mut db, old), path_of(&mut db, new));
    let prefix_of = |path: &str| {
        path.trim_start_matches("s3://mycompany-backups/postgresql/full/")
            .to_string()
    };
    db.execute(
        "UPDATE admin_toolkit.backup_history SET end_time = end_time - interval '100 days', start_time = start_time - interval '100 days' WHERE backup_id = $1",
        &[&old],
    )
    .unwrap();
    let deleted: Vec<i64> = db
        .query(
            "SELECT deleted_backup_id FROM admin_toolkit.cleanup_old_backups()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(deleted, vec![old]);
    wait_for("the old backup's objects to go", || {
        full.list(&prefix_of(&old_path))
            .unwrap()
            .is_empty()
            .then_some(())
    });
    assert_eq!(
        full.list(&prefix_of(&new_path)).unwrap().len(),
        2,
        "the new backup keeps its pack and manifest"
    );
    // The worker marks the row once its transaction commits, just after the objects went.
    wait_for("the old backup marked deleted", || {
        let status: String = db
            .query_one(
                "SELECT status FROM admin_toolkit.backup_history WHERE backup_id = $1",
                &[&old],
            )
            .unwrap()
            .get(0);
        (status == "deleted").then_some(())
    });
}

#[test]
fn encrypted_backups_and_wal_on_s3_need_their_key_and_hold_no_plaintext() {
    let Setup {
        _server,
        cluster: _cluster,
        mut db,
        credentials,
        endpoint,
        store: _store,
        ..
    } = setup_with(|store| {
        let keys = store.path().join("keys");
        write_key(&keys, "k1", &"a5".repeat(32));
        write_key(&keys, "k2", &"5a".repeat(32));
        vec![
            format!("admin_toolkit.encryption_key_dir = '{}'", keys.display()),
            "admin_toolkit.archive_encryption_key_id = 'k1'".into(),
        ]
        .into_iter()
        .chain(drill_settings(&store.path().join("drills")))
        .collect()
    });
    let keys = _store.path().join("keys").display().to_string();
    let ids: Vec<i32> = db
        .query(SAMPLE_SCHEDULES, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.execute("UPDATE admin_toolkit.backup_schedules SET encryption_key_id = 'k1' WHERE schedule_id = ANY($1)", &[&ids])
        .unwrap();
    db.batch_execute("CREATE TABLE secrets AS SELECT g, 'known-plaintext-marker-' || g AS s FROM generate_series(1, 20000) g")
        .unwrap();
    let (full, status, error, _) = run(&mut db, ids[0]);
    assert_eq!(status, "completed", "{error:?}");
    // rotation: the incremental is taken with the schedule's new key, and starts a chain of its
    // own (a chain stays within one key: it never depends on what another key sealed)
    db.execute(
        "UPDATE admin_toolkit.backup_schedules SET encryption_key_id = 'k2' WHERE schedule_id = $1",
        &[&ids[1]],
    )
    .unwrap();
    db.batch_execute("INSERT INTO secrets SELECT g, 'known-plaintext-marker-' || g FROM generate_series(20001, 21000) g")
        .unwrap();
    let (incr, status, error, _) = run(&mut db, ids[1]);
    assert_eq!(status, "completed", "{error:?}");
    let kind: String = db
        .query_one(
            "SELECT backup_type FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&incr],
        )
        .unwrap()
        .get(0);
    assert_eq!(kind, "full", "after a key rotation the chain starts again");
    let (_, status, error, _) = run(&mut db, ids[2]);
    assert_eq!(status, "completed", "{error:?}");
    for id in [full, incr] {
        let bad: i64 = db
            .query_one(
                "SELECT count(*) FROM admin_toolkit.verify_backup($1) WHERE status <> 'OK'",
                &[&id],
            )
            .unwrap()
            .get(0);
        assert_eq!(bad, 0, "backup {id} verifies with its key");
    }
    let settings = s3_settings(&endpoint, &credentials);
    let bucket = S3Storage::open("mycompany-backups", "", &settings).unwrap();
    // Every object, listed and read with boto3 (not the client under test), holds no plaintext.
    let objects = _server.objects("mycompany-backups", "");
    assert!(objects.iter().any(|o| o.ends_with(".zst")), "{objects:?}");
    for object in &objects {
        let bytes = _server.object("mycompany-backups", object);
        assert!(
            !bytes.windows(23).any(|w| w == b"known-plaintext-marker-"),
            "{object} holds plaintext"
        );
    }

    // The CLI restores from S3 with the keys, and refuses without them, naming the object.
    let incr_path: String = db
        .query_one(
            "SELECT backup_path FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&incr],
        )
        .unwrap()
        .get(0);
    let s3_flags = cli_s3_flags(&endpoint, &credentials);
    let cli = |words: Vec<String>| {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        run_cli_as_postgres(&refs)
    };
    let scratch = ScratchDir::new("admin_toolkit_s3_enc_");
    let data = scratch.join("data");
    let restore = |key_dir: Option<&str>| {
        let mut words = vec![
            "restore".to_string(),
            format!("--backup={incr_path}"),
            format!("--target-dir={data}"),
            format!("--archive={WAL}"),
        ];
        words.extend(s3_flags.clone());
        if let Some(dir) = key_dir {
            words.push(format!("--encryption-key-dir={dir}"));
        }
        cli(words)
    };
    let out = restore(None);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("encrypted") && said.contains("backup.manifest"),
        "{said}"
    );
    let out = restore(Some(&keys));
    assert!(out.status.success(), "{}", text(&out));
    let restored = Cluster::from_data_dir(scratch, &["archive_mode = off".into()]);
    let mut r = restored.connect("postgres");
    wait_until_promoted(&mut r);
    assert_eq!(count(&mut r, "SELECT count(*) FROM secrets"), 21000);

    // A restore drill does the same by itself: the encrypted chain from S3, WAL through wal-get.
    let drill_id: i64 = db
        .query_one(
            "SELECT admin_toolkit.run_restore_drill(p_wait => true)",
            &[],
        )
        .unwrap()
        .get(0);
    let drill = db
        .query_one(
            "SELECT status, failure_reason, backup_ids, \
                    (checks->'databases'->0->'row_counts'->>'public.secrets')::int8 \
               FROM admin_toolkit.restore_drills WHERE drill_id = $1",
            &[&drill_id],
        )
        .unwrap();
    assert_eq!(
        drill.get::<_, String>(0),
        "passed",
        "{:?}",
        drill.get::<_, Option<String>>(1)
    );
    assert_eq!(drill.get::<_, Vec<i64>>(2), vec![incr]);
    assert_eq!(drill.get::<_, Option<i64>>(3), Some(21000));

    // WAL without the key: wal-get stops recovery (126) and says why.
    let segment: String = db
        .query_one("SELECT metadata->>'start_wal_file' FROM admin_toolkit.backup_history WHERE backup_id = $1", &[&full])
        .unwrap()
        .get(0);
    let mut words = vec!["wal-get".to_string(), format!("--archive={WAL}")];
    words.extend(s3_flags.clone());
    words.extend([segment.clone(), _store.join("seg")]);
    let out = cli(words);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(text(&out).contains("encrypted"), "{}", text(&out));

    // A flipped byte in the full backup's pack is named by verify_backup.
    let full_path: String = db
        .query_one(
            "SELECT backup_path FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&full],
        )
        .unwrap()
        .get(0);
    let pack = format!(
        "{}data.pack",
        full_path.trim_start_matches("s3://mycompany-backups/")
    );
    let mut bytes = bucket.get(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let mut writer = bucket.writer(&pack).unwrap();
    writer.write(&bytes).unwrap();
    writer.finish().unwrap();
    let problems: Vec<String> = db
        .query(
            "SELECT details FROM admin_toolkit.verify_backup($1) WHERE status = 'ERROR'",
            &[&full],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("altered")),
        "{problems:?}"
    );
}
