//! Restoring a backup into an empty directory: directories, every file from its chunks (checked
//! on the way), backup_label, and each tablespace in an empty directory of its own linked from
//! pg_tblspc (as pg_basebackup's plain format does: no tablespace_map is written), all fsynced.

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

/// Where a restored tablespace goes: a directory of its own, linked from `pg_tblspc/<oid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub oid: String,
    pub directory: PathBuf,
    /// Whether the directory was missing when placed: undoing the restore removes it too.
    pub created: bool,
}

impl Placement {
    fn new(oid: &str, directory: PathBuf) -> Placement {
        let created = matches!(fs::symlink_metadata(&directory), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        Placement {
            oid: oid.to_string(),
            directory,
            created,
        }
    }
}

/// Places each tablespace of the backup at its original location, or at NEW where a mapping
/// OLD=NEW names that location (pg_basebackup's `--tablespace-mapping`). A mapping whose OLD
/// is no tablespace of the backup is refused: it is a typo, and would restore to the original.
pub fn place_tablespaces(
    manifest: &Manifest,
    mapping: &[(PathBuf, PathBuf)],
) -> Result<Vec<Placement>, String> {
    for (old, _) in mapping {
        if !manifest
            .tablespaces
            .iter()
            .any(|t| Path::new(&t.location) == old)
        {
            let known: Vec<&str> = manifest
                .tablespaces
                .iter()
                .map(|t| t.location.as_str())
                .collect();
            return Err(format!(
                "--tablespace-mapping names \"{}\", which is no tablespace of backup {} (its tablespaces: {})",
                old.display(),
                manifest.backup_id,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        }
    }
    Ok(manifest
        .tablespaces
        .iter()
        .map(|t| {
            let to = mapping
                .iter()
                .find(|(old, _)| Path::new(&t.location) == old)
                .map_or_else(|| PathBuf::from(&t.location), |(_, new)| new.clone());
            Placement::new(&t.oid, to)
        })
        .collect())
}

/// Places every tablespace of the backup in `dir/<oid>`: for drills and recoveries, which
/// must write nowhere outside their scratch directory.
pub fn place_tablespaces_under(manifest: &Manifest, dir: &Path) -> Vec<Placement> {
    manifest
        .tablespaces
        .iter()
        .map(|t| Placement::new(&t.oid, dir.join(&t.oid)))
        .collect()
}

/// Every tablespace of the backup placed once, in an absolute, distinct, empty directory
/// outside the target.
fn check_placements(
    manifest: &Manifest,
    target: &Path,
    placements: &[Placement],
) -> Result<(), String> {
    let target = std::path::absolute(target).map_err(|e| e.to_string())?;
    for tablespace in &manifest.tablespaces {
        if placements
            .iter()
            .filter(|p| p.oid == tablespace.oid)
            .count()
            != 1
        {
            return Err(format!(
                "tablespace {} (\"{}\") has no place to be restored to",
                tablespace.oid, tablespace.location
            ));
        }
    }
    for (i, placement) in placements.iter().enumerate() {
        let dir = &placement.directory;
        if !manifest.tablespaces.iter().any(|t| t.oid == placement.oid) {
            return Err(format!(
                "backup {} has no tablespace {}",
                manifest.backup_id, placement.oid
            ));
        }
        let plain = dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !dir.is_absolute() || !plain {
            return Err(format!(
                "tablespace directory \"{}\" is not an absolute path without \"..\"",
                dir.display()
            ));
        }
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "tablespace directory \"{}\" is a symbolic link: give the directory it leads to",
                dir.display()
            ));
        }
        if dir.starts_with(&target) || target.starts_with(dir) {
            return Err(format!(
                "tablespace directory \"{}\" and the target directory \"{}\" are inside one another: choose a tablespace directory of its own",
                dir.display(),
                target.display()
            ));
        }
        if placements[..i]
            .iter()
            .any(|p| p.directory.starts_with(dir) || dir.starts_with(&p.directory))
        {
            return Err(format!(
                "two tablespaces would be restored into \"{}\"",
                dir.display()
            ));
        }
        if !is_empty_target(dir)? {
            return Err(format!(
                "tablespace {} would be restored into \"{}\", which is not empty; restore only into an empty or new directory (or map it elsewhere with --tablespace-mapping OLD=NEW)",
                placement.oid,
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Removes what a restore wrote into its tablespace directories, and the directories it
/// created: with the target directory's removal, undoes a restore that failed.
pub fn undo_placements(placements: &[Placement]) {
    for placement in placements {
        let dir = &placement.directory;
        if placement.created {
            let _ = fs::remove_dir_all(dir);
        } else if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() && !path.is_symlink() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    }
}

/// Makes each tablespace's directory and its link in `target/pg_tblspc`.
fn make_tablespaces(
    target: &Path,
    placements: &[Placement],
    builder: &fs::DirBuilder,
) -> Result<(), String> {
    let links = target.join("pg_tblspc");
    builder
        .create(&links)
        .map_err(|e| format!("cannot create \"{}\": {e}", links.display()))?;
    for placement in placements {
        let dir = &placement.directory;
        builder
            .create(dir)
            .and_then(|_| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create \"{}\": {e}", dir.display()))?;
        let link = links.join(&placement.oid);
        std::os::unix::fs::symlink(dir, &link).map_err(|e| {
            format!(
                "cannot link \"{}\" to \"{}\": {e}",
                link.display(),
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// Whether `dir` is missing or an empty directory.
pub fn is_empty_target(dir: &Path) -> Result<bool, String> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(format!("cannot read \"{}\": {e}", dir.display())),
    }
}

/// The last steps of a restore: `backup_label`, then every directory fsynced, deepest first.
pub(super) fn write_label_and_sync(
    manifest: &Manifest,
    target: &Path,
    directories: &[PathBuf],
) -> Result<(), String> {
    if !manifest.backup_label.is_empty() {
        write_small(
            &target.join("backup_label"),
            manifest.backup_label.as_bytes(),
        )?;
    }
    for dir in directories.iter().rev() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot fsync \"{}\": {e}", dir.display()))
}

/// Restores `manifest`'s backup into `target` (missing or empty), its tablespaces where
/// `placements` say (`place_tablespaces`). `progress` gets bytes done and the total after each
/// file; an error from it stops the restore (a cancelled drill). Any mismatch stops the
/// restore with the file and chunk named; what was written into tablespace directories is
/// then removed (the caller removes the target).
pub fn restore(
    manifest: &Manifest,
    target: &Path,
    placements: &[Placement],
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
    check_placements(manifest, target, placements)?;
    let packs = Packs::open(manifest, s3, keys);
    if let Some(problem) = packs.missing().into_iter().next() {
        return Err(problem);
    }
    let restored = write_backup(manifest, target, placements, &packs, threads, progress);
    if restored.is_err() {
        undo_placements(placements);
    }
    restored
}

/// `restore` once everything is checked.
fn write_backup(
    manifest: &Manifest,
    target: &Path,
    placements: &[Placement],
    packs: &Packs,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64) -> Result<(), String>,
) -> Result<Restored, String> {
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
    make_tablespaces(target, placements, &builder)?;
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
        read_file(entry, packs, threads, &mut |bytes| {
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
    write_label_and_sync(manifest, target, &directories)?;
    for placement in placements {
        sync_dir(&placement.directory)?;
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
