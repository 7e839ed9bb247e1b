//! Point-in-time recovery planning and validation against the real archive: which backup,
//! which WAL segments (by name, checked present), how long, and whether a recovery point can
//! really be reached.

use crate::backup::locations;
use crate::backup::schedule::wal_segment_size;
use crate::backup::verify::{row, CheckRow};
use crate::error::ToolkitError;
use crate::jobs::cron::unix_micros;
use crate::settings;
use admin_toolkit_core::lsn::Lsn;
use admin_toolkit_core::recovery::{plan_segments, Archive, BackupPosition, Plan, Target};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// A completed backup as recovery needs it.
pub(super) struct BaseBackup {
    pub backup_id: i64,
    pub path: String,
    pub status: String,
    pub end_time: Option<TimestampWithTimeZone>,
    pub position: BackupPosition,
    pub original_bytes: f64,
    pub throughput_mb_per_s: f64,
}

const BACKUP_COLUMNS: &str = "backup_id, backup_path, status, end_time, start_lsn::text, end_lsn::text, \
     coalesce((metadata->>'timeline')::int, 1), coalesce((metadata->>'original_bytes')::float8, 0), \
     coalesce((metadata->>'throughput_mb_per_s')::float8, 0)";

pub(super) fn load_backup(
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
pub(super) fn plan(
    time: Option<TimestampWithTimeZone>,
    lsn: Option<Lsn>,
    what: &str,
) -> spi::Result<PlanRow> {
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

pub(super) fn ok(check: &str, details: String) -> CheckRow {
    row(check, "OK", details)
}
pub(super) fn error(check: &str, details: String) -> CheckRow {
    row(check, "ERROR", details)
}
