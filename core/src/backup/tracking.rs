//! Block change tracking for incrementals: what WAL changed since the previous backup started,
//! or why that cannot be known (the backup then compares every changed file whole, as before).

use super::manifest::Manifest;
use crate::lsn::Lsn;
use crate::wal_blocks::{changes_between, ChangedBlocks, Sources};
use std::path::Path;

/// The blocks changed from `previous`'s start up to `start` (this backup's start, a record
/// boundary already flushed), from the block maps and segments in `wal_dir`, and how many of
/// each were read. A block changed
/// after `start` needs no copy: WAL replay from `start` restores it.
pub fn changes_since(
    previous: &Manifest,
    wal_dir: &Path,
    start: Lsn,
    timeline: u32,
    segment_size: u64,
    data_checksum_version: u32,
) -> Result<(ChangedBlocks, Sources), String> {
    if previous.data_checksum_version != Some(data_checksum_version) {
        return Err(match previous.data_checksum_version {
            Some(v) => format!(
                "data checksums changed since the previous backup (version {v}, now {data_checksum_version}): pages were rewritten without WAL"
            ),
            None => "the previous backup does not record its data checksums (taken before 0.5.0)".into(),
        });
    }
    if previous.wal_segment_size != segment_size {
        return Err(format!(
            "the WAL segment size changed since the previous backup ({} bytes, now {segment_size})",
            previous.wal_segment_size
        ));
    }
    // Recorded as PostgreSQL shows it (a signed bigint): the same 64 bits as WAL's.
    let system = previous
        .system_identifier
        .parse::<i64>()
        .map(|s| s as u64)
        .or_else(|_| previous.system_identifier.parse::<u64>())
        .map_err(|_| "the previous backup's system identifier is not a number")?;
    if previous.timeline != timeline {
        return Err(format!(
            "the previous backup is of timeline {}, this one of {timeline}",
            previous.timeline
        ));
    }
    let from = Lsn::parse(&previous.start_lsn).ok_or_else(|| {
        format!(
            "the previous backup's start {:?} is not an LSN",
            previous.start_lsn
        )
    })?;
    if from > start {
        return Err(format!(
            "the previous backup starts at {from}, after {start}"
        ));
    }
    changes_between(wal_dir, system, timeline, from.0, start.0, segment_size)
}
