//! Round trips through the backup format: full, incremental, verify, restore, corruption.

use super::copy::{copy_data_directory, CopyOptions};
use super::manifest::{format_for, ChainLink, Manifest, PACK_FILE};
use super::read::verify as verify_with;
use super::restore::restore as restore_with;
use super::store::{remove_backup_directory, BackupStore, Expected, Sealing};
use crate::crypto::{Key, KeyDir};
use crate::storage::{Location, S3Settings};
use crate::wal_blocks::ChangedBlocks;
use std::fs;
use std::path::Path;

const TABLESPACE_DIRECTORY: &str = "PG_15_202209061";

fn verify(
    m: &Manifest,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> super::read::Verification {
    verify_with(
        m,
        threads,
        &S3Settings::default(),
        &KeyDir::default(),
        progress,
    )
}

fn restore(
    m: &Manifest,
    target: &Path,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<super::restore::Restored, String> {
    restore_with(
        m,
        target,
        &[],
        threads,
        &S3Settings::default(),
        &KeyDir::default(),
        &mut |done, total| {
            progress(done, total);
            Ok(())
        },
    )
}

fn load(dir: &Path) -> Result<Manifest, String> {
    BackupStore::open(&dir.display().to_string(), &S3Settings::default())?
        .load_manifest(&KeyDir::default(), &Expected::default())
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn sample_data_dir(root: &Path) {
    let table: Vec<u8> = (0..3_000_000u32).map(|i| (i % 7) as u8).collect();
    write(root, "base/5/16384", &table);
    write(root, "base/5/16384_fsm", b"fsm");
    write(root, "base/5/16390", b"unlogged heap");
    write(root, "base/5/16390_init", b"init fork");
    write(root, "base/5/t3_16400", b"temp relation");
    write(root, "base/5/pg_internal.init", b"cache");
    write(root, "global/pg_control", b"control");
    write(root, "pg_wal/000000010000000000000001", b"wal");
    write(root, "pg_replslot/slot/state", b"slot");
    write(root, "postmaster.pid", b"123");
    write(root, "postgresql.conf", b"port = 5432\n");
    fs::create_dir_all(root.join("pg_wal/archive_status")).unwrap();
    fs::create_dir_all(root.join("pg_tblspc")).unwrap();
}

fn manifest_for(id: i64, dir: &Path, copied: super::copy::Copied) -> Manifest {
    Manifest {
        format: format_for(&copied.tablespaces),
        backup_id: id,
        kind: if copied.chain.len() > 1 {
            "incremental"
        } else {
            "full"
        }
        .into(),
        system_identifier: "1".into(),
        start_lsn: "0/2000028".into(),
        end_lsn: "0/2000100".into(),
        timeline: 1,
        start_wal_file: "000000010000000000000002".into(),
        wal_segment_size: 16 << 20,
        chunk_size: 64 * 1024,
        compression_level: 3,
        started_at: String::new(),
        finished_at: String::new(),
        chain: copied.chain,
        directories: copied.directories,
        files: copied.files,
        backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
        tablespace_map: String::new(),
        server_major: Some(15),
        data_checksum_version: Some(1),
        audit_chain_head: None,
        tablespaces: copied.tablespaces,
    }
    .tap(|m| {
        BackupStore::open(&dir.display().to_string(), &S3Settings::default())
            .unwrap()
            .store_manifest(m, None)
            .unwrap();
    })
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl Tap for Manifest {}

fn take(id: i64, data: &Path, dir: &Path, previous: Option<&Manifest>) -> Manifest {
    manifest_for(id, dir, take_copied(id, data, dir, previous, None))
}

fn take_copied(
    id: i64,
    data: &Path,
    dir: &Path,
    previous: Option<&Manifest>,
    changed_blocks: Option<ChangedBlocks>,
) -> super::copy::Copied {
    let store =
        BackupStore::create(&Location::Local(dir.to_path_buf()), &S3Settings::default()).unwrap();
    let options = CopyOptions {
        chunk_size: 64 * 1024,
        compression_level: 3,
        threads: 2,
        key: None,
        tablespace_directory: TABLESPACE_DIRECTORY.into(),
        changed_blocks,
        blocks_per_segment: 131_072,
        data_checksum_version: 1,
    };
    let link = ChainLink {
        backup_id: id,
        path: dir.to_path_buf(),
        key_id: None,
    };
    let pack = store.pack_writer().unwrap();
    copy_data_directory(data, pack, link, previous, &options, &mut |_| Ok(())).unwrap()
}

#[test]
fn full_and_incremental_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    let full = take(1, &data, &tmp.path().join("b1"), None);
    let paths: Vec<&str> = full.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "base/5/16384",
            "base/5/16384_fsm",
            "base/5/16390_init",
            "global/pg_control",
            "postgresql.conf"
        ]
    );
    for d in [
        "pg_wal",
        "pg_wal/archive_status",
        "pg_replslot",
        "pg_tblspc",
        "base/5",
    ] {
        assert!(full.directories.iter().any(|x| x == d), "{d}");
    }
    assert!(!full.directories.iter().any(|x| x == "pg_replslot/slot"));
    let pack = fs::metadata(tmp.path().join("b1").join(PACK_FILE))
        .unwrap()
        .len();
    assert!(pack < 300_000, "compressed pack is {pack} bytes");

    // change 1 chunk of the table, add a file
    let mut table = fs::read(data.join("base/5/16384")).unwrap();
    table[100_000] ^= 1;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(data.join("base/5/16384"), &table).unwrap();
    write(&data, "base/5/16500", b"new table");
    let incr = take(2, &data, &tmp.path().join("b2"), Some(&full));
    assert_eq!(incr.depends_on(), vec![1]);
    let table_entry = incr
        .files
        .iter()
        .find(|f| f.path == "base/5/16384")
        .unwrap();
    let here: Vec<_> = table_entry.chunks.iter().filter(|c| c.link == 0).collect();
    assert_eq!(here.len(), 1, "only the changed chunk is stored again");
    assert!(incr.stored_bytes_here() < full.stored_bytes_here() / 5);

    // a second incremental with no change references the first two and stores nothing new
    let incr2 = take(3, &data, &tmp.path().join("b3"), Some(&incr));
    assert_eq!(incr2.stored_bytes_here(), 0);
    assert_eq!(incr2.depends_on(), vec![2, 1]);

    for (m, name) in [(&full, "r1"), (&incr2, "r3")] {
        let report = verify(m, 2, &mut |_, _| {});
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let target = tmp.path().join(name);
        restore(m, &target, 2, &mut |_, _| {}).unwrap();
        assert!(target.join("pg_wal/archive_status").is_dir());
        assert!(target.join("backup_label").is_file());
        assert!(!target.join("postmaster.pid").exists());
        assert!(!target.join("base/5/16390").exists());
    }
    assert_eq!(fs::read(tmp.path().join("r3/base/5/16384")).unwrap(), table);
    // a progress callback that says stop (a cancelled drill) ends the restore after that file
    let mut files = 0;
    let err = restore_with(
        &full,
        &tmp.path().join("r4"),
        &[],
        2,
        &S3Settings::default(),
        &KeyDir::default(),
        &mut |_, _| {
            files += 1;
            Err("cancelled".into())
        },
    )
    .unwrap_err();
    assert_eq!((err.as_str(), files), ("cancelled", 1));
    assert_ne!(fs::read(tmp.path().join("r1/base/5/16384")).unwrap(), table);
    assert_eq!(
        fs::read(tmp.path().join("r3/base/5/16500")).unwrap(),
        b"new table"
    );

    let err = restore(&incr2, &tmp.path().join("r3"), 2, &mut |_, _| {}).unwrap_err();
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn corruption_and_missing_links_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    let dir = tmp.path().join("b1");
    let full = take(1, &data, &dir, None);
    let loaded = load(&dir).unwrap();
    assert_eq!(loaded, full);
    let table = full
        .files
        .iter()
        .find(|f| f.path == "base/5/16384")
        .unwrap();
    let offset = table.chunks[3].offset + 5;
    let mut pack = fs::read(dir.join(PACK_FILE)).unwrap();
    pack[offset as usize] ^= 0xff;
    fs::write(dir.join(PACK_FILE), &pack).unwrap();
    let report = verify(&full, 2, &mut |_, _| {});
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].path, "base/5/16384");
    assert!(
        report.problems[0].message.contains("chunk 3"),
        "{}",
        report.problems[0].message
    );
    let err = restore(&full, &tmp.path().join("r"), 2, &mut |_, _| {}).unwrap_err();
    assert!(err.contains("base/5/16384"), "{err}");

    // an incremental whose base is gone
    let incr = take(2, &data, &tmp.path().join("b2"), Some(&full));
    remove_backup_directory(&dir).unwrap();
    let report = verify(&incr, 2, &mut |_, _| {});
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("backup 1")),
        "{:?}",
        report.problems
    );
    // only marked directories are removed
    assert!(remove_backup_directory(&data).is_err());
    assert!(data.exists());
    let err = load(&data).unwrap_err();
    assert!(err.contains("no backup.manifest"), "{err}");
}

#[test]
fn manifest_paths_that_leave_the_target_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    let full = take(1, &data, &tmp.path().join("b1"), None);
    for evil in ["../escaped", "/tmp/escaped", "base/../../escaped", ""] {
        for in_files in [true, false] {
            let mut bad = full.clone();
            if in_files {
                bad.files[0].path = evil.to_string();
            } else {
                bad.directories.push(evil.to_string());
            }
            let target = tmp.path().join("restore");
            let err = restore(&bad, &target, 2, &mut |_, _| {}).unwrap_err();
            assert!(err.contains("outside the target"), "{evil}: {err}");
            assert!(!target.exists(), "nothing is written for {evil:?}");
            assert!(!tmp.path().join("escaped").exists());
        }
    }
    assert!(super::restore::inside(Path::new("/t"), "base/1/2").is_ok());
}

#[test]
fn encrypted_backups_restore_with_their_keys_and_never_hold_plaintext() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    write(
        &data,
        "base/5/16400",
        &b"known row: alice@example.com ".repeat(5000),
    );
    let key_dir = tmp.path().join("keys");
    fs::create_dir(&key_dir).unwrap();
    for (id, hex) in [("k1", "11"), ("k2", "22")] {
        let path = key_dir.join(format!("{id}.key"));
        fs::write(&path, hex.repeat(32)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let keys = KeyDir(Some(key_dir));
    let s3 = S3Settings::default();
    let encrypted_take = |id: i64, dir: &Path, key: Key, previous: Option<&Manifest>| {
        let store = BackupStore::create(&Location::Local(dir.to_path_buf()), &s3).unwrap();
        let options = CopyOptions {
            chunk_size: 64 * 1024,
            compression_level: 3,
            threads: 2,
            key: Some(key.clone()),
            tablespace_directory: TABLESPACE_DIRECTORY.into(),
            changed_blocks: None,
            blocks_per_segment: 131_072,
            data_checksum_version: 1,
        };
        let link = ChainLink {
            backup_id: id,
            path: dir.to_path_buf(),
            key_id: Some(key.id.clone()),
        };
        let copied = copy_data_directory(
            &data,
            store.pack_writer().unwrap(),
            link,
            previous,
            &options,
            &mut |_| Ok(()),
        )
        .unwrap();
        let mut m = manifest_for_unstored(id, copied);
        m.kind = if previous.is_some() {
            "incremental".into()
        } else {
            "full".into()
        };
        store.store_manifest(&m, Some(&key)).unwrap();
        m
    };
    let full = encrypted_take(1, &tmp.path().join("e1"), keys.load("k1").unwrap(), None);
    // key rotation: the incremental uses k2 and still references k1's chunks
    write(&data, "base/5/16500", b"after rotation");
    let incr = encrypted_take(
        2,
        &tmp.path().join("e2"),
        keys.load("k2").unwrap(),
        Some(&full),
    );
    assert_eq!(
        incr.chain
            .iter()
            .map(|l| l.key_id.clone().unwrap())
            .collect::<Vec<_>>(),
        ["k2", "k1"]
    );
    for dir in ["e1", "e2"] {
        for file in [PACK_FILE, "backup.manifest"] {
            let bytes = fs::read(tmp.path().join(dir).join(file)).unwrap();
            assert!(
                !bytes.windows(10).any(|w| w == b"known row:"),
                "{dir}/{file} holds plaintext"
            );
            assert!(
                !bytes.windows(12).any(|w| w == b"base/5/16400"),
                "{dir}/{file} names files"
            );
        }
    }
    let store = BackupStore::open(&tmp.path().join("e2").display().to_string(), &s3).unwrap();
    let as_row = |id: i64, key: &str| Expected {
        backup_id: Some(id),
        sealing: Sealing::WithKey(key.into()),
        system_identifier: Some(incr.system_identifier.clone()),
    };
    assert_eq!(store.load_manifest(&keys, &as_row(2, "k2")).unwrap(), incr);
    let err = store
        .load_manifest(&KeyDir::default(), &Expected::default())
        .unwrap_err();
    assert!(
        err.contains("backup.manifest") && err.contains("encrypted"),
        "{err}"
    );
    // Whoever can write to the storage cannot choose what is restored: an older sealed
    // manifest copied over this one, a plaintext manifest in its place, another key's.
    let manifest_of = |dir: &str| tmp.path().join(dir).join("backup.manifest");
    let sealed_2 = fs::read(manifest_of("e2")).unwrap();
    fs::write(manifest_of("e2"), fs::read(manifest_of("e1")).unwrap()).unwrap();
    let err = store.load_manifest(&keys, &as_row(2, "k2")).unwrap_err();
    assert!(err.contains("refused"), "{err}");
    let err = store
        .load_manifest(
            &keys,
            &Expected {
                sealing: Sealing::Required,
                ..Expected::default()
            },
        )
        .unwrap_err();
    assert!(
        err.contains("refused") || err.contains("decryption"),
        "{err}"
    );
    fs::write(manifest_of("e2"), serde_json::to_vec(&incr).unwrap()).unwrap();
    for sealing in [Sealing::Required, Sealing::WithKey("k2".into())] {
        let err = store
            .load_manifest(
                &keys,
                &Expected {
                    sealing,
                    ..Expected::default()
                },
            )
            .unwrap_err();
        assert!(
            err.contains("is not encrypted") && err.contains("refused"),
            "{err}"
        );
    }
    fs::write(manifest_of("e2"), &sealed_2).unwrap();
    let err = store.load_manifest(&keys, &as_row(2, "k1")).unwrap_err();
    assert!(err.contains("sealed with key \"k2\""), "{err}");
    let err = store
        .load_manifest(
            &keys,
            &Expected {
                system_identifier: Some(format!("{}0", incr.system_identifier)),
                ..as_row(2, "k2")
            },
        )
        .unwrap_err();
    assert!(err.contains("not of this cluster"), "{err}");
    assert_eq!(store.load_manifest(&keys, &as_row(2, "k2")).unwrap(), incr);
    let target = tmp.path().join("restored");
    restore_with(&incr, &target, &[], 2, &s3, &keys, &mut |_, _| Ok(())).unwrap();
    assert_eq!(
        fs::read(target.join("base/5/16400")).unwrap(),
        fs::read(data.join("base/5/16400")).unwrap()
    );
    // without the keys: refused, naming the backup; nothing is left in the target
    let err = restore_with(
        &incr,
        &tmp.path().join("r2"),
        &[],
        2,
        &s3,
        &KeyDir::default(),
        &mut |_, _| Ok(()),
    )
    .unwrap_err();
    assert!(
        err.contains("backup 2") && err.contains("encrypted"),
        "{err}"
    );
    // a flipped byte in the pack is named by verification
    let pack = tmp.path().join("e1").join(PACK_FILE);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[100] ^= 1;
    fs::write(&pack, &bytes).unwrap();
    let report = verify_with(&full, 2, &s3, &keys, &mut |_, _| {});
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("altered")),
        "{:?}",
        report.problems
    );
}

fn manifest_for_unstored(id: i64, copied: super::copy::Copied) -> Manifest {
    Manifest {
        format: format_for(&copied.tablespaces),
        backup_id: id,
        kind: "full".into(),
        system_identifier: "1".into(),
        start_lsn: "0/2000028".into(),
        end_lsn: "0/2000100".into(),
        timeline: 1,
        start_wal_file: "000000010000000000000002".into(),
        wal_segment_size: 16 << 20,
        chunk_size: 64 * 1024,
        compression_level: 3,
        started_at: String::new(),
        finished_at: String::new(),
        chain: copied.chain,
        directories: copied.directories,
        files: copied.files,
        backup_label: String::new(),
        tablespace_map: String::new(),
        server_major: Some(15),
        data_checksum_version: Some(1),
        audit_chain_head: None,
        tablespaces: copied.tablespaces,
    }
}

/// A file rewritten, same size, within the timestamp tick in which the previous backup read it
/// keeps its size and modification time: the incremental must read it again, not reference
/// the old content. (Simulated by giving the file, both times, the previous backup's start as
/// its time, which is what a coarse clock tick does.)
#[test]
fn a_file_rewritten_within_its_mtime_tick_is_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    let conf = data.join("postgresql.conf");
    let started = std::time::SystemTime::now();
    let set_mtime = |t: std::time::SystemTime| {
        fs::File::options()
            .write(true)
            .open(&conf)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set_mtime(started);
    let mut full = take(1, &data, &tmp.path().join("b1"), None);
    full.started_at = chrono::DateTime::<chrono::Utc>::from(started).to_rfc3339();
    fs::write(&conf, b"port = 6543\n").unwrap();
    set_mtime(started);
    let incr = take(2, &data, &tmp.path().join("b2"), Some(&full));
    let target = tmp.path().join("r2");
    restore(&incr, &target, 2, &mut |_, _| {}).unwrap();
    assert_eq!(
        fs::read(target.join("postgresql.conf")).unwrap(),
        b"port = 6543\n"
    );

    // A file last changed well before the previous backup started: nothing of it is stored again.
    let old = started - std::time::Duration::from_secs(3600);
    set_mtime(old);
    let mut second = take(3, &data, &tmp.path().join("b3"), None);
    second.started_at = chrono::DateTime::<chrono::Utc>::from(started).to_rfc3339();
    let third = take(4, &data, &tmp.path().join("b4"), Some(&second));
    assert!(third
        .files
        .iter()
        .any(|f| f.path == "postgresql.conf" && f.chunks.iter().all(|c| c.link == 1)));
}

/// A tablespace linked from pg_tblspc is backed up through its link (only this server's
/// version directory, not another major's beside it), and restored into a directory of its
/// own, original or mapped, with the link made again; directories that are not empty, unknown
/// mappings and nested places are refused before anything is written.
#[test]
fn tablespaces_are_backed_up_through_their_links_and_restored_where_placed() {
    use super::restore::{place_tablespaces, place_tablespaces_under};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    let location = tmp.path().join("ts1");
    write(
        &location,
        &format!("{TABLESPACE_DIRECTORY}/5/16600"),
        &[7u8; 20_000],
    );
    write(
        &location,
        &format!("{TABLESPACE_DIRECTORY}/5/16601"),
        b"unlogged",
    );
    write(
        &location,
        &format!("{TABLESPACE_DIRECTORY}/5/16601_init"),
        b"init",
    );
    write(
        &location,
        &format!("{TABLESPACE_DIRECTORY}/5/16602"),
        b"logged",
    );
    write(
        &location,
        &format!("{TABLESPACE_DIRECTORY}/5/t4_16700"),
        b"temp",
    );
    write(&location, "PG_14_202107181/5/16384", b"another major's");
    std::os::unix::fs::symlink(&location, data.join("pg_tblspc/16400")).unwrap();
    let full = take(1, &data, &tmp.path().join("b1"), None);
    assert_eq!(full.format, 2);
    assert_eq!(full.tablespaces.len(), 1);
    assert_eq!(full.tablespaces[0].oid, "16400");
    assert_eq!(Path::new(&full.tablespaces[0].location), location);
    let in_tablespace: Vec<&str> = full
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.starts_with("pg_tblspc/"))
        .collect();
    let prefix = format!("pg_tblspc/16400/{TABLESPACE_DIRECTORY}/5");
    assert_eq!(
        in_tablespace,
        [
            format!("{prefix}/16600"),
            format!("{prefix}/16601_init"),
            format!("{prefix}/16602"),
        ]
    );
    // an incremental references the unchanged tablespace files
    let incr = take(2, &data, &tmp.path().join("b2"), Some(&full));
    assert_eq!(incr.stored_bytes_here(), 0);
    assert_eq!(
        load(&tmp.path().join("b2")).unwrap().tablespaces,
        full.tablespaces
    );

    let s3 = S3Settings::default();
    let keys = KeyDir::default();
    let restore_placed = |target: &Path, placements: &[super::restore::Placement]| {
        restore_with(&incr, target, placements, 2, &s3, &keys, &mut |_, _| Ok(()))
    };
    // at the original location, which is not empty: refused, nothing written
    let original = place_tablespaces(&incr, &[]).unwrap();
    assert_eq!(original[0].directory, location);
    let err = restore_placed(&tmp.path().join("r1"), &original).unwrap_err();
    assert!(
        err.contains("not empty") && err.contains("--tablespace-mapping"),
        "{err}"
    );
    assert!(!tmp.path().join("r1").exists());
    // a mapping that names no tablespace of the backup is refused
    let err = place_tablespaces(&incr, &[(tmp.path().join("nowhere"), tmp.path().join("x"))])
        .unwrap_err();
    assert!(err.contains("no tablespace of backup 2"), "{err}");
    // mapped into the target itself: refused
    let nested = place_tablespaces(&incr, &[(location.clone(), tmp.path().join("r1/ts"))]).unwrap();
    let err = restore_placed(&tmp.path().join("r1"), &nested).unwrap_err();
    assert!(err.contains("inside one another"), "{err}");
    // mapped: restored there, linked from pg_tblspc
    let moved = tmp.path().join("moved/ts1");
    let mapped = place_tablespaces(&incr, &[(location.clone(), moved.clone())]).unwrap();
    assert!(mapped[0].created);
    let target = tmp.path().join("r2");
    restore_placed(&target, &mapped).unwrap();
    assert_eq!(
        fs::read_link(target.join("pg_tblspc/16400")).unwrap(),
        moved
    );
    assert_eq!(
        fs::read(moved.join(format!("{TABLESPACE_DIRECTORY}/5/16600"))).unwrap(),
        vec![7u8; 20_000]
    );
    assert!(!moved.join("PG_14_202107181").exists());
    assert!(!moved
        .join(format!("{TABLESPACE_DIRECTORY}/5/16601"))
        .exists());
    assert!(!target.join("tablespace_map").exists());
    // a placement through a symbolic link, or with "..", is refused
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &link).unwrap();
    for odd in [link.clone(), tmp.path().join("moved/../r2")] {
        let placed = place_tablespaces(&incr, &[(location.clone(), odd.clone())]).unwrap();
        let err = restore_placed(&tmp.path().join("r5"), &placed).unwrap_err();
        assert!(
            err.contains("symbolic link") || err.contains("without \"..\""),
            "{err}"
        );
    }
    assert!(
        fs::symlink_metadata(&link).is_ok(),
        "a refused placement is left alone"
    );
    // a manifest whose tablespace files are not in a server's directory there is refused
    let mut forged = incr.clone();
    forged.files[0].path = "pg_tblspc/16400/authorized_keys".into();
    let err = Manifest::parse(&serde_json::to_vec(&forged).unwrap(), "forged").unwrap_err();
    assert!(err.contains("authorized_keys"), "{err}");
    // a drill's places: under its scratch directory; a failed restore removes what it wrote
    let scratch = tmp.path().join("scratch/tablespaces");
    let under = place_tablespaces_under(&incr, &scratch);
    assert_eq!(under[0].directory, scratch.join("16400"));
    fs::remove_file(tmp.path().join("b1").join(PACK_FILE)).unwrap();
    let err = restore_placed(&tmp.path().join("r3"), &under).unwrap_err();
    assert!(err.contains("backup 1"), "{err}");
    restore_with(
        &full,
        &tmp.path().join("r4"),
        &under,
        2,
        &s3,
        &keys,
        &mut |_, _| Err("cancelled".into()),
    )
    .unwrap_err();
    assert!(
        !scratch.join("16400").exists(),
        "a failed restore leaves its tablespace directory"
    );
}

/// A delta restore over a copy that diverged rewrites only the chunks that differ, writes what
/// is missing, removes what the backup lacks, and ends equal to the backup; a second one
/// writes nothing. Another cluster's directory, a running server's, and backups with
/// tablespaces are refused.
#[test]
fn a_delta_restore_rewrites_only_what_differs_and_removes_the_rest() {
    use super::delta::restore_delta;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    let control = |id: u64| [id.to_ne_bytes().to_vec(), vec![0u8; 100]].concat();
    fs::write(data.join("global/pg_control"), control(1)).unwrap();
    let full = take(1, &data, &tmp.path().join("b1"), None);
    let copy = tmp.path().join("copy");
    restore(&full, &copy, 2, &mut |_, _| {}).unwrap();
    let (s3, keys) = (S3Settings::default(), KeyDir::default());
    let delta = |m: &Manifest| restore_delta(m, &copy, 2, &s3, &keys, &mut |_, _| Ok(()));

    let mut table = fs::read(copy.join("base/5/16384")).unwrap();
    table[100_000] ^= 0xff;
    table.truncate(300_000);
    fs::write(copy.join("base/5/16384"), &table).unwrap();
    fs::remove_file(copy.join("postgresql.conf")).unwrap();
    write(&copy, "base/5/99999", b"a relation the backup lacks");
    write(&copy, "base/77/1", b"a database the backup lacks");
    write(&copy, "pg_wal/000000010000000000000009", b"stale WAL");
    std::os::unix::fs::symlink("/etc", copy.join("pg_tblspc/16400")).unwrap();
    let report = delta(&full).unwrap();
    // 16384: the changed chunk and those cut off; postgresql.conf: its one chunk; pg_control,
    // removed first and written last, so that no server starts on a half-rewritten copy
    let table_chunks = 3_000_000u64.div_ceil(64 * 1024);
    let rewritten = 1 + (table_chunks - 300_000 / (64 * 1024)) + 1 + 1;
    assert_eq!(report.chunks_written, rewritten, "{report:?}");
    assert_eq!((report.files_written, report.removed), (3, 4), "{report:?}");
    for f in &full.files {
        assert_eq!(
            fs::read(copy.join(&f.path)).unwrap(),
            fs::read(data.join(&f.path)).unwrap(),
            "{}",
            f.path
        );
    }
    for gone in [
        "base/5/99999",
        "base/77",
        "pg_wal/000000010000000000000009",
        "pg_tblspc/16400",
    ] {
        assert!(fs::symlink_metadata(copy.join(gone)).is_err(), "{gone}");
    }
    assert!(copy.join("backup_label").is_file() && copy.join("pg_wal").is_dir());
    let again = delta(&full).unwrap();
    assert_eq!(
        (again.chunks_written, again.files_written, again.removed),
        (1, 1, 0),
        "only pg_control, which is always written last"
    );

    // an interrupted delta restore leaves no pg_control (no server starts on it) and its
    // marker; run again, it finishes
    fs::remove_file(copy.join("global/pg_control")).unwrap();
    fs::write(copy.join(super::delta::IN_PROGRESS), "1").unwrap();
    delta(&full).unwrap();
    assert!(!copy.join(super::delta::IN_PROGRESS).exists());
    assert_eq!(
        fs::read(copy.join("global/pg_control")).unwrap(),
        control(1)
    );
    // a file hard-linked elsewhere is written anew, not through the link
    let linked = tmp.path().join("linked");
    fs::hard_link(copy.join("postgresql.conf"), &linked).unwrap();
    fs::write(&linked, b"changed through the other link").unwrap();
    delta(&full).unwrap();
    assert_eq!(
        fs::read(&linked).unwrap(),
        b"changed through the other link"
    );
    assert_eq!(
        fs::read(copy.join("postgresql.conf")).unwrap(),
        fs::read(data.join("postgresql.conf")).unwrap()
    );

    fs::write(copy.join("postmaster.pid"), "123").unwrap();
    assert!(delta(&full).unwrap_err().contains("postmaster.pid"));
    fs::remove_file(copy.join("postmaster.pid")).unwrap();
    fs::write(copy.join("global/pg_control"), control(2)).unwrap();
    assert!(delta(&full).unwrap_err().contains("copy of cluster 2"));
    let mut with_tablespace = full.clone();
    with_tablespace
        .tablespaces
        .push(super::manifest::Tablespace {
            oid: "16400".into(),
            location: "/srv/ts".into(),
        });
    assert!(delta(&with_tablespace).unwrap_err().contains("tablespaces"));
}

#[test]
fn an_incremental_with_a_block_map_reads_only_the_chunks_wal_names() {
    use crate::wal_blocks::RelFile;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    sample_data_dir(&data);
    write(&data, "base/5/16500", &vec![3u8; 200_000]);
    let full = take(1, &data, &tmp.path().join("b1"), None);
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Block 20 (chunk 2 of 64 KiB chunks) changed and said so by WAL; block 100 (chunk 12)
    // changed without WAL (as hint bits may): it is not read. The file grew by 70,000 bytes:
    // from its old last chunk on, all is read. Relation 16500 was truncated and refilled:
    // read whole.
    let path = data.join("base/5/16384");
    let mut table = fs::read(&path).unwrap();
    let original_block_100 = table[100 * 8192..101 * 8192].to_vec();
    table[20 * 8192..21 * 8192].fill(0xAB);
    table[100 * 8192..101 * 8192].fill(0xCD);
    table.extend(vec![0xEEu8; 70_000]);
    fs::write(&path, &table).unwrap();
    write(&data, "base/5/16500", &vec![4u8; 100_000]);
    let rel = |relation| RelFile {
        tablespace: 1663,
        database: 5,
        relation,
    };
    let mut changed = ChangedBlocks::default();
    changed.block(rel(16384), 0, 20);
    changed.block(rel(16384), 0, 20 + 131_072); // another segment file's block
    changed.rewritten(rel(16500));

    let copied = take_copied(2, &data, &tmp.path().join("b2"), Some(&full), Some(changed));
    assert_eq!(copied.files_by_block, 1);
    let old_last_chunk = 3_000_000 / 65_536 * 65_536;
    let expected_read = 65_536 + (table.len() - old_last_chunk) + 100_000;
    let other_files: u64 = copied
        .files
        .iter()
        .filter(|f| f.path != "base/5/16384" && f.path != "base/5/16500")
        .map(|f| f.size)
        .sum();
    assert!(
        copied.bytes_read == expected_read as u64 + other_files,
        "read {} bytes",
        copied.bytes_read
    );
    let incremental = manifest_for(2, &tmp.path().join("b2"), copied);
    let target = tmp.path().join("restored");
    restore(&incremental, &target, 2, &mut |_, _| {}).unwrap();
    let restored = fs::read(target.join("base/5/16384")).unwrap();
    table[100 * 8192..101 * 8192].copy_from_slice(&original_block_100);
    assert!(
        restored == table,
        "changed and grown parts restored, the rest referenced"
    );
    assert_eq!(
        fs::read(target.join("base/5/16500")).unwrap(),
        vec![4u8; 100_000]
    );
}
