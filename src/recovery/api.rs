//! The SQL-facing functions of recovery: plan a recovery, validate a recovery point, run a restore
//! drill.

use super::drill::ONE_AT_A_TIME;
use super::plan::plan;
use crate::error::{require, ToolkitError};
use crate::jobs::ledger::DRILLS;
use crate::jobs::{self, JobKind};
use admin_toolkit_core::lsn::Lsn;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

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
    Ok(TableIterator::new(super::validate::validate(recovery_id)?))
}
/// Restores a backup (default: the latest completed one) and its chain into a scratch directory,
/// recovers it to `p_target` (default: the end of the archived WAL) on a throwaway server,
/// checks it and removes it. Returns the drill_id of its restore_drills row; with `p_wait`,
/// once the drill has finished.
#[pg_extern(volatile)]
fn run_restore_drill(
    p_backup_id: default!(Option<i64>, "NULL"),
    p_target: default!(Option<TimestampWithTimeZone>, "NULL"),
    p_wait: default!(Option<bool>, false),
) -> i64 {
    let wait = require(p_wait, "p_wait");
    // SAFETY: reads this backend's user.
    if !unsafe { pg_sys::superuser() } {
        ToolkitError::insufficient_privilege(
            "only superusers may run restore drills: a drill reads every backup and starts a server as the server's OS user",
        )
        .raise();
    }
    if crate::settings::drill_directory().is_none() {
        ToolkitError::wrong_state("admin_toolkit.drill_directory is not set")
            .with_hint("Set it to a directory outside the data directory with room for a restored backup, and reload.")
            .raise();
    }
    if let Ok(Some(running)) = crate::query::read_scalar::<i64>(ONE_AT_A_TIME) {
        ToolkitError::wrong_state(format!(
            "restore drill {running} is running; one drill runs at a time"
        ))
        .raise();
    }
    if let Some(id) = p_backup_id {
        let status = Spi::get_one_with_args::<String>(
            "SELECT status || '/' || backup_type FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[id.into()],
        )
        .ok()
        .flatten();
        match status.as_deref() {
            None => ToolkitError::undefined_object(format!("backup {id} does not exist")).raise(),
            Some("completed/full") | Some("completed/incremental") => {}
            Some(other) => ToolkitError::wrong_state(format!(
                "backup {id} cannot be drilled: it is {}",
                other.replace('/', " ")
            ))
            .with_hint("Drill a completed full or incremental backup.")
            .raise(),
        }
    }
    let target = p_target.map(|t| {
        Spi::get_one_with_args::<i64>(
            "SELECT (extract(epoch FROM $1) * 1000000)::int8",
            &[t.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| ToolkitError::invalid_parameter("unreadable p_target").raise())
    });
    let drill_id = DRILLS.next_id();
    // SAFETY: reads this backend's user.
    let role = unsafe { pg_sys::GetUserId() }.to_u32();
    let job = jobs::here(
        JobKind::Drill {
            schedule_id: 0,
            drill_id,
            backup_id: p_backup_id.unwrap_or(0),
            target,
        },
        role,
    );
    jobs::run_now_or_raise(&job, &DRILLS, drill_id, wait, &format!("drill {drill_id}"));
    drill_id
}
