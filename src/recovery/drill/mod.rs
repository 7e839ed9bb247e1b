//! Restore drills: due drill schedules (`run_restore_drill()` is in `recovery::api`) and the upkeep of drills whose
//! job died (here); the drill job (job.rs), which restores through the same code as
//! `admin-toolkit restore`, recovers on a throwaway server (core::drill::server) and records
//! what it measured; the checks of the restored databases (checks.rs).

mod checks;
mod job;
mod phases;

pub use job::run as drill_job;

use crate::jobs::ledger::DRILLS;
use crate::jobs::{self, due::start_due, JobKind, RunStatus};
use admin_toolkit_core::drill::server::stop_leftover;
use admin_toolkit_core::drill::{drill_of_scratch, MARKER_FILE};
use pgrx::prelude::*;

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

pub(super) const ONE_AT_A_TIME: &str =
    "SELECT drill_id FROM admin_toolkit.restore_drills WHERE status = 'running' LIMIT 1";

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
