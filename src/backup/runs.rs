//! Starting backup runs: due schedules from the worker (`execute_backup()` is in `api`), and
//! the upkeep of runs whose job worker disappeared.

use crate::jobs::ledger::BACKUPS;
use crate::jobs::{self, due::start_due, JobKind, RunStatus};
use admin_toolkit_core::backup::store::remove_backup;
use pgrx::prelude::*;

/// Starts a job, as the schedule's owner, for every active backup schedule that is due and
/// moves its next_run on. An owner that cannot run jobs gets a failed backup_history row
/// saying why. Returns how many could not start (no worker slot): they stay due.
pub fn start_due_backups() -> spi::Result<usize> {
    start_due("backup_schedules", |schedule_id, owner| {
        let backup_id = BACKUPS.next_id();
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
                BACKUPS.refuse(backup_id, schedule_id, owner, refusal.message());
                true
            }
        }
    })
}

/// Records that a backup ended without completing (failed or cancelled), with why.
pub fn finish_failed(backup_id: i64, status: RunStatus, message: &str) {
    let _logged = BACKUPS.finish(backup_id, status, Some(message), vec![]);
    log!(
        "admin_toolkit job: backup {backup_id} {}: {message}",
        status.text(BACKUPS.table)
    );
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
    let gone = BACKUPS.sweep_vanished("backup job")?;
    if gone.is_empty() {
        return Ok(());
    }
    let gone = BackupFiles::query(&format!(
        "SELECT backup_id, backup_path, backup_type FROM admin_toolkit.backup_history \
          WHERE backup_id IN ({})",
        gone.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
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
