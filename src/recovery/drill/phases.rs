//! The steps of a restore drill, in the order `job::drill` takes them: the manifest, the WAL
//! plan, the scratch directory, the restore, the recovery settings, the throwaway server's
//! promotion and what recovery reached.

use super::checks::server_bindir;
use super::{failed, stopped, Failure};
use crate::jobs::interruption;
use crate::transaction::step::try_transaction;
use admin_toolkit_core::backup::default_threads;
use admin_toolkit_core::backup::manifest::Manifest;
use admin_toolkit_core::backup::recovery_conf::{
    write_recovery_settings, RecoverySettings, RecoveryTarget,
};
use admin_toolkit_core::backup::restore::{place_tablespaces_under, restore, Restored};
use admin_toolkit_core::backup::store::BackupStore;
use admin_toolkit_core::chrono::DateTime;
use admin_toolkit_core::drill::server::{Stopped, Throwaway};
use admin_toolkit_core::drill::{
    available_bytes, end_of_recovery, restored, SpaceNeeded, MARKER_FILE,
};
use admin_toolkit_core::lsn::Lsn;
use admin_toolkit_core::recovery::{plan_segments, Archive, BackupPosition, Plan, Target};
use admin_toolkit_core::storage::{self, Location};
use pgrx::prelude::*;
use serde_json::Value;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// What the drill works on, read when it starts.
pub(super) struct Start {
    pub(super) backup_id: i64,
    pub(super) backup_path: String,
    pub(super) superuser: String,
    pub(super) scratch: PathBuf,
}

/// The drill's scratch directory, removed when the drill ends however it ends.
pub(super) struct Scratch(pub(super) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log!(
                    "admin_toolkit job: cannot remove \"{}\": {e}",
                    self.0.display()
                );
            }
        }
    }
}

/// What a drill measured, recorded as it goes.
#[derive(Default)]
pub(super) struct Measures {
    pub(super) backup_ids: Vec<i64>,
    pub(super) restored_bytes: Option<u64>,
    pub(super) restore_seconds: Option<f64>,
    pub(super) wal_bytes: Option<u64>,
    pub(super) wal_seconds: Option<f64>,
    pub(super) rto_seconds: Option<f64>,
    pub(super) last_replayed_micros: Option<i64>,
    pub(super) rpo_seconds: Option<f64>,
    pub(super) checks_seconds: Option<f64>,
    pub(super) checks: Value,
}

/// The backup's manifest, accepted only as what its catalog row says (key, backup, cluster,
/// chain).
pub(super) fn load_manifest(start: &Start) -> Result<Manifest, Failure> {
    let s3 = crate::settings::s3();
    let keys = crate::settings::key_dir();
    try_transaction(|| crate::backup::locations::expected_of(start.backup_id))
        .and_then(|expected| expected)
        .and_then(|expected| {
            BackupStore::open(&start.backup_path, &s3)
                .and_then(|store| store.load_manifest(&keys, &expected))
        })
        .and_then(|manifest| {
            try_transaction(|| crate::backup::locations::check_chain(&manifest)).and_then(|c| c)?;
            Ok(manifest)
        })
        .map_err(|e| failed(format!("backup {} cannot be read: {e}", start.backup_id)))
}

/// The archive, the WAL segments recovery to `target` reads from it (all present), and the
/// backup's start LSN.
pub(super) fn plan_wal(
    start: &Start,
    manifest: &Manifest,
    target: Option<i64>,
) -> Result<(Location, Plan, Lsn), Failure> {
    let archive = crate::settings::archive_location()
        .ok_or_else(|| failed("admin_toolkit.archive_location is not set: a drill recovers from the archive the archive module writes"))?;
    let archive = Location::parse(&archive).map_err(|e| failed(e.to_string()))?;
    let (Some(start_lsn), Some(end_lsn)) = (
        Lsn::parse(&manifest.start_lsn),
        Lsn::parse(&manifest.end_lsn),
    ) else {
        return Err(failed(format!(
            "backup {}'s manifest has no valid start and end LSN",
            start.backup_id
        )));
    };
    let position = BackupPosition {
        start: start_lsn,
        end: end_lsn,
        timeline: manifest.timeline,
    };
    let plan_target = target.map_or(Target::EndOfArchive, Target::Time);
    let plan = storage::open(&archive, &crate::settings::s3())
        .map_err(|e| e.to_string())
        .and_then(|st| {
            Archive::read(
                st.as_ref(),
                &manifest.system_identifier,
                manifest.wal_segment_size,
                &crate::settings::key_dir(),
                crate::backup::locations::archive_sealed(),
            )
        })
        .and_then(|a| {
            plan_segments(&a, position, plan_target, manifest.wal_segment_size)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            failed(format!(
                "backup {} cannot be recovered from \"{}\": {e}",
                start.backup_id,
                archive.display()
            ))
        })?;
    Ok((archive, plan, start_lsn))
}

/// The drill's scratch directory, made once the free space is known to suffice (with the
/// figures when not), and removed when the returned guard drops, whatever happens.
pub(super) fn prepare_scratch(
    start: &Start,
    drill_id: i64,
    manifest: &Manifest,
    plan: &Plan,
) -> Result<Scratch, Failure> {
    // WAL is counted up to 64 segments, as recovery keeps only the segments it reads and
    // recycles the rest at restartpoints.
    let dir = start
        .scratch
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed(format!("cannot create \"{}\": {e}", dir.display())))?;
    let need = SpaceNeeded {
        restored: manifest.original_bytes(),
        wal: (plan.segments.len() as u64).min(64) * manifest.wal_segment_size,
        margin: u64::try_from(crate::settings::DRILL_SPACE_MARGIN.get()).unwrap_or(0) * 1_048_576,
    };
    let available = available_bytes(&dir).map_err(failed)?;
    if let Some(why) = need.refusal(available, &dir) {
        return Err(failed(why));
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&start.scratch)
        .map_err(|e| {
            failed(format!(
                "cannot create \"{}\": {e}",
                start.scratch.display()
            ))
        })?;
    let scratch = Scratch(start.scratch.clone());
    std::fs::write(start.scratch.join(MARKER_FILE), drill_id.to_string()).map_err(|e| {
        failed(format!(
            "cannot write in \"{}\": {e}",
            start.scratch.display()
        ))
    })?;
    Ok(scratch)
}

/// Restores the backup and its chain into `data`, through the same code as `admin-toolkit
/// restore`; a cancellation or shutdown stops it.
pub(super) fn restore_backup(
    start: &Start,
    manifest: &Manifest,
    data: &Path,
) -> Result<Restored, Failure> {
    let mut stop = None;
    // Every tablespace goes into the scratch directory, never to production's locations.
    let tablespaces = place_tablespaces_under(manifest, &start.scratch.join("tablespaces"));
    let restored = restore(
        manifest,
        data,
        &tablespaces,
        default_threads(),
        &crate::settings::s3(),
        &crate::settings::key_dir(),
        &mut |_, _| match interruption() {
            Some(why) => {
                stop = Some(why);
                Err("stopped".into())
            }
            None => Ok(()),
        },
    );
    match restored {
        Ok(r) => Ok(r),
        Err(_) if stop.is_some() => Err(stopped(stop)),
        Err(e) => Err(failed(format!(
            "restoring backup {} failed: {e}",
            start.backup_id
        ))),
    }
}

/// Neutralises the restored production settings and writes the drill's recovery settings:
/// WAL from `archive` through `wal-get`, up to `target` (else the end of the archive).
pub(super) fn configure_recovery(
    start: &Start,
    data: &Path,
    archive: &Location,
    target: Option<i64>,
) -> Result<(), Failure> {
    let recovery_target = target.map(|t| {
        RecoveryTarget::Time(
            DateTime::from_timestamp_micros(t)
                .unwrap_or_default()
                .format("%Y-%m-%d %H:%M:%S%.6f+00")
                .to_string(),
        )
    });
    // The restored directory is production's: its settings never reach the drill's server.
    restored::neutralise(data, &start.scratch).map_err(failed)?;
    let program = crate::settings::cli_path();
    write_recovery_settings(
        data,
        &RecoverySettings {
            backup: &start.backup_path,
            program: &program,
            archive: Some(archive),
            target: recovery_target.as_ref(),
            s3: &crate::settings::s3(),
            keys: &crate::settings::key_dir(),
            require_sealed: crate::backup::locations::archive_sealed(),
            keep_archiving: false,
            // The drill's server gets its network settings on its command line.
            socket_directory: None,
        },
    )
    .map_err(failed)
}

/// Starts the throwaway server on `data` and waits until recovery has promoted it; stops it
/// again on a cancellation or shutdown.
pub(super) fn start_and_promote(
    start: &Start,
    drill_id: i64,
    data: &Path,
) -> Result<Throwaway, Failure> {
    let port = 50_000 + u16::try_from(drill_id.rem_euclid(10_000)).unwrap_or(0);
    let mut server = Throwaway::start(
        &server_bindir(),
        &start.scratch,
        data,
        port,
        drill_id,
        &start.superuser,
    )
    .map_err(failed)?;
    let mut stop = None;
    match server.wait_until_promoted(&mut || {
        stop = interruption();
        stop.is_some()
    }) {
        Ok(()) => Ok(server),
        Err(Stopped::Asked) => {
            let _stop_error_is_superseded = server.stop(Duration::from_secs(30));
            Err(stopped(stop))
        }
        Err(Stopped::Exited(why)) => Err(failed(why)),
    }
}

/// What recovery reached: the last transaction replayed (and so the RPO against `reference`,
/// microseconds since the epoch), and how much WAL it replayed from `start_lsn`.
pub(super) fn measure_recovery(
    server: &Throwaway,
    data: &Path,
    start_lsn: Lsn,
    reference: i64,
    m: &mut Measures,
) -> Result<(), Failure> {
    let facts = server
        .psql(
            "template1",
            "SELECT coalesce((extract(epoch FROM pg_catalog.pg_last_xact_replay_timestamp()) * 1000000)::int8::text, ''), \
                    (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())",
        )
        .map_err(|e| failed(format!("the restored server does not answer: {e}")))?;
    let mut fields = facts.trim().split('\u{1f}');
    m.last_replayed_micros = fields.next().and_then(|t| t.parse().ok());
    let timeline: Option<u32> = fields.next().and_then(|t| t.parse().ok());
    if let Some(tli) = timeline {
        let history = std::fs::read_to_string(data.join(format!("pg_wal/{tli:08X}.history")));
        if let Ok(end) = history
            .map_err(|e| e.to_string())
            .and_then(|h| end_of_recovery(&h))
        {
            m.wal_bytes = Some(end.0.saturating_sub(start_lsn.0));
        }
    }
    m.rpo_seconds = m
        .last_replayed_micros
        .map(|last| (reference - last) as f64 / 1e6);
    Ok(())
}
