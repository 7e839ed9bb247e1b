//! Copying a data directory into a backup: walk it (leaving out what `layout` says), split each
//! file into chunks, store new or changed chunks compressed in this backup's pack file, and
//! reference unchanged ones in the previous backup of the chain.

use super::layout::{
    empties_directory, has_wal_logged_pages, is_temporary, skips_file, unlogged_relations,
};
use super::manifest::{file_digest, ChainLink, Chunk, FileEntry, Manifest, Tablespace};
use super::parallel;
use crate::codec::{Codec, Compression, Sealing};
use crate::crypto::Key;
use crate::storage::{sha256_hex, ObjectWriter};
use crate::wal_blocks::{main_fork_file, ChangedBlocks, RelationChange};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// 1 MiB: small enough that a change to a few pages stores little; large enough that the
/// manifest stays small and zstd keeps its ratio (chunks of 1 MiB compress pgbench's tables
/// slightly better than one stream; 256 KiB ones 1 % worse).
pub const DEFAULT_CHUNK_SIZE: u64 = 1024 * 1024;
/// Chunks read and compressed together.
const BATCH_CHUNKS: usize = 64;

pub struct CopyOptions {
    pub chunk_size: u64,
    /// zstd level; 0 stores chunks uncompressed.
    pub compression_level: i32,
    pub threads: usize,
    /// Encrypts every stored chunk (AES-256-GCM, the chunk's SHA-256 as associated data).
    pub key: Option<Key>,
    /// This server's directory in a tablespace, `PG_<major>_<catalog version>`: the only one
    /// copied (a location may also hold another major's, left by pg_upgrade).
    pub tablespace_directory: String,
    /// What WAL says changed since the previous backup started: with it, a relation's
    /// main-fork file is read only in the chunks holding changed blocks (and past its
    /// previous end).
    pub changed_blocks: Option<ChangedBlocks>,
    /// Blocks per relation segment file (RELSEG_SIZE), to place a block in its file.
    pub blocks_per_segment: u32,
    /// pg_control's data_checksum_version now: page LSNs vouch for nothing when it changed
    /// since the previous backup (`pg_checksums --enable` rewrites pages without WAL).
    pub data_checksum_version: u32,
}

/// What was copied: everything the manifest needs besides the server's facts.
pub struct Copied {
    pub directories: Vec<String>,
    pub files: Vec<FileEntry>,
    pub chain: Vec<ChainLink>,
    pub files_read: u64,
    pub files_referenced: u64,
    pub pack_bytes: u64,
    pub tablespaces: Vec<Tablespace>,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Files read only where WAL said they changed.
    pub files_by_block: u64,
}

struct Walk<'a> {
    /// See `CopyOptions::tablespace_directory`.
    tablespace_directory: &'a str,
    tablespaces: Vec<Tablespace>,
    directories: Vec<String>,
    /// Relative path, full path, and whether its pages carry WAL-maintained LSNs.
    files: Vec<(String, PathBuf, bool)>,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn walk(root: &Path, relative: &str, out: &mut Walk<'_>) -> Result<(), String> {
    let dir = if relative.is_empty() {
        root.to_path_buf()
    } else {
        root.join(relative)
    };
    let mut entries: Vec<_> = match fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(Result::ok).collect(),
        // A database dropped during the backup: WAL replay removes it again.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read directory \"{}\": {e}", dir.display())),
    };
    entries.sort_by_key(|e| e.file_name());
    let names: Vec<String> = entries
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let unlogged = unlogged_relations(names.iter().map(String::as_str));
    for (entry, name) in entries.iter().zip(&names) {
        let path = join(relative, name);
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if relative == "pg_tblspc" && kind.is_symlink() {
            walk_tablespace(root, name, out)?;
            continue;
        }
        if kind.is_dir() || (kind.is_symlink() && path == "pg_wal") {
            if is_temporary(name) {
                continue;
            }
            out.directories.push(path.clone());
            if path == "pg_wal" {
                out.directories.push("pg_wal/archive_status".into());
            }
            if !empties_directory(&path) {
                walk(root, &path, out)?;
            }
        } else if kind.is_file() && !skips_file(relative, name, &unlogged) {
            out.files
                .push((path, entry.path(), has_wal_logged_pages(relative, name)));
        }
    }
    Ok(())
}

/// A tablespace, linked from `pg_tblspc/<name>`: its location is recorded and this server's
/// directory in it copied under `pg_tblspc/<name>/`, through the link.
fn walk_tablespace(root: &Path, name: &str, out: &mut Walk<'_>) -> Result<(), String> {
    let link = format!("pg_tblspc/{name}");
    let location = match fs::read_link(root.join(&link)) {
        Ok(location) => location,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()), // dropped meanwhile
        Err(e) => return Err(format!("cannot read the link {link}: {e}")),
    };
    let tablespace = Tablespace {
        oid: name.to_string(),
        location: location.to_string_lossy().into_owned(),
    };
    if !name.bytes().all(|b| b.is_ascii_digit()) || !location.is_absolute() {
        return Err(format!(
            "{link} (to \"{}\") is not a tablespace PostgreSQL made: refusing to back it up",
            tablespace.location
        ));
    }
    out.tablespaces.push(tablespace);
    let version_directory = format!("{link}/{}", out.tablespace_directory);
    match fs::metadata(root.join(&version_directory)) {
        Ok(meta) if meta.is_dir() => {
            out.directories.push(link.clone());
            out.directories.push(version_directory.clone());
            walk(root, &version_directory, out)
        }
        // Dropped during the backup (its link goes last): WAL replay removes it again. A
        // tablespace still linked without this server's directory is not one to skip quietly.
        Err(e) if e.kind() == ErrorKind::NotFound => match fs::symlink_metadata(root.join(&link)) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            _ => Err(format!(
                "tablespace {link} (\"{}\") has no directory {} for this server",
                location.display(),
                out.tablespace_directory
            )),
        },
        Ok(_) => Err(format!("{version_directory} is not a directory")),
        Err(e) => Err(format!("cannot read {version_directory}: {e}")),
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads at `offset` until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

enum ChunkOutcome {
    Unchanged(Chunk),
    New {
        sha256: String,
        len: u64,
        stored: Vec<u8>,
        compressed: bool,
    },
}

/// Copies `data_dir` into a backup whose pack is written to `pack` (finished at the end; an
/// error drops it, which leaves no pack). With `previous`, unchanged files and chunks are
/// referenced in it instead of stored again. `check` runs between batches with the bytes
/// processed so far; an error from it (a cancellation) stops the copy.
pub fn copy_data_directory(
    data_dir: &Path,
    pack: Box<dyn ObjectWriter>,
    this_backup: ChainLink,
    previous: Option<&Manifest>,
    options: &CopyOptions,
    check: &mut dyn FnMut(u64) -> Result<(), String>,
) -> Result<Copied, String> {
    let mut tree = Walk {
        tablespace_directory: &options.tablespace_directory,
        tablespaces: Vec::new(),
        directories: Vec::new(),
        files: Vec::new(),
    };
    walk(data_dir, "", &mut tree)?;
    let previous_files: HashMap<&str, &FileEntry> = previous
        .map(|m| m.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    let mut chain = vec![this_backup];
    chain.extend(previous.map(|m| m.chain.clone()).unwrap_or_default());
    let mut copy = FileCopy {
        pack,
        pack_offset: 0,
        chunk_size: options.chunk_size.max(4096) as usize,
        buf: vec![0u8; options.chunk_size.max(4096) as usize * BATCH_CHUNKS],
        options,
        // Pages whose LSN is older than the previous backup's start have not changed since it
        // was taken (every change to them since would have moved their LSN): their chunks
        // need no hash.
        since: previous
            .filter(|m| m.data_checksum_version == Some(options.data_checksum_version))
            .and_then(|m| crate::lsn::Lsn::parse(&m.start_lsn))
            .map_or(0, |l| l.0),
        processed: 0,
        bytes_read: 0,
    };
    // Block maps apply to chunks of the size the previous backup used.
    let changed_blocks = options
        .changed_blocks
        .as_ref()
        .filter(|_| previous.is_some_and(|m| m.chunk_size == copy.chunk_size as u64));
    let mut files_by_block = 0u64;
    let referable_before = referable_before(previous);
    let (mut files, mut files_read, mut files_referenced) = (Vec::new(), 0u64, 0u64);
    for (relative, path, paged) in &tree.files {
        check(copy.processed)?;
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue, // dropped meanwhile
            Err(e) => return Err(format!("cannot stat \"{}\": {e}", path.display())),
        };
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let mode = meta.permissions().mode() & 0o7777;
        let before = previous_files.get(relative.as_str()).copied();
        if let Some(prev) = before.filter(|p| {
            p.size == meta.len() && p.mtime_ns == mtime_ns && mtime_ns < referable_before
        }) {
            let mut entry = prev.clone();
            entry.mode = mode;
            for c in &mut entry.chunks {
                c.link += 1;
            }
            copy.processed += entry.size;
            files_referenced += 1;
            files.push(entry);
            continue;
        }
        let sparse = changed_blocks.zip(before).and_then(|(changes, prev)| {
            chunks_to_read(
                changes,
                relative,
                prev,
                meta.len(),
                copy.chunk_size,
                options,
            )
        });
        let chunks = match (sparse, before) {
            (Some(read), Some(prev)) => {
                files_by_block += 1;
                copy.sparse_file(path, prev, meta.len(), &read, check)?
            }
            _ => copy.file(path, before, *paged, check)?,
        };
        let Some(chunks) = chunks else {
            continue; // dropped meanwhile
        };
        files_read += 1;
        files.push(FileEntry {
            path: relative.clone(),
            size: chunks.iter().map(|c| c.len).sum(),
            mtime_ns,
            mode,
            sha256: file_digest(chunks.iter().map(|c| c.sha256.as_str())),
            chunks,
        });
    }
    check(copy.processed)?;
    copy.pack
        .finish()
        .map_err(|e| format!("cannot store the pack: {e}"))?;
    let chain = prune_chain(chain, &mut files);
    Ok(Copied {
        directories: tree.directories,
        files,
        chain,
        files_read,
        files_referenced,
        pack_bytes: copy.pack_offset,
        tablespaces: tree.tablespaces,
        bytes_read: copy.bytes_read,
        files_by_block,
    })
}

/// Which chunks of a main-fork file must be read, by what WAL says changed in it: those
/// holding a changed block, and those past the file's previous end or shaped unlike their
/// previous copy. `None` when the whole file must be read: not a main fork, created or
/// truncated since (`RelationChange::Whole`), or shorter than before.
fn chunks_to_read(
    changes: &ChangedBlocks,
    relative: &str,
    prev: &FileEntry,
    size: u64,
    chunk_size: usize,
    options: &CopyOptions,
) -> Option<Vec<bool>> {
    let (rel, segment) = main_fork_file(relative)?;
    let RelationChange::Blocks(blocks) = changes.relation(rel) else {
        return None;
    };
    let chunk_size = chunk_size as u64;
    if size < prev.size || !chunk_size.is_multiple_of(PAGE_SIZE as u64) {
        return None;
    }
    let mut read: Vec<bool> = (0..size.div_ceil(chunk_size))
        .map(|i| {
            let start = i * chunk_size;
            let len = chunk_size.min(size - start);
            prev.chunks
                .get(i as usize)
                .is_none_or(|c| c.len != len || start + len > prev.size)
        })
        .collect();
    let per_file = u64::from(options.blocks_per_segment);
    let first = u64::from(segment) * per_file;
    for block in blocks.into_iter().flatten().map(|&b| u64::from(b)) {
        if (first..first + per_file).contains(&block) {
            let chunk = (block - first) * PAGE_SIZE as u64 / chunk_size;
            if let Some(slot) = read.get_mut(chunk as usize) {
                *slot = true;
            }
        }
    }
    Some(read)
}

/// Files whose modification time (nanoseconds since the epoch) is before this may be
/// referenced from the previous backup by size and time alone. A file rewritten within one
/// timestamp tick of the previous backup reading it keeps its time and size: only files last
/// changed over a second before the previous backup started are taken on trust; the others,
/// and every file when the previous backup's start is unknown, are read (unchanged chunks are
/// still referenced, by their hash).
fn referable_before(previous: Option<&Manifest>) -> i128 {
    previous
        .and_then(|m| chrono::DateTime::parse_from_rfc3339(&m.started_at).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .map_or(i128::MIN, |ns| i128::from(ns) - 1_000_000_000)
}

/// The pack being written and the reading of files into it.
struct FileCopy<'a> {
    pack: Box<dyn ObjectWriter>,
    pack_offset: u64,
    chunk_size: usize,
    buf: Vec<u8>,
    options: &'a CopyOptions,
    since: u64,
    /// Bytes looked at so far, for the progress check.
    processed: u64,
    bytes_read: u64,
}

impl FileCopy<'_> {
    /// Reads the file at `path` in batches of chunks, stores the chunks that changed since
    /// `before` (its entry in the previous backup) and returns all of them; `None` when the
    /// file was dropped meanwhile.
    fn file(
        &mut self,
        path: &Path,
        before: Option<&FileEntry>,
        paged: bool,
        check: &mut dyn FnMut(u64) -> Result<(), String>,
    ) -> Result<Option<Vec<Chunk>>, String> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open \"{}\": {e}", path.display())),
        };
        let mut chunks: Vec<Chunk> = Vec::new();
        loop {
            check(self.processed)?;
            let n = read_full(&mut file, &mut self.buf)
                .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
            if n == 0 {
                break;
            }
            self.processed += n as u64;
            self.bytes_read += n as u64;
            let (chunk_size, since, options) = (self.chunk_size, self.since, self.options);
            let first = chunks.len();
            let pieces: Vec<(usize, &[u8])> = self.buf[..n]
                .chunks(chunk_size)
                .enumerate()
                .map(|(i, piece)| (first + i, piece))
                .collect();
            let outcomes = parallel::map(&pieces, options.threads, |(index, piece)| {
                let earlier = before.and_then(|p| p.chunks.get(*index));
                if let Some(c) = earlier.filter(|c| {
                    paged && c.len == piece.len() as u64 && pages_older_than(piece, since)
                }) {
                    return Ok(ChunkOutcome::Unchanged(c.clone()));
                }
                store_chunk(
                    piece,
                    earlier,
                    options.compression_level,
                    options.key.as_ref(),
                )
            });
            for outcome in outcomes {
                chunks.push(self.place(outcome?)?);
            }
            if n < self.buf.len() {
                break;
            }
        }
        Ok(Some(chunks))
    }

    /// Reads the chunks of the file at `path` that `read` marks (of its `size` bytes at the
    /// walk), stores those that changed, and references the others in `before`; `None` when
    /// the file was dropped meanwhile. A file that shrank meanwhile ends where it ends now
    /// (WAL replay truncates it again).
    fn sparse_file(
        &mut self,
        path: &Path,
        before: &FileEntry,
        size: u64,
        read: &[bool],
        check: &mut dyn FnMut(u64) -> Result<(), String>,
    ) -> Result<Option<Vec<Chunk>>, String> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open \"{}\": {e}", path.display())),
        };
        let chunk_size = self.chunk_size;
        let mut chunks: Vec<Chunk> = Vec::with_capacity(read.len());
        let mut next = 0;
        while next < read.len() {
            check(self.processed)?;
            // The chunks up to the next BATCH_CHUNKS that must be read, read into the buffer.
            let mut pieces: Vec<(usize, usize, usize)> = Vec::new(); // index, at, length
            let mut filled = 0;
            let mut end = next;
            while end < read.len() && pieces.len() < BATCH_CHUNKS {
                if read[end] {
                    let offset = (end * chunk_size) as u64;
                    let want = chunk_size.min(size.saturating_sub(offset) as usize);
                    let n = read_full_at(&file, &mut self.buf[filled..filled + want], offset)
                        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
                    pieces.push((end, filled, n));
                    filled += n;
                }
                end += 1;
            }
            self.bytes_read += filled as u64;
            let (level, key) = (self.options.compression_level, self.options.key.as_ref());
            let buf = &self.buf;
            let outcomes = parallel::map(&pieces, self.options.threads, |&(index, at, n)| {
                store_chunk(&buf[at..at + n], before.chunks.get(index), level, key)
            });
            let mut outcomes = pieces.iter().map(|p| p.2).zip(outcomes);
            for (index, &must_read) in read.iter().enumerate().take(end).skip(next) {
                let outcome = if must_read {
                    match outcomes.next() {
                        Some((0, _)) | None => return Ok(Some(chunks)), // shrank meanwhile
                        Some((n, outcome))
                            if n < chunk_size
                                .min((size - (index * chunk_size) as u64) as usize) =>
                        {
                            // Shrank meanwhile: the file ends in this chunk now.
                            let chunk = self.place(outcome?)?;
                            self.processed += chunk.len;
                            chunks.push(chunk);
                            return Ok(Some(chunks));
                        }
                        Some((_, outcome)) => outcome?,
                    }
                } else {
                    ChunkOutcome::Unchanged(before.chunks[index].clone())
                };
                let chunk = self.place(outcome)?;
                self.processed += chunk.len;
                chunks.push(chunk);
            }
            next = end;
        }
        Ok(Some(chunks))
    }

    /// A chunk's entry: referenced where it was, or written at the end of the pack.
    fn place(&mut self, outcome: ChunkOutcome) -> Result<Chunk, String> {
        Ok(match outcome {
            ChunkOutcome::Unchanged(mut c) => {
                c.link += 1;
                c
            }
            ChunkOutcome::New {
                sha256,
                len,
                stored,
                compressed,
            } => {
                self.pack
                    .write(&stored)
                    .map_err(|e| format!("cannot write the pack: {e}"))?;
                let offset = self.pack_offset;
                self.pack_offset += stored.len() as u64;
                Chunk {
                    sha256,
                    len,
                    link: 0,
                    offset,
                    stored_len: stored.len() as u64,
                    compressed,
                }
            }
        })
    }
}

fn store_chunk(
    piece: &[u8],
    before: Option<&Chunk>,
    level: i32,
    key: Option<&Key>,
) -> Result<ChunkOutcome, String> {
    let sha256 = sha256_hex(piece);
    if let Some(prev) = before.filter(|p| p.sha256 == sha256 && p.len == piece.len() as u64) {
        return Ok(ChunkOutcome::Unchanged(prev.clone()));
    }
    let encoded = chunk_codec(level, key).encode_digested(piece, sha256)?;
    Ok(ChunkOutcome::New {
        sha256: encoded.sha256,
        len: piece.len() as u64,
        stored: encoded.stored,
        compressed: encoded.compressed,
    })
}

/// How a pack chunk is stored: a zstd block when smaller, sealed by its digest when the
/// backup is encrypted.
pub fn chunk_codec(level: i32, key: Option<&Key>) -> Codec<'_> {
    Codec {
        compression: Compression::BlockWhenSmaller(level),
        sealing: key.map_or(Sealing::None, Sealing::ByDigest),
    }
}

const PAGE_SIZE: usize = 8192;

/// Whether every page of `piece` has a (non-zero) LSN before `since`.
fn pages_older_than(piece: &[u8], since: u64) -> bool {
    since > 0
        && piece.len().is_multiple_of(PAGE_SIZE)
        && piece.chunks(PAGE_SIZE).all(|page| {
            let hi = u32::from_ne_bytes([page[0], page[1], page[2], page[3]]);
            let lo = u32::from_ne_bytes([page[4], page[5], page[6], page[7]]);
            let lsn = (u64::from(hi) << 32) | u64::from(lo);
            lsn != 0 && lsn < since
        })
}

/// Keeps only the chain links some chunk uses, renumbering the chunks' links.
fn prune_chain(chain: Vec<ChainLink>, files: &mut [FileEntry]) -> Vec<ChainLink> {
    let mut used = vec![false; chain.len()];
    used[0] = true;
    for c in files.iter().flat_map(|f| &f.chunks) {
        used[c.link] = true;
    }
    let mut renumber = vec![0; chain.len()];
    let mut kept = Vec::new();
    for (i, link) in chain.into_iter().enumerate() {
        if used[i] {
            renumber[i] = kept.len();
            kept.push(link);
        }
    }
    for c in files.iter_mut().flat_map(|f| f.chunks.iter_mut()) {
        c.link = renumber[c.link];
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::pages_older_than;

    fn page(lsn: u64) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
        p
    }

    #[test]
    fn page_lsns_decide_only_when_every_page_is_older() {
        let old: Vec<u8> = [page(0x1_0000_0010), page(0x50)].concat();
        assert!(pages_older_than(&old, 0x1_0000_0011));
        assert!(
            !pages_older_than(&old, 0x1_0000_0010),
            "a page at the start LSN may have changed"
        );
        assert!(
            !pages_older_than(&[page(0x50), page(0)].concat(), 0x100),
            "a zero LSN proves nothing"
        );
        assert!(
            !pages_older_than(&old[..8000], 0x1_0000_0011),
            "not whole pages"
        );
        assert!(!pages_older_than(&old, 0), "no previous backup");
    }
}
