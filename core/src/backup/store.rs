//! One backup's place: a directory (with its marker file) or an s3:// prefix, reached through
//! the storage interface. The pack streams in, the manifest is stored last, so nothing without a
//! manifest is a complete backup; removal deletes the manifest first for the same reason.

use super::manifest::{Manifest, MANIFEST_FILE, MARKER_FILE, PACK_FILE};
use crate::crypto::{open_object, seal_object, Key, KeyDir};
use crate::storage::{self, Location, ObjectWriter, S3Settings, Storage, StorageError};
use std::fs::{self, File};
use std::path::Path;

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
    /// authenticates it and hides the file list); returns its size.
    pub fn store_manifest(&self, manifest: &Manifest, key: Option<&Key>) -> Result<u64, String> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| e.to_string())?;
        let bytes = match key {
            Some(key) => seal_object(key, MANIFEST_FILE.as_bytes(), &bytes)?,
            None => bytes,
        };
        self.storage
            .put_new(MANIFEST_FILE, &bytes)
            .map_err(|e| format!("cannot store {}: {e}", self.storage.describe(MANIFEST_FILE)))?;
        Ok(bytes.len() as u64)
    }

    /// The manifest, opened with its key from `keys` when the backup is encrypted.
    pub fn load_manifest(&self, keys: &KeyDir) -> Result<Manifest, String> {
        let bytes = self.storage.get(MANIFEST_FILE).map_err(|e| match e {
            StorageError::NotFound(_) => format!(
                "\"{}\" has no {MANIFEST_FILE}: not a backup, or an incomplete one",
                self.display()
            ),
            other => other.to_string(),
        })?;
        let shown = self.storage.describe(MANIFEST_FILE);
        let bytes = open_object(keys, MANIFEST_FILE.as_bytes(), bytes, &shown)?;
        Manifest::parse(&bytes, &shown)
    }

    /// Deletes the backup: a local directory only if it carries the marker; on S3 the
    /// manifest first (so a removal cut short never leaves something that looks complete),
    /// then every other object under the prefix.
    pub fn remove(&self) -> Result<(), String> {
        match &self.location {
            Location::Local(dir) => remove_backup_directory(dir),
            Location::S3 { .. } => {
                self.storage
                    .delete(MANIFEST_FILE)
                    .map_err(|e| e.to_string())?;
                for object in self.storage.list("").map_err(|e| e.to_string())? {
                    self.storage
                        .delete(&object.name)
                        .map_err(|e| e.to_string())?;
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
