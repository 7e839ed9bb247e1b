//! The backup manifest: every file of the backup as a list of chunks, each with the SHA-256 of
//! its original bytes and where its stored bytes are (this backup's pack file or an earlier
//! backup's, for an incremental). Written last, so a backup directory without one is incomplete.

use crate::storage::sha256_hex;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const MANIFEST_FILE: &str = "backup.manifest";
pub const PACK_FILE: &str = "data.pack";
/// Created first in every backup directory: cleanup only deletes directories that carry it.
pub const MARKER_FILE: &str = ".admin_toolkit_backup";
pub const FORMAT: u32 = 1;
/// The format of a manifest that holds tablespaces: earlier readers, which know no tablespaces,
/// would restore their files as plain directories inside the data directory, so they must
/// refuse it.
pub const FORMAT_WITH_TABLESPACES: u32 = 2;

/// The manifest format for a backup with these tablespaces.
pub fn format_for(tablespaces: &[Tablespace]) -> u32 {
    if tablespaces.is_empty() {
        FORMAT
    } else {
        FORMAT_WITH_TABLESPACES
    }
}

/// A tablespace of the backed-up cluster: its files are in the manifest under
/// `pg_tblspc/<oid>/`, and a restore puts them in a directory of their own with a link there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// The tablespace's OID, the name of its link in pg_tblspc.
    pub oid: String,
    /// Where the link led on the backed-up server (an absolute path).
    pub location: String,
}

impl Tablespace {
    /// Refuses what no server writes: an OID that is not a number, a relative location.
    fn check(&self) -> Result<(), String> {
        if self.oid.is_empty() || !self.oid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("tablespace OID \"{}\" is not a number", self.oid));
        }
        if !std::path::Path::new(&self.location).is_absolute() {
            return Err(format!(
                "tablespace {} has location \"{}\", which is not an absolute path",
                self.oid, self.location
            ));
        }
        Ok(())
    }
}

/// A backup this one stores chunks in; link 0 is the backup itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub backup_id: i64,
    /// Its location: a directory, or an s3:// URL (backup_history.backup_path).
    pub path: PathBuf,
    /// The key its chunks are encrypted with; none: stored in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// One chunk of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// SHA-256 of the original bytes (hex).
    #[serde(rename = "h")]
    pub sha256: String,
    /// Original length.
    #[serde(rename = "n")]
    pub len: u64,
    /// Index into the manifest's chain of the backup whose pack holds the bytes.
    #[serde(rename = "b")]
    pub link: usize,
    #[serde(rename = "o")]
    pub offset: u64,
    #[serde(rename = "s")]
    pub stored_len: u64,
    /// Whether the stored bytes are a zstd frame (else stored as is, compression level 0).
    #[serde(rename = "z")]
    pub compressed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch, as read at backup time.
    pub mtime_ns: i128,
    pub mode: u32,
    /// SHA-256 over the chunks' SHA-256 digests, in order: the file's checksum.
    pub sha256: String,
    pub chunks: Vec<Chunk>,
}

impl FileEntry {
    pub fn stored_here(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|c| c.link == 0)
            .map(|c| c.stored_len)
            .sum()
    }
}

/// The checksum of a file from its chunks' digests.
pub fn file_digest<'a>(chunk_digests: impl Iterator<Item = &'a str>) -> String {
    let mut joined = String::new();
    for d in chunk_digests {
        joined.push_str(d);
    }
    sha256_hex(joined.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: i64,
    /// "full" or "incremental".
    pub kind: String,
    pub system_identifier: String,
    pub start_lsn: String,
    pub end_lsn: String,
    pub timeline: u32,
    pub start_wal_file: String,
    pub wal_segment_size: u64,
    pub chunk_size: u64,
    pub compression_level: i32,
    pub started_at: String,
    pub finished_at: String,
    pub chain: Vec<ChainLink>,
    pub directories: Vec<String>,
    pub files: Vec<FileEntry>,
    pub backup_label: String,
    pub tablespace_map: String,
    /// The PostgreSQL major version the backup was taken from (15, 18…); absent in manifests
    /// written before 0.5.0, whose restored PG_VERSION file says it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_major: Option<u32>,
    /// The cluster's tablespaces outside the data directory (none in format 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<Tablespace>,
    /// pg_control's data_checksum_version at the backup (0: off); absent before 0.5.0.
    /// `pg_checksums --enable` rewrites every page without WAL and without moving page LSNs:
    /// an incremental whose parent saw another version reads every file whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_checksum_version: Option<u32>,
    /// The head of the audit log's hash chain when the backup started (absent before 0.6.0,
    /// or when the log was empty): sealed with the manifest, it shows a later rewrite of the
    /// log and its hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_chain_head: Option<AuditChainHead>,
}

/// The last row of the audit log's hash chain: its audit_id and row_hash (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChainHead {
    pub audit_id: i64,
    pub hash: String,
}

/// Refuses restoring a data directory of PostgreSQL `backup_major` to be started by PostgreSQL
/// `server_major`'s programs: a server starts only a data directory of its own major (pg_upgrade
/// moves between majors, a restore does not).
pub fn check_major(
    backup_id: i64,
    backup_major: Option<u32>,
    server_major: u32,
) -> Result<(), String> {
    match backup_major {
        Some(major) if major != server_major => Err(format!(
            "backup {backup_id} was taken from PostgreSQL {major} and this server is PostgreSQL \
             {server_major}: a server starts only a data directory of its own major version; \
             restore it with PostgreSQL {major}'s programs (or upgrade the restored copy with pg_upgrade)"
        )),
        _ => Ok(()),
    }
}

/// The major version a data directory belongs to, from its PG_VERSION file ("15", "18").
pub fn data_dir_major(dir: &std::path::Path) -> Result<u32, String> {
    let path = dir.join("PG_VERSION");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    text.trim().parse().map_err(|_| {
        format!(
            "\"{}\" does not hold a major version: {:?}",
            path.display(),
            text.trim()
        )
    })
}

impl Manifest {
    /// Whether a path of the manifest lands where a server's files are: a tablespace's
    /// files only inside a `PG_<major>_<catalog version>` directory, so that a tablespace
    /// location (restored outside the target) receives nothing else.
    fn in_its_place(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        let (Some("pg_tblspc"), Some(oid)) = (parts.next(), parts.next()) else {
            return true;
        };
        if !self.tablespaces.iter().any(|t| t.oid == oid) {
            return true; // an in-place tablespace: a directory inside the target
        }
        match parts.next() {
            None => true,
            Some(version) => version
                .strip_prefix("PG_")
                .and_then(|v| v.split_once('_'))
                .is_some_and(|(major, catalog)| {
                    [major, catalog]
                        .iter()
                        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                }),
        }
    }

    pub fn original_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn stored_bytes_here(&self) -> u64 {
        self.files.iter().map(FileEntry::stored_here).sum()
    }

    /// Backup ids this backup needs besides itself.
    pub fn depends_on(&self) -> Vec<i64> {
        let mut used: Vec<usize> = self
            .files
            .iter()
            .flat_map(|f| f.chunks.iter().map(|c| c.link))
            .filter(|&l| l != 0)
            .collect();
        used.sort_unstable();
        used.dedup();
        used.iter()
            .filter_map(|&l| self.chain.get(l).map(|c| c.backup_id))
            .collect()
    }

    /// Reads a manifest's bytes; `shown` names where they came from in messages.
    pub fn parse(bytes: &[u8], shown: &str) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("\"{shown}\" is not a valid manifest: {e}"))?;
        if manifest.format != format_for(&manifest.tablespaces) {
            return Err(format!(
                "\"{shown}\" has manifest format {}, this version reads {FORMAT} and {FORMAT_WITH_TABLESPACES} (with tablespaces)",
                manifest.format
            ));
        }
        for tablespace in &manifest.tablespaces {
            tablespace
                .check()
                .map_err(|e| format!("\"{shown}\" is not a valid manifest: {e}"))?;
        }
        let paths = manifest
            .directories
            .iter()
            .chain(manifest.files.iter().map(|f| &f.path));
        for path in paths {
            if !manifest.in_its_place(path) {
                return Err(format!(
                    "\"{shown}\" is not a valid manifest: \"{path}\" is in a tablespace but not in a server's directory there (PG_<major>_<catalog version>)"
                ));
            }
        }
        Ok(manifest)
    }
}
