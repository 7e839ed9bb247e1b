//! Backup schedules as the backup code reads them, and the checks every run makes first.

use crate::query::read_scalar;
use admin_toolkit_core::storage::Location;
use pgrx::prelude::*;
use std::ffi::CStr;
use std::path::PathBuf;

pub struct BackupSchedule {
    pub schedule_id: i32,
    pub backup_type: String,
    pub storage_location: String,
    pub encryption_key_id: Option<String>,
    pub compression_level: i32,
    pub is_active: bool,
    /// The role its jobs run as.
    pub owner: String,
}

pub fn load(schedule_id: i32) -> spi::Result<Option<BackupSchedule>> {
    crate::query::one_row(
        "SELECT backup_type, storage_location, encryption_key_id, compression_level, is_active, owner::text \
             FROM admin_toolkit.backup_schedules WHERE schedule_id = $1",
        &[schedule_id.into()],
        |r| {
            Ok(BackupSchedule {
                schedule_id,
                backup_type: r.get::<String>(1)?.unwrap_or_default(),
                storage_location: r.get::<String>(2)?.unwrap_or_default(),
                encryption_key_id: r.get::<String>(3)?,
                compression_level: r.get::<i32>(4)?.unwrap_or(6),
                is_active: r.get::<bool>(5)?.unwrap_or(false),
                owner: r.get::<String>(6)?.unwrap_or_default(),
            })
        },
    )
}

pub fn data_directory() -> PathBuf {
    // SAFETY: DataDir is set for the life of every backend.
    PathBuf::from(
        unsafe { CStr::from_ptr(pg_sys::DataDir) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Checks a schedule's owner, location and options; its location when usable. execute_backup
/// raises the refusal before anything is written; a scheduled run records it.
pub fn check(schedule: &BackupSchedule) -> Result<Location, crate::error::ToolkitError> {
    use crate::error::ToolkitError;
    if !may_write_server_files(&schedule.owner) {
        return Err(
            ToolkitError::insufficient_privilege(format!(
                "backup schedule {}: its owner \"{}\" may not write files on the server",
                schedule.schedule_id, schedule.owner
            ))
            .with_hint("Backups write files as the server: the owner must be a superuser or a member of pg_write_server_files."),
        );
    }
    // Keys inside the data directory would be copied, in the clear, by any backup.
    let keys = crate::settings::key_dir();
    if let Some(dir) = &keys.0 {
        admin_toolkit_core::crypto::check_key_dir(dir, &data_directory())
            .map_err(ToolkitError::invalid_parameter)?;
    }
    if let Some(id) = &schedule.encryption_key_id {
        // The key must be there now: a backup is never silently written in the clear.
        keys.load(id).map_err(|e| {
            ToolkitError::invalid_parameter(format!(
                "backup schedule {}: {e}",
                schedule.schedule_id
            ))
            .with_hint("Keys are <admin_toolkit.encryption_key_dir>/<encryption_key_id>.key: 64 hex digits, mode 0600, owned by the server's OS user.")
        })?;
    }
    let location = Location::parse(&schedule.storage_location).map_err(|e| {
        ToolkitError::invalid_parameter(format!("backup schedule {}: {e}", schedule.schedule_id))
    })?;
    match &location {
        Location::Local(dir) if location.overlaps(&data_directory()) => {
            Err(ToolkitError::invalid_parameter(format!(
                "backup schedule {}: storage location \"{}\" overlaps the data directory",
                schedule.schedule_id,
                dir.display()
            ))
            .with_hint("Store backups outside the data directory, ideally on another disk."))
        }
        _ => Ok(location),
    }
}

/// The server's WAL segment size in bytes.
pub fn wal_segment_size() -> spi::Result<u64> {
    Ok(read_scalar::<i64>(
        "SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'",
    )?
    .map_or(admin_toolkit_core::lsn::DEFAULT_SEGMENT_SIZE, |v| v as u64))
}

/// Whether `role` is a superuser or has the privileges of pg_write_server_files: what writing
/// backup files on the server needs.
pub fn may_write_server_files(role: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT coalesce((SELECT pg_catalog.pg_has_role(r.oid, 'pg_write_server_files', 'USAGE') \
                            FROM pg_catalog.pg_roles r WHERE r.rolname = $1), false)",
        &[role.into()],
    )
    .ok()
    .flatten()
        == Some(true)
}

/// Why no base backup could be made consistent here (55000), when WAL is not archived: a
/// backup needs every WAL segment from its start to its end in the archive.
pub fn archiving_refusal() -> Option<crate::error::ToolkitError> {
    let (mode, library, command) = Spi::connect(|c| {
        let r = c.select(
            "SELECT pg_catalog.current_setting('archive_mode'), pg_catalog.current_setting('archive_library'), \
                    pg_catalog.current_setting('archive_command')",
            Some(1),
            &[],
        )?;
        let r = r.first();
        Ok::<_, spi::Error>((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
        ))
    })
    .ok()?;
    let why = if mode == "off" {
        "archive_mode is off"
    } else if library.is_empty() && command.is_empty() {
        "archive_mode is on but neither archive_library nor archive_command is set"
    } else {
        return None;
    };
    Some(
        crate::error::ToolkitError::wrong_state(format!(
            "WAL is not being archived ({why}): a base backup could never be made consistent"
        ))
        .with_hint(
            "Set archive_mode = on and archive_library = 'admin_toolkit' (with admin_toolkit.archive_location), then restart the server.",
        ),
    )
}
