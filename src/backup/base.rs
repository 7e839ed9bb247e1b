//! One backup run, in a job worker that owns its backup_history row: a base backup with the
//! non-exclusive low-level API (pg_backup_start → copy → pg_backup_stop), or for a wal_archive
//! schedule a WAL switch followed by waiting for the segment to reach the archive.

use super::block_maps::{changed_blocks, keep_block_maps, start_block_maps};
use super::runs::finish_failed;
use super::schedule::{self, data_directory, BackupSchedule};
use crate::jobs::ledger::BACKUPS;
use crate::jobs::{self, interruption, record, Interruption, RunStatus, SHUTDOWN};
use crate::transaction::step::try_transaction;
use admin_toolkit_core::backup::copy::{copy_data_directory, CopyOptions, DEFAULT_CHUNK_SIZE};
use admin_toolkit_core::backup::default_threads;
use admin_toolkit_core::backup::label::parse_backup_label;
use admin_toolkit_core::backup::manifest::{format_for, AuditChainHead, ChainLink, Manifest};
use admin_toolkit_core::backup::store::{remove_backup, BackupStore, Expected};
use admin_toolkit_core::chrono::Utc;
use admin_toolkit_core::lsn::{segment_file_name, Lsn};
use admin_toolkit_core::runs::PhaseTimer;
use admin_toolkit_core::storage::Location;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// Inserts the run's row; false when the run must stop here (recorded already). A running
/// backup holds two session locks until its job exits: its schedule's (one run at a time) and,
/// shared, the retention lock that cleanup_old_backups takes exclusively, so retention never
/// deletes what a running backup reads or builds on.
fn begin(
    schedule: &BackupSchedule,
    backup_id: i64,
    path: &str,
    failure: Option<&str>,
) -> Result<bool, String> {
    let pid = unsafe { pg_sys::MyProcPid };
    jobs::bookkeeping(|| -> spi::Result<bool> {
        Spi::run_with_args(
            "INSERT INTO admin_toolkit.backup_history (backup_id, schedule_id, backup_type, start_time, status, \
               backup_path, error_message, end_time, metadata, owner) \
             VALUES ($1, $2, $3, clock_timestamp(), $9, \
                     $4, $5, CASE WHEN $5::text IS NOT NULL THEN clock_timestamp() END, \
                     jsonb_build_object('pid', $6, 'compression_level', $7, 'encryption', $8::text IS NOT NULL, \
                                       'encryption_key_id', $8::text), session_user)",
            &[
                backup_id.into(),
                schedule.schedule_id.into(),
                schedule.backup_type.clone().into(),
                path.into(),
                failure.into(),
                pid.into(),
                schedule.compression_level.into(),
                schedule.encryption_key_id.clone().into(),
                if failure.is_some() {
                    RunStatus::Failed
                } else {
                    RunStatus::Running
                }
                .text(BACKUPS.table)
                .into(),
            ],
        )?;
        Spi::run_with_args(
            "UPDATE admin_toolkit.backup_schedules SET last_run = clock_timestamp() WHERE schedule_id = $1",
            &[schedule.schedule_id.into()],
        )?;
        if failure.is_some() {
            return Ok(false);
        }
        let locked = Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('admin_toolkit.backup'), $1)",
            &[schedule.schedule_id.into()],
        )?;
        if locked == Some(true) {
            Spi::run(super::retention::SHARE_RETENTION_LOCK)?;
        }
        Ok(locked == Some(true))
    })
    .inspect(|&locked| {
        if !locked && failure.is_none() {
            finish_failed(
                backup_id,
                RunStatus::Failed,
                &format!("a backup of schedule {} is already running", schedule.schedule_id),
            );
        }
    })
}

/// Runs backup `backup_id` of schedule `schedule_id` in this job worker, as the schedule's
/// owner.
pub fn run(schedule_id: i32, backup_id: i64) {
    let loaded = jobs::bookkeeping(|| {
        let Some(schedule) = schedule::load(schedule_id)? else {
            return Ok(None);
        };
        let checked = schedule::check(&schedule).map_err(|e| e.message().to_string());
        let archiving = schedule::archiving_refusal().map(|e| e.message().to_string());
        Ok(Some((schedule, checked, archiving)))
    });
    let (schedule, checked, archiving) = match loaded {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            return log!("admin_toolkit job: backup schedule {schedule_id} no longer exists")
        }
        Err(e) => {
            return log!("admin_toolkit job: reading backup schedule {schedule_id} failed: {e}")
        }
    };
    let (location, failure) = match (checked, archiving) {
        (Ok(location), None) => (Some(location), None),
        (Ok(location), Some(m)) => (Some(location), Some(m)),
        (Err(m), _) => (None, Some(m)),
    };
    let name = format!("backup_{}_{backup_id}", Utc::now().format("%Y%m%d_%H%M%S"));
    let path_text = match &location {
        Some(l) if schedule.backup_type == "wal_archive" => l.display(),
        Some(Location::Local(dir)) => dir.join(&name).display().to_string(),
        Some(l) => l.join(&name).display(),
        None => schedule.storage_location.trim().to_string(),
    };
    match begin(&schedule, backup_id, &path_text, failure.as_deref()) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => return log!("admin_toolkit job: starting backup {backup_id} failed: {e}"),
    }
    match location {
        Some(l) if schedule.backup_type == "wal_archive" => super::wal_switch::run(backup_id, &l),
        Some(l) => {
            let here = match &l {
                Location::Local(dir) => Location::Local(dir.join(&name)),
                s3 => s3.join(&name),
            };
            if let Err((status, message)) = base_backup(&schedule, backup_id, &here) {
                finish_failed(backup_id, status, &message);
            }
        }
        None => {}
    }
}

/// The latest completed backup of this cluster to build an incremental on, inside the new
/// backup's trust boundary: on the same storage (the local file system, or the same bucket)
/// and sealed with the same key (or both unencrypted), so that an encrypted backup never
/// depends on an unencrypted one nor an off-site one on a local one. With what its catalog
/// row says its manifest must be.
fn previous_backup(
    backup_id: i64,
    system_id: &str,
    dir: &Location,
    key_id: Option<&str>,
) -> Result<Option<(i64, String, Expected)>, String> {
    let storage_root = match dir {
        Location::Local(_) => String::new(),
        Location::S3 { bucket, .. } => format!("s3://{bucket}/"),
    };
    let found = jobs::bookkeeping(|| -> spi::Result<Option<(i64, String)>> {
        crate::query::one_row(
            "SELECT backup_id, backup_path FROM admin_toolkit.backup_history \
                 WHERE status = 'completed' AND backup_type IN ('full', 'incremental') AND backup_id <> $1 \
                   AND metadata->>'system_identifier' = $2 \
                   AND metadata->>'encryption_key_id' IS NOT DISTINCT FROM $3 \
                   AND CASE WHEN $4 = '' THEN NOT pg_catalog.starts_with(backup_path, 's3://') \
                            ELSE pg_catalog.starts_with(backup_path, $4) END \
                 ORDER BY end_lsn DESC NULLS LAST, backup_id DESC LIMIT 1",
            &[
                backup_id.into(),
                system_id.into(),
                key_id.into(),
                storage_root.as_str().into(),
            ],
            |r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                ))
            },
        )
    })?;
    let Some((id, path)) = found else {
        return Ok(None);
    };
    let expected = try_transaction(|| super::locations::expected_of(id))??;
    Ok(Some((id, path, expected)))
}

type Failure = (RunStatus, String);

fn failed(message: impl Into<String>) -> Failure {
    (RunStatus::Failed, message.into())
}

/// The base backup proper, into `dir` (a new directory or s3:// prefix). Any failure after
/// pg_backup_start stops the backup, removes what was written, and is returned with the status
/// to record.
fn base_backup(schedule: &BackupSchedule, backup_id: i64, dir: &Location) -> Result<(), Failure> {
    let s3 = crate::settings::s3();
    let keys = crate::settings::key_dir();
    // The schedule's current key: rotating it changes new backups only.
    let key = match &schedule.encryption_key_id {
        Some(id) => Some(keys.load(id).map_err(failed)?),
        None => None,
    };
    let started = Instant::now();
    let started_at = Utc::now();
    let mut phases = PhaseTimer::default();
    let ServerFacts {
        system_identifier: system_id,
        segment_size,
        archive_mode,
        tablespace_directory,
        blocks_per_segment,
        data_checksum_version,
        audit_chain_head,
    } = server_facts()?;
    let key_id = key.as_ref().map(|k| k.id.as_str());
    let (kind, previous, note) = parent(schedule, backup_id, &system_id, dir, key_id)?;
    let store = BackupStore::create(dir, &s3).map_err(failed)?;
    start_block_maps();
    phases.mark("prepare");
    let (start_lsn, timeline) = start_backup(backup_id, &kind).map_err(|e| cleanup(dir, e))?;
    phases.mark("start");
    let (changed_blocks, mut tracking) = changed_blocks(
        previous.as_ref(),
        start_lsn,
        timeline,
        blocks_per_segment,
        segment_size,
        data_checksum_version,
    );
    phases.mark("change_tracking");
    let options = CopyOptions {
        chunk_size: DEFAULT_CHUNK_SIZE,
        compression_level: schedule.compression_level,
        threads: default_threads(),
        key: key.clone(),
        tablespace_directory,
        changed_blocks,
        blocks_per_segment,
        data_checksum_version,
    };
    let link = ChainLink {
        backup_id,
        path: PathBuf::from(dir.display()),
        key_id: key.as_ref().map(|k| k.id.clone()),
    };
    let mut interrupted: Option<Interruption> = None;
    let copied = store.pack_writer().and_then(|pack| {
        copy_data_directory(
            &data_directory(),
            pack,
            link,
            previous.as_ref(),
            &options,
            &mut |_| match interruption() {
                Some(stop) => {
                    interrupted = Some(stop);
                    Err(format!("backup interrupted: {}", stop.1))
                }
                None => Ok(()),
            },
        )
    });
    phases.mark("copy");
    let status = interrupted.map_or(RunStatus::Failed, |(status, _)| status);
    let shutting_down = interrupted.is_some_and(|(_, why)| why == SHUTDOWN);
    // Always stop the backup; the job waits for the last segment itself (wait_for_archive).
    let wait = copied.is_ok() && archive_mode != "off";
    let stop = stop_backup();
    let copied = match copied {
        Ok(c) => c,
        Err(message) => {
            let outcome = cleanup(dir, (status, message));
            if shutting_down {
                finish_failed(backup_id, outcome.0, &outcome.1);
                unsafe { pg_sys::proc_exit(1) };
            }
            return Err(outcome);
        }
    };
    let (end_lsn, label_file, map_file) = stop.map_err(|e| cleanup(dir, e))?;
    phases.mark("stop");
    let label = parse_backup_label(&label_file).map_err(|e| cleanup(dir, failed(e)))?;
    // The backup ends in the segment holding the byte before its end LSN.
    let end_segment =
        Lsn::parse(&end_lsn).map(|l| Lsn(l.0.saturating_sub(1)).segment(segment_size));
    let end_wal = end_segment.map(|s| segment_file_name(label.timeline, s, segment_size));
    if let (true, Some(last)) = (wait, &end_wal) {
        wait_for_archive(last).map_err(|e| cleanup(dir, e))?;
    }
    phases.mark("archive_wait");
    let manifest = Manifest {
        format: format_for(&copied.tablespaces),
        backup_id,
        kind: kind.clone(),
        system_identifier: system_id.clone(),
        start_lsn: label.start_lsn.to_string(),
        end_lsn: end_lsn.clone(),
        timeline: label.timeline,
        start_wal_file: label.start_wal_file.clone(),
        wal_segment_size: segment_size,
        chunk_size: options.chunk_size,
        compression_level: schedule.compression_level,
        started_at: started_at.to_rfc3339(),
        finished_at: Utc::now().to_rfc3339(),
        chain: copied.chain,
        directories: copied.directories,
        files: copied.files,
        backup_label: label_file,
        tablespace_map: map_file.unwrap_or_default(),
        server_major: Some(crate::compat::server_major()),
        tablespaces: copied.tablespaces,
        data_checksum_version: Some(data_checksum_version),
        audit_chain_head: audit_chain_head.clone(),
    };
    let manifest_bytes = store
        .store_manifest(&manifest, key.as_ref())
        .map_err(|e| cleanup(dir, failed(e)))?;
    phases.mark("manifest");
    let stored = copied.pack_bytes + manifest_bytes;
    if tracking["source"] == "wal" {
        tracking["files_by_block"] = json!(copied.files_by_block);
    }
    let facts = json!({
        "system_identifier": system_id,
        "timeline": label.timeline,
        "start_wal_file": label.start_wal_file,
        "end_wal_file": end_wal,
        "wal_segment_size": segment_size,
        "checkpoint_lsn": label.checkpoint_lsn.to_string(),
        "files_read": copied.files_read,
        "files_referenced": copied.files_referenced,
        "bytes_read": copied.bytes_read,
        "change_tracking": tracking,
        "phase_seconds": phases.steps().iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "parent_backup_id": previous.as_ref().map(|p| p.backup_id),
        "threads": options.threads,
        "tablespaces": manifest.tablespaces.len(),
        "note": note,
        "archive_waited": wait,
        "server_major": crate::compat::server_major(),
        "audit_chain_head": audit_chain_head,
    });
    record_completed(backup_id, &manifest, stored, started, facts);
    keep_block_maps(segment_size);
    Ok(())
}

/// Waits until the archiver has stored WAL file `last` (the backup's last segment), as
/// pg_backup_stop(wait_for_archive) would, but polling every 10 ms instead of every second,
/// and at most admin_toolkit.backup_archive_wait: an archive that does not take WAL (missing,
/// unwritable, unreachable) fails the backup with the reason instead of holding its locks.
fn wait_for_archive(last: &str) -> Result<(), Failure> {
    let status = data_directory().join("pg_wal/archive_status");
    let segment = data_directory().join("pg_wal").join(last);
    let deadline = std::time::Duration::from_secs(
        u64::try_from(crate::settings::BACKUP_ARCHIVE_WAIT.get()).unwrap_or(600),
    );
    let started = Instant::now();
    let mut warned = false;
    loop {
        let ready = status.join(format!("{last}.ready")).exists();
        let done = status.join(format!("{last}.done")).exists();
        if !ready && (done || !segment.exists()) {
            return Ok(());
        }
        if let Some((status, why)) = interruption() {
            return Err((
                status,
                format!("interrupted while waiting for {last} to be archived: {why}"),
            ));
        }
        if started.elapsed() >= deadline {
            return Err(failed(format!(
                "WAL file {last}, the backup's last, was not archived within {} s (admin_toolkit.backup_archive_wait): is the archive reachable and writable? see pg_stat_archiver and the server log",
                deadline.as_secs()
            )));
        }
        if !warned && started.elapsed().as_secs() >= 60 {
            warned = true;
            log!("admin_toolkit job: still waiting for WAL file {last} to be archived; check pg_stat_archiver");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Removes the partial backup; a failure to remove is added to the message.
fn cleanup(dir: &Location, (status, message): Failure) -> Failure {
    match remove_backup(&dir.display(), &crate::settings::s3()) {
        Ok(()) => (status, message),
        Err(e) => (
            status,
            format!("{message}; removing the partial backup failed too: {e}"),
        ),
    }
}

/// The server's system identifier, WAL segment size and archive_mode; refused on a standby.
/// What a backup needs to know of the server.
struct ServerFacts {
    system_identifier: String,
    segment_size: u64,
    archive_mode: String,
    /// This server's directory in each tablespace (`compat::tablespace_directory`).
    tablespace_directory: String,
    /// Blocks per relation segment file; 0 when pages or WAL pages are not of 8 kB (no block
    /// tracking).
    blocks_per_segment: u32,
    /// pg_control's data_checksum_version.
    data_checksum_version: u32,
    /// The head of the audit log's hash chain when the backup starts.
    audit_chain_head: Option<AuditChainHead>,
}

fn server_facts() -> Result<ServerFacts, Failure> {
    let facts = jobs::bookkeeping(|| -> spi::Result<ServerFacts> {
        let mut facts = ServerFacts {
            system_identifier: String::new(),
            segment_size: 0,
            archive_mode: String::new(),
            tablespace_directory: String::new(),
            blocks_per_segment: 0,
            data_checksum_version: 0,
            audit_chain_head: None,
        };
        if unsafe { pg_sys::RecoveryInProgress() } {
            return Ok(facts);
        }
        let (system, catalog_version) = Spi::get_two::<i64, i32>(
            "SELECT system_identifier, catalog_version_no FROM pg_catalog.pg_control_system()",
        )?;
        facts.system_identifier = system.unwrap_or(0).to_string();
        facts.tablespace_directory =
            crate::compat::tablespace_directory(catalog_version.unwrap_or(0));
        facts.archive_mode =
            Spi::get_one("SELECT pg_catalog.current_setting('archive_mode')")?.unwrap_or_default();
        facts.segment_size = schedule::wal_segment_size()?;
        let (per_segment, block_size, checksums) = Spi::get_three::<i32, bool, i32>(
            "SELECT blocks_per_segment, database_block_size = 8192 AND wal_block_size = 8192, \
                    data_page_checksum_version FROM pg_catalog.pg_control_init()",
        )?;
        if block_size == Some(true) {
            facts.blocks_per_segment = per_segment.unwrap_or(0).max(0) as u32;
        }
        facts.data_checksum_version = checksums.unwrap_or(0).max(0) as u32;
        // Before ALTER EXTENSION UPDATE to 0.6.0 there is no chain.
        let chained = Spi::get_one::<bool>(
            "SELECT pg_catalog.to_regclass('admin_toolkit.audit_chain') IS NOT NULL",
        )?;
        let (id, hash) = match chained {
            Some(true) => Spi::get_two::<i64, String>(
                "SELECT c.head_audit_id, pg_catalog.encode(c.head, 'hex') FROM admin_toolkit.audit_chain c",
            )?,
            _ => (None, None),
        };
        if let (Some(audit_id), Some(hash)) = (id, hash) {
            facts.audit_chain_head = Some(AuditChainHead { audit_id, hash });
        }
        Ok(facts)
    })
    .map_err(failed)?;
    if facts.system_identifier.is_empty() {
        return Err(failed(
            "the server is in recovery: base backups are taken on the primary",
        ));
    }
    Ok(facts)
}

/// What the backup is (its type: an incremental without a backup to build on is taken as a
/// full one, with a note saying so) and the manifest of the backup it builds on.
fn parent(
    schedule: &BackupSchedule,
    backup_id: i64,
    system_id: &str,
    dir: &Location,
    key_id: Option<&str>,
) -> Result<(String, Option<Manifest>, Value), Failure> {
    if schedule.backup_type != "incremental" {
        return Ok((schedule.backup_type.clone(), None, Value::Null));
    }
    match previous_backup(backup_id, system_id, dir, key_id).map_err(failed)? {
        Some((prev_id, prev_path, expected)) => BackupStore::open(&prev_path, &crate::settings::s3())
            .and_then(|store| store.load_manifest(&crate::settings::key_dir(), &expected))
            .map(|m| (schedule.backup_type.clone(), Some(m), Value::Null))
            .map_err(|e| {
                failed(format!(
                    "the previous backup {prev_id} cannot be read, so no incremental can build on it: {e}"
                ))
            }),
        None => Ok((
            "full".into(),
            None,
            json!("no completed backup of this cluster on the same storage with the same encryption key to build on: taken as a full backup, which starts the chain"),
        )),
    }
}

/// pg_backup_start, and the backup's start LSN and type recorded: the start LSN and its
/// timeline.
fn start_backup(backup_id: i64, kind: &str) -> Result<(Lsn, u32), Failure> {
    let label = format!("admin_toolkit backup {backup_id}");
    let start = try_transaction(|| {
        Spi::get_two_with_args::<String, String>(
            "SELECT s::text, pg_catalog.pg_walfile_name(s) FROM pg_catalog.pg_backup_start($1, true) s",
            &[label.as_str().into()],
        )
    });
    let (start_lsn, wal_file) = match start {
        Ok(Ok((lsn, file))) => (lsn.unwrap_or_default(), file.unwrap_or_default()),
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(e) => return Err(failed(e)),
    };
    record(
        "UPDATE admin_toolkit.backup_history SET start_lsn = $2::pg_lsn, backup_type = $3 WHERE backup_id = $1",
        vec![backup_id.into(), start_lsn.as_str().into(), kind.into()],
    );
    let lsn = Lsn::parse(&start_lsn)
        .ok_or_else(|| failed(format!("pg_backup_start returned {start_lsn:?}")))?;
    let timeline = u32::from_str_radix(wal_file.get(..8).unwrap_or(""), 16).unwrap_or(0);
    Ok((lsn, timeline))
}

/// pg_backup_stop, without its own wait for the archiver (which polls once a second: the job
/// waits for the last segment itself): the end LSN, backup_label and tablespace_map.
fn stop_backup() -> Result<(String, String, Option<String>), Failure> {
    let stop = try_transaction(
        || -> spi::Result<(Option<String>, Option<String>, Option<String>)> {
            crate::query::one_row(
                "SELECT lsn::text, labelfile, spcmapfile FROM pg_catalog.pg_backup_stop($1)",
                &[false.into()],
                |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map(Option::unwrap_or_default)
        },
    );
    match stop {
        Ok(Ok((end_lsn, label, map))) => {
            Ok((end_lsn.unwrap_or_default(), label.unwrap_or_default(), map))
        }
        Ok(Err(e)) => Err(failed(format!("pg_backup_stop failed: {e}"))),
        Err(e) => Err(failed(format!("pg_backup_stop failed: {e}"))),
    }
}

/// Records the completed backup: its stored size, end, type, and `facts` with the figures of
/// the manifest and the run's speed.
fn record_completed(
    backup_id: i64,
    manifest: &Manifest,
    stored: u64,
    started: Instant,
    mut facts: Value,
) {
    let seconds = started.elapsed().as_secs_f64();
    let original = manifest.original_bytes();
    facts["original_bytes"] = json!(original);
    facts["files"] = json!(manifest.files.len());
    facts["chain"] = json!(manifest.depends_on());
    facts["duration_seconds"] = json!((seconds * 1000.0).round() / 1000.0);
    facts["throughput_mb_per_s"] = json!(if seconds > 0.0 {
        (original as f64 / seconds / 1e6 * 10.0).round() / 10.0
    } else {
        0.0
    });
    let _logged = BACKUPS.finish(
        backup_id,
        RunStatus::Succeeded,
        None,
        vec![
            ("backup_size_bytes = $", (stored as i64).into()),
            ("end_lsn = $::pg_lsn", manifest.end_lsn.as_str().into()),
            ("backup_type = $", manifest.kind.as_str().into()),
            ("metadata = metadata || $::jsonb", facts.to_string().into()),
        ],
    );
    log!(
        "admin_toolkit job: backup {backup_id} ({}) completed: {original} bytes read, {stored} stored, {seconds:.1} s",
        manifest.kind
    );
}
