//! A local directory as [`Storage`]: every write goes to a temporary name, is fsynced and renamed
//! into place, and the directory is fsynced, so a crash at any moment leaves either no object or
//! the whole object.

use super::{
    check_name, io, Location, ObjectInfo, ObjectWriter, PutOutcome, Storage, StorageError,
};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn open(location: &Location) -> Result<LocalStorage, StorageError> {
        let Location::Local(root) = location else {
            return Err(StorageError::InvalidLocation(format!(
                "\"{}\" is not a local directory",
                location.display()
            )));
        };
        fs::create_dir_all(root).map_err(|e| io("cannot create directory", root, e))?;
        Ok(LocalStorage { root: root.clone() })
    }

    fn path(&self, name: &str) -> Result<PathBuf, StorageError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    /// The object's directory, created when missing.
    fn parent_of(path: &Path) -> Result<&Path, StorageError> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).map_err(|e| io("cannot create directory", parent, e))?;
        Ok(parent)
    }

    fn temporary(path: &Path) -> PathBuf {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot fsync directory", dir, e))
}

/// Moves a written temporary file into place durably.
fn publish(temp: &Path, target: &Path, dir: &Path) -> Result<(), StorageError> {
    fs::rename(temp, target).map_err(|e| io("cannot rename into", target, e))?;
    sync_dir(dir)
}

impl Storage for LocalStorage {
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<PutOutcome, StorageError> {
        let target = self.path(name)?;
        if target.exists() {
            let existing = fs::read(&target).map_err(|e| io("cannot read", &target, e))?;
            return if existing == bytes {
                Ok(PutOutcome::AlreadyPresent)
            } else {
                Err(StorageError::Conflict(format!(
                    "\"{}\" already exists with different content; refusing to overwrite it",
                    target.display()
                )))
            };
        }
        let dir = Self::parent_of(&target)?;
        let temp = Self::temporary(&target);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| io("cannot create", &temp, e))?;
            file.write_all(bytes)
                .map_err(|e| io("cannot write", &temp, e))?;
            file.sync_all().map_err(|e| io("cannot fsync", &temp, e))?;
            // A hard link fails if the target appeared meanwhile: never replace an object.
            fs::hard_link(&temp, &target).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    StorageError::Conflict(format!(
                        "\"{}\" was stored concurrently; refusing to overwrite it",
                        target.display()
                    ))
                } else {
                    io("cannot link into", &target, e)
                }
            })?;
            fs::remove_file(&temp).map_err(|e| io("cannot remove", &temp, e))?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ignored = fs::remove_file(&temp); // leave no partial file behind
        }
        result.map(|_| PutOutcome::Stored)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(name)?;
        fs::read(&path).map_err(|e| io("cannot read", &path, e))
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let path = self.path(name)?;
        let file = File::open(&path).map_err(|e| io("cannot open", &path, e))?;
        let mut buffer = vec![0u8; len as usize];
        file.read_exact_at(&mut buffer, offset)
            .map_err(|e| io(&format!("cannot read {len} bytes at {offset} of"), &path, e))?;
        Ok(buffer)
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        Ok(self.path(name)?.exists())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        // Walk only the directory the prefix lies in.
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut found = Vec::new();
        let start = if base.is_empty() {
            self.root.clone()
        } else {
            self.path(base)?
        };
        walk(&start, base, &mut found)?;
        found.retain(|o| o.name.starts_with(prefix));
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &path, e)),
        }
    }

    fn writer(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let target = self.path(name)?;
        let dir = Self::parent_of(&target)?.to_path_buf();
        let temp = Self::temporary(&target);
        let file = File::create(&temp).map_err(|e| io("cannot create", &temp, e))?;
        Ok(Box::new(LocalWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            temp,
            target,
            dir,
            written: 0,
        }))
    }

    fn describe(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

/// Objects below `dir` (named `relative/...`), skipping temporary files.
fn walk(dir: &Path, relative: &str, out: &mut Vec<ObjectInfo>) -> Result<(), StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("cannot list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("cannot list", dir, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') {
            continue;
        }
        let name = if relative.is_empty() {
            file_name
        } else {
            format!("{relative}/{file_name}")
        };
        let meta = entry
            .metadata()
            .map_err(|e| io("cannot stat", &entry.path(), e))?;
        if meta.is_dir() {
            walk(&entry.path(), &name, out)?;
        } else {
            let modified_micros = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_micros() as i64);
            out.push(ObjectInfo {
                name,
                size: meta.len(),
                modified_micros,
            });
        }
    }
    Ok(())
}

struct LocalWriter {
    out: Option<BufWriter<File>>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    written: u64,
}

impl ObjectWriter for LocalWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| StorageError::Io("writer already finished".into()))?;
        out.write_all(bytes)
            .map_err(|e| io("cannot write", &self.temp, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        let out = self
            .out
            .take()
            .ok_or_else(|| StorageError::Io("writer already finished".into()))?;
        let file = out
            .into_inner()
            .map_err(|e| io("cannot write", &self.temp, e.into_error()))?;
        let published = file
            .sync_all()
            .map_err(|e| io("cannot fsync", &self.temp, e))
            .and_then(|_| publish(&self.temp, &self.target, &self.dir));
        if published.is_err() {
            let _partial_object_removed = fs::remove_file(&self.temp);
        }
        published.map(|_| self.written)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _unfinished_leaves_nothing = fs::remove_file(&self.temp);
        }
    }
}
