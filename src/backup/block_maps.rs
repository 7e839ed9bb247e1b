//! Block change tracking for incrementals, on the job's side: the directory of block maps the
//! archive module fills (made before a backup starts, pruned after it completes), and what
//! WAL changed since the previous backup, with the facts its record keeps.

use super::schedule::data_directory;
use crate::jobs;
use admin_toolkit_core::backup::manifest::Manifest;
use admin_toolkit_core::backup::tracking::changes_since;
use admin_toolkit_core::lsn::Lsn;
use admin_toolkit_core::wal_blocks::map::{prune_maps, MAP_DIRECTORY};
use admin_toolkit_core::wal_blocks::ChangedBlocks;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::time::Instant;

/// Block maps are kept from the first base backup's start on: their directory, which the
/// archive module looks for, is made before pg_backup_start.
pub(super) fn start_block_maps() {
    let directory = data_directory().join(MAP_DIRECTORY);
    if let Err(e) = std::fs::create_dir_all(&directory) {
        log!(
            "admin_toolkit job: block maps: cannot make {}: {e}",
            directory.display()
        );
    }
}

/// Removes the block maps of segments before every active schedule's latest backup: an
/// incremental reads WAL from its parent's start only (a schedule made inactive keeps none
/// alive; its next incremental compares files whole, and says so).
pub(super) fn keep_block_maps(segment_size: u64) {
    let directory = data_directory().join(MAP_DIRECTORY);
    let kept = jobs::bookkeeping(|| {
        Spi::get_one::<String>(
            "SELECT min(start_lsn)::text FROM (SELECT DISTINCT ON (h.schedule_id) h.start_lsn \
               FROM admin_toolkit.backup_history h \
               JOIN admin_toolkit.backup_schedules s ON s.schedule_id = h.schedule_id \
              WHERE s.is_active AND h.status = 'completed' AND h.start_lsn IS NOT NULL \
              ORDER BY h.schedule_id, h.backup_id DESC) latest",
        )
    })
    .and_then(|oldest| match oldest.as_deref().and_then(Lsn::parse) {
        Some(lsn) => prune_maps(&directory, lsn.segment(segment_size), segment_size),
        None => Ok(0),
    });
    if let Err(e) = kept {
        log!("admin_toolkit job: block maps: {e}");
    }
}

/// What WAL changed since the previous backup started (`core::backup::tracking`), with the
/// facts to record: how it was learned, or why the backup compares changed files whole.
pub(super) fn changed_blocks(
    previous: Option<&Manifest>,
    start: Lsn,
    timeline: u32,
    blocks_per_segment: u32,
    segment_size: u64,
    data_checksum_version: u32,
) -> (Option<ChangedBlocks>, Value) {
    let Some(previous) = previous else {
        return (None, Value::Null);
    };
    if blocks_per_segment == 0 {
        let why = "the server's data or WAL pages are not of 8 kB";
        return (None, json!({"source": "file comparison", "reason": why}));
    }
    let began = Instant::now();
    let wal_dir = data_directory().join("pg_wal");
    match changes_since(
        previous,
        &wal_dir,
        start,
        timeline,
        segment_size,
        data_checksum_version,
    ) {
        Ok((changes, sources)) => {
            let facts = json!({
                "source": "wal",
                "block_maps": sources.maps,
                "segments_read": sources.segments,
                "records": changes.records,
                "blocks": changes.block_count(),
                "read_whole": changes.whole_count(),
                "scan_seconds": (began.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            });
            (Some(changes), facts)
        }
        Err(reason) => {
            log!("admin_toolkit job: the incremental compares changed files whole: {reason}");
            (None, json!({"source": "file comparison", "reason": reason}))
        }
    }
}
