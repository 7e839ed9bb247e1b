//! Starting backup runs: `execute_backup()` now, due schedules from the worker, and the upkeep
//! of runs whose job worker disappeared.

use super::schedule;
use crate::error::{require, ToolkitError};
use crate::jobs::{self, schedules::start_due, JobKind};
use admin_toolkit_core::backup::store::remove_backup;
use pgrx::prelude::*;

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
    if let Err(e) = schedule::check(&schedule) {
        e.raise();
    }
    if unsafe { pg_sys::RecoveryInProgress() } {
        ToolkitError::wrong_state("backups are taken on the primary; this server is in recovery")
            .raise();
    }
    if let Some(refusal) = schedule::archiving_refusal() {
        refusal.raise();
    }
    let role = jobs::owner_oid(&schedule.owner).unwrap_or_else(|e| e.raise());
    let backup_id = next_backup_id();
    let job = jobs::here(
        JobKind::Backup {
            schedule_id,
            backup_id,
        },
        role,
    );
    let worker = jobs::start(&job, true).unwrap_or_else(|e| e.raise());
    // The job inserts the row as its first step: wait for that, never for the copy.
    jobs::wait(worker, wait, std::time::Duration::from_secs(5), || {
        row_exists(backup_id)
    });
    if wait && !row_exists(backup_id) {
        ToolkitError::wrong_state(format!(
            "the backup job for schedule {schedule_id} exited without recording backup {backup_id}; see the server log"
        ))
        .raise();
    }
    backup_id
}

/// Starts a job, as the schedule's owner, for every active backup schedule that is due and
/// moves its next_run on. An owner that cannot run jobs gets a failed backup_history row
/// saying why. Returns how many could not start (no worker slot): they stay due.
pub fn start_due_backups() -> spi::Result<usize> {
    start_due("backup_schedules", |schedule_id, owner| {
        let backup_id = next_backup_id();
        match jobs::owner_oid(owner) {
            Ok(role) => {
                let job = jobs::here(
                    JobKind::Backup {
                        schedule_id,
                        backup_id,
                    },
                    role,
                );
                jobs::start(&job, false).is_ok()
            }
            Err(refusal) => {
                let recorded = Spi::run_with_args(
                    "INSERT INTO admin_toolkit.backup_history (backup_id, schedule_id, backup_type, status, backup_path, \
                       error_message, end_time, owner) \
                     SELECT $1, schedule_id, backup_type, 'failed', storage_location, $3, clock_timestamp(), $4 \
                       FROM admin_toolkit.backup_schedules WHERE schedule_id = $2",
                    &[backup_id.into(), schedule_id.into(), refusal.message().into(), owner.into()],
                );
                if let Err(e) = recorded {
                    log!("admin_toolkit worker: recording refused backup {backup_id} failed: {e}");
                }
                true
            }
        }
    })
}

/// Records that a backup ended without completing ('failed' or 'cancelled'), with why.
pub fn finish_failed(backup_id: i64, status: &str, message: &str) {
    jobs::record(
        "UPDATE admin_toolkit.backup_history SET status = $2, error_message = $3, end_time = clock_timestamp() \
         WHERE backup_id = $1",
        vec![backup_id.into(), status.into(), message.into()],
    );
    log!("admin_toolkit job: backup {backup_id} {status}: {message}");
}

/// A backup's files, as upkeep and retention remove them.
pub(super) struct BackupFiles {
    pub backup_id: i64,
    path: String,
    kind: String,
}

impl BackupFiles {
    /// The rows (backup_id, backup_path, backup_type) of `sql`, a SELECT or UPDATE … RETURNING.
    pub(super) fn query(sql: &str) -> spi::Result<Vec<BackupFiles>> {
        Spi::connect_mut(|c| {
            c.update(sql, None, &[])?
                .map(|r| {
                    Ok(BackupFiles {
                        backup_id: r.get::<i64>(1)?.unwrap_or_default(),
                        path: r.get::<String>(2)?.unwrap_or_default(),
                        kind: r.get::<String>(3)?.unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    /// Removes the backup's directory (a wal_archive run has none).
    pub(super) fn remove(&self) -> Result<(), String> {
        if self.kind == "wal_archive" {
            return Ok(());
        }
        remove_backup(&self.path, &crate::settings::s3())
    }
}

/// Marks backups whose job worker is gone (crash, kill) as failed and removes their partial
/// directories.
pub fn upkeep_backups() -> spi::Result<()> {
    let gone = BackupFiles::query(
        "UPDATE admin_toolkit.backup_history h SET status = 'failed', end_time = clock_timestamp(), \
                error_message = 'interrupted: the backup job exited before finishing' \
          WHERE status = 'running' AND NOT EXISTS \
                (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = (h.metadata->>'pid')::int \
                    AND a.backend_type = 'admin_toolkit job') \
         RETURNING backup_id, backup_path, backup_type",
    )?;
    for backup in gone {
        log!(
            "admin_toolkit worker: backup {} was interrupted; marked failed",
            backup.backup_id
        );
        if let Err(e) = backup.remove() {
            log!("admin_toolkit worker: {e}");
        }
    }
    Ok(())
}
