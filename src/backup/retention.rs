//! `cleanup_old_backups()`: deletes backups past their schedule's retention (never the newest
//! full backup, nor any backup a retained incremental needs) and the archived WAL that no
//! retained backup needs.

use super::schedule::{archive_directory, wal_segment_size};
use admin_toolkit_core::backup::copy::remove_backup_directory;
use admin_toolkit_core::backup::retention::{backups_to_delete, wal_to_delete, BackupInfo};
use admin_toolkit_core::lsn::Lsn;
use pgrx::prelude::*;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

pub struct Deleted {
    pub backup_id: i64,
    pub path: String,
    pub age_days: i32,
}

pub struct Cleanup {
    pub backups: Vec<Deleted>,
    pub wal_files: usize,
    pub wal_bytes: u64,
    /// Set when a backup was running and nothing was done.
    pub skipped: bool,
}

struct Row {
    info: BackupInfo,
    path: String,
    age_days: i32,
    kind: String,
}

fn completed_backups() -> spi::Result<Vec<Row>> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT h.backup_id, h.backup_type, extract(epoch FROM h.end_time)::bigint, \
                    coalesce(h.end_time < now() - make_interval(days => s.retention_days), false), \
                    coalesce(ARRAY(SELECT jsonb_array_elements_text(h.metadata->'chain')::bigint), '{}'), \
                    h.backup_path, extract(day FROM now() - h.end_time)::int \
             FROM admin_toolkit.backup_history h \
             LEFT JOIN admin_toolkit.backup_schedules s ON s.schedule_id = h.schedule_id \
             WHERE h.status = 'completed' ORDER BY h.backup_id",
            None,
            &[],
        )?;
        rows.map(|r| {
            let kind = r.get::<String>(2)?.unwrap_or_default();
            Ok(Row {
                info: BackupInfo {
                    backup_id: r.get::<i64>(1)?.unwrap_or_default(),
                    full: kind == "full",
                    end_time: r.get::<i64>(3)?.unwrap_or_default(),
                    expired: r.get::<bool>(4)?.unwrap_or(false),
                    depends_on: r.get::<Vec<i64>>(5)?.unwrap_or_default(),
                },
                path: r.get::<String>(6)?.unwrap_or_default(),
                age_days: r.get::<i32>(7)?.unwrap_or_default(),
                kind,
            })
        })
        .collect()
    })
}

fn mark_deleted(backup_id: i64) -> spi::Result<()> {
    Spi::run_with_args(
        "UPDATE admin_toolkit.backup_history SET status = 'deleted', \
           metadata = metadata || jsonb_build_object('deleted_at', now()) WHERE backup_id = $1",
        &[backup_id.into()],
    )
}

/// Archived WAL files with their archive times (the stored file's modification time).
fn archived_wal(dir: &Path) -> Vec<(String, i64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.strip_suffix(".zst")?.to_string();
            let mtime = e
                .metadata()
                .ok()?
                .modified()
                .ok()?
                .duration_since(UNIX_EPOCH)
                .ok()?
                .as_secs() as i64;
            Some((base, mtime))
        })
        .collect()
}

fn remove_wal(dir: &Path, names: &[String]) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    for name in names {
        let data: PathBuf = dir.join(format!("{name}.zst"));
        let size = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&data) {
            Ok(()) => {
                let _missing_is_fine = std::fs::remove_file(dir.join(format!("{name}.sha256")));
                files += 1;
                bytes += size;
            }
            Err(e) => warning!(
                "admin_toolkit: cannot remove archived WAL \"{}\": {e}",
                data.display()
            ),
        }
    }
    (files, bytes)
}

/// Applies retention now. Skips everything (and says so) while a backup is running, since
/// an incremental may be reading the backups retention would delete.
pub fn cleanup() -> spi::Result<Cleanup> {
    let free = Spi::get_one::<bool>(
        "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('admin_toolkit.backup_cleanup'), 0)",
    )?;
    if free != Some(true) {
        return Ok(Cleanup {
            backups: Vec::new(),
            wal_files: 0,
            wal_bytes: 0,
            skipped: true,
        });
    }
    let rows = completed_backups()?;
    let base: Vec<BackupInfo> = rows
        .iter()
        .filter(|r| r.kind != "wal_archive")
        .map(|r| r.info.clone())
        .collect();
    let mut doomed = backups_to_delete(&base);
    // wal_archive runs hold no files of their own: their rows simply expire.
    doomed.extend(
        rows.iter()
            .filter(|r| r.kind == "wal_archive" && r.info.expired)
            .map(|r| r.info.backup_id),
    );
    let mut deleted = Vec::new();
    for row in rows.iter().filter(|r| doomed.contains(&r.info.backup_id)) {
        if row.kind != "wal_archive" {
            if let Err(e) = remove_backup_directory(Path::new(&row.path)) {
                warning!(
                    "admin_toolkit: backup {} not deleted: {e}",
                    row.info.backup_id
                );
                continue;
            }
        }
        mark_deleted(row.info.backup_id)?;
        deleted.push(Deleted {
            backup_id: row.info.backup_id,
            path: row.path.clone(),
            age_days: row.age_days,
        });
    }
    let (mut wal_files, mut wal_bytes) = (0, 0);
    if let Some(dir) = archive_directory() {
        let segment_size = wal_segment_size()?;
        let oldest: Option<String> = crate::query::read_scalar(
            "SELECT min(start_lsn)::text FROM admin_toolkit.backup_history \
             WHERE status = 'completed' AND backup_type IN ('full', 'incremental')",
        )?;
        let oldest_segment = oldest
            .as_deref()
            .and_then(Lsn::parse)
            .map(|l| l.segment(segment_size));
        let keep_after: Option<i64> = crate::query::read_scalar(
            "SELECT extract(epoch FROM now() - make_interval(days => max(retention_days)))::bigint \
             FROM admin_toolkit.backup_schedules WHERE backup_type = 'wal_archive' AND is_active",
        )?;
        let doomed_wal = wal_to_delete(
            &archived_wal(&dir),
            oldest_segment,
            keep_after,
            segment_size,
        );
        (wal_files, wal_bytes) = remove_wal(&dir, &doomed_wal);
    }
    Ok(Cleanup {
        backups: deleted,
        wal_files,
        wal_bytes,
        skipped: false,
    })
}

/// Deletes backups past retention and WAL no retained backup needs; returns the deleted
/// backups (the specification's columns). A NOTICE reports the WAL removed.
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
            "admin_toolkit: deleted {} backups and {} archived WAL files ({} bytes)",
            result.backups.len(),
            result.wal_files,
            result.wal_bytes
        );
    }
    Ok(TableIterator::new(
        result
            .backups
            .into_iter()
            .map(|d| (d.backup_id, d.path, d.age_days)),
    ))
}
