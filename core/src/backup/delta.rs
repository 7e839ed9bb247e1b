//! Delta restore: a data directory that already holds a copy of the cluster (a standby to
//! rebuild, a copy kept from an earlier restore) is brought to a backup by rewriting only the
//! chunks whose SHA-256 differs from the backup's, writing what is missing and removing what
//! the backup does not have, so that the result is what a restore into an empty directory
//! would have written.

use super::manifest::Manifest;
use super::parallel;
use super::read::{read_chunk, Packs};
use super::restore::{inside, sync_dir, write_label_and_sync, write_small};
use crate::crypto::KeyDir;
use crate::storage::{sha256_hex, S3Settings};
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Written first (with the cluster's system identifier) and removed last: while it is there,
/// the directory is half rewritten and has no global/pg_control, so no server starts on it,
/// and a delta restore run again still knows whose copy it is.
pub const IN_PROGRESS: &str = "admin_toolkit.delta_restore";
/// Written last: a server starts only once everything else is in place.
const CONTROL_FILE: &str = "global/pg_control";

/// What a delta restore did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeltaRestored {
    /// Files of the backup, and how many of them were written (new or changed).
    pub files: u64,
    pub files_written: u64,
    /// Chunks fetched from the backup and written, and their bytes.
    pub chunks_written: u64,
    pub bytes_written: u64,
    /// Bytes of the target read and checked.
    pub bytes_checked: u64,
    /// Files and directories removed (not in the backup).
    pub removed: u64,
}

/// The system identifier of the data directory `dir` (global/pg_control's first 8 bytes).
pub fn system_identifier_of(dir: &Path) -> Option<String> {
    let control = fs::read(dir.join("global/pg_control")).ok()?;
    let bytes: [u8; 8] = control.get(..8)?.try_into().ok()?;
    Some(u64::from_ne_bytes(bytes).to_string())
}

/// Brings the copy of the cluster in `target` to `manifest`'s backup. Refused for a directory
/// that is not a stopped copy of the same cluster, and for backups with tablespaces. `progress`
/// gets bytes done and the total after each file.
pub fn restore_delta(
    manifest: &Manifest,
    target: &Path,
    threads: usize,
    s3: &S3Settings,
    keys: &KeyDir,
    progress: &mut dyn FnMut(u64, u64) -> Result<(), String>,
) -> Result<DeltaRestored, String> {
    check_target(manifest, target)?;
    let packs = Packs::open(manifest, s3, keys);
    if let Some(problem) = packs.missing().into_iter().next() {
        return Err(problem);
    }
    write_small(
        &target.join(IN_PROGRESS),
        manifest.system_identifier.as_bytes(),
    )?;
    sync_dir(target)?;
    for unstartable in [CONTROL_FILE, "backup_label"] {
        match fs::remove_file(target.join(unstartable)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {unstartable}: {e}"))
            }
            _ => {}
        }
    }
    let files = manifest
        .files
        .iter()
        .map(|f| inside(target, &f.path))
        .collect::<Result<Vec<_>, _>>()?;
    let directories = manifest
        .directories
        .iter()
        .map(|d| inside(target, d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut done = DeltaRestored {
        removed: remove_unlisted(manifest, target)?,
        ..DeltaRestored::default()
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    for dir in directories.iter().chain([&target.to_path_buf()]) {
        builder
            .create(dir)
            .and_then(|_| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create \"{}\": {e}", dir.display()))?;
    }
    let total = manifest.original_bytes();
    // pg_control last.
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| manifest.files[i].path == CONTROL_FILE);
    for (entry, path) in order.iter().map(|&i| (&manifest.files[i], &files[i])) {
        let written = bring_file(entry, path, &packs, threads, &mut done)
            .map_err(|e| format!("{}: {e}", entry.path))?;
        done.files += 1;
        done.files_written += u64::from(written);
        progress(done.bytes_checked, total)?;
    }
    write_label_and_sync(manifest, target, &directories)?;
    fs::remove_file(target.join(IN_PROGRESS))
        .map_err(|e| format!("cannot remove {IN_PROGRESS}: {e}"))?;
    sync_dir(target)?;
    Ok(done)
}

fn check_target(manifest: &Manifest, target: &Path) -> Result<(), String> {
    if !manifest.tablespaces.is_empty() {
        return Err(format!(
            "backup {} has tablespaces, which a delta restore does not handle yet: restore it into an empty directory",
            manifest.backup_id
        ));
    }
    if target.join("postmaster.pid").exists() {
        return Err(format!(
            "\"{}\" has a postmaster.pid: stop the server running there (or remove the file a crashed one left) first",
            target.display()
        ));
    }
    // An interrupted delta restore removed pg_control; its marker says whose copy it is.
    let here = system_identifier_of(target).or_else(|| {
        fs::read_to_string(target.join(IN_PROGRESS))
            .ok()
            .map(|s| s.trim().to_string())
    });
    match here {
        Some(id) if id == manifest.system_identifier => Ok(()),
        Some(id) => Err(format!(
            "\"{}\" is a copy of cluster {id}, and backup {} is of cluster {}: a delta restore only rewrites a copy of the same cluster",
            target.display(),
            manifest.backup_id,
            manifest.system_identifier
        )),
        None => Err(format!(
            "\"{}\" holds no cluster (no global/pg_control): restore into it without --delta",
            target.display()
        )),
    }
}

/// Removes every file, link and directory under `target` that the backup does not have.
fn remove_unlisted(manifest: &Manifest, target: &Path) -> Result<u64, String> {
    let files: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let directories: HashSet<&str> = manifest.directories.iter().map(String::as_str).collect();
    let mut removed = 0;
    let mut pending: Vec<(PathBuf, String)> = vec![(target.to_path_buf(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let entries =
            fs::read_dir(&dir).map_err(|e| format!("cannot read \"{}\": {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| format!("cannot read \"{path}\": {e}"))?;
            if path == IN_PROGRESS {
                continue;
            }
            let (listed, is_dir) = if kind.is_dir() {
                (directories.contains(path.as_str()), true)
            } else {
                (files.contains(path.as_str()) && kind.is_file(), false)
            };
            if listed {
                if is_dir {
                    pending.push((entry.path(), path));
                }
                continue;
            }
            let gone = if is_dir {
                fs::remove_dir_all(entry.path())
            } else {
                fs::remove_file(entry.path())
            };
            gone.map_err(|e| format!("cannot remove \"{path}\": {e}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Makes the file at `path` hold `entry`'s bytes, writing only the chunks that differ; true
/// when anything was written.
fn bring_file(
    entry: &super::manifest::FileEntry,
    path: &Path,
    packs: &Packs,
    threads: usize,
    done: &mut DeltaRestored,
) -> Result<bool, String> {
    // A file linked elsewhere too (a copy made with cp -al or rsync --link-dest) is written
    // anew, never through the link.
    if fs::symlink_metadata(path).is_ok_and(|m| m.nlink() > 1) {
        fs::remove_file(path).map_err(|e| format!("cannot unlink: {e}"))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(entry.mode & 0o777)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let local_len = file.metadata().map_err(|e| e.to_string())?.len();
    let offsets: Vec<(usize, u64)> = entry
        .chunks
        .iter()
        .scan(0u64, |at, c| {
            let start = *at;
            *at += c.len;
            Some(start)
        })
        .enumerate()
        .collect();
    // Which chunks differ: read and hashed on a few threads.
    let differs = parallel::map(&offsets, threads, |&(i, start)| {
        let chunk = &entry.chunks[i];
        if start + chunk.len > local_len {
            return Ok(true);
        }
        let mut bytes = vec![0u8; chunk.len as usize];
        file.read_exact_at(&mut bytes, start)
            .map_err(|e| format!("cannot read: {e}"))?;
        Ok::<bool, String>(sha256_hex(&bytes) != chunk.sha256)
    });
    let mut written = false;
    for (&(i, start), differ) in offsets.iter().zip(differs) {
        done.bytes_checked += entry.chunks[i].len;
        if !differ? {
            continue;
        }
        let bytes = read_chunk(entry, i, packs)?;
        file.write_all_at(&bytes, start)
            .map_err(|e| format!("cannot write: {e}"))?;
        done.chunks_written += 1;
        done.bytes_written += bytes.len() as u64;
        written = true;
    }
    if local_len != entry.size {
        file.set_len(entry.size)
            .map_err(|e| format!("cannot truncate: {e}"))?;
        written = true;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode & 0o777))
        .map_err(|e| format!("cannot set permissions: {e}"))?;
    if written {
        file.sync_all().map_err(|e| format!("cannot fsync: {e}"))?;
    }
    Ok(written)
}
