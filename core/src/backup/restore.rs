//! Restoring a backup into an empty directory: directories, every file from its chunks (checked
//! on the way), backup_label and tablespace_map, all fsynced.

use super::manifest::Manifest;
use super::read::{read_file, Packs};
use crate::crypto::KeyDir;
use crate::storage::S3Settings;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug)]
pub struct Restored {
    pub files: u64,
    pub bytes: u64,
}

/// Whether `dir` is missing or an empty directory.
pub fn is_empty_target(dir: &Path) -> Result<bool, String> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(format!("cannot read \"{}\": {e}", dir.display())),
    }
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot fsync \"{}\": {e}", dir.display()))
}

/// Restores `manifest`'s backup into `target` (missing or empty). `progress` gets bytes done
/// and the total after each file; an error from it stops the restore (a cancelled drill). Any
/// mismatch stops the restore with the file and chunk named.
pub fn restore(
    manifest: &Manifest,
    target: &Path,
    threads: usize,
    s3: &S3Settings,
    keys: &KeyDir,
    progress: &mut dyn FnMut(u64, u64) -> Result<(), String>,
) -> Result<Restored, String> {
    if !is_empty_target(target)? {
        return Err(format!(
            "target directory \"{}\" is not empty; restore only into an empty or new directory",
            target.display()
        ));
    }
    let packs = Packs::open(manifest, s3, keys);
    if let Some(problem) = packs.missing().into_iter().next() {
        return Err(problem);
    }
    // Every path is checked before anything is written: a manifest is data, and one entry
    // naming "../x" or "/etc/x" must not write outside the target.
    let directories = manifest
        .directories
        .iter()
        .map(|d| inside(target, d))
        .collect::<Result<Vec<_>, _>>()?;
    let file_paths = manifest
        .files
        .iter()
        .map(|f| inside(target, &f.path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
        .create(target)
        .map_err(|e| format!("cannot create \"{}\": {e}", target.display()))?;
    fs::set_permissions(target, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set permissions of \"{}\": {e}", target.display()))?;
    for path in &directories {
        builder
            .create(path)
            .map_err(|e| format!("cannot create \"{}\": {e}", path.display()))?;
    }
    let total = manifest.original_bytes();
    let (mut done, mut files) = (0u64, 0u64);
    for (entry, path) in manifest.files.iter().zip(&file_paths) {
        let path = path.as_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(entry.mode & 0o777)
            .open(path)
            .map_err(|e| format!("cannot create \"{}\": {e}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        read_file(entry, &packs, threads, &mut |bytes| {
            done += bytes.len() as u64;
            out.write_all(bytes)
                .map_err(|e| format!("cannot write \"{}\": {e}", path.display()))
        })
        .map_err(|e| format!("backup file {} is damaged: {e}", entry.path))?;
        progress(done, total)?;
        out.into_inner()
            .map_err(|e| e.to_string())
            .and_then(|f| f.sync_all().map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot write \"{}\": {e}", path.display()))?;
        files += 1;
    }
    for (name, text) in [
        ("backup_label", &manifest.backup_label),
        ("tablespace_map", &manifest.tablespace_map),
    ] {
        if !text.is_empty() {
            write_small(&target.join(name), text.as_bytes())?;
        }
    }
    for dir in directories.iter().rev() {
        sync_dir(dir)?;
    }
    sync_dir(target)?;
    Ok(Restored { files, bytes: done })
}

/// `target` joined with a manifest entry, refused unless the entry is a plain relative path
/// (no root, no `..`), so that it lands inside `target`.
pub fn inside(target: &Path, entry: &str) -> Result<PathBuf, String> {
    let relative = Path::new(entry);
    let plain = !entry.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(format!(
            "the manifest names \"{entry}\", which would land outside the target directory; refusing to restore this backup"
        ));
    }
    Ok(target.join(relative))
}

/// Writes a small file durably (0600).
pub fn write_small(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create \"{}\": {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write \"{}\": {e}", path.display()))
}
