//! Restore drills: `run_restore_drill()`, due drill schedules and the upkeep of drills whose
//! job died (here); the drill job (job.rs), which restores through the same code as
//! `admin-toolkit restore`, recovers on a throwaway server (core::drill::server) and records
//! what it measured; the checks of the restored databases (checks.rs).

mod checks;
mod job;

pub use job::run as drill_job;

use crate::error::{require, ToolkitError};
use crate::jobs::ledger::DRILLS;
use crate::jobs::{self, due::start_due, JobKind, RunStatus};
use admin_toolkit_core::drill::server::stop_leftover;
use admin_toolkit_core::drill::{drill_of_scratch, MARKER_FILE};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::time::Duration;

/// A failed or cancelled drill: its status and why.
type Failure = (RunStatus, String);

fn failed(why: impl Into<String>) -> Failure {
    (RunStatus::Failed, why.into())
}

/// A drill stopped by a cancellation or a shutdown.
fn stopped(stop: Option<jobs::Interruption>) -> Failure {
    let (status, why) = stop.unwrap_or((RunStatus::Cancelled, "cancelled"));
    (status, format!("{why} during the drill"))
}

const ONE_AT_A_TIME: &str =
    "SELECT drill_id FROM admin_toolkit.restore_drills WHERE status = 'running' LIMIT 1";

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
    let recorded = jobs::run_now(&job, &DRILLS, drill_id, wait, Duration::from_secs(5))
        .unwrap_or_else(|e| e.raise());
    if wait && !recorded {
        ToolkitError::wrong_state(format!(
            "the drill job exited without recording drill {drill_id}; see the server log"
        ))
        .raise();
    }
    drill_id
}

/// Starts a drill job, as the schedule's owner, for every active drill schedule that is due.
pub fn start_due_drills() -> spi::Result<usize> {
    start_due("restore_drill_schedules", |schedule_id, owner| {
        let drill_id = DRILLS.next_id();
        match jobs::owner_oid(owner) {
            Ok(role) => {
                let job = jobs::here(
                    JobKind::Drill {
                        schedule_id,
                        drill_id,
                        backup_id: 0,
                        target: None,
                    },
                    role,
                );
                jobs::start(&job, false).is_ok()
            }
            Err(refusal) => {
                DRILLS.refuse(drill_id, schedule_id, owner, refusal.message());
                true
            }
        }
    })
}

/// Drills whose job is gone (crash, kill, restart) are marked failed; the throwaway server they
/// left is stopped and their scratch directory removed, as is any drill directory no running
/// drill owns.
pub fn upkeep_drills() -> spi::Result<()> {
    let gone = DRILLS.sweep_vanished("drill job")?;
    for drill_id in &gone {
        log!("admin_toolkit worker: restore drill {drill_id} was interrupted; marked failed");
    }
    let Some(dir) = crate::settings::drill_directory() else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let running: Vec<i64> = Spi::connect(|c| {
        c.select(
            "SELECT drill_id FROM admin_toolkit.restore_drills WHERE status = 'running'",
            None,
            &[],
        )?
        .map(|r| Ok(r.get::<i64>(1)?.unwrap_or_default()))
        .collect::<spi::Result<Vec<_>>>()
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(drill_id) = drill_of_scratch(&name) else {
            continue;
        };
        let path = entry.path();
        if running.contains(&drill_id) || !path.join(MARKER_FILE).is_file() {
            continue;
        }
        match stop_leftover(&path.join("data")) {
            Ok(true) => {
                log!("admin_toolkit worker: stopped the restored server left by drill {drill_id}")
            }
            Ok(false) => {}
            Err(e) => {
                log!("admin_toolkit worker: {e}");
                continue;
            }
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => log!(
                "admin_toolkit worker: removed \"{}\", left by drill {drill_id}",
                path.display()
            ),
            Err(e) => log!(
                "admin_toolkit worker: cannot remove \"{}\": {e}",
                path.display()
            ),
        }
    }
    Ok(())
}
