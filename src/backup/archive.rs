//! admin_toolkit as a PostgreSQL archive module (`archive_library = 'admin_toolkit'`): each
//! WAL file is stored compressed with checksums in `admin_toolkit.archive_location` (a local
//! directory or s3://bucket/prefix), durably, never overwriting different content, in an
//! archive that belongs to this cluster alone (its marker names the system identifier). Any failure returns false, so the archiver keeps the
//! file and retries: no WAL is lost. The stored files' modification times are their archive
//! times, for recovery planning.

use crate::settings;
use admin_toolkit_core::storage::{PutOutcome, Storage};
use admin_toolkit_core::wal::{archive_wal, claim_archive};
use pgrx::prelude::*;
use std::ffi::CStr;
use std::path::Path;
use std::sync::Mutex;

crate::archive_module_entry_point!(configured, archive_file);

/// Whether the archive module can work: `archive_location` is set.
fn configured() -> bool {
    settings::archive_location().is_some()
}

fn archive(name: &str, path: &str) -> Result<PutOutcome, String> {
    let location = super::locations::archive_location()
        .ok_or("admin_toolkit.archive_location is not set")??;
    // SAFETY: DataDir is set for the life of the process.
    let data_dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    if location.overlaps(Path::new(&data_dir)) {
        return Err("admin_toolkit.archive_location must be outside the data directory".into());
    }
    let storage = super::locations::open(&location)?;
    let system = super::locations::system_identifier();
    claim(storage.as_ref(), &system, &location.display())?;
    let contents = std::fs::read(path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    let key_id = settings::archive_encryption_key_id();
    archive_wal(
        storage.as_ref(),
        &system,
        name,
        &contents,
        &settings::key_dir(),
        key_id.as_deref(),
    )
    .map_err(|e| e.to_string())
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
    match archive(&name, &path) {
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
