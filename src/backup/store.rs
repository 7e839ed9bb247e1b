//! Storages of backup and archive locations, opened with the server's S3 settings: the one way
//! the backup code reaches a location, local or s3://.

use crate::settings;
use admin_toolkit_core::storage::{self, Location, Storage};

/// The storage at `location`.
pub fn open(location: &Location) -> Result<Box<dyn Storage>, String> {
    storage::open(location, &settings::s3()).map_err(|e| e.to_string())
}

/// The archive module's location (admin_toolkit.archive_location): `None` when unset.
pub fn archive_location() -> Option<Result<Location, String>> {
    settings::archive_location().map(|l| Location::parse(&l).map_err(|e| e.to_string()))
}

/// The WAL archive's storage, or why there is none.
pub fn archive() -> Result<Box<dyn Storage>, String> {
    let location = archive_location().ok_or_else(|| {
        "admin_toolkit.archive_location is not set: there is no WAL archive".to_string()
    })??;
    open(&location)
}

/// Whether two locations are the same place (local paths compared after resolving `..` and
/// symbolic links).
pub fn same_location(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (Location::Local(x), Location::Local(y)) => {
            storage::canonical_path(x) == storage::canonical_path(y)
        }
        _ => a == b,
    }
}
