//! Point-in-time recovery planning and validation against the real archive: which backup,
//! which WAL segments (by name, checked present), how long, and whether a recovery point can
//! really be reached.

use crate::backup::locations;
use crate::backup::schedule::wal_segment_size;
use crate::backup::verify::{check_backup, row, CheckRow};
use crate::error::{require, ToolkitError};
use crate::jobs::cron::unix_micros;
use crate::settings;
use admin_toolkit_core::lsn::{parse_segment_file_name, Lsn};
use admin_toolkit_core::recovery::{plan_segments, Archive, BackupPosition, Plan, Target};
use admin_toolkit_core::storage::StorageError;
use admin_toolkit_core::wal::restore_wal;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// A completed backup as recovery needs it.
struct BaseBackup {
    backup_id: i64,
    path: String,
    status: String,
    end_time: Option<TimestampWithTimeZone>,
    position: BackupPosition,
    original_bytes: f64,
    throughput_mb_per_s: f64,
}

const BACKUP_COLUMNS: &str = "backup_id, backup_path, status, end_time, start_lsn::text, end_lsn::text, \
     coalesce((metadata->>'timeline')::int, 1), coalesce((metadata->>'original_bytes')::float8, 0), \
     coalesce((metadata->>'throughput_mb_per_s')::float8, 0)";

fn load_backup(
    condition: &str,
    args: Vec<pgrx::datum::DatumWithOid>,
) -> spi::Result<Option<BaseBackup>> {
    crate::query::one_row(
        &format!(
            "SELECT {BACKUP_COLUMNS} FROM admin_toolkit.backup_history WHERE {condition} LIMIT 1"
        ),
        &args,
        |r| {
            let lsn = |i| -> spi::Result<Lsn> {
                Ok(r.get::<String>(i)?
                    .as_deref()
                    .and_then(Lsn::parse)
                    .unwrap_or(Lsn(0)))
            };
            Ok(BaseBackup {
                backup_id: r.get::<i64>(1)?.unwrap_or_default(),
                path: r.get::<String>(2)?.unwrap_or_default(),
                status: r.get::<String>(3)?.unwrap_or_default(),
                end_time: r.get::<TimestampWithTimeZone>(4)?,
                position: BackupPosition {
                    start: lsn(5)?,
                    end: lsn(6)?,
                    timeline: r.get::<i32>(7)?.unwrap_or(1) as u32,
                },
                original_bytes: r.get::<f64>(8)?.unwrap_or(0.0),
                throughput_mb_per_s: r.get::<f64>(9)?.unwrap_or(0.0),
            })
        },
    )
}

const USABLE: &str = "status = 'completed' AND backup_type IN ('full', 'incremental')";

fn archive(segment_size: u64) -> Archive {
    let storage = locations::archive().unwrap_or_else(|e| {
        ToolkitError::wrong_state(format!("cannot plan from the WAL archive: {e}"))
            .with_hint("Archive WAL with archive_library = 'admin_toolkit' and admin_toolkit.archive_location.")
            .raise()
    });
    Archive::read(
        storage.as_ref(),
        &locations::system_identifier(),
        segment_size,
        &crate::settings::key_dir(),
        crate::backup::locations::archive_sealed(),
    )
    .unwrap_or_else(|e| ToolkitError::wrong_state(e).raise())
}

/// Restore time from the backup's own measured throughput, plus replay of the WAL at
/// admin_toolkit.wal_replay_mb_per_s.
fn estimate_seconds(backup: &BaseBackup, plan: &Plan, segment_size: u64) -> f64 {
    let restore = if backup.throughput_mb_per_s > 0.0 {
        backup.original_bytes / 1e6 / backup.throughput_mb_per_s
    } else {
        0.0
    };
    let wal_mb = plan.segments.len() as f64 * segment_size as f64 / 1e6;
    let replay = wal_mb / f64::from(settings::WAL_REPLAY_MB_PER_S.get().max(1));
    ((restore + replay) * 10.0).ceil() / 10.0
}

type PlanRow = (i64, String, Option<TimestampWithTimeZone>, Vec<String>, f64);

/// The plan for one target; errors are raised with what is wrong.
fn plan(time: Option<TimestampWithTimeZone>, lsn: Option<Lsn>, what: &str) -> spi::Result<PlanRow> {
    let segment_size = wal_segment_size()?;
    let (backup, target) = match (time, lsn) {
        (Some(t), _) => {
            let micros = unix_micros(t);
            let b = load_backup(
                &format!("{USABLE} AND end_time <= $1 ORDER BY end_time DESC, backup_id DESC"),
                vec![t.into()],
            )?;
            (b, Target::Time(micros))
        }
        (None, Some(l)) => {
            let b = load_backup(
                &format!(
                    "{USABLE} AND end_lsn <= $1::pg_lsn ORDER BY end_lsn DESC, backup_id DESC"
                ),
                vec![l.to_string().into()],
            )?;
            (b, Target::Lsn(l))
        }
        (None, None) => ToolkitError::null_value("a recovery target is required").raise(),
    };
    let backup = backup.unwrap_or_else(|| {
        ToolkitError::undefined_object(format!(
            "No suitable base backup found for recovery to {what}"
        ))
        .raise()
    });
    let archive = archive(segment_size);
    let plan = plan_segments(&archive, backup.position, target, segment_size).unwrap_or_else(|e| {
        ToolkitError::wrong_state(format!(
            "cannot recover to {what} from backup {}: {e}",
            backup.backup_id
        ))
        .raise()
    });
    let seconds = estimate_seconds(&backup, &plan, segment_size);
    Ok((
        backup.backup_id,
        backup.path,
        backup.end_time,
        plan.segments,
        seconds,
    ))
}

// The result types stay inline: pgrx derives the SQL signature from them.
#[allow(clippy::type_complexity)]
/// The engine behind plan_recovery(), plan_recovery_to_lsn() and
/// plan_recovery_to_restore_point(); exactly one target is given.
#[pg_extern(volatile)]
fn recovery_plan(
    p_time: Option<TimestampWithTimeZone>,
    p_lsn: Option<String>,
    p_restore_point: Option<String>,
) -> spi::Result<
    TableIterator<
        'static,
        (
            name!(backup_id, i64),
            name!(backup_path, String),
            name!(backup_time, Option<TimestampWithTimeZone>),
            name!(wal_files, Vec<String>),
            name!(seconds, f64),
        ),
    >,
> {
    let row = match (p_time, p_lsn, p_restore_point) {
        (Some(t), None, None) => {
            let shown = Spi::get_one_with_args::<String>("SELECT $1::text", &[t.into()])?
                .unwrap_or_default();
            plan(Some(t), None, &shown)?
        }
        (None, Some(l), None) => {
            let lsn = Lsn::parse(&l).unwrap_or_else(|| {
                ToolkitError::invalid_parameter(format!("\"{l}\" is not a WAL position (X/Y)"))
                    .raise()
            });
            plan(None, Some(lsn), &format!("LSN {lsn}"))?
        }
        (None, None, Some(name)) => {
            let lsn: Option<String> = crate::query::one_row(
                "SELECT recovery_lsn::text FROM admin_toolkit.recovery_points \
                     WHERE recovery_name = $1 AND recovery_lsn IS NOT NULL ORDER BY created_at DESC LIMIT 1",
                &[name.as_str().into()],
                |r| r.get_one::<String>(),
            )?
            .flatten();
            let lsn = lsn.as_deref().and_then(Lsn::parse).unwrap_or_else(|| {
                ToolkitError::undefined_object(format!(
                    "restore point \"{name}\" is not recorded in recovery_points"
                ))
                .with_hint("Create restore points with admin_toolkit.create_restore_point(name).")
                .raise()
            });
            plan(
                None,
                Some(lsn),
                &format!("restore point \"{name}\" ({lsn})"),
            )?
        }
        (None, None, None) => ToolkitError::null_value(
            "a recovery target is required: p_time, p_lsn or p_restore_point",
        )
        .raise(),
        _ => ToolkitError::invalid_parameter("give exactly one recovery target").raise(),
    };
    Ok(TableIterator::once(row))
}

fn ok(check: &str, details: String) -> CheckRow {
    row(check, "OK", details)
}
fn error(check: &str, details: String) -> CheckRow {
    row(check, "ERROR", details)
}

/// Checks that a recovery point can really be reached: base backup files, WAL segments,
/// timeline, target after the backup.
#[pg_extern(volatile)]
fn validate_recovery_point(
    p_recovery_id: Option<i32>,
) -> spi::Result<
    TableIterator<
        'static,
        (
            name!(check_name, String),
            name!(status, String),
            name!(details, String),
        ),
    >,
> {
    let recovery_id = require(p_recovery_id, "p_recovery_id");
    let point = crate::query::one_row(
        "SELECT base_backup_id, recovery_time, recovery_lsn::text, coalesce(required_wal_files, '{}'), \
                    recovery_time::text FROM admin_toolkit.recovery_points WHERE recovery_id = $1",
        &[recovery_id.into()],
        |r| {
            Ok((
                r.get::<i64>(1)?,
                r.get::<TimestampWithTimeZone>(2)?,
                r.get::<String>(3)?,
                r.get::<Vec<String>>(4)?.unwrap_or_default(),
                r.get::<String>(5)?.unwrap_or_default(),
            ))
        },
    )?;
    let Some((backup_id, time, lsn, listed, time_text)) = point else {
        return Ok(TableIterator::new(vec![error(
            "recovery_point",
            "Recovery point not found".into(),
        )]));
    };
    let mut rows = Vec::new();
    let backup = match backup_id {
        Some(id) => load_backup("backup_id = $1", vec![id.into()])?,
        None => None,
    };
    let Some(backup) = backup else {
        rows.push(error(
            "base_backup",
            match backup_id {
                Some(id) => format!("base backup {id} does not exist"),
                None => "no base backup is recorded for this recovery point".into(),
            },
        ));
        return Ok(TableIterator::new(rows));
    };
    // base backup: every file against its manifest
    let checks = check_backup(backup.backup_id, &backup.path, &backup.status);
    let problems: Vec<String> = checks
        .iter()
        .filter(|c| c.1 != "OK")
        .map(|c| format!("{}: {}", c.0, c.2))
        .collect();
    rows.push(if problems.is_empty() {
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
    });
    // target after the backup's end
    let lsn = lsn.as_deref().and_then(Lsn::parse);
    let after_end = Spi::get_one_with_args::<bool>(
        "SELECT $1 >= (SELECT end_time FROM admin_toolkit.backup_history WHERE backup_id = $2)",
        &[time.into(), backup.backup_id.into()],
    )?
    .unwrap_or(false)
        && lsn.is_none_or(|l| l >= backup.position.end);
    rows.push(if after_end {
        ok(
            "target",
            format!(
                "target {} is after the backup ended ({})",
                lsn.map_or(time_text.clone(), |l| format!("{time_text} / {l}")),
                backup.position.end
            ),
        )
    } else {
        error(
            "target",
            format!(
                "target {} is before base backup {} ended (end LSN {})",
                lsn.map_or(time_text.clone(), |l| l.to_string()),
                backup.backup_id,
                backup.position.end
            ),
        )
    });
    // WAL: every segment the plan needs and every listed one, present with a matching checksum
    let segment_size = wal_segment_size()?;
    let storage = match locations::archive() {
        Ok(storage) => storage,
        Err(e) => {
            rows.push(error("wal_files", format!("no archive to check: {e}")));
            return Ok(TableIterator::new(rows));
        }
    };
    let keys = crate::settings::key_dir();
    let system = crate::backup::locations::system_identifier();
    let archive = match Archive::read(
        storage.as_ref(),
        &system,
        segment_size,
        &keys,
        crate::backup::locations::archive_sealed(),
    ) {
        Ok(archive) => archive,
        Err(e) => {
            rows.push(error("wal_files", e));
            return Ok(TableIterator::new(rows));
        }
    };
    let target = match (lsn, time) {
        (Some(l), _) => Target::Lsn(l),
        (None, Some(t)) => Target::Time(unix_micros(t)),
        (None, None) => Target::EndOfArchive,
    };
    let planned = plan_segments(&archive, backup.position, target, segment_size);
    let mut needed: Vec<String> = planned
        .as_ref()
        .map(|p| p.segments.clone())
        .unwrap_or_default();
    for name in &listed {
        if !needed.contains(name) {
            needed.push(name.clone());
        }
    }
    let mut bad: Vec<String> = Vec::new();
    for name in &needed {
        match restore_wal(
            storage.as_ref(),
            Some(&system),
            name,
            &keys,
            crate::backup::locations::archive_sealed(),
        ) {
            Ok(_) => {}
            Err(StorageError::NotFound(e)) => bad.push(format!("{name} is missing ({e})")),
            Err(e) => bad.push(format!("{name} is damaged or unreadable: {e}")),
        }
    }
    if let Err(e) = &planned {
        bad.insert(0, e.to_string());
    }
    rows.push(if bad.is_empty() {
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
    });
    // timeline: the segments follow one line of descent, with its history file archived
    let (timeline, history) = archive.target_timeline(backup.position.timeline);
    let stray: Vec<&String> = needed
        .iter()
        .filter(|n| {
            parse_segment_file_name(n, segment_size).is_some_and(|(tli, _)| {
                tli != timeline && !history.iter().any(|h| h.timeline == tli)
            })
        })
        .collect();
    rows.push(if !stray.is_empty() {
        error(
            "timeline",
            format!(
                "WAL files {} are not on timeline {timeline} or its ancestors",
                stray
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
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
    });
    Ok(TableIterator::new(rows))
}
