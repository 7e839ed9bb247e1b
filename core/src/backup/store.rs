//! One backup's place: a directory (with its marker file) or an s3:// prefix, reached through
//! the storage interface. The pack streams in, the manifest is stored last, so nothing without a
//! manifest is a complete backup; removal deletes the manifest first for the same reason.

use super::manifest::{Manifest, MANIFEST_FILE, MARKER_FILE, PACK_FILE};
use crate::codec::{Codec, Compression, Sealing as Seal};
use crate::crypto::{open_object, sealed_key_id, Key, KeyDir};
use crate::storage::{self, Location, ObjectWriter, S3Settings, Storage, StorageError};
use std::fs::{self, File};
use std::path::Path;

/// Whether a backup's manifest must be sealed, and with which key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sealing {
    /// Either (a reader that knows nothing of the backup).
    #[default]
    Optional,
    /// Sealed with some key (`--require-encryption`).
    Required,
    /// Sealed with this key (the backup's catalog row names it).
    WithKey(String),
}

/// What a reader knows of the backup it loads, against which the manifest is checked.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Its id, from its catalog row; none: read from its location's name (`backup_…_<id>`).
    pub backup_id: Option<i64>,
    pub sealing: Sealing,
    /// The cluster it is a backup of.
    pub system_identifier: Option<String>,
}

/// Associated data of a sealed manifest (0.4.0): its backup id.
fn manifest_aad(backup_id: i64) -> Vec<u8> {
    format!("{MANIFEST_FILE}:{backup_id}").into_bytes()
}

/// Associated data of 0.3.0's sealed manifests.
const LEGACY_MANIFEST_AAD: &[u8] = MANIFEST_FILE.as_bytes();

/// The backup id in a backup location's name (`…/backup_20261125_091008_42` → 42).
pub fn backup_id_of_location(location: &Location) -> Option<i64> {
    let text = location.display();
    let name = text.trim_end_matches('/').rsplit('/').next()?;
    let rest = name.strip_prefix("backup_")?;
    let (_, id) = rest.rsplit_once('_')?;
    id.parse().ok().filter(|id: &i64| *id > 0)
}

/// Whether two locations are on the same storage: both local, or in the same S3 bucket (of
/// the one endpoint a reader has).
fn same_storage(a: &Location, b: &Location) -> bool {
    match (a, b) {
        (Location::Local(_), Location::Local(_)) => true,
        (Location::S3 { bucket: x, .. }, Location::S3 { bucket: y, .. }) => x == y,
        _ => false,
    }
}

pub struct BackupStore {
    pub location: Location,
    storage: Box<dyn Storage>,
}

impl BackupStore {
    /// The backup at `location` (a path or an s3:// URL, as backup_history.backup_path holds).
    pub fn open(location: &str, s3: &S3Settings) -> Result<BackupStore, String> {
        let location = Location::parse(location).map_err(|e| e.to_string())?;
        if let Location::Local(dir) = &location {
            if !dir.exists() {
                return Err(format!("backup \"{}\" does not exist", dir.display()));
            }
        }
        let storage = storage::open(&location, s3).map_err(|e| e.to_string())?;
        Ok(BackupStore { location, storage })
    }

    /// A new backup at `location`: a local directory must not exist yet (it is created with
    /// its marker); an S3 prefix must hold no object yet.
    pub fn create(location: &Location, s3: &S3Settings) -> Result<BackupStore, String> {
        if let Location::Local(dir) = location {
            create_backup_directory(dir)?;
        }
        let storage = storage::open(location, s3).map_err(|e| e.to_string())?;
        let store = BackupStore {
            location: location.clone(),
            storage,
        };
        if let Location::S3 { .. } = location {
            let existing = store.storage.list("").map_err(|e| e.to_string())?;
            if !existing.is_empty() {
                return Err(format!(
                    "\"{}\" already holds {} objects; a backup is only written to an empty prefix",
                    location.display(),
                    existing.len()
                ));
            }
        }
        Ok(store)
    }

    pub fn display(&self) -> String {
        self.location.display()
    }

    /// The pack, streamed in (in parts, on S3): visible only once finished.
    pub fn pack_writer(&self) -> Result<Box<dyn ObjectWriter>, String> {
        self.storage.writer(PACK_FILE).map_err(|e| e.to_string())
    }

    /// `len` stored bytes of the pack from `offset`.
    pub fn read_pack(&self, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        self.storage.get_range(PACK_FILE, offset, len)
    }

    /// The pack's size; `None` when the backup has no pack.
    pub fn pack_size(&self) -> Result<Option<u64>, String> {
        let listed = self.storage.list(PACK_FILE).map_err(|e| e.to_string())?;
        Ok(listed
            .into_iter()
            .find(|o| o.name == PACK_FILE)
            .map(|o| o.size))
    }

    /// Stores the manifest, last and durably (sealed with `key` for an encrypted backup, which
    /// authenticates it, binds it to its backup id and hides the file list); returns its size.
    pub fn store_manifest(&self, manifest: &Manifest, key: Option<&Key>) -> Result<u64, String> {
        let json = serde_json::to_vec(manifest).map_err(|e| e.to_string())?;
        let codec = Codec {
            compression: Compression::None,
            sealing: match key {
                Some(key) => Seal::Object {
                    key,
                    aad: manifest_aad(manifest.backup_id),
                },
                None => Seal::None,
            },
        };
        let bytes = codec.encode(&json)?.stored;
        self.storage
            .put_new(MANIFEST_FILE, &bytes)
            .map_err(|e| format!("cannot store {}: {e}", self.storage.describe(MANIFEST_FILE)))?;
        Ok(bytes.len() as u64)
    }

    /// The manifest, opened with its key from `keys` when the backup is encrypted, and accepted
    /// only as what `expected` says the backup is: sealed when a key is expected (an unsealed
    /// manifest in its place is refused), for this backup (its id, from the catalog or the
    /// location's name; its cluster), with a chain on the same storage and, for an encrypted
    /// backup, encrypted throughout.
    pub fn load_manifest(&self, keys: &KeyDir, expected: &Expected) -> Result<Manifest, String> {
        let bytes = self.storage.get(MANIFEST_FILE).map_err(|e| match e {
            StorageError::NotFound(_) => format!(
                "\"{}\" has no {MANIFEST_FILE}: not a backup, or an incomplete one",
                self.display()
            ),
            other => other.to_string(),
        })?;
        let shown = self.storage.describe(MANIFEST_FILE);
        let backup_id = expected
            .backup_id
            .or_else(|| backup_id_of_location(&self.location));
        let sealed_with = sealed_key_id(&bytes).map(str::to_string);
        match (&expected.sealing, &sealed_with) {
            (Sealing::Optional, _) | (Sealing::Required, Some(_)) => {}
            (Sealing::Required | Sealing::WithKey(_), None) => {
                return Err(format!(
                    "{shown} is not encrypted, but an encrypted backup is expected there: refused (replaced by whoever can write to the storage?)"
                ))
            }
            (Sealing::WithKey(want), Some(got)) if want != got => {
                return Err(format!(
                    "{shown} is sealed with key \"{got}\", but the backup was encrypted with key \"{want}\": refused"
                ))
            }
            (Sealing::WithKey(_), Some(_)) => {}
        }
        let bytes = match &sealed_with {
            None => bytes,
            // Bound to the backup id since 0.4.0; 0.3.0's manifests carry a constant.
            Some(_) => match backup_id {
                Some(id) => open_object(keys, &manifest_aad(id), bytes.clone(), &shown)
                    .or_else(|e| {
                        open_object(keys, LEGACY_MANIFEST_AAD, bytes, &shown).map_err(|_| {
                            if keys.load(sealed_with.as_deref().unwrap_or_default()).is_ok() {
                                format!("{shown} does not open as the manifest of backup {id} (another backup's manifest copied over it, or altered): refused")
                            } else {
                                e
                            }
                        })
                    })?,
                None => open_object(keys, LEGACY_MANIFEST_AAD, bytes, &shown)?,
            },
        };
        let manifest = Manifest::parse(&bytes, &shown)?;
        self.check_manifest(
            &manifest,
            &shown,
            backup_id,
            expected,
            sealed_with.is_some(),
        )?;
        Ok(manifest)
    }

    fn check_manifest(
        &self,
        manifest: &Manifest,
        shown: &str,
        backup_id: Option<i64>,
        expected: &Expected,
        sealed: bool,
    ) -> Result<(), String> {
        if let Some(id) = backup_id {
            if manifest.backup_id != id || manifest.chain.first().map(|l| l.backup_id) != Some(id) {
                return Err(format!(
                    "{shown} is the manifest of backup {}, not of backup {id}: refused (copied over from another backup?)",
                    manifest.backup_id
                ));
            }
        }
        if let Some(system) = &expected.system_identifier {
            if &manifest.system_identifier != system {
                return Err(format!(
                    "{shown} is a backup of cluster {}, not of this cluster ({system}): refused",
                    manifest.system_identifier
                ));
            }
        }
        for link in &manifest.chain {
            let place = Location::parse(&link.path.to_string_lossy()).map_err(|e| e.to_string())?;
            if !same_storage(&place, &self.location) {
                return Err(format!(
                    "{shown} chains backup {} at \"{}\", on other storage than the backup itself: refused",
                    link.backup_id,
                    link.path.display()
                ));
            }
            if sealed && link.key_id.is_none() {
                return Err(format!(
                    "{shown} is encrypted but chains unencrypted backup {}: refused",
                    link.backup_id
                ));
            }
        }
        Ok(())
    }

    /// Deletes the backup: a local directory only if it carries the marker; on S3 the
    /// manifest first (so a removal cut short never leaves something that looks complete),
    /// then the other objects a backup writes, and nothing else: whatever else is under the
    /// prefix (put there by someone else, or a location named wrongly) stays.
    pub fn remove(&self) -> Result<(), String> {
        match &self.location {
            Location::Local(dir) => remove_backup_directory(dir),
            Location::S3 { .. } => {
                // Parts of a pack whose job died mid-upload (S3 keeps and bills them).
                self.storage.abort_uploads("").map_err(|e| e.to_string())?;
                for name in [MANIFEST_FILE, PACK_FILE, MARKER_FILE] {
                    match self.storage.delete(name) {
                        Ok(()) | Err(StorageError::NotFound(_)) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            }
        }
    }
}

/// Removes the backup at `location` (see [`BackupStore::remove`]); a missing one is fine.
pub fn remove_backup(location: &str, s3: &S3Settings) -> Result<(), String> {
    match Location::parse(location).map_err(|e| e.to_string())? {
        Location::Local(dir) => remove_backup_directory(&dir),
        s3_location => {
            let storage = storage::open(&s3_location, s3).map_err(|e| e.to_string())?;
            BackupStore {
                location: s3_location,
                storage,
            }
            .remove()
        }
    }
}

/// Creates the backup directory (which must not exist yet) with its marker file.
pub fn create_backup_directory(backup_dir: &Path) -> Result<(), String> {
    if let Some(parent) = backup_dir.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create directory \"{}\": {e}", parent.display()))?;
    }
    fs::create_dir(backup_dir)
        .and_then(|_| File::create(backup_dir.join(MARKER_FILE)).map(drop))
        .map_err(|e| {
            format!(
                "cannot create backup directory \"{}\": {e}",
                backup_dir.display()
            )
        })
}

/// Removes a backup directory, only if it carries the marker (never anything else).
pub fn remove_backup_directory(backup_dir: &Path) -> Result<(), String> {
    if !backup_dir.exists() {
        return Ok(());
    }
    if !backup_dir.join(MARKER_FILE).exists() {
        return Err(format!(
            "\"{}\" is not an admin_toolkit backup directory (no {MARKER_FILE}); not removing it",
            backup_dir.display()
        ));
    }
    // The marker goes last, so that a removal cut short can be finished by the next attempt.
    let cannot = |e: std::io::Error| format!("cannot remove \"{}\": {e}", backup_dir.display());
    for entry in fs::read_dir(backup_dir).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        if entry.file_name() == MARKER_FILE {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(cannot)?.is_dir() {
            fs::remove_dir_all(&path).map_err(cannot)?;
        } else {
            fs::remove_file(&path).map_err(cannot)?;
        }
    }
    fs::remove_file(backup_dir.join(MARKER_FILE)).map_err(cannot)?;
    fs::remove_dir(backup_dir).map_err(cannot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_an_object_store_backup_deletes_only_what_a_backup_writes() {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            crate::storage::LocalStorage::open(&Location::Local(dir.path().into())).unwrap();
        for name in [MANIFEST_FILE, PACK_FILE, "someone-elses.txt"] {
            storage.put_new(name, b"x").unwrap();
        }
        let store = BackupStore {
            location: Location::parse("s3://bucket/backup_1").unwrap(),
            storage: Box::new(storage),
        };
        store.remove().unwrap();
        let left: Vec<String> = store
            .storage
            .list("")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(left, ["someone-elses.txt"]);
        store.remove().unwrap(); // again: nothing left of the backup is fine
    }

    #[test]
    fn backup_ids_come_from_location_names() {
        let at = |s: &str| backup_id_of_location(&Location::parse(s).unwrap());
        assert_eq!(at("/srv/backups/backup_20261125_091008_42"), Some(42));
        assert_eq!(at("s3://bucket/db/backup_20261125_091008_7/"), Some(7));
        assert_eq!(at("/srv/backups/copy-of-it"), None);
        assert_eq!(at("/srv/backups/backup_x_y_-3"), None);
        assert!(same_storage(
            &Location::parse("/a").unwrap(),
            &Location::parse("/b").unwrap()
        ));
        assert!(!same_storage(
            &Location::parse("s3://bucket/a").unwrap(),
            &Location::parse("/b").unwrap()
        ));
        assert!(!same_storage(
            &Location::parse("s3://bucket/a").unwrap(),
            &Location::parse("s3://other/a").unwrap()
        ));
    }
}
