//! The drill job: choose the backup, restore it with its chain, recover it from the archive on a
//! throwaway server, check every database, record what was measured, remove it all.

use super::checks::{check_databases, checks_json, id_array};
use super::phases::{
    configure_recovery, load_manifest, measure_recovery, plan_wal, prepare_scratch, restore_backup,
    start_and_promote, Measures, Start,
};
use super::{failed, Failure, ONE_AT_A_TIME};
use crate::jobs::ledger::DRILLS;
use crate::jobs::{self, RunStatus};
use admin_toolkit_core::backup::manifest::{check_major, data_dir_major};
use admin_toolkit_core::chrono::{DateTime, Utc};
use admin_toolkit_core::drill::restored::check_live_tablespaces;
use admin_toolkit_core::drill::scratch_name;
use admin_toolkit_core::storage::Location;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The OID and location of each tablespace of this server outside the data directory.
fn live_tablespaces() -> Result<Vec<(String, String)>, Failure> {
    jobs::bookkeeping(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT oid::text, pg_catalog.pg_tablespace_location(oid) FROM pg_catalog.pg_tablespace \
                  WHERE pg_catalog.pg_tablespace_location(oid) OPERATOR(pg_catalog.<>) ''",
                None,
                &[],
            )?
            .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
            .collect::<spi::Result<Vec<_>>>()
        })
    })
    .map_err(failed)
}

/// Whether `program` (admin_toolkit.cli_path) is an executable file, which the drill's
/// restore_command runs.
pub(super) fn check_program(program: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(program) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => Err(format!(
            "admin_toolkit.cli_path \"{}\" is not an executable program, and the drill's recovery runs its wal-get: install admin-toolkit (the Debian package puts it in /usr/bin; from source, scripts/setup.sh or `cargo build --release -p admin-toolkit-cli`) and set admin_toolkit.cli_path to it",
            program.display()
        )),
    }
}

/// Starts recording drill `drill_id`: its row, 'running' with the backup it restores, or
/// 'failed' with why it cannot run. Holds the retention lock for the drill's life, so that
/// cleanup never deletes the backup or WAL it reads.
pub(super) fn begin(
    schedule_id: i32,
    drill_id: i64,
    backup_id: i64,
    target: Option<i64>,
) -> Result<Option<Start>, String> {
    let pid = unsafe { pg_sys::MyProcPid };
    let schedule = (schedule_id > 0).then_some(schedule_id);
    let target_text = target.map(|t| t.to_string());
    let (chosen, is_superuser) = jobs::bookkeeping(
        || -> spi::Result<(Result<Start, String>, bool)> {
            if let Some(id) = schedule {
                Spi::run_with_args(
                "UPDATE admin_toolkit.restore_drill_schedules SET last_run = clock_timestamp() WHERE schedule_id = $1",
                &[id.into()],
            )?;
            }
            // The role the job connected as (bookkeeping itself runs as the bootstrap superuser);
            // a catalog lookup, so inside the transaction.
            // SAFETY: reads this backend's session user and its pg_authid row.
            let is_superuser = unsafe { pg_sys::superuser_arg(pg_sys::GetSessionUserId()) };
            Ok((choose(schedule, backup_id, drill_id), is_superuser))
        },
    )?;
    let refusal = match (&chosen, is_superuser) {
        (_, false) => Some(
            "the drill's owner is not a superuser: a drill reads every backup and starts a server as the server's OS user"
                .to_string(),
        ),
        (Err(why), _) => Some(why.clone()),
        (Ok(_), true) => None,
    };
    let (backup, scratch) = match &chosen {
        Ok(s) => (Some(s.backup_id), Some(s.scratch.display().to_string())),
        Err(_) => (None, None),
    };
    let insert = |status: RunStatus, reason: Option<&str>| {
        jobs::bookkeeping(|| {
            if status == RunStatus::Running {
                Spi::run(crate::backup::retention::SHARE_RETENTION_LOCK)?;
            }
            Spi::run_with_args(
                "INSERT INTO admin_toolkit.restore_drills (drill_id, schedule_id, backup_id, target_time, status, \
                   failure_reason, finished_at, owner, pid, scratch_directory) \
                 VALUES ($1, $2, $3, to_timestamp($4::int8 / 1e6), $5, $6, \
                         CASE WHEN $5 <> 'running' THEN clock_timestamp() END, session_user, $7, $8)",
                &[
                    drill_id.into(),
                    schedule.into(),
                    backup.into(),
                    target_text.clone().into(),
                    status.text(DRILLS.table).into(),
                    reason.into(),
                    pid.into(),
                    scratch.clone().into(),
                ],
            )
        })
    };
    if let Some(why) = refusal {
        insert(RunStatus::Failed, Some(&why))?;
        log!("admin_toolkit job: restore drill {drill_id} refused: {why}");
        return Ok(None);
    }
    if let Err(e) = insert(RunStatus::Running, None) {
        // The unique index on running drills: another one started meanwhile.
        let why = format!("another restore drill is running; one drill runs at a time ({e})");
        insert(RunStatus::Failed, Some(&why))?;
        return Ok(None);
    }
    Ok(chosen.ok())
}

/// The backup to drill and the drill's scratch directory, or why there is none. Needs a
/// transaction.
pub(super) fn choose(
    schedule: Option<i32>,
    backup_id: i64,
    drill_id: i64,
) -> Result<Start, String> {
    let Some(dir) = crate::settings::drill_directory() else {
        return Err("admin_toolkit.drill_directory is not set".into());
    };
    if let Ok(Some(running)) = crate::query::read_scalar::<i64>(ONE_AT_A_TIME) {
        return Err(format!(
            "restore drill {running} is running; one drill runs at a time"
        ));
    }
    let row = crate::query::one_row(
        "SELECT h.backup_id, h.backup_path, (SELECT rolname::text FROM pg_catalog.pg_authid WHERE oid = 10) \
               FROM admin_toolkit.backup_history h \
              WHERE h.status = 'completed' AND h.backup_type IN ('full', 'incremental') \
                AND ($1::int8 = 0 OR h.backup_id = $1) \
                AND ($2::int4 IS NULL OR h.schedule_id = (SELECT backup_schedule_id \
                       FROM admin_toolkit.restore_drill_schedules WHERE schedule_id = $2) \
                     OR (SELECT backup_schedule_id FROM admin_toolkit.restore_drill_schedules \
                          WHERE schedule_id = $2) IS NULL) \
              ORDER BY h.end_lsn DESC NULLS LAST, h.backup_id DESC LIMIT 1",
        &[backup_id.into(), schedule.into()],
        |r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ))
        },
    )
    .map_err(|e| e.to_string())?;
    let Some((backup_id, backup_path, superuser)) = row else {
        return Err(if backup_id > 0 {
            format!("backup {backup_id} is not a completed full or incremental backup")
        } else {
            "there is no completed backup to drill".to_string()
        });
    };
    let data = crate::backup::schedule::data_directory();
    if Location::Local(dir.clone()).overlaps(&data) {
        return Err(format!(
            "admin_toolkit.drill_directory \"{}\" overlaps the data directory",
            dir.display()
        ));
    }
    if let Some(archive) = crate::settings::archive_location() {
        if Location::parse(&archive).is_ok_and(|a| a.overlaps(&dir)) {
            return Err(format!(
                "admin_toolkit.drill_directory \"{}\" overlaps the WAL archive",
                dir.display()
            ));
        }
    }
    Ok(Start {
        backup_id,
        backup_path,
        superuser,
        scratch: dir.join(scratch_name(drill_id)),
    })
}

pub fn run(schedule_id: i32, drill_id: i64, backup_id: i64, target: Option<i64>) {
    let start = match begin(schedule_id, drill_id, backup_id, target) {
        Ok(Some(start)) => start,
        Ok(None) => return,
        Err(e) => return log!("admin_toolkit job: starting restore drill {drill_id} failed: {e}"),
    };
    let began = Utc::now();
    let mut measures = Measures {
        checks: json!({}),
        ..Measures::default()
    };
    let outcome = drill(&start, drill_id, target, began, &mut measures);
    let (status, reason) = match outcome {
        Ok(()) => match check_failure_of(&measures) {
            Some(why) => (RunStatus::Failed, Some(why)),
            None => (RunStatus::Succeeded, None),
        },
        Err((status, why)) => (status, Some(why)),
    };
    finish(drill_id, status, reason.as_deref(), &measures);
}

pub(super) fn check_failure_of(m: &Measures) -> Option<String> {
    m.checks
        .get("failure")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Every step of a drill; an error ends it with that status and reason.
pub(super) fn drill(
    start: &Start,
    drill_id: i64,
    target: Option<i64>,
    began: DateTime<Utc>,
    m: &mut Measures,
) -> Result<(), Failure> {
    // The program recovery runs comes first: without it, restoring would be wasted work.
    check_program(&crate::settings::cli_path()).map_err(failed)?;
    let manifest = load_manifest(start)?;
    // This server's programs start the restored copy: only a backup of this major can work.
    let major = crate::compat::server_major();
    check_major(start.backup_id, manifest.server_major, major).map_err(failed)?;
    check_live_tablespaces(start.backup_id, &manifest.tablespaces, &live_tablespaces()?)
        .map_err(failed)?;
    m.backup_ids = manifest.chain.iter().map(|l| l.backup_id).collect();
    record_progress(drill_id, m);
    // The WAL it needs must all be in the archive: a gap is named before anything is restored.
    let (archive, plan, start_lsn) = plan_wal(start, &manifest, target)?;
    let _scratch = prepare_scratch(start, drill_id, &manifest, &plan)?;
    let data = start.scratch.join("data");

    let restore_started = Instant::now();
    let restored = restore_backup(start, &manifest, &data)?;
    // Manifests written before 0.5.0 do not name their major: the restored files do.
    let restored_major = data_dir_major(&data).map_err(failed)?;
    check_major(start.backup_id, Some(restored_major), major).map_err(failed)?;
    m.restored_bytes = Some(restored.bytes);
    m.restore_seconds = Some(restore_started.elapsed().as_secs_f64());
    record_progress(drill_id, m);

    configure_recovery(start, &data, &archive, target)?;
    let replay_started = Instant::now();
    let server = start_and_promote(start, drill_id, &data)?;
    m.wal_seconds = Some(replay_started.elapsed().as_secs_f64());
    m.rto_seconds = Some(restore_started.elapsed().as_secs_f64());
    record_progress_promoted(drill_id, m);

    measure_recovery(
        &server,
        &data,
        start_lsn,
        target.unwrap_or_else(|| began.timestamp_micros()),
        m,
    )?;
    // The checks: amcheck on every B-tree index and a row count of every user table, in every
    // database that accepts connections.
    let checks_started = Instant::now();
    let results = match check_databases(&server, &start.superuser) {
        Ok(results) => results,
        Err(failure) => {
            let _stop_error_is_superseded = server.stop(Duration::from_secs(30));
            return Err(failure);
        }
    };
    m.checks_seconds = Some(checks_started.elapsed().as_secs_f64());
    m.checks = checks_json(&results);
    server
        .stop(Duration::from_secs(60))
        .map_err(|e| failed(format!("stopping the restored server: {e}")))?;
    Ok(())
}

pub(super) fn record_progress(drill_id: i64, m: &Measures) {
    jobs::record(
        "UPDATE admin_toolkit.restore_drills SET backup_ids = $2::int8[], restored_bytes = $3, \
                restore_seconds = $4::float8::numeric, \
                restored_at = CASE WHEN $3::int8 IS NOT NULL THEN clock_timestamp() END \
          WHERE drill_id = $1",
        vec![
            drill_id.into(),
            id_array(&m.backup_ids).into(),
            m.restored_bytes.map(|b| b as i64).into(),
            m.restore_seconds.into(),
        ],
    );
}

pub(super) fn record_progress_promoted(drill_id: i64, m: &Measures) {
    jobs::record(
        "UPDATE admin_toolkit.restore_drills SET promoted_at = clock_timestamp(), \
                wal_replay_seconds = $2::float8::numeric, rto_seconds = $3::float8::numeric \
          WHERE drill_id = $1",
        vec![drill_id.into(), m.wal_seconds.into(), m.rto_seconds.into()],
    );
}

/// Records how the drill ended, with everything it measured; should that fail, at least the
/// status and the reason, so that a drill never stays 'running' behind its job.
pub(super) fn finish(drill_id: i64, status: RunStatus, reason: Option<&str>, m: &Measures) {
    let measured = DRILLS.finish(
        drill_id,
        status,
        reason,
        vec![
            ("backup_ids = $::int8[]", id_array(&m.backup_ids).into()),
            (
                "wal_bytes_replayed = $::int8",
                m.wal_bytes.map(|b| b as i64).into(),
            ),
            (
                "last_replayed_transaction = to_timestamp($::int8 / 1e6)",
                m.last_replayed_micros.into(),
            ),
            (
                "rpo_seconds = round($::float8::numeric, 6)",
                m.rpo_seconds.into(),
            ),
            (
                "checks_seconds = $::float8::numeric",
                m.checks_seconds.into(),
            ),
            ("checks = $::jsonb", m.checks.to_string().into()),
        ],
    );
    if let Err(e) = measured {
        // At least the status and why, so that a drill never stays 'running' behind its job.
        let why = reason.map_or_else(
            || format!("the drill's measures could not be recorded: {e}"),
            str::to_string,
        );
        let _logged = DRILLS.finish(drill_id, RunStatus::Failed, Some(&why), vec![]);
    }
    let status = status.text(DRILLS.table);
    match reason {
        Some(why) => log!("admin_toolkit job: restore drill {drill_id} {status}: {why}"),
        None => log!("admin_toolkit job: restore drill {drill_id} {status}"),
    }
}
