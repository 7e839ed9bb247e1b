//! Where backups and archived WAL go, behind one interface. Only local filesystem locations
//! exist today; `s3://` is recognised and refused with a clear message, so an object-store
//! backend can be added as another [`Storage`] without touching the callers.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The location string is not usable (relative, empty, unknown scheme, object storage).
    InvalidLocation(String),
    /// An object exists with different content: archived data is never overwritten.
    Conflict(String),
    Io(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::InvalidLocation(m) | StorageError::Conflict(m) | StorageError::Io(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for StorageError {}

fn io(context: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{context} \"{}\": {e}", path.display()))
}

/// A parsed storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
}

impl Location {
    /// An absolute path or a `file://` URL. `s3://` and other schemes are refused.
    pub fn parse(location: &str) -> Result<Location, StorageError> {
        let location = location.trim();
        if let Some(rest) = location.strip_prefix("file://") {
            return Location::parse_path(rest, location);
        }
        if let Some((scheme, _)) = location.split_once("://") {
            return Err(StorageError::InvalidLocation(
                if scheme.eq_ignore_ascii_case("s3") {
                    format!("object storage is not configured: cannot use \"{location}\" (only local paths are supported)")
                } else {
                    format!("unsupported storage location \"{location}\" (use an absolute path or file://)")
                },
            ));
        }
        Location::parse_path(location, location)
    }

    fn parse_path(path: &str, original: &str) -> Result<Location, StorageError> {
        let path = Path::new(path);
        if path.as_os_str().is_empty() || !path.is_absolute() {
            return Err(StorageError::InvalidLocation(format!(
                "storage location \"{original}\" must be an absolute path"
            )));
        }
        Ok(Location::Local(path.to_path_buf()))
    }

    /// Whether `other` lies within this location, or the location within it (a backup or
    /// archive inside the data directory would copy itself). Both are compared as
    /// [`canonical_path`]s, so `..` and symbolic links cannot hide an overlap.
    pub fn overlaps(&self, other: &Path) -> bool {
        let Location::Local(p) = self;
        let (p, other) = (canonical_path(p), canonical_path(other));
        p.starts_with(&other) || other.starts_with(&p)
    }
}

/// `path` with every symbolic link and `..` resolved: the nearest existing ancestor is resolved
/// by the filesystem, the components below it (which do not exist yet, so hold no links) are
/// joined with `.` and `..` applied.
pub fn canonical_path(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut below = Vec::new();
    let resolved = loop {
        if let Ok(real) = fs::canonicalize(&existing) {
            break real;
        }
        match existing.components().next_back() {
            Some(Component::Normal(_) | Component::CurDir | Component::ParentDir) => {
                below.push(
                    existing
                        .components()
                        .next_back()
                        .map(|c| c.as_os_str().to_os_string()),
                );
                existing.pop();
            }
            _ => break existing,
        }
    };
    let mut out = resolved;
    for part in below.into_iter().rev().flatten() {
        match part.to_str() {
            Some("..") => {
                out.pop();
            }
            Some(".") => {}
            _ => out.push(part),
        }
    }
    out
}

/// What storing an object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// An identical object was already there (an archive command retried after a crash).
    AlreadyPresent,
}

/// Object storage as the backup and archive code needs it.
pub trait Storage {
    /// Stores `bytes` under `name` durably, never replacing a different existing object.
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<PutOutcome, StorageError>;
    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError>;
    fn exists(&self, name: &str) -> bool;
}

/// A local directory.
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn open(location: &Location) -> Result<LocalStorage, StorageError> {
        let Location::Local(root) = location;
        fs::create_dir_all(root).map_err(|e| io("cannot create directory", root, e))?;
        Ok(LocalStorage { root: root.clone() })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot fsync directory", dir, e))
}

impl Storage for LocalStorage {
    /// Write to a temporary name, fsync, rename into place, fsync the directory: a crash at any
    /// moment leaves either no object or the whole object.
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<PutOutcome, StorageError> {
        let target = self.path(name);
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
        let temp = self.path(&format!(".{name}.tmp.{}", std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| io("cannot create", &temp, e))?;
            file.write_all(bytes)
                .map_err(|e| io("cannot write", &temp, e))?;
            file.sync_all().map_err(|e| io("cannot fsync", &temp, e))?;
            fs::rename(&temp, &target).map_err(|e| io("cannot rename into", &target, e))?;
            sync_dir(&self.root)
        })();
        if result.is_err() {
            let _ignored = fs::remove_file(&temp); // leave no partial file behind
        }
        result.map(|_| PutOutcome::Stored)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(name);
        fs::read(&path).map_err(|e| io("cannot read", &path, e))
    }

    fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// zstd at `level` (zstd reads 0 as its default level, 3; a schedule's "0 = uncompressed" is the
/// backup code's to honour by not calling this), with
/// the frame's content checksum on, so decompression detects corruption.
pub fn compress(bytes: &[u8], level: i32) -> Result<Vec<u8>, StorageError> {
    let mut encoder =
        zstd::Encoder::new(Vec::new(), level).map_err(|e| StorageError::Io(e.to_string()))?;
    encoder
        .include_checksum(true)
        .map_err(|e| StorageError::Io(e.to_string()))?;
    encoder
        .write_all(bytes)
        .map_err(|e| StorageError::Io(e.to_string()))?;
    encoder
        .finish()
        .map_err(|e| StorageError::Io(e.to_string()))
}

pub fn decompress(bytes: &[u8]) -> Result<Vec<u8>, StorageError> {
    zstd::decode_all(bytes).map_err(|e| StorageError::Io(format!("corrupt compressed data: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("/var/backups").unwrap(),
            Location::Local("/var/backups".into())
        );
        assert_eq!(
            Location::parse("file:///srv/wal").unwrap(),
            Location::Local("/srv/wal".into())
        );
        let s3 = Location::parse("s3://bucket/pg/").unwrap_err().to_string();
        assert!(s3.contains("object storage is not configured"), "{s3}");
        assert!(Location::parse("backups/")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(Location::parse("").is_err());
        assert!(Location::parse("ftp://x/y")
            .unwrap_err()
            .to_string()
            .contains("unsupported"));
        let loc = Location::parse("/var/lib/postgresql/15/main/archive").unwrap();
        assert!(loc.overlaps(Path::new("/var/lib/postgresql/15/main")));
        assert!(!loc.overlaps(Path::new("/srv/other")));
    }

    #[test]
    fn overlap_sees_through_dot_dot_and_symbolic_links() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        fs::create_dir(&data).unwrap();
        let sneaky = root.path().join("x/../data/b");
        assert!(Location::Local(sneaky.clone()).overlaps(&data));
        assert_eq!(canonical_path(&sneaky), canonical_path(&data).join("b"));
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(Location::Local(link.join("backups")).overlaps(&data));
        assert!(!Location::Local(root.path().join("elsewhere/b")).overlaps(&data));
        assert_eq!(canonical_path(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn put_is_durable_idempotent_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(&Location::Local(dir.path().join("a/b"))).unwrap();
        assert_eq!(storage.put_new("x", b"hello").unwrap(), PutOutcome::Stored);
        assert_eq!(
            storage.put_new("x", b"hello").unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(matches!(
            storage.put_new("x", b"other"),
            Err(StorageError::Conflict(_))
        ));
        assert_eq!(storage.get("x").unwrap(), b"hello");
        // no temporary files left behind
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x")]);
    }

    #[test]
    fn compression_round_trips_and_detects_corruption() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let packed = compress(&data, 3).unwrap();
        assert!(packed.len() < data.len() / 4);
        assert_eq!(decompress(&packed).unwrap(), data);
        let mut broken = packed.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 0xff;
        assert!(decompress(&broken).is_err());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
