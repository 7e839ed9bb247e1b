//! Reading a backup back: every chunk from the pack that holds it, decompressed and checked
//! against its SHA-256. Shared by verification and restore.

use super::manifest::{file_digest, Chunk, FileEntry, Manifest};
use super::parallel;
use super::store::BackupStore;
use crate::crypto::{Key, KeyDir};
use crate::storage::{sha256_hex, S3Settings};
use std::sync::Mutex;

/// One backup of a chain: where its pack is, and the key its chunks are encrypted with.
struct Link {
    store: BackupStore,
    key: Option<Key>,
    size: u64,
    /// The last window of the pack read (its offset and bytes): chunks are read in the order
    /// they were stored, so one large read serves many (on object storage, one request).
    window: Mutex<(u64, Vec<u8>)>,
}

/// How much of a pack one read fetches ahead.
const WINDOW: u64 = 32 << 20;

impl Link {
    /// `len` stored bytes at `offset`, from the current window or a new one read from there.
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut window = self
            .window
            .lock()
            .map_err(|_| "a pack reader panicked".to_string())?;
        let (start, bytes) = &*window;
        if offset >= *start && offset + len <= start + bytes.len() as u64 {
            let from = (offset - start) as usize;
            return Ok(bytes[from..from + len as usize].to_vec());
        }
        let span = len
            .max(WINDOW)
            .min(self.size.saturating_sub(offset))
            .max(len);
        let fetched = self.store.read_pack(offset, span).map_err(|e| {
            format!(
                "cannot read {span} bytes at offset {offset} of {}: {e}",
                self.store.display()
            )
        })?;
        let piece = fetched[..len as usize].to_vec();
        *window = (offset, fetched);
        Ok(piece)
    }
}

/// The packs of a backup's chain (local or on S3), opened once.
pub struct Packs {
    links: Vec<Result<Link, String>>,
}

impl Packs {
    /// Opens every backup of the chain and loads its key; a missing pack or key is reported
    /// when a chunk needs it.
    pub fn open(manifest: &Manifest, s3: &S3Settings, keys: &KeyDir) -> Packs {
        let links = manifest
            .chain
            .iter()
            .map(|link| {
                let location = link.path.to_string_lossy();
                let unusable = |e: String| {
                    format!(
                        "pack of backup {} (\"{location}\") cannot be opened: {e}",
                        link.backup_id
                    )
                };
                let key = match &link.key_id {
                    Some(id) => Some(keys.load(id).map_err(|e| {
                        format!(
                            "backup {} (\"{location}\") is encrypted: {e}",
                            link.backup_id
                        )
                    })?),
                    None => None,
                };
                let store = BackupStore::open(&location, s3).map_err(unusable)?;
                match store.pack_size() {
                    Ok(Some(size)) => Ok(Link {
                        store,
                        key,
                        size,
                        window: Mutex::new((0, Vec::new())),
                    }),
                    Ok(None) => Err(unusable("it has no data.pack".into())),
                    Err(e) => Err(unusable(e)),
                }
            })
            .collect();
        Packs { links }
    }

    /// Problems opening the chain's packs, one per backup.
    pub fn missing(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|f| f.as_ref().err().cloned())
            .collect()
    }

    /// The stored bytes of a run of chunks (back to back in one pack, see `contiguous_runs`),
    /// read at once and split, each decrypted when its backup is encrypted.
    fn stored_run(
        &self,
        chunks: &[Chunk],
        run: &[usize],
    ) -> Result<Vec<Result<Vec<u8>, String>>, String> {
        let (first, last) = (&chunks[run[0]], &chunks[run[run.len() - 1]]);
        if run.len() == 1 {
            return Ok(vec![self.stored(first)]);
        }
        let link = self.link(first)?;
        let span = last.offset + last.stored_len - first.offset;
        let bytes = link.read(first.offset, span)?;
        Ok(run
            .iter()
            .map(|&i| {
                let chunk = &chunks[i];
                let start = (chunk.offset - first.offset) as usize;
                let piece = &bytes[start..start + chunk.stored_len as usize];
                match &link.key {
                    Some(key) => key.open(chunk.sha256.as_bytes(), piece),
                    None => Ok(piece.to_vec()),
                }
            })
            .collect())
    }

    fn link(&self, chunk: &Chunk) -> Result<&Link, String> {
        self.links
            .get(chunk.link)
            .ok_or("chunk refers to a backup missing from the manifest's chain")?
            .as_ref()
            .map_err(String::clone)
    }

    /// The chunk's stored bytes, decrypted when its backup is encrypted.
    fn stored(&self, chunk: &Chunk) -> Result<Vec<u8>, String> {
        let link = self.link(chunk)?;
        let bytes = link.read(chunk.offset, chunk.stored_len)?;
        match &link.key {
            Some(key) => key.open(chunk.sha256.as_bytes(), &bytes),
            None => Ok(bytes),
        }
    }
}

fn decode(stored: Vec<u8>, chunk: &Chunk) -> Result<Vec<u8>, String> {
    // Opened already (`Packs::stored`): what is left is the chunk codec without sealing (its
    // level matters only when writing).
    let plain = super::copy::chunk_codec(1, None).decode(
        &stored,
        chunk.compressed,
        chunk.len as usize,
        None,
    )?;
    if plain.len() as u64 != chunk.len {
        return Err(format!(
            "holds {} bytes, the manifest says {}",
            plain.len(),
            chunk.len
        ));
    }
    if sha256_hex(&plain) != chunk.sha256 {
        return Err("SHA-256 does not match the manifest".into());
    }
    Ok(plain)
}

const BATCH_CHUNKS: usize = 64;

/// Chunk `index` of `entry`, checked against its SHA-256 (and the entry against its chunks).
pub fn read_chunk(entry: &FileEntry, index: usize, packs: &Packs) -> Result<Vec<u8>, String> {
    if file_digest(entry.chunks.iter().map(|c| c.sha256.as_str())) != entry.sha256 {
        return Err("the file's checksum does not match its chunks' checksums".into());
    }
    let chunk = entry
        .chunks
        .get(index)
        .ok_or_else(|| format!("{} has no chunk {index}", entry.path))?;
    packs
        .stored(chunk)
        .and_then(|s| decode(s, chunk))
        .map_err(|e| format!("chunk {index}: {e}"))
}

/// Reads every chunk of `entry` in order, checked, passing each to `sink`. An error names the
/// chunk and what is wrong with it.
pub fn read_file(
    entry: &FileEntry,
    packs: &Packs,
    threads: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    if file_digest(entry.chunks.iter().map(|c| c.sha256.as_str())) != entry.sha256 {
        return Err("the file's checksum does not match its chunks' checksums".into());
    }
    if entry.chunks.iter().map(|c| c.len).sum::<u64>() != entry.size {
        return Err("the chunks' lengths do not add up to the file's size".into());
    }
    // Chunks stored one after the other in one pack are fetched with one read (on object
    // storage, one request instead of one per chunk); runs are fetched, and chunks decoded,
    // in parallel.
    let indices: Vec<usize> = (0..entry.chunks.len()).collect();
    for batch in indices.chunks(BATCH_CHUNKS) {
        let runs = contiguous_runs(&entry.chunks, batch);
        let fetched = parallel::map(&runs, threads, |run| packs.stored_run(&entry.chunks, run));
        let mut stored: Vec<(usize, Result<Vec<u8>, String>)> = Vec::with_capacity(batch.len());
        for (run, bytes) in runs.iter().zip(fetched) {
            match bytes {
                Ok(pieces) => stored.extend(run.iter().copied().zip(pieces)),
                Err(e) => stored.extend(run.iter().map(|&i| (i, Err(e.clone())))),
            }
        }
        let decoded = parallel::map(&stored, threads, |(i, s)| {
            let chunk = &entry.chunks[*i];
            s.clone().and_then(|s| decode(s, chunk)).map_err(|e| {
                format!(
                    "chunk {i} (bytes {}..{}): {e}",
                    *i as u64 * chunk_len(entry),
                    *i as u64 * chunk_len(entry) + chunk.len
                )
            })
        });
        for bytes in decoded {
            sink(&bytes?)?;
        }
    }
    Ok(())
}

/// Chunks read together: at most this many per read.
const RUN_CHUNKS: usize = 16;

/// `batch` split into runs of chunks stored back to back in the same pack.
fn contiguous_runs(chunks: &[Chunk], batch: &[usize]) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &i in batch {
        let follows = runs.last().and_then(|run| run.last()).is_some_and(|&p| {
            let (prev, this) = (&chunks[p], &chunks[i]);
            prev.link == this.link && prev.offset + prev.stored_len == this.offset
        });
        match runs.last_mut() {
            Some(run) if follows && run.len() < RUN_CHUNKS => run.push(i),
            _ => runs.push(vec![i]),
        }
    }
    runs
}

fn chunk_len(entry: &FileEntry) -> u64 {
    entry.chunks.first().map_or(0, |c| c.len)
}

/// One problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// What verification found.
pub struct Verification {
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

/// Rechecks every file of the backup against its manifest.
pub fn verify(
    manifest: &Manifest,
    threads: usize,
    s3: &S3Settings,
    keys: &KeyDir,
    progress: &mut dyn FnMut(u64, u64),
) -> Verification {
    let packs = Packs::open(manifest, s3, keys);
    let total = manifest.original_bytes();
    let mut report = Verification {
        files: 0,
        bytes: 0,
        problems: Vec::new(),
    };
    for message in packs.missing() {
        report.problems.push(Problem {
            path: String::new(),
            message,
        });
    }
    let mut done = 0u64;
    for entry in &manifest.files {
        let result = read_file(entry, &packs, threads, &mut |bytes| {
            done += bytes.len() as u64;
            Ok(())
        });
        progress(done, total);
        match result {
            Ok(()) => {
                report.files += 1;
                report.bytes += entry.size;
            }
            Err(message) => report.problems.push(Problem {
                path: entry.path.clone(),
                message,
            }),
        }
    }
    report
}
