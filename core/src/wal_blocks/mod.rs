//! Which relation blocks WAL changed between two positions: what lets an incremental backup
//! read only those blocks. Every change to a permanent relation's main fork is WAL-logged with
//! a block reference (hint bits aside, which need no copying); what block references do not
//! show — a relation created or truncated, a database or tablespace created or dropped — is
//! recorded whole, and the backup reads those files entirely. Other forks (free space map,
//! visibility map, init) are always read whole: the free space map is not WAL-logged, and
//! visibility map bits are cleared by heap records that do not reference the map's page.

pub mod map;
mod record;
mod segment;

use crate::lsn::segment_file_name;
use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::path::Path;

pub use record::crc32c;
pub use segment::{scan_segment, SegmentScan, PAGE_SIZE};

/// A relation's storage: PostgreSQL's RelFileNode (RelFileLocator from 16 on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelFile {
    pub tablespace: u32,
    pub database: u32,
    pub relation: u32,
}

const DEFAULT_TABLESPACE: u32 = 1663;
const GLOBAL_TABLESPACE: u32 = 1664;
const MAIN_FORK: u8 = 0;

/// What WAL says changed.
#[derive(Debug, Default)]
pub struct ChangedBlocks {
    /// Main-fork blocks referenced, per relation.
    blocks: HashMap<RelFile, HashSet<u32>>,
    /// Relations created (a relfilenode used anew) or truncated.
    rewritten: HashSet<RelFile>,
    databases: HashSet<u32>,
    tablespaces: HashSet<u32>,
    /// Records decoded.
    pub records: u64,
}

/// What is known of one relation's main fork.
#[derive(Debug, PartialEq, Eq)]
pub enum RelationChange<'a> {
    /// Only these blocks changed (none when `None`).
    Blocks(Option<&'a HashSet<u32>>),
    /// Anything may have changed: read it whole.
    Whole,
}

impl ChangedBlocks {
    pub(crate) fn block(&mut self, rel: RelFile, fork: u8, block: u32) {
        if fork == MAIN_FORK {
            self.blocks.entry(rel).or_default().insert(block);
        }
    }

    pub(crate) fn rewritten(&mut self, rel: RelFile) {
        self.rewritten.insert(rel);
    }

    pub(crate) fn database(&mut self, database: u32) {
        self.databases.insert(database);
    }

    pub(crate) fn tablespace(&mut self, tablespace: u32) {
        self.tablespaces.insert(tablespace);
    }

    pub fn relation(&self, rel: RelFile) -> RelationChange<'_> {
        if self.rewritten.contains(&rel)
            || self.databases.contains(&rel.database)
            || self.tablespaces.contains(&rel.tablespace)
        {
            RelationChange::Whole
        } else {
            RelationChange::Blocks(self.blocks.get(&rel))
        }
    }

    /// Distinct main-fork blocks referenced.
    pub fn block_count(&self) -> usize {
        self.blocks.values().map(HashSet::len).sum()
    }

    /// Relations, databases and tablespaces to be read whole.
    pub fn whole_count(&self) -> usize {
        self.rewritten.len() + self.databases.len() + self.tablespaces.len()
    }

    fn merge(&mut self, other: ChangedBlocks) {
        for (rel, blocks) in other.blocks {
            self.blocks.entry(rel).or_default().extend(blocks);
        }
        self.rewritten.extend(other.rewritten);
        self.databases.extend(other.databases);
        self.tablespaces.extend(other.tablespaces);
        self.records += other.records;
    }
}

/// The relation and segment number of a main-fork file, by its path in a data directory
/// (`base/<db>/<rel>[.<n>]`, `global/<rel>`, `pg_tblspc/<spc>/<version>/<db>/<rel>`).
pub fn main_fork_file(path: &str) -> Option<(RelFile, u32)> {
    let parts: Vec<&str> = path.split('/').collect();
    let oid = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (tablespace, database, name) = match parts.as_slice() {
        ["base", db, name] => (DEFAULT_TABLESPACE, oid(db)?, *name),
        ["global", name] => (GLOBAL_TABLESPACE, 0, *name),
        ["pg_tblspc", spc, version, db, name] if version.starts_with("PG_") => {
            (oid(spc)?, oid(db)?, *name)
        }
        _ => return None,
    };
    let (relation, segment) = match name.split_once('.') {
        Some((rel, n)) => (oid(rel)?, oid(n)?),
        None => (oid(name)?, 0),
    };
    Some((
        RelFile {
            tablespace,
            database,
            relation,
        },
        segment,
    ))
}

/// Decodes a record that crossed from one segment into the next: the start kept as the first
/// segment's `tail`, the rest as the second's `head`.
pub fn join_edge(tail: &[u8], head: &[u8], out: &mut ChangedBlocks) -> Result<(), String> {
    let mut rec = tail.to_vec();
    rec.extend_from_slice(head);
    record::decode(&rec, out).map(|_| ())
}

/// Where WAL came from for a range: segments read through their block maps, and read
/// themselves (not archived yet, or archived without a map).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sources {
    pub maps: usize,
    pub segments: usize,
}

/// What WAL of cluster `system_identifier`'s `timeline` changed from `from` up to `until`
/// (a record boundary), from the block maps in `wal_dir/admin_toolkit_blocks` or else the
/// segments still in `wal_dir`. An error when a segment has neither (recycled before the
/// toolkit archived it), cannot be read as WAL, is another cluster's, or does not continue
/// the WAL before it (each segment's first record names the previous one's last): the caller
/// then reads everything.
pub fn changes_between(
    wal_dir: &Path,
    system_identifier: u64,
    timeline: u32,
    from: u64,
    until: u64,
    segment_size: u64,
) -> Result<(ChangedBlocks, Sources), String> {
    let maps_dir = wal_dir.join("admin_toolkit_blocks");
    let mut out = ChangedBlocks::default();
    let mut sources = Sources::default();
    let mut tail: Vec<u8> = Vec::new();
    let mut last_start: Option<u64> = None;
    let mut last_complete: Option<u64> = None;
    let first = from / segment_size;
    for segment in first..=until.saturating_sub(1) / segment_size {
        let name = segment_file_name(timeline, segment, segment_size);
        let map = match map::read_map(&maps_dir, &name)? {
            Some(m) => {
                sources.maps += 1;
                m
            }
            None => {
                sources.segments += 1;
                let bytes = read_segment(wal_dir, &name, segment_size)?;
                map::map_segment_until(&bytes, segment * segment_size, until, usize::MAX)
                    .map_err(|e| format!("WAL segment {name}: {e}"))?
            }
        };
        if map.scan.system_identifier != system_identifier {
            return Err(format!(
                "WAL segment {name} is of cluster {}, not {system_identifier}",
                map.scan.system_identifier
            ));
        }
        if segment > first {
            // The first record here names the last one that began before it (or, after an
            // abandoned record, the last complete one).
            let expected = if map.scan.overwrites_contrecord {
                last_complete
            } else {
                last_start
            };
            if matches!((map.scan.first_prev, expected), (Some(p), Some(e)) if p != e) {
                return Err(format!(
                    "WAL segment {name} does not continue the segment before it (another WAL history)"
                ));
            }
        }
        if map.scan.overwrites_contrecord {
            tail.clear(); // abandoned by crash recovery: no record
        }
        out.merge(map.changes);
        if !tail.is_empty() {
            join_edge(&tail, &map.scan.head, &mut out)
                .map_err(|e| format!("WAL segment {name}: {e}"))?;
        }
        tail = map.scan.tail;
        last_start = map.scan.last_start.or(last_start);
        last_complete = map.scan.last_complete.or(last_complete);
    }
    // A tail left now is of a record after `until`: `until` lies in the last segment and is
    // a record boundary, so every record begun before it ends in that segment.
    Ok((out, sources))
}

fn read_segment(wal_dir: &Path, name: &str, segment_size: u64) -> Result<Vec<u8>, String> {
    match std::fs::read(wal_dir.join(name)) {
        Ok(b) if b.len() as u64 == segment_size => Ok(b),
        Ok(_) => Err(format!("WAL segment {name} is not {segment_size} bytes")),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!(
            "WAL segment {name} is no longer in pg_wal and has no block map"
        )),
        Err(e) => Err(format!("cannot read WAL segment {name}: {e}")),
    }
}

#[cfg(test)]
mod tests;
