//! Storages of backup and archive locations, opened with the server's S3 settings: the one way
//! the backup code reaches a location, local or s3://.

use crate::settings;
use admin_toolkit_core::backup::manifest::Manifest;
use admin_toolkit_core::backup::store::{Expected, Sealing};
use admin_toolkit_core::storage::{self, Location, Storage};
use pgrx::prelude::*;

/// The storage at `location`.
pub fn open(location: &Location) -> Result<Box<dyn Storage>, String> {
    storage::open(location, &settings::s3()).map_err(|e| e.to_string())
}

/// The archive module's location (admin_toolkit.archive_location): `None` when unset.
pub fn archive_location() -> Option<Result<Location, String>> {
    settings::archive_location().map(|l| Location::parse(&l).map_err(|e| e.to_string()))
}

/// Whether the archive is encrypted (admin_toolkit.archive_encryption_key_id is set): then
/// every WAL file read back must be sealed.
/// This cluster's system identifier, as the archive marker and sealed WAL name it.
pub fn system_identifier() -> String {
    // SAFETY: the control file's system identifier, set once the server has started.
    unsafe { pgrx::pg_sys::GetSystemIdentifier() }.to_string()
}

pub fn archive_sealed() -> bool {
    settings::archive_encryption_key_id().is_some()
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

/// What backup `backup_id`'s catalog row says its manifest must be: sealed with the key the
/// backup was taken with, a backup of the cluster it was taken on. Read as superuser (a
/// chain may cross owners, whose rows row-level security hides). Needs a transaction.
pub fn expected_of(backup_id: i64) -> Result<Expected, String> {
    let row = crate::environment::as_superuser(|| {
        crate::query::one_row(
            "SELECT metadata->>'encryption_key_id', metadata->>'system_identifier' \
                   FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[backup_id.into()],
            |r| Ok((r.get::<String>(1)?, r.get::<String>(2)?)),
        )
    })
    .map_err(|e| e.to_string())?;
    let (key_id, system_identifier) =
        row.ok_or_else(|| format!("backup {backup_id} is not in backup_history"))?;
    Ok(Expected {
        backup_id: Some(backup_id),
        sealing: key_id.map_or(Sealing::Optional, Sealing::WithKey),
        system_identifier,
    })
}

/// Refuses a manifest whose chain names a backup the catalog does not have at that place:
/// whoever can write to the storage cannot make a restore read another backup. Needs a
/// transaction.
pub fn check_chain(manifest: &Manifest) -> Result<(), String> {
    let ids: Vec<i64> = manifest.chain.iter().map(|l| l.backup_id).collect();
    let known: Vec<(i64, String)> = crate::environment::as_superuser(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT backup_id, backup_path FROM admin_toolkit.backup_history \
                  WHERE backup_id OPERATOR(pg_catalog.=) ANY ($1)",
                None,
                &[ids.into()],
            )?
            .map(|r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<spi::Result<Vec<_>>>()
        })
    })
    .map_err(|e| e.to_string())?;
    for link in &manifest.chain {
        let path = link.path.to_string_lossy();
        let same = known.iter().any(|(id, at)| {
            *id == link.backup_id
                && Location::parse(at)
                    .ok()
                    .zip(Location::parse(&path).ok())
                    .is_some_and(|(a, b)| same_location(&a, &b))
        });
        if !same {
            return Err(format!(
                "the manifest of backup {} names backup {} at \"{path}\", which backup_history does not have there: refused",
                manifest.backup_id, link.backup_id
            ));
        }
    }
    Ok(())
}
