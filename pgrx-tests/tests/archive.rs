//! The WAL archive module against a real server: WAL lands in the archive after a switch and
//! verifies; an unwritable archive makes the archiver fail and retry, and nothing is lost.

use admin_toolkit_core::storage::{LocalStorage, Location};
use admin_toolkit_core::wal::restore_wal;
use admin_toolkit_it::{wait_for, Cluster, ClusterOptions, ScratchDir};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A cluster archiving into a scratch directory; fields drop in order, so the server stops
/// before its archive is removed.
struct Archiving {
    cluster: Cluster,
    archive: PathBuf,
    _store: ScratchDir,
}

fn archiving_cluster() -> Archiving {
    let store = ScratchDir::new("admin_toolkit_archive_");
    let archive = store.path().join("wal");
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            "archive_mode = on".into(),
            "archive_library = 'admin_toolkit'".into(),
            format!("admin_toolkit.archive_location = '{}'", archive.display()),
            "archive_timeout = 0".into(),
        ],
        ..ClusterOptions::default()
    });
    Archiving {
        cluster,
        archive,
        _store: store,
    }
}

fn switch_wal(db: &mut postgres::Client) -> String {
    db.batch_execute("CREATE TABLE IF NOT EXISTS filler (x text); INSERT INTO filler SELECT md5(g::text) FROM generate_series(1, 1000) g")
        .unwrap();
    let name: String = db
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .unwrap()
        .get(0);
    db.batch_execute("SELECT pg_switch_wal()").unwrap();
    name
}

#[test]
fn wal_lands_in_the_archive_and_verifies() {
    let Archiving {
        cluster, archive, ..
    } = &archiving_cluster();
    let mut db = cluster.connect("postgres");
    let segment = switch_wal(&mut db);
    wait_for("the segment archived", || {
        let last: Option<String> = db
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        (last.as_deref() == Some(segment.as_str())).then_some(())
    });
    let storage = LocalStorage::open(&Location::Local(archive.clone())).unwrap();
    let contents = restore_wal(&storage, None, &segment, &Default::default(), false)
        .expect("archived segment verifies");
    assert_eq!(contents.len(), 16 * 1024 * 1024);
    let compressed = std::fs::metadata(archive.join(format!("{segment}.zst")))
        .unwrap()
        .len();
    assert!(
        compressed < 16 * 1024 * 1024 / 4,
        "compressed to {compressed} bytes"
    );
}

#[test]
fn an_unwritable_archive_fails_retries_and_loses_nothing() {
    let Archiving {
        cluster, archive, ..
    } = &archiving_cluster();
    let mut db = cluster.connect("postgres");
    let first = switch_wal(&mut db);
    wait_for("the archive directory", || {
        archive.join(format!("{first}.zst")).exists().then_some(())
    });
    std::fs::set_permissions(archive, std::fs::Permissions::from_mode(0o500)).unwrap();
    let blocked: Vec<String> = (0..2).map(|_| switch_wal(&mut db)).collect();
    wait_for("archiver failures", || {
        let failed: i64 = db
            .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        (failed >= 2).then_some(())
    });
    assert!(cluster
        .server_log()
        .contains("admin_toolkit archive: could not archive"));
    // The archiver kept the files: nothing archived past the failure.
    let last: Option<String> = db
        .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    assert_eq!(last.as_deref(), Some(first.as_str()));
    std::fs::set_permissions(archive, std::fs::Permissions::from_mode(0o700)).unwrap();
    let storage = LocalStorage::open(&Location::Local(archive.clone())).unwrap();
    for segment in &blocked {
        wait_for(&format!("{segment} archived after the fix"), || {
            restore_wal(&storage, None, segment, &Default::default(), false).ok()
        });
    }
}

/// With admin_toolkit.archive_parallelism > 1 the next ready segments are uploaded while the
/// archiver is still on one: stuck on a segment the archive refuses (a damaged object already
/// there), the following ones are stored, yet none counts as archived before its own turn.
/// Once the way is clear every segment is archived and verifies; with parallelism 1 nothing
/// goes ahead.
#[test]
fn segments_are_uploaded_ahead_but_archived_only_in_turn() {
    let Archiving {
        cluster, archive, ..
    } = &archiving_cluster();
    let mut db = cluster.connect("postgres");
    let first = switch_wal(&mut db);
    wait_for("the first segment archived", || {
        archive.join(format!("{first}.zst")).exists().then_some(())
    });
    let name_after = |db: &mut postgres::Client, n: i64| -> String {
        db.query_one(
            "SELECT pg_walfile_name(pg_current_wal_lsn() + $1::bigint * 16777216)",
            &[&n],
        )
        .unwrap()
        .get(0)
    };
    let stuck_on = |db: &mut postgres::Client, parallelism: i32, planted: &str| -> Vec<String> {
        db.batch_execute(&format!(
            "ALTER SYSTEM SET admin_toolkit.archive_parallelism = {parallelism}"
        ))
        .unwrap();
        db.batch_execute("SELECT pg_reload_conf()").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        // A damaged object under the name of a segment to come: the archiver fails on it.
        std::fs::write(archive.join(format!("{planted}.zst")), b"not zstd").unwrap();
        let failures_before: i64 = db
            .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        let mut written = Vec::new();
        while written.last().map(String::as_str) < Some(planted) || written.len() < 7 {
            written.push(switch_wal(db));
        }
        wait_for("the archiver failing on the damaged object", || {
            let failed: i64 = db
                .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
                .unwrap()
                .get(0);
            (failed >= failures_before + 2).then_some(())
        });
        written
    };

    let planted = name_after(&mut db, 2);
    let written = stuck_on(&mut db, 4, &planted);
    let after: Vec<&String> = written.iter().filter(|s| **s > planted).collect();
    assert!(after.len() >= 4, "{written:?}");
    for segment in &after[..4] {
        wait_for(&format!("{segment} uploaded ahead"), || {
            archive
                .join(format!("{segment}.zst"))
                .exists()
                .then_some(())
        });
    }
    let last: String = db
        .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    assert!(
        last < planted,
        "{last} counted as archived past the stuck {planted}"
    );
    // The way cleared: every segment archived, in turn, and each verifies.
    std::fs::remove_file(archive.join(format!("{planted}.zst"))).unwrap();
    let end = written.last().unwrap().clone();
    wait_for("every segment archived", || {
        let last: String = db
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        (last >= end).then_some(())
    });
    let storage = LocalStorage::open(&Location::Local(archive.clone())).unwrap();
    for segment in &written {
        restore_wal(&storage, None, segment, &Default::default(), false)
            .unwrap_or_else(|e| panic!("{segment}: {e}"));
    }

    // One at a time: stuck on a segment, nothing after it is stored.
    let planted = name_after(&mut db, 2);
    let written = stuck_on(&mut db, 1, &planted);
    std::thread::sleep(std::time::Duration::from_secs(1));
    for segment in written.iter().filter(|s| **s > planted) {
        assert!(
            !archive.join(format!("{segment}.zst")).exists(),
            "{segment} stored with archive_parallelism = 1"
        );
    }
}
