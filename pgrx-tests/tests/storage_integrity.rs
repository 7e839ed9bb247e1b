//! Whoever can write to the backup storage cannot choose what is restored: a plaintext
//! manifest in an encrypted backup, an older sealed manifest copied over a newer one, a plain
//! WAL file with a matching sidecar in an encrypted archive are each refused, naming the
//! object, by verify_backup, a drill and the CLI. An archive belongs to one cluster: a restored
//! copy archives nothing into it, a second cluster pointed at it is refused. Incrementals
//! chain only inside one trust boundary. Schedules that could never run are refused when
//! written.

use admin_toolkit_it::fixtures::{output_text as text, run_backup, BackupSchedule};
use admin_toolkit_it::{
    archive_now, drill_settings, run_cli_as_postgres, run_cli_as_postgres_in, wait_for,
    wait_until_promoted, write_key, Cluster, ClusterOptions, ScratchDir,
};
use postgres::Client;
use std::path::{Path, PathBuf};

fn schedule(db: &mut Client, kind: &str, location: &str, key: Option<&str>) -> i32 {
    BackupSchedule {
        encryption_key_id: key,
        ..BackupSchedule::new(kind, location)
    }
    .insert(db)
}

/// A completed backup of schedule `schedule_id`: (id, path, type recorded, note).
fn backup(db: &mut Client, schedule_id: i32) -> (i64, PathBuf, String, Option<String>) {
    let id: i64 = run_backup(db, schedule_id);
    let r = db
        .query_one(
            "SELECT status, backup_path, error_message, backup_type, metadata->>'note' \
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
    (id, PathBuf::from(r.get::<_, String>(1)), r.get(3), r.get(4))
}

fn verify_errors(db: &mut Client, backup_id: i64) -> String {
    db.query(
        "SELECT details FROM admin_toolkit.verify_backup($1) WHERE status = 'ERROR'",
        &[&backup_id],
    )
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect::<Vec<_>>()
    .join("; ")
}

fn drill_reason(db: &mut Client, backup_id: i64) -> (String, Option<String>) {
    let drill: i64 = db
        .query_one(
            "SELECT admin_toolkit.run_restore_drill($1, NULL, true)",
            &[&backup_id],
        )
        .unwrap()
        .get(0);
    let r = db
        .query_one(
            "SELECT status, failure_reason FROM admin_toolkit.restore_drills WHERE drill_id = $1",
            &[&drill],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Replaces `to`'s file with `from`'s, as the postgres OS user owns both.
fn copy_over(from: &Path, to: &Path) {
    std::fs::write(to, std::fs::read(from).unwrap()).unwrap();
}

#[test]
fn tampered_storage_is_refused_by_verify_drill_and_the_cli() {
    let store = ScratchDir::new("admin_toolkit_tamper_");
    let keys = store.path().join("keys");
    write_key(&keys, "k1", &"a5".repeat(32));
    let mut options = ClusterOptions::archiving_to(&store.path().join("wal"));
    options.settings.extend([
        format!("admin_toolkit.encryption_key_dir = '{}'", keys.display()),
        "admin_toolkit.archive_encryption_key_id = 'k1'".into(),
    ]);
    options
        .settings
        .extend(drill_settings(&store.path().join("drills")));
    let cluster = Cluster::start_with(options);
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; CREATE TABLE t AS SELECT generate_series(1, 1000) AS id",
    )
    .unwrap();
    let encrypted = store.path().join("encrypted").display().to_string();
    let plain = store.path().join("plain").display().to_string();
    let sealed = schedule(&mut db, "full", &encrypted, Some("k1"));
    let open = schedule(&mut db, "full", &plain, None);
    let (older, older_path, _, _) = backup(&mut db, sealed);
    let (newer, newer_path, _, _) = backup(&mut db, sealed);
    let (_, plain_path, _, _) = backup(&mut db, open);
    archive_now(&mut db);
    assert_eq!(verify_errors(&mut db, newer), "", "untouched, it verifies");
    let manifest = |p: &Path| p.join("backup.manifest");
    let original = std::fs::read(manifest(&newer_path)).unwrap();
    let newer_text = newer_path.display().to_string();
    let keys_text = keys.display().to_string();

    // An older sealed manifest copied over the newer one.
    copy_over(&manifest(&older_path), &manifest(&newer_path));
    let why = verify_errors(&mut db, newer);
    assert!(
        why.contains(&format!("as the manifest of backup {newer}")) && why.contains("refused"),
        "{why} (backup {older}'s manifest)"
    );
    let (status, reason) = drill_reason(&mut db, newer);
    assert_eq!(status, "failed");
    assert!(reason.unwrap().contains("refused"));
    let out = run_cli_as_postgres(&[
        "verify",
        "--backup",
        &newer_text,
        "--encryption-key-dir",
        &keys_text,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("as the manifest of backup {newer}")),
        "{}",
        text(&out)
    );

    // A plaintext manifest (another backup's, which names the right id once edited: here
    // simply the unencrypted backup's) in place of the sealed one.
    copy_over(&manifest(&plain_path), &manifest(&newer_path));
    let why = verify_errors(&mut db, newer);
    assert!(
        why.contains("is not encrypted") && why.contains("refused"),
        "{why}"
    );
    let (status, reason) = drill_reason(&mut db, newer);
    assert_eq!(status, "failed");
    assert!(reason.unwrap().contains("is not encrypted"));
    let target = store.path().join("restored").display().to_string();
    let out = run_cli_as_postgres(&[
        "restore",
        "--backup",
        &newer_text,
        "--target-dir",
        &target,
        "--encryption-key-dir",
        &keys_text,
        "--require-encryption",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not encrypted"), "{}", text(&out));
    std::fs::write(manifest(&newer_path), &original).unwrap();
    assert_eq!(
        verify_errors(&mut db, newer),
        "",
        "restored, it verifies again"
    );

    // A plain WAL file with a matching sidecar in the encrypted archive.
    let wal = store.path().join("wal");
    let segment = std::fs::read_dir(&wal)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.len() == 28 && n.ends_with(".zst"))
        .expect("an archived segment");
    let name = segment.trim_end_matches(".zst").to_string();
    assert!(
        !wal.join(format!("{name}.sha256")).exists(),
        "no digest of encrypted WAL's plaintext is stored"
    );
    let forged = admin_toolkit_core::storage::compress(&vec![0u8; 16 * 1024 * 1024], 1).unwrap();
    std::fs::write(wal.join(&segment), &forged).unwrap();
    std::fs::write(
        wal.join(format!("{name}.sha256")),
        format!(
            "{}\n",
            admin_toolkit_core::storage::sha256_hex(&vec![0u8; 16 * 1024 * 1024])
        ),
    )
    .unwrap();
    let dest = store.path().join("fetched").display().to_string();
    let wal_text = wal.display().to_string();
    let out = run_cli_as_postgres(&[
        "wal-get",
        "--archive",
        &wal_text,
        "--encryption-key-dir",
        &keys_text,
        "--require-encryption",
        &name,
        &dest,
    ]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(
        text(&out).contains("not encrypted") && text(&out).contains(&segment),
        "{}",
        text(&out)
    );
    // verify on the server side too (validate/plan read the archive as encrypted)
    assert!(!Path::new(&dest).exists());
}

#[test]
fn an_archive_belongs_to_one_cluster_and_a_restored_copy_archives_nothing_into_it() {
    let store = ScratchDir::new("admin_toolkit_one_archive_");
    let wal = store.path().join("wal");
    let cluster = Cluster::start_with(ClusterOptions::archiving_to(&wal));
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; CREATE TABLE t AS SELECT generate_series(1, 100) AS id",
    )
    .unwrap();
    let location = store.path().join("backups").display().to_string();
    let full = schedule(&mut db, "full", &location, None);
    let (_, path, _, _) = backup(&mut db, full);
    archive_now(&mut db);
    let marker = std::fs::read_to_string(wal.join("admin_toolkit.archive")).unwrap();
    let system: i64 = db
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .unwrap()
        .get(0);
    assert_eq!(marker.trim(), format!("system_identifier = {system}"));

    // A copy restored with the CLI and started as it is: promoted, archiving off, nothing of
    // its new timeline in the original's archive.
    let scratch = ScratchDir::new("admin_toolkit_copy_");
    let data = scratch.join("data");
    let (backup_text, wal_text) = (path.display().to_string(), wal.display().to_string());
    let out = run_cli_as_postgres(&[
        "restore",
        "--backup",
        &backup_text,
        "--target-dir",
        &data,
        "--archive",
        &wal_text,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("archiving is off"), "{}", text(&out));
    let copy = Cluster::from_data_dir(scratch, &[]);
    let mut copy_db = copy.connect("postgres");
    wait_until_promoted(&mut copy_db);
    let mode: String = copy_db.query_one("SHOW archive_mode", &[]).unwrap().get(0);
    assert_eq!(mode, "off");
    copy_db.batch_execute("SELECT pg_switch_wal()").unwrap();
    copy_db
        .batch_execute("CHECKPOINT; SELECT pg_switch_wal()")
        .unwrap();
    assert!(
        !wal.join("00000002.history.zst").exists(),
        "the copy archived its timeline into the original's archive"
    );
    // Its toolkit holds the schedules and retention it restored, until adopted.
    wait_for("the copy's worker to hold its schedules", || {
        copy.server_log()
            .contains("no schedule runs and no retention deletes anything here")
            .then_some(())
    });
    let adopted: String = copy_db
        .query_one("SELECT admin_toolkit.adopt_as_primary()", &[])
        .unwrap()
        .get(0);
    assert!(adopted.starts_with("adopted"), "{adopted}");
    assert!(!Path::new(&copy.data_dir())
        .join("admin_toolkit.held")
        .exists());
    let recorded: String = copy_db
        .query_one(
            "SELECT data_directory FROM admin_toolkit.cluster_identity",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(Path::new(&recorded), Path::new(&copy.data_dir()));
    drop(copy_db);
    drop(copy);

    // A second cluster pointed at the same archive is refused, naming the owner.
    let other = Cluster::start_with(ClusterOptions::archiving_to(&wal));
    let mut other_db = other.connect("postgres");
    other_db.batch_execute("SELECT pg_switch_wal()").unwrap();
    wait_for("the second cluster's refusal", || {
        other
            .server_log()
            .contains(&format!("belongs to cluster {system}"))
            .then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(wal.join("admin_toolkit.archive")).unwrap(),
        marker
    );

    // wal-get refuses the archive to a data directory of another cluster, and a local
    // archive that does not exist is an error (126), never the end of the WAL, and is not
    // created.
    let out = run_cli_as_postgres_in(
        Path::new(&other.data_dir()),
        &[
            "wal-get",
            "--archive",
            &wal_text,
            "000000010000000000000001",
            "pg_wal/RECOVERYXLOG",
        ],
    );
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("belongs to cluster {system}")),
        "{}",
        text(&out)
    );
    let missing = store.path().join("no/such/archive");
    let missing_text = missing.display().to_string();
    let out = run_cli_as_postgres(&[
        "wal-get",
        "--archive",
        &missing_text,
        "000000010000000000000001",
        "/tmp/admin_toolkit_never_written",
    ]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(!missing.exists() && !store.path().join("no").exists());
}

#[test]
fn incrementals_chain_inside_one_trust_boundary_and_bad_schedules_are_refused_when_written() {
    let store = ScratchDir::new("admin_toolkit_chains_");
    let keys = store.path().join("keys");
    write_key(&keys, "k1", &"a5".repeat(32));
    let mut options = ClusterOptions::archiving_to(&store.path().join("wal"));
    options.settings.push(format!(
        "admin_toolkit.encryption_key_dir = '{}'",
        keys.display()
    ));
    let cluster = Cluster::start_with(options);
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; CREATE TABLE t AS SELECT generate_series(1, 1000) AS id",
    )
    .unwrap();
    let weekly = store.path().join("weekly").display().to_string();
    let daily = store.path().join("daily").display().to_string();
    // The specification's pair: a full schedule and an incremental one, both in the clear.
    let full = schedule(&mut db, "full", &weekly, None);
    let incremental = schedule(&mut db, "incremental", &daily, None);
    let (full_id, _, _, _) = backup(&mut db, full);
    db.batch_execute("INSERT INTO t SELECT generate_series(1001, 2000)")
        .unwrap();
    let (_, _, kind, _) = backup(&mut db, incremental);
    assert_eq!(kind, "incremental", "the pair still chains");
    // An encrypted incremental never depends on a backup in the clear: taken as a full.
    let sealed = schedule(&mut db, "incremental", &daily, Some("k1"));
    let (sealed_id, _, kind, note) = backup(&mut db, sealed);
    assert_eq!(kind, "full", "{note:?}");
    assert!(note.unwrap().contains("same encryption key"));
    let chain: Vec<i64> = db
        .query_one(
            "SELECT coalesce(array(SELECT jsonb_array_elements_text(metadata->'chain')::int8), '{}') \
               FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&sealed_id],
        )
        .unwrap()
        .get(0);
    assert!(!chain.contains(&full_id), "{chain:?}");

    // Schedules that could never run are refused when written, with 22023.
    for (location, key) in [
        ("s3://", None),
        ("s3://bucket/../../x", None),
        ("/srv/backups/../../etc", None),
        ("relative/path", None),
        (weekly.as_str(), Some("../../etc/passwd")),
    ] {
        let err = db
            .query(
                "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, encryption_key_id) \
                 VALUES ('full', '0 3 * * *', 7, $1, $2)",
                &[&location, &key],
            )
            .unwrap_err();
        assert_eq!(
            err.code().unwrap().code(),
            "22023",
            "{location} {key:?}: {err}"
        );
    }
}

#[test]
fn a_backup_whose_last_segment_is_not_archived_fails_within_its_deadline() {
    use std::os::unix::fs::PermissionsExt;
    let store = ScratchDir::new("admin_toolkit_archive_wait_");
    let wal = store.path().join("wal");
    let mut options = ClusterOptions::archiving_to(&wal);
    options
        .settings
        .push("admin_toolkit.backup_archive_wait = 2".into());
    let cluster = Cluster::start_with(options);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    archive_now(&mut db);
    let location = store.path().join("backups").display().to_string();
    let full = schedule(&mut db, "full", &location, None);
    // The archive stops taking WAL: the backup fails, saying why, instead of waiting forever
    // with its locks held.
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o500)).unwrap();
    let id: i64 = run_backup(&mut db, full);
    let r = db
        .query_one(
            "SELECT status, error_message FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&id],
        )
        .unwrap();
    let (status, error): (String, Option<String>) = (r.get(0), r.get(1));
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.contains("was not archived within 2 s") && error.contains("backup_archive_wait"),
        "{error}"
    );
    // Its locks are released: once the archive takes WAL again, the next backup completes.
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o700)).unwrap();
    backup(&mut db, full);
}

#[test]
fn another_owners_cleanup_leaves_every_chain_restorable() {
    let store = ScratchDir::new("admin_toolkit_cleanup_owners_");
    let cluster = Cluster::start_with(ClusterOptions::archiving_to(&store.path().join("wal")));
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; CREATE TABLE t AS SELECT generate_series(1, 1000) AS id; \
         CREATE ROLE alice LOGIN IN ROLE pg_write_server_files; \
         GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean) TO alice; \
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA admin_toolkit TO alice; \
         GRANT SELECT, INSERT, UPDATE ON admin_toolkit.backup_schedules, admin_toolkit.backup_history TO alice; \
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA admin_toolkit TO alice",
    )
    .unwrap();
    let mut alice = cluster.connect_as("postgres", "alice", "").unwrap();
    let hers = store.path().join("alice").display().to_string();
    let ours = store.path().join("ours").display().to_string();
    // Alice's full backup; the superuser's incremental chains onto it; then alice's newer full.
    let alice_full = schedule(&mut alice, "full", &hers, None);
    let (older, _, _, _) = backup(&mut alice, alice_full);
    let incremental = schedule(&mut db, "incremental", &ours, None);
    let (chained, _, kind, _) = backup(&mut db, incremental);
    assert_eq!(kind, "incremental");
    let chain: String = db
        .query_one(
            "SELECT metadata->>'chain' FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&chained],
        )
        .unwrap()
        .get(0);
    assert!(chain.contains(&older.to_string()), "{chain}");
    backup(&mut alice, alice_full);
    // Alice's older full is past her retention; her cleanup cannot see the incremental that
    // needs it, and must not delete it.
    db.execute(
        "UPDATE admin_toolkit.backup_history SET start_time = now() - interval '30 days', \
                end_time = now() - interval '30 days' WHERE backup_id = $1",
        &[&older],
    )
    .unwrap();
    let marked: Vec<i64> = alice
        .query(
            "SELECT deleted_backup_id FROM admin_toolkit.cleanup_old_backups()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!marked.contains(&older), "{marked:?}");
    let status: String = db
        .query_one(
            "SELECT status FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&older],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "completed");
    assert_eq!(
        verify_errors(&mut db, chained),
        "",
        "the chain still verifies"
    );
}
