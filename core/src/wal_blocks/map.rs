//! Block maps: what one WAL segment changed, written by the archive module as it archives the
//! segment, into `pg_wal/admin_toolkit_blocks/<segment>` (beside the WAL, like PostgreSQL 17's
//! `pg_wal/summaries`: never part of a base backup), and read by incrementals instead of the
//! segment, which is long recycled by then. A map keeps the edges of the records that cross
//! into the next segment or come from the previous one, so that consecutive maps join.
//! Written under a temporary name and renamed; checked by a CRC when read: a torn or damaged
//! map is refused, and the backup compares files whole instead.

use super::segment::{scan_segment, SegmentScan};
use super::{crc32c, ChangedBlocks, RelFile};
use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::Path;

/// Where maps are kept, relative to the data directory. Maps are written only while it
/// exists: the first base backup makes it.
pub const MAP_DIRECTORY: &str = "pg_wal/admin_toolkit_blocks";
const MAGIC: &[u8] = b"admin_toolkit block map 2\n";
/// Bytes kept of a record crossing a segment's edge: more than any record's headers.
const EDGE_BYTES: usize = 4096;

/// What a segment changed, and what its scan left for its neighbours (its edges and what ties
/// it to its cluster and to them).
#[derive(Debug, Default)]
pub struct SegmentMap {
    pub changes: ChangedBlocks,
    pub scan: SegmentScan,
}

/// The map of segment `bytes`, which starts at LSN `segment_lsn`.
pub fn map_segment(bytes: &[u8], segment_lsn: u64) -> Result<SegmentMap, String> {
    map_segment_until(bytes, segment_lsn, u64::MAX, EDGE_BYTES)
}

/// The map of the records of segment `bytes` that begin before `until`, its edges cut to
/// `keep` bytes.
pub fn map_segment_until(
    bytes: &[u8],
    segment_lsn: u64,
    until: u64,
    keep: usize,
) -> Result<SegmentMap, String> {
    let mut changes = ChangedBlocks::default();
    let scan = scan_segment(bytes, segment_lsn, until, keep, &mut changes)?;
    Ok(SegmentMap { changes, scan })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_rel(out: &mut Vec<u8>, r: &RelFile) {
    for v in [r.tablespace, r.database, r.relation] {
        put_varint(out, u64::from(v));
    }
}

fn put_oids(out: &mut Vec<u8>, oids: &HashSet<u32>) {
    let mut sorted: Vec<u32> = oids.iter().copied().collect();
    sorted.sort_unstable();
    put_varint(out, sorted.len() as u64);
    for oid in sorted {
        put_varint(out, u64::from(oid));
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The map's bytes: relations' blocks as sorted deltas, the whole-read sets, the edges, a CRC.
pub fn encode(map: &SegmentMap) -> Vec<u8> {
    let c = &map.changes;
    let mut out = MAGIC.to_vec();
    put_varint(&mut out, map.scan.system_identifier);
    for lsn in [
        map.scan.first_prev,
        map.scan.last_start,
        map.scan.last_complete,
    ] {
        put_varint(&mut out, lsn.map_or(0, |l| l + 1));
    }
    put_varint(&mut out, u64::from(map.scan.overwrites_contrecord));
    put_varint(&mut out, c.records);
    let mut relations: Vec<(&RelFile, &HashSet<u32>)> = c.blocks.iter().collect();
    relations.sort_unstable_by_key(|(r, _)| **r);
    put_varint(&mut out, relations.len() as u64);
    for (rel, blocks) in relations {
        put_rel(&mut out, rel);
        let mut sorted: Vec<u32> = blocks.iter().copied().collect();
        sorted.sort_unstable();
        put_varint(&mut out, sorted.len() as u64);
        let mut last = 0u32;
        for b in sorted {
            put_varint(&mut out, u64::from(b - last));
            last = b;
        }
    }
    let mut rewritten: Vec<&RelFile> = c.rewritten.iter().collect();
    rewritten.sort_unstable();
    put_varint(&mut out, rewritten.len() as u64);
    for rel in rewritten {
        put_rel(&mut out, rel);
    }
    put_oids(&mut out, &c.databases);
    put_oids(&mut out, &c.tablespaces);
    put_bytes(&mut out, &map.scan.head);
    put_bytes(&mut out, &map.scan.tail);
    let crc = crc32c(&[&out]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or("a block map ends early")?;
            self.at += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a block map holds a malformed number".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| "a block map holds an oversized number".into())
    }

    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()? as usize;
        // Every element takes a byte at least: a count beyond the rest is damage.
        if n > self.bytes.len() - self.at {
            return Err("a block map holds an impossible count".into());
        }
        Ok(n)
    }

    fn rel(&mut self) -> Result<RelFile, String> {
        Ok(RelFile {
            tablespace: self.u32()?,
            database: self.u32()?,
            relation: self.u32()?,
        })
    }

    fn oids(&mut self) -> Result<HashSet<u32>, String> {
        (0..self.count()?).map(|_| self.u32()).collect()
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.count()?;
        let out = self.bytes[self.at..self.at + n].to_vec();
        self.at += n;
        Ok(out)
    }
}

pub fn decode(bytes: &[u8]) -> Result<SegmentMap, String> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .filter(|&n| n >= MAGIC.len() && bytes.starts_with(MAGIC))
        .ok_or("not a block map")?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32c(&[body]).to_le_bytes() != crc {
        return Err("a block map fails its CRC".into());
    }
    let mut r = Reader {
        bytes: body,
        at: MAGIC.len(),
    };
    let system_identifier = r.varint()?;
    let first_prev = r.varint()?.checked_sub(1);
    let last_start = r.varint()?.checked_sub(1);
    let last_complete = r.varint()?.checked_sub(1);
    let overwrites_contrecord = r.varint()? == 1;
    let mut changes = ChangedBlocks {
        records: r.varint()?,
        ..ChangedBlocks::default()
    };
    for _ in 0..r.count()? {
        let rel = r.rel()?;
        let mut block = 0u32;
        let mut blocks = HashSet::new();
        for _ in 0..r.count()? {
            block = block
                .checked_add(r.u32()?)
                .ok_or("a block map holds an impossible block")?;
            blocks.insert(block);
        }
        changes.blocks.insert(rel, blocks);
    }
    for _ in 0..r.count()? {
        changes.rewritten.insert(r.rel()?);
    }
    changes.databases = r.oids()?;
    changes.tablespaces = r.oids()?;
    let head = r.bytes()?;
    let tail = r.bytes()?;
    if r.at != body.len() {
        return Err("a block map has trailing bytes".into());
    }
    let scan = SegmentScan {
        head,
        tail,
        system_identifier,
        first_prev,
        last_start,
        last_complete,
        overwrites_contrecord,
    };
    Ok(SegmentMap { changes, scan })
}

/// Writes the map of segment `name` into `directory` (under a temporary name, renamed over any
/// earlier one).
pub fn write_map(directory: &Path, name: &str, map: &SegmentMap) -> Result<(), String> {
    let path = directory.join(name);
    let temporary = directory.join(format!("{name}.tmp.{}", std::process::id()));
    // Not synced: an fsync here held the archiver for seconds behind a checkpoint's writes
    // (bench/s3_wal_backlog.sh, sustained load), and a map torn by an OS crash fails its CRC,
    // which costs one incremental a whole comparison, never a wrong one.
    std::fs::write(&temporary, encode(map))
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| {
            let _cleanup = std::fs::remove_file(&temporary);
            format!("cannot write the block map {}: {e}", path.display())
        })
}

/// Writes the map of WAL file `name` (`contents`, just archived) into `directory` when it is a
/// segment and maps are kept (the directory exists), over any map of an earlier file of that
/// name; whether one was written.
pub fn map_archived_segment(
    directory: &Path,
    name: &str,
    contents: &[u8],
    segment_size: u64,
) -> Result<bool, String> {
    let Some((_, segment)) = crate::lsn::parse_segment_file_name(name, segment_size) else {
        return Ok(false); // a history or backup file
    };
    if !directory.is_dir() {
        return Ok(false);
    }
    let map = map_segment(contents, segment * segment_size)?;
    write_map(directory, name, &map).map(|()| true)
}

/// The map of segment `name` in `directory`, `None` when there is none.
pub fn read_map(directory: &Path, name: &str) -> Result<Option<SegmentMap>, String> {
    match std::fs::read(directory.join(name)) {
        Ok(bytes) => decode(&bytes)
            .map(Some)
            .map_err(|e| format!("block map {name}: {e}")),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read block map {name}: {e}")),
    }
}

/// Removes the maps of segments numbered before `segment` (any timeline): no incremental
/// will need them. Returns how many were removed.
pub fn prune_maps(directory: &Path, segment: u64, segment_size: u64) -> Result<usize, String> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", directory.display())),
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = crate::lsn::parse_segment_file_name(&name, segment_size)
            .is_some_and(|(_, n)| n < segment);
        // Temporary files of a writer that died, too (not those of one writing now).
        let stale = name.contains(".tmp.")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 600);
        if old || stale {
            std::fs::remove_file(entry.path())
                .map_err(|e| format!("cannot remove block map {name}: {e}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}
