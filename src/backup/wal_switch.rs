//! A run of a wal_archive schedule: close the current WAL segment (pg_switch_wal) and wait until
//! the archiver has stored it, so the archive never lags more than the schedule's interval.

use super::locations;
use super::runs::finish_failed;
use crate::jobs::ledger::BACKUPS;
use crate::jobs::{interruption, RunStatus};
use crate::transaction::step::try_transaction;
use admin_toolkit_core::storage::Location;
use admin_toolkit_core::wal::data_object;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How long a run waits for the archiver before recording a failure.
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

/// Archiving facts: archive_mode, archive_library, and the segment pg_switch_wal closed.
fn switch() -> Result<(String, String, String, String), String> {
    try_transaction(|| -> spi::Result<(String, String, String, String)> {
        Spi::connect_mut(|c| {
            let r = c.update(
                "SELECT pg_catalog.current_setting('archive_mode'), pg_catalog.current_setting('archive_library'), \
                        l::text, pg_catalog.pg_walfile_name(l) \
                 FROM pg_catalog.pg_switch_wal() AS l",
                Some(1),
                &[],
            )?;
            let r = r.first();
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            ))
        })
    })?
    .map_err(|e| e.to_string())
}

fn archived_up_to(segment: &str) -> bool {
    try_transaction(|| {
        crate::query::read_scalar::<bool>(&format!(
            "SELECT coalesce(last_archived_wal >= '{segment}', false) FROM pg_catalog.pg_stat_archiver"
        ))
    })
    .ok()
    .and_then(Result::ok)
    .flatten()
    .unwrap_or(false)
}

pub fn run(backup_id: i64, location: &Location) {
    let (mode, library, lsn, segment) = match switch() {
        Ok(v) => v,
        Err(e) => {
            return finish_failed(
                backup_id,
                RunStatus::Failed,
                &format!("pg_switch_wal failed: {e}"),
            )
        }
    };
    if mode == "off" {
        return finish_failed(
            backup_id,
            RunStatus::Failed,
            "WAL archiving is off: set archive_mode = on and restart",
        );
    }
    let archive = locations::archive_location().and_then(Result::ok);
    if library == "admin_toolkit"
        && !archive
            .as_ref()
            .is_some_and(|a| locations::same_location(a, location))
    {
        return finish_failed(
            backup_id,
            RunStatus::Failed,
            &format!(
                "this schedule's storage_location \"{}\" is not admin_toolkit.archive_location ({}), where the archive module stores WAL",
                location.display(),
                archive.map_or("not set".into(), |a| format!("\"{}\"", a.display()))
            ),
        );
    }
    let started = Instant::now();
    while !archived_up_to(&segment) {
        if started.elapsed() > ARCHIVE_WAIT {
            return finish_failed(
                backup_id,
                RunStatus::Failed,
                &format!("WAL file {segment} was not archived within {} s; see pg_stat_archiver and the server log", ARCHIVE_WAIT.as_secs()),
            );
        }
        if let Some((status, why)) = interruption() {
            return finish_failed(
                backup_id,
                status,
                &format!("interrupted while waiting for the archiver: {why}"),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The stored size of the segment, when the archive can be listed.
    let stored = data_object(&segment);
    let size = locations::open(location)
        .and_then(|s| s.list(&stored).map_err(|e| e.to_string()))
        .ok()
        .and_then(|objects| objects.into_iter().find(|o| o.name == stored))
        .map(|o| o.size as i64);
    let _logged = BACKUPS.finish(
        backup_id,
        RunStatus::Succeeded,
        None,
        vec![
            ("start_lsn = $::pg_lsn", lsn.as_str().into()),
            ("end_lsn = $::pg_lsn", lsn.as_str().into()),
            ("backup_size_bytes = $", size.into()),
            (
                "metadata = metadata || jsonb_build_object('wal_file', $::text)",
                segment.as_str().into(),
            ),
        ],
    );
}
