//! Starting backup runs: `execute_backup()` now, due schedules from the worker, and the upkeep
//! of runs whose job worker disappeared.

use super::schedule::{self, Refusal};
use crate::error::{require, ToolkitError};
use crate::maintenance::schedule::start_due;
use crate::worker::job;
use admin_toolkit_core::backup::copy::remove_backup_directory;
use pgrx::prelude::*;
use std::path::Path;

fn next_backup_id() -> i64 {
    Spi::get_one::<i64>("SELECT nextval('admin_toolkit.backup_history_backup_id_seq')")
        .ok()
        .flatten()
        .unwrap_or_else(|| ToolkitError::wrong_state("cannot allocate a backup id").raise())
}

fn row_exists(backup_id: i64) -> bool {
    crate::query::read_scalar::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM admin_toolkit.backup_history WHERE backup_id = {backup_id})"
    ))
    .ok()
    .flatten()
        == Some(true)
}

/// Runs a backup schedule now in a job worker and returns the backup_id of its backup_history
/// row. With `p_wait`, returns once the backup has finished (check its status); without, at
/// once (the row says 'running' until the job records the outcome).
#[pg_extern(volatile)]
fn execute_backup(p_schedule_id: Option<i32>, p_wait: default!(Option<bool>, false)) -> i64 {
    let schedule_id = require(p_schedule_id, "p_schedule_id");
    let wait = require(p_wait, "p_wait");
    let schedule = schedule::load(schedule_id)
        .unwrap_or_else(|e| ToolkitError::wrong_state(e.to_string()).raise())
        .filter(|s| s.is_active)
        .unwrap_or_else(|| {
            ToolkitError::undefined_object(format!("Schedule {schedule_id} not found or inactive"))
                .raise()
        });
    if let Err(Refusal::BadInput(e)) = schedule::check(&schedule) {
        e.raise();
    }
    if unsafe { pg_sys::RecoveryInProgress() } {
        ToolkitError::wrong_state("backups are taken on the primary; this server is in recovery")
            .raise();
    }
    let backup_id = next_backup_id();
    let worker = job::start_backup(schedule_id, backup_id, true).unwrap_or_else(|| {
        ToolkitError::wrong_state("no background worker slot is free to run the backup")
            .with_hint("Raise max_worker_processes.")
            .raise()
    });
    if wait {
        let _ = worker.wait_for_shutdown();
    } else {
        let _ = worker.wait_for_startup();
        // The job inserts the row as its first step: wait for that, never for the copy.
        for _ in 0..250 {
            if row_exists(backup_id) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    if wait && !row_exists(backup_id) {
        ToolkitError::wrong_state(format!(
            "the backup job for schedule {schedule_id} exited without recording backup {backup_id}; see the server log"
        ))
        .raise();
    }
    backup_id
}

/// Starts a job for every active backup schedule that is due and moves its next_run on.
/// Returns how many could not start (no worker slot): they stay due.
pub fn start_due_backups() -> spi::Result<usize> {
    start_due("backup_schedules", |schedule_id| {
        job::start_backup(schedule_id, next_backup_id(), false).is_some()
    })
}

/// Marks backups whose job worker is gone (crash, kill) as failed and removes their partial
/// directories.
pub fn upkeep_backups() -> spi::Result<()> {
    let gone: Vec<(i64, String, String)> = Spi::connect_mut(|c| {
        let rows = c.update(
            "UPDATE admin_toolkit.backup_history h SET status = 'failed', end_time = clock_timestamp(), \
                    error_message = 'interrupted: the backup job exited before finishing' \
              WHERE status = 'running' AND NOT EXISTS \
                    (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = (h.metadata->>'pid')::int \
                        AND a.backend_type = 'admin_toolkit job') \
             RETURNING backup_id, backup_path, backup_type",
            None,
            &[],
        )?;
        rows.map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ))
        })
        .collect::<spi::Result<Vec<_>>>()
    })?;
    for (backup_id, path, kind) in gone {
        log!("admin_toolkit worker: backup {backup_id} was interrupted; marked failed");
        if kind != "wal_archive" {
            if let Err(e) = remove_backup_directory(Path::new(&path)) {
                log!("admin_toolkit worker: {e}");
            }
        }
    }
    Ok(())
}
