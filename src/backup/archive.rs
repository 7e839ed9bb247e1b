//! admin_toolkit as a PostgreSQL archive module (`archive_library = 'admin_toolkit'`): each
//! WAL file is stored compressed with checksums in `admin_toolkit.archive_location` (a local
//! directory or s3://bucket/prefix), durably, never overwriting different content, in an
//! archive that belongs to this cluster alone (its marker names the system identifier). Any
//! failure returns false, so the archiver keeps the file and retries: no WAL is lost. The
//! stored files' modification times are their archive times, for recovery planning. The next
//! ready files are uploaded ahead, `admin_toolkit.archive_parallelism` at once
//! (`core::wal_push`).

use crate::settings;
use admin_toolkit_core::crypto::KeyDir;
use admin_toolkit_core::storage::{PutOutcome, Storage};
use admin_toolkit_core::wal::{archive_wal, claim_archive};
use admin_toolkit_core::wal_blocks::map::{map_archived_segment, MAP_DIRECTORY};
use admin_toolkit_core::wal_push::{ready_files, AheadPusher, Push};
use pgrx::prelude::*;
use std::ffi::CStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

crate::archive_module_entry_point!(configured, archive_file);

/// Whether the archive module can work: `archive_location` is set.
fn configured() -> bool {
    settings::archive_location().is_some()
}

/// Where and how this archiver stores WAL under the settings in force: one storage client
/// per process (kept while the settings stay and for at most `STORAGE_KEPT`, so that rotated
/// credentials are read again), shared with the uploads ahead.
struct Target {
    storage: Arc<dyn Storage>,
    system: String,
    key_id: Option<String>,
    /// The settings the storage and the uploads ahead were made under.
    fingerprint: String,
}

/// How long the archiver keeps one storage client.
const STORAGE_KEPT: Duration = Duration::from_secs(300);

/// The storage client kept: the settings it was made under, when, and the client.
struct KeptStorage {
    made_for: String,
    made_at: Instant,
    storage: Arc<dyn Storage>,
}

static STORAGE: Mutex<Option<KeptStorage>> = Mutex::new(None);
static PUSHER: Mutex<Option<AheadPusher>> = Mutex::new(None);

fn target() -> Result<Target, String> {
    let location = super::locations::archive_location()
        .ok_or("admin_toolkit.archive_location is not set")??;
    // SAFETY: DataDir is set for the life of the process.
    let data_dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    if location.overlaps(Path::new(&data_dir)) {
        return Err("admin_toolkit.archive_location must be outside the data directory".into());
    }
    let system = super::locations::system_identifier();
    let key_id = settings::archive_encryption_key_id();
    // Every setting the storage client and the stored bytes depend on.
    let fingerprint = format!(
        "{}|{key_id:?}|{:?}|{:?}",
        location.display(),
        settings::s3(),
        settings::key_dir().0
    );
    let mut cached = STORAGE.lock().unwrap_or_else(|p| p.into_inner());
    let storage = match &*cached {
        Some(kept) if kept.made_for == fingerprint && kept.made_at.elapsed() < STORAGE_KEPT => {
            Arc::clone(&kept.storage)
        }
        _ => {
            let storage: Arc<dyn Storage> = Arc::from(super::locations::open(&location)?);
            *cached = Some(KeptStorage {
                made_for: fingerprint.clone(),
                made_at: Instant::now(),
                storage: Arc::clone(&storage),
            });
            storage
        }
    };
    claim(storage.as_ref(), &system, &location.display())?;
    Ok(Target {
        storage,
        system,
        key_id,
        fingerprint,
    })
}

impl Target {
    /// Stores WAL file `name` from `path`.
    fn store(&self, name: &str, path: &str) -> Result<PutOutcome, String> {
        let keys = settings::key_dir();
        store_with(
            &self.storage,
            &self.system,
            self.key_id.as_deref(),
            &keys,
            name,
            path,
        )
        .map(|(outcome, _reported_by_archive_file)| outcome)
    }

    /// The upload of a file ahead: the same as `store`, on a thread of the pusher.
    fn push(&self) -> Arc<Push> {
        let (storage, system, key_id) = (
            Arc::clone(&self.storage),
            self.system.clone(),
            self.key_id.clone(),
        );
        let keys = settings::key_dir();
        Arc::new(move |name: &str| {
            store_with(
                &storage,
                &system,
                key_id.as_deref(),
                &keys,
                name,
                &format!("pg_wal/{name}"),
            )
            // A map not made here is made again, and a failure reported, by the archiver's
            // own call for the file (`write_block_map`).
            .map(|(outcome, _made_again)| outcome)
        })
    }
}

/// Archives WAL file `name` from `path`, then writes its block map while its bytes are at
/// hand: the outcome, and the map's.
fn store_with(
    storage: &Arc<dyn Storage>,
    system: &str,
    key_id: Option<&str>,
    keys: &KeyDir,
    name: &str,
    path: &str,
) -> Result<(PutOutcome, Result<bool, String>), String> {
    let contents = std::fs::read(path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    let outcome = archive_wal(storage.as_ref(), system, name, &contents, keys, key_id)
        .map_err(|e| e.to_string())?;
    // SAFETY: set at startup, read-only after (read on the uploads' threads too: a plain
    // integer, never written again).
    let segment_size = unsafe { pg_sys::wal_segment_size } as u64;
    let map = map_archived_segment(Path::new(MAP_DIRECTORY), name, &contents, segment_size);
    Ok((outcome, map))
}

/// Archives `name`: from an upload started ahead under the same settings when there is one
/// (waiting for it if it runs), else here; first starts uploads of the next ready files.
fn archive(name: &str, path: &str) -> Result<PutOutcome, String> {
    let target = target()?;
    let parallelism = settings::archive_parallelism();
    let mut pusher = PUSHER.lock().unwrap_or_else(|p| p.into_inner());
    if parallelism > 1 || pusher.is_some() {
        let pusher = pusher.get_or_insert_with(AheadPusher::default);
        if parallelism > 1 {
            // The archiver runs in the data directory.
            let ready = ready_files(Path::new("pg_wal/archive_status"));
            pusher.start_ahead(
                name,
                &ready,
                parallelism,
                &target.fingerprint,
                &target.push(),
            );
        }
        // Also after archive_parallelism went down to 1: an upload still running for this
        // file is waited for, not raced.
        match pusher.take(name, &target.fingerprint) {
            Some(Ok(outcome)) => return Ok(outcome),
            Some(Err(e)) => debug1!(
                "admin_toolkit archive: the upload of {name} ahead failed ({e}); archiving it now"
            ),
            None => {}
        }
    }
    target.store(name, path)
}

/// The archive location this archiver has claimed for its cluster (see
/// [`claim_archive`]): checked once per location, not once per file.
static CLAIMED: Mutex<Option<String>> = Mutex::new(None);

fn claim(storage: &dyn Storage, system: &str, location: &str) -> Result<(), String> {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    if claimed.as_deref() == Some(location) {
        return Ok(());
    }
    claim_archive(storage, system).map_err(|e| e.to_string())?;
    *claimed = Some(location.to_string());
    Ok(())
}

/// Archives WAL file `name` (at `path`): true once it is stored, or was already with the same
/// content; false (with a WARNING) and the archiver tries again later.
fn archive_file(name: &CStr, path: &CStr) -> bool {
    let (name, path) = (name.to_string_lossy(), path.to_string_lossy());
    let archived = archive(&name, &path);
    let maps = Path::new(MAP_DIRECTORY);
    if archived.is_ok() && maps.is_dir() && !maps.join(&*name).exists() {
        write_block_map(&name, &path);
    }
    match archived {
        Ok(PutOutcome::Stored) => true,
        Ok(PutOutcome::AlreadyPresent) => {
            log!("admin_toolkit archive: {name} was already archived with identical content");
            true
        }
        Err(message) => {
            // A WARNING, not an ERROR: the archiver keeps the file and tries again later.
            warning!("admin_toolkit archive: could not archive {name}: {message}");
            false
        }
    }
}

/// Writes the block map of segment `name` (`core::wal_blocks::map`) once it is archived,
/// when the upload that archived it did not (maps are kept while their directory exists: the
/// first base backup makes it). A map that cannot be made only costs the next incremental a
/// whole comparison, which its record states: a WARNING, and the segment still counts as
/// archived.
fn write_block_map(name: &str, path: &str) {
    // SAFETY: set at startup, read-only after.
    let segment_size = unsafe { pg_sys::wal_segment_size } as u64;
    let directory = Path::new(MAP_DIRECTORY);
    let written = std::fs::read(path)
        .map_err(|e| format!("cannot read \"{path}\": {e}"))
        .and_then(|bytes| map_archived_segment(directory, name, &bytes, segment_size));
    if let Err(e) = written {
        warning!("admin_toolkit archive: no block map for {name}: {e}");
    }
}
