//! The SQL-facing functions of backups: run a backup now, verify one, apply retention, check a
//! schedule's target.

use super::retention::cleanup;
use super::schedule;
use super::verify::check_backup;
use crate::error::{require, ToolkitError};
use crate::jobs::ledger::BACKUPS;
use crate::jobs::{self, JobKind};
use admin_toolkit_core::storage::Location;
use pgrx::prelude::*;

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
    let backup_id = BACKUPS.next_id();
    let job = jobs::here(
        JobKind::Backup {
            schedule_id,
            backup_id,
        },
        role,
    );
    // The job inserts the row as its first step: wait for that, never for the copy.
    jobs::run_now_or_raise(
        &job,
        &BACKUPS,
        backup_id,
        wait,
        &format!("backup {backup_id} of schedule {schedule_id}"),
    );
    backup_id
}
/// Rechecks every file of a backup against its manifest: one row per problem, or OK rows.
#[pg_extern(volatile)]
fn verify_backup(
    backup_id: Option<i64>,
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
    let backup_id = require(backup_id, "backup_id");
    let found = crate::query::one_row(
        "SELECT backup_path, status, backup_type FROM admin_toolkit.backup_history WHERE backup_id = $1",
        &[backup_id.into()],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ))
        },
    )?;
    let (path, status, kind) = found.unwrap_or_else(|| {
        ToolkitError::undefined_object(format!("backup {backup_id} does not exist")).raise()
    });
    if kind == "wal_archive" {
        ToolkitError::invalid_parameter(format!(
            "backup {backup_id} is a WAL archiving run, which has no files to verify"
        ))
        .raise();
    }
    Ok(TableIterator::new(check_backup(backup_id, &path, &status)))
}
/// Marks the backups past retention for deletion and returns them (the specification's
/// columns); the worker removes their files, and the WAL no longer needed, after this
/// transaction commits (a rollback deletes nothing).
#[pg_extern(volatile)]
fn cleanup_old_backups() -> spi::Result<
    TableIterator<
        'static,
        (
            name!(deleted_backup_id, i64),
            name!(backup_path, String),
            name!(backup_age_days, i32),
        ),
    >,
> {
    let result = cleanup()?;
    if result.skipped {
        notice!("admin_toolkit: a backup is running; retention was not applied (try again when it has finished)");
    } else {
        notice!(
            "admin_toolkit: {} backup(s) marked for deletion; once this transaction commits, the worker removes their files and the archived WAL no retained backup or recovery point needs",
            result.backups.len(),
        );
    }
    Ok(TableIterator::new(
        result
            .backups
            .into_iter()
            .map(|d| (d.backup_id, d.path, d.age_days)),
    ))
}
/// Refuses (22023), when a backup schedule is written, a storage location or key id that no
/// backup could ever use: a relative or `..` path, an s3:// URL without a valid bucket, a key
/// id that is a path. Called by the schedule tables' trigger (schedule_owner_check).
#[pg_extern(immutable, parallel_safe)]
fn check_backup_target(p_storage_location: Option<&str>, p_encryption_key_id: Option<&str>) {
    use crate::error::ToolkitError;
    if let Some(location) = p_storage_location {
        if let Err(e) = Location::parse(location) {
            ToolkitError::invalid_parameter(e.to_string())
                .with_hint("Use an absolute path or s3://bucket/prefix.")
                .raise();
        }
    }
    if let Some(id) = p_encryption_key_id {
        if !admin_toolkit_core::crypto::valid_key_id(id) {
            ToolkitError::invalid_parameter(format!(
                "invalid encryption_key_id \"{id}\": letters, digits, -, _ and . only, not starting with ."
            ))
            .with_hint("The key is read from <admin_toolkit.encryption_key_dir>/<encryption_key_id>.key.")
            .raise();
        }
    }
}
