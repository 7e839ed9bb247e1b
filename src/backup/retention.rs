//! Retention (`cleanup_old_backups()` in `api`, and the worker's duty): deletes backups past their schedule's retention (never the newest
//! full backup, nor any backup a retained incremental or a recovery point needs) and the
//! archived WAL that no retained backup or recovery point needs.
//!
//! Two steps, so that a rollback deletes nothing: retention marks rows 'deleting' in the
//! caller's transaction; once that has committed, the worker starts a deletion job, which
//! removes their files, marks them 'deleted' and removes the WAL no longer needed. The job works
//! in batches, each decided in a short transaction and carried out outside any: a slow or hung
//! object store holds no lock a backup waits for and never stalls the worker (which drains the
//! audit queue). Retention and backup jobs share one advisory lock: backups hold it shared while
//! they run, retention exclusively for its short transactions, so neither deletes nor chains
//! onto what the other is working on.

use super::locations;
use super::runs::BackupFiles;
use super::schedule::wal_segment_size;
use admin_toolkit_core::backup::retention::{backups_to_delete, wal_to_delete, BackupInfo};
use admin_toolkit_core::lsn::Lsn;
use admin_toolkit_core::storage::{ObjectInfo, Storage};
use admin_toolkit_core::wal::{checksum_object, data_object};
use pgrx::prelude::*;

/// The worker duty that marks backups past retention and deletes them (`duty::Retention`).
pub const RETENTION_DUTY: &str = "backup retention";

pub struct Deleted {
    pub backup_id: i64,
    pub path: String,
    pub age_days: i32,
}

pub struct Cleanup {
    /// The backups marked 'deleting'.
    pub backups: Vec<Deleted>,
    /// Set when a backup was running and nothing was done.
    pub skipped: bool,
}

struct Row {
    info: BackupInfo,
    path: String,
    age_days: i32,
    kind: String,
    owner: String,
}

fn completed_backups() -> spi::Result<Vec<Row>> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT h.backup_id, h.backup_type, extract(epoch FROM h.end_time)::bigint, \
                    coalesce(h.end_time < now() - make_interval(days => s.retention_days), false) \
                      AND NOT EXISTS (SELECT 1 FROM admin_toolkit.recovery_points p WHERE p.base_backup_id = h.backup_id), \
                    coalesce(ARRAY(SELECT jsonb_array_elements_text(h.metadata->'chain')::bigint), '{}'), \
                    h.backup_path, extract(day FROM now() - h.end_time)::int, h.owner::text \
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
                owner: r.get::<String>(8)?.unwrap_or_default(),
                kind,
            })
        })
        .collect()
    })
}

/// The advisory lock backup jobs hold shared while they run (see the module comment).
pub const SHARE_RETENTION_LOCK: &str =
    "SELECT pg_catalog.pg_advisory_lock_shared(pg_catalog.hashtext('admin_toolkit.backup_retention'), 0)";
const TAKE_RETENTION_LOCK: &str =
    "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('admin_toolkit.backup_retention'), 0)";

fn mark_deleting(backup_id: i64) -> spi::Result<()> {
    Spi::run_with_args(
        // Qualified: a caller's session runs it, with the caller's search path.
        "UPDATE admin_toolkit.backup_history SET status = 'deleting', \
           metadata = metadata OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('deletion_requested_at', pg_catalog.now()) \
         WHERE backup_id OPERATOR(pg_catalog.=) $1",
        &[backup_id.into()],
    )
}

/// Archived WAL files with their archive times in seconds (the stored object's time), from
/// one listing of the archive.
fn archived_wal(objects: &[ObjectInfo]) -> Vec<(String, i64)> {
    objects
        .iter()
        .filter_map(|o| {
            let base = o.name.strip_suffix(".zst")?.to_string();
            Some((base, o.modified_micros / 1_000_000))
        })
        .collect()
}

/// Removes archived WAL files (data, then checksum object) until done or interrupted; returns
/// how many and their bytes (sizes from the listing the decision was made on).
fn remove_wal(storage: &dyn Storage, objects: &[ObjectInfo], names: &[String]) -> (usize, u64) {
    let sizes: std::collections::HashMap<&str, u64> =
        objects.iter().map(|o| (o.name.as_str(), o.size)).collect();
    let (mut files, mut bytes) = (0, 0);
    for name in names {
        if stopping() {
            break;
        }
        let data = data_object(name);
        match storage.delete(&data) {
            Ok(()) => {
                if let Err(e) = storage.delete(&checksum_object(name)) {
                    log!(
                        "admin_toolkit: cannot remove {}: {e}",
                        storage.describe(&checksum_object(name))
                    );
                }
                files += 1;
                bytes += sizes.get(data.as_str()).copied().unwrap_or(0);
            }
            Err(e) => log!(
                "admin_toolkit: cannot remove archived WAL {}: {e}",
                storage.describe(&data)
            ),
        }
    }
    (files, bytes)
}

/// Whether the job was asked to stop (shutdown, cancellation): it stops between two objects.
fn stopping() -> bool {
    crate::jobs::interruption().is_some()
}

/// Applies retention now: marks the backups past retention 'deleting' (their files are
/// removed by [`finish_deletions`] once this transaction has committed). Skips everything (and
/// says so) while a backup is running, since it may be reading what retention would delete.
pub fn cleanup() -> spi::Result<Cleanup> {
    if Spi::get_one::<bool>(TAKE_RETENTION_LOCK)? != Some(true) {
        return Ok(Cleanup {
            backups: Vec::new(),
            skipped: true,
        });
    }
    // Decided over every backup, whatever row-level security shows the caller, so that no
    // chain another owner's backup needs is broken; a caller marks only its own backups.
    let rows = crate::environment::as_superuser(completed_backups)?;
    // SAFETY: reads this backend's user and its name.
    let (superuser, caller) = unsafe {
        (
            pg_sys::superuser(),
            std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false))
                .to_string_lossy()
                .into_owned(),
        )
    };
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
    let mut marked = Vec::new();
    for row in rows
        .iter()
        .filter(|r| doomed.contains(&r.info.backup_id) && (superuser || r.owner == caller))
    {
        crate::environment::as_superuser(|| mark_deleting(row.info.backup_id))?;
        marked.push(Deleted {
            backup_id: row.info.backup_id,
            path: row.path.clone(),
            age_days: row.age_days,
        });
    }
    if !marked.is_empty() {
        crate::worker::wake::at_commit(RETENTION_DUTY);
    }
    Ok(Cleanup {
        backups: marked,
        skipped: false,
    })
}

/// What a deletion job removed.
#[derive(Default)]
pub struct Finished {
    /// A backup was running (it holds the retention lock): nothing was done, try again soon.
    pub skipped: bool,
    pub backups: usize,
    pub wal_files: usize,
    pub wal_bytes: u64,
}

/// Backups one batch of a deletion job takes on: their rows are marked 'deleted' one by one,
/// as their files go.
const DELETION_BATCH: i64 = 8;

/// The deletion job's body (the bootstrap superuser, in the toolkit's database).
pub fn deletion_job() {
    match run_deletions() {
        Ok(done) if done.skipped => {
            log!("admin_toolkit job: a backup is running; retention's deletions wait for it")
        }
        Ok(done) if done.backups > 0 || done.wal_files > 0 => log!(
            "admin_toolkit job: retention deleted {} backup(s) and {} archived WAL file(s) ({} bytes)",
            done.backups,
            done.wal_files,
            done.wal_bytes
        ),
        Ok(_) => {}
        Err(e) => log!("admin_toolkit job: retention's deletions failed and will be retried: {e}"),
    }
}

/// Removes the files of backups marked 'deleting' (committed) and marks them 'deleted', then
/// removes the archived WAL that no retained backup and no recovery point needs. A backup whose
/// files cannot be removed stays 'deleting' and is tried again by the next job.
fn run_deletions() -> Result<Finished, String> {
    let mut done = Finished::default();
    let mut after = 0i64;
    loop {
        if stopping() {
            return Ok(done);
        }
        let batch = crate::jobs::bookkeeping(|| {
            if Spi::get_one::<bool>(TAKE_RETENTION_LOCK)? != Some(true) {
                return Ok(None);
            }
            BackupFiles::query(&format!(
                "SELECT backup_id, backup_path, backup_type FROM admin_toolkit.backup_history \
                 WHERE status = 'deleting' AND backup_id > {after} ORDER BY backup_id LIMIT {DELETION_BATCH}"
            ))
            .map(Some)
        })?;
        let Some(batch) = batch else {
            done.skipped = true; // a backup is running
            return Ok(done);
        };
        if batch.is_empty() {
            break;
        }
        for backup in batch {
            after = backup.backup_id;
            if let Err(e) = backup.remove() {
                log!("admin_toolkit job: backup {after} not deleted yet: {e}");
                continue;
            }
            crate::jobs::bookkeeping(|| {
                Spi::run_with_args(
                    "UPDATE admin_toolkit.backup_history SET status = 'deleted', \
                       metadata = metadata || jsonb_build_object('deleted_at', now()) WHERE backup_id = $1",
                    &[after.into()],
                )
            })?;
            done.backups += 1;
        }
    }
    let Some(location) = locations::archive_location() else {
        return Ok(done);
    };
    let Some((oldest_segment, keep_after, segment_size)) =
        crate::jobs::bookkeeping(wal_still_needed)?
    else {
        done.skipped = true;
        return Ok(done);
    };
    let storage = locations::open(&location?)?;
    let objects = storage.list("").map_err(|e| e.to_string())?;
    let doomed_wal = wal_to_delete(
        &archived_wal(&objects),
        oldest_segment,
        keep_after,
        segment_size,
    );
    (done.wal_files, done.wal_bytes) = remove_wal(storage.as_ref(), &objects, &doomed_wal);
    Ok(done)
}

/// What archived WAL is still needed: every retained backup, and every recovery point (from
/// its base backup's start, or its own position when it has none), needs the WAL from there
/// on; wal_archive schedules keep WAL for their retention. `None` while a backup runs.
#[allow(clippy::type_complexity)]
fn wal_still_needed() -> spi::Result<Option<(Option<u64>, Option<i64>, u64)>> {
    if Spi::get_one::<bool>(TAKE_RETENTION_LOCK)? != Some(true) {
        return Ok(None);
    }
    let segment_size = wal_segment_size()?;
    let oldest: Option<String> = crate::query::read_scalar(
        "SELECT min(lsn)::text FROM ( \
            SELECT start_lsn AS lsn FROM admin_toolkit.backup_history \
             WHERE status IN ('completed', 'running') AND backup_type IN ('full', 'incremental') \
            UNION ALL \
            SELECT coalesce(b.start_lsn, p.recovery_lsn) FROM admin_toolkit.recovery_points p \
              LEFT JOIN admin_toolkit.backup_history b ON b.backup_id = p.base_backup_id) needed",
    )?;
    let oldest_segment = oldest
        .as_deref()
        .and_then(Lsn::parse)
        .map(|l| l.segment(segment_size));
    let keep_after: Option<i64> = crate::query::read_scalar(
        "SELECT extract(epoch FROM now() - make_interval(days => max(retention_days)))::bigint \
         FROM admin_toolkit.backup_schedules WHERE backup_type = 'wal_archive' AND is_active",
    )?;
    Ok(Some((oldest_segment, keep_after, segment_size)))
}

/// The worker's deletion job: at most one at a time, started when deletions were asked for.
#[derive(Default)]
pub struct DeletionJobs {
    /// Deletions were asked for (cleanup_old_backups committed, or rows wait) since the last
    /// job started.
    pub requested: bool,
    running: Option<pgrx::bgworkers::DynamicBackgroundWorker>,
    /// The lack of a worker slot was logged (once until a job starts).
    said_no_slot: bool,
}

impl DeletionJobs {
    fn is_running(&self) -> bool {
        use pgrx::bgworkers::BackgroundWorkerStatus;
        self.running
            .as_ref()
            .is_some_and(|w| matches!(w.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)))
    }

    /// Whether a job should start now.
    pub fn due(&self) -> bool {
        self.requested && !self.is_running()
    }

    /// Starts a job in this database if one is due; without a free worker slot, at a later
    /// tick.
    pub fn start_if_due(&mut self) {
        if !self.due() {
            return;
        }
        let job = crate::jobs::JobDescriptor {
            kind: crate::jobs::JobKind::Deletion,
            role: pg_sys::BOOTSTRAP_SUPERUSERID,
            // SAFETY: set for the life of the worker, connected to its database.
            database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        };
        match crate::jobs::start(&job, false) {
            Ok(worker) => {
                self.running = Some(worker);
                self.requested = false;
                self.said_no_slot = false;
            }
            Err(e) if !self.said_no_slot => {
                log!(
                    "admin_toolkit worker: retention's deletions wait: {}",
                    e.message()
                );
                self.said_no_slot = true;
            }
            Err(_) => {}
        }
    }
}

/// Whether backups wait for their files to be removed.
pub fn deletions_pending() -> spi::Result<bool> {
    Ok(crate::query::read_scalar::<bool>(
        "SELECT EXISTS (SELECT 1 FROM admin_toolkit.backup_history WHERE status = 'deleting')",
    )? == Some(true))
}
