//! `validate_recovery_point()`'s checks: the recorded point's base backup (every file against
//! its manifest), its target (after the backup's end), the WAL recovery would read (present,
//! checksums matching) and the timeline it follows.

use super::plan::{error, load_backup, ok, BaseBackup};
use crate::backup::locations;
use crate::backup::schedule::wal_segment_size;
use crate::backup::verify::{check_backup, CheckRow};
use crate::jobs::cron::unix_micros;
use admin_toolkit_core::lsn::{parse_segment_file_name, Lsn};
use admin_toolkit_core::recovery::{plan_segments, Archive, Target};
use admin_toolkit_core::storage::{Storage, StorageError};
use admin_toolkit_core::wal::restore_wal;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// A recovery point as recorded.
struct Point {
    backup_id: Option<i64>,
    time: Option<TimestampWithTimeZone>,
    lsn: Option<Lsn>,
    listed: Vec<String>,
    time_text: String,
}

/// The rows of `validate_recovery_point(recovery_id)`; the checks stop at the first that
/// leaves nothing to check further.
pub(super) fn validate(recovery_id: i32) -> spi::Result<Vec<CheckRow>> {
    let Some(point) = load_point(recovery_id)? else {
        return Ok(vec![error(
            "recovery_point",
            "Recovery point not found".into(),
        )]);
    };
    let backup = match point.backup_id {
        Some(id) => load_backup("backup_id = $1", vec![id.into()])?,
        None => None,
    };
    let Some(backup) = backup else {
        return Ok(vec![error(
            "base_backup",
            match point.backup_id {
                Some(id) => format!("base backup {id} does not exist"),
                None => "no base backup is recorded for this recovery point".into(),
            },
        )]);
    };
    let mut rows = vec![check_base_backup(&backup), check_target(&backup, &point)?];
    let segment_size = wal_segment_size()?;
    let storage = match locations::archive() {
        Ok(storage) => storage,
        Err(e) => {
            rows.push(error("wal_files", format!("no archive to check: {e}")));
            return Ok(rows);
        }
    };
    let archive = match Archive::read(
        storage.as_ref(),
        &locations::system_identifier(),
        segment_size,
        &crate::settings::key_dir(),
        locations::archive_sealed(),
    ) {
        Ok(archive) => archive,
        Err(e) => {
            rows.push(error("wal_files", e));
            return Ok(rows);
        }
    };
    let (wal_row, needed) = check_wal(storage.as_ref(), &archive, &backup, &point, segment_size);
    rows.push(wal_row);
    rows.push(check_timeline(&archive, &backup, &needed, segment_size));
    Ok(rows)
}

fn load_point(recovery_id: i32) -> spi::Result<Option<Point>> {
    crate::query::one_row(
        "SELECT base_backup_id, recovery_time, recovery_lsn::text, coalesce(required_wal_files, '{}'), \
                recovery_time::text FROM admin_toolkit.recovery_points WHERE recovery_id = $1",
        &[recovery_id.into()],
        |r| {
            Ok(Point {
                backup_id: r.get::<i64>(1)?,
                time: r.get::<TimestampWithTimeZone>(2)?,
                lsn: r.get::<String>(3)?.as_deref().and_then(Lsn::parse),
                listed: r.get::<Vec<String>>(4)?.unwrap_or_default(),
                time_text: r.get::<String>(5)?.unwrap_or_default(),
            })
        },
    )
}

/// The base backup: every file against its manifest.
fn check_base_backup(backup: &BaseBackup) -> CheckRow {
    let checks = check_backup(backup.backup_id, &backup.path, &backup.status);
    let problems: Vec<String> = checks
        .iter()
        .filter(|c| c.1 != "OK")
        .map(|c| format!("{}: {}", c.0, c.2))
        .collect();
    if problems.is_empty() {
        ok(
            "base_backup",
            format!(
                "Base backup {} available at {}: {}",
                backup.backup_id,
                backup.path,
                checks.last().map_or("", |c| c.2.as_str())
            ),
        )
    } else {
        error(
            "base_backup",
            format!(
                "Base backup {} at {}: {}",
                backup.backup_id,
                backup.path,
                problems.join("; ")
            ),
        )
    }
}

/// The target: after the backup's end, in time and (when recorded) in WAL.
fn check_target(backup: &BaseBackup, point: &Point) -> spi::Result<CheckRow> {
    let after_end = Spi::get_one_with_args::<bool>(
        "SELECT $1 >= (SELECT end_time FROM admin_toolkit.backup_history WHERE backup_id = $2)",
        &[point.time.into(), backup.backup_id.into()],
    )?
    .unwrap_or(false)
        && point.lsn.is_none_or(|l| l >= backup.position.end);
    let time_text = &point.time_text;
    Ok(if after_end {
        ok(
            "target",
            format!(
                "target {} is after the backup ended ({})",
                point
                    .lsn
                    .map_or(time_text.clone(), |l| format!("{time_text} / {l}")),
                backup.position.end
            ),
        )
    } else {
        error(
            "target",
            format!(
                "target {} is before base backup {} ended (end LSN {})",
                point.lsn.map_or(time_text.clone(), |l| l.to_string()),
                backup.backup_id,
                backup.position.end
            ),
        )
    })
}

/// The WAL: every segment the plan needs and every one the point lists, present with a
/// matching checksum. Also returns the segments checked.
fn check_wal(
    storage: &dyn Storage,
    archive: &Archive,
    backup: &BaseBackup,
    point: &Point,
    segment_size: u64,
) -> (CheckRow, Vec<String>) {
    let target = match (point.lsn, point.time) {
        (Some(l), _) => Target::Lsn(l),
        (None, Some(t)) => Target::Time(unix_micros(t)),
        (None, None) => Target::EndOfArchive,
    };
    let planned = plan_segments(archive, backup.position, target, segment_size);
    let mut needed: Vec<String> = planned
        .as_ref()
        .map(|p| p.segments.clone())
        .unwrap_or_default();
    for name in &point.listed {
        if !needed.contains(name) {
            needed.push(name.clone());
        }
    }
    let system = locations::system_identifier();
    let keys = crate::settings::key_dir();
    let mut bad: Vec<String> = Vec::new();
    for name in &needed {
        match restore_wal(
            storage,
            Some(&system),
            name,
            &keys,
            locations::archive_sealed(),
        ) {
            Ok(_) => {}
            Err(StorageError::NotFound(e)) => bad.push(format!("{name} is missing ({e})")),
            Err(e) => bad.push(format!("{name} is damaged or unreadable: {e}")),
        }
    }
    if let Err(e) = &planned {
        bad.insert(0, e.to_string());
    }
    let row = if bad.is_empty() {
        ok(
            "wal_files",
            format!(
                "{} WAL files present with matching checksums ({} .. {})",
                needed.len(),
                needed.first().map_or("-", String::as_str),
                needed.last().map_or("-", String::as_str)
            ),
        )
    } else {
        error("wal_files", bad.join("; "))
    };
    (row, needed)
}

/// The timeline: the segments follow one line of descent, with its history file archived.
fn check_timeline(
    archive: &Archive,
    backup: &BaseBackup,
    needed: &[String],
    segment_size: u64,
) -> CheckRow {
    let (timeline, history) = archive.target_timeline(backup.position.timeline);
    let stray: Vec<&str> = needed
        .iter()
        .filter(|n| {
            parse_segment_file_name(n, segment_size).is_some_and(|(tli, _)| {
                tli != timeline && !history.iter().any(|h| h.timeline == tli)
            })
        })
        .map(String::as_str)
        .collect();
    if !stray.is_empty() {
        error(
            "timeline",
            format!(
                "WAL files {} are not on timeline {timeline} or its ancestors",
                stray.join(", ")
            ),
        )
    } else if timeline == backup.position.timeline {
        ok("timeline", format!("timeline {timeline} throughout"))
    } else {
        ok(
            "timeline",
            format!(
                "from timeline {} to {timeline} through {timeline:08X}.history",
                backup.position.timeline
            ),
        )
    }
}
