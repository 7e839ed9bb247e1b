//! Where backups and archived WAL go, behind one interface: a [`Storage`] holds named objects
//! (names are relative, `/`-separated), and a local directory ([`LocalStorage`]) and an
//! S3-compatible bucket prefix ([`S3Storage`]) are two implementations of it, tested by one
//! suite ([`suite`]). Callers open a [`Location`] with [`open`] and never see which it is.

mod aws_environment;
mod local;
mod s3;
pub mod suite;

pub use local::LocalStorage;
pub(crate) use s3::transport_error;
pub use s3::{S3Settings, S3Storage, DEFAULT_DEADLINE};

/// What tells the storage code that its process was asked to stop (a server's shutdown or
/// cancellation flags), checked between retries; set once per process.
static INTERRUPT_CHECK: std::sync::OnceLock<fn() -> bool> = std::sync::OnceLock::new();

/// Sets how this process is told to stop; a second call changes nothing.
pub fn set_interrupt_check(check: fn() -> bool) {
    let _already_set = INTERRUPT_CHECK.set(check);
}

/// Whether this process was asked to stop.
pub fn interrupted() -> bool {
    INTERRUPT_CHECK.get().is_some_and(|check| check())
}

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The location string is not usable (relative, empty, unknown scheme).
    InvalidLocation(String),
    /// The named object does not exist.
    NotFound(String),
    /// An object exists with different content: archived data is never overwritten.
    Conflict(String),
    Io(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::InvalidLocation(m)
            | StorageError::NotFound(m)
            | StorageError::Conflict(m)
            | StorageError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StorageError {}

fn io(context: &str, path: &Path, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        return StorageError::NotFound(format!("{context} \"{}\": {e}", path.display()));
    }
    StorageError::Io(format!("{context} \"{}\": {e}", path.display()))
}

/// A parsed storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `s3://bucket/prefix`: objects under `prefix` (empty, or ending in `/`) in `bucket`.
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl Location {
    /// An absolute path, a `file://` URL, or `s3://bucket[/prefix]`. Other schemes are refused.
    pub fn parse(location: &str) -> Result<Location, StorageError> {
        let location = location.trim();
        if let Some(rest) = location.strip_prefix("file://") {
            return Location::parse_path(rest, location);
        }
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid_bucket {
                return Err(StorageError::InvalidLocation(format!(
                    "\"{location}\" does not name an S3 bucket (3 to 63 lowercase letters, digits, dots and hyphens)"
                )));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|part| part == ".." || part == ".") {
                return Err(StorageError::InvalidLocation(format!(
                    "\"{location}\": an S3 prefix cannot contain . or .. segments"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                },
            });
        }
        if location.contains("://") {
            return Err(StorageError::InvalidLocation(format!(
                "unsupported storage location \"{location}\" (use an absolute path, file:// or s3://)"
            )));
        }
        Location::parse_path(location, location)
    }

    /// The location below this one named `name` (a relative, `/`-separated name).
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(dir) => Location::Local(dir.join(name)),
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: format!("{prefix}{}/", name.trim_matches('/')),
            },
        }
    }

    /// The location as a string that [`Location::parse`] reads back.
    pub fn display(&self) -> String {
        match self {
            Location::Local(dir) => dir.display().to_string(),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    fn parse_path(path: &str, original: &str) -> Result<Location, StorageError> {
        let path = Path::new(path);
        if path.as_os_str().is_empty() || !path.is_absolute() {
            return Err(StorageError::InvalidLocation(format!(
                "storage location \"{original}\" must be an absolute path"
            )));
        }
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(StorageError::InvalidLocation(format!(
                "storage location \"{original}\" cannot contain .. segments"
            )));
        }
        Ok(Location::Local(path.to_path_buf()))
    }

    /// Whether `other` lies within this location, or the location within it (a backup or
    /// archive inside the data directory would copy itself). Both are compared as
    /// [`canonical_path`]s, so `..` and symbolic links cannot hide an overlap.
    pub fn overlaps(&self, other: &Path) -> bool {
        let Location::Local(p) = self else {
            return false;
        };
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

/// One stored object, as [`Storage::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the storage's root.
    pub name: String,
    pub size: u64,
    /// Last modification (for archived WAL: when it was archived), microseconds since the
    /// Unix epoch.
    pub modified_micros: i64,
}

/// Object storage as the backup and archive code needs it. Names are relative and
/// `/`-separated; nothing outside the storage's root is ever touched.
pub trait Storage: Send + Sync {
    /// Stores `bytes` under `name` durably, only if no object has that name: an identical
    /// existing object is [`PutOutcome::AlreadyPresent`], a different one a
    /// [`StorageError::Conflict`]. Returns only once the object is durably stored.
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<PutOutcome, StorageError>;
    /// The whole object; [`StorageError::NotFound`] when there is none.
    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError>;
    /// `len` bytes of the object from `offset`.
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError>;
    fn exists(&self, name: &str) -> Result<bool, StorageError>;
    /// Every object whose name starts with `prefix`, at any depth, sorted by name.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
    /// Removes the object; a missing object is not an error.
    fn delete(&self, name: &str) -> Result<(), StorageError>;
    /// Streams a large object in: nothing is visible under `name` until
    /// [`ObjectWriter::finish`] succeeds, and a writer dropped unfinished leaves nothing
    /// (its parts are aborted). Replaces an existing object of that name.
    fn writer(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Where this storage is, for messages.
    fn describe(&self, name: &str) -> String;
    /// Aborts the unfinished multipart uploads of objects under `prefix` (left by a process
    /// that died before it could abort them itself); how many. Storage that writes no parts
    /// has none.
    fn abort_uploads(&self, _prefix: &str) -> Result<usize, StorageError> {
        Ok(0)
    }
}

/// A large object being written (see [`Storage::writer`]).
pub trait ObjectWriter: Send {
    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Makes the object visible, durably; returns its size.
    fn finish(self: Box<Self>) -> Result<u64, StorageError>;
}

/// Opens the storage at `location`; S3 locations use `s3` for endpoint and credentials.
pub fn open(location: &Location, s3: &S3Settings) -> Result<Box<dyn Storage>, StorageError> {
    Ok(match location {
        Location::Local(_) => Box::new(LocalStorage::open(location)?),
        Location::S3 { bucket, prefix } => Box::new(S3Storage::open(bucket, prefix, s3)?),
    })
}

/// A relative object name is plain: no empty, `.` or `..` segment, no leading `/`.
pub fn check_name(name: &str) -> Result<(), StorageError> {
    let plain = !name.is_empty()
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if plain {
        Ok(())
    } else {
        Err(StorageError::InvalidLocation(format!(
            "invalid object name \"{name}\""
        )))
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
        assert_eq!(
            Location::parse("s3://mycompany-backups/postgresql/full/").unwrap(),
            Location::S3 {
                bucket: "mycompany-backups".into(),
                prefix: "postgresql/full/".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert!(Location::parse("s3://Bad_Bucket/x").is_err());
        assert!(Location::parse("s3://bucket/a/../b").is_err());
        assert!(Location::parse("s3://").is_err(), "no bucket");
        assert!(Location::parse("/srv/backups/../../etc").is_err());
        let s3 = Location::parse("s3://b-1/x").unwrap();
        assert_eq!(s3.display(), "s3://b-1/x/");
        assert_eq!(s3.join("backup_1").display(), "s3://b-1/x/backup_1/");
        assert!(!s3.overlaps(Path::new("/var/lib/postgresql")));
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
    fn local_storage_passes_the_shared_suite_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b");
        let storage = LocalStorage::open(&Location::Local(root.clone())).unwrap();
        suite::run(&storage);
        let leftovers: Vec<_> = walk(&root)
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
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
