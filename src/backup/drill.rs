//! Restore drills: `run_restore_drill()`, the drill job, due drill schedules and the upkeep of
//! drills whose job died. The job restores through the same code as `admin-toolkit restore`,
//! recovers on a throwaway server (core::drill::server) and records what it measured.

use crate::error::{require, ToolkitError};
use crate::jobs::{self, interruption, schedules::start_due, JobDescriptor, JobKind};
use crate::worker::step::try_transaction;
use admin_toolkit_core::backup::default_threads;
use admin_toolkit_core::backup::manifest::Manifest;
use admin_toolkit_core::backup::recovery_conf::{
    write_recovery_settings, RecoverySettings, RecoveryTarget,
};
use admin_toolkit_core::backup::restore::restore;
use admin_toolkit_core::backup::store::BackupStore;
use admin_toolkit_core::chrono::{DateTime, Utc};
use admin_toolkit_core::drill::checks::{
    check_failure, count_sql, decode_name, index_check_sql, owners_sql, parse_checks,
    DatabaseChecks, DATABASES_SQL, DISABLE_EVENT_TRIGGERS, LIFT_FORCED_ROW_SECURITY,
    PREPARE_CLUSTER,
};
use admin_toolkit_core::drill::server::{stop_leftover, Stopped, Throwaway};
use admin_toolkit_core::drill::{
    available_bytes, drill_of_scratch, end_of_recovery, restored, scratch_name, SpaceNeeded,
    MARKER_FILE,
};
use admin_toolkit_core::lsn::Lsn;
use admin_toolkit_core::recovery::{plan_segments, Archive, BackupPosition, Target};
use admin_toolkit_core::storage::{self, Location};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ONE_AT_A_TIME: &str =
    "SELECT drill_id FROM admin_toolkit.restore_drills WHERE status = 'running' LIMIT 1";

fn drill_row_exists(drill_id: i64) -> bool {
    crate::query::read_scalar::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM admin_toolkit.restore_drills WHERE drill_id = {drill_id})"
    ))
    .ok()
    .flatten()
        == Some(true)
}

fn next_drill_id() -> i64 {
    Spi::get_one::<i64>("SELECT nextval('admin_toolkit.restore_drills_drill_id_seq')")
        .ok()
        .flatten()
        .unwrap_or_else(|| ToolkitError::wrong_state("cannot allocate a drill id").raise())
}

/// Restores a backup (default: the latest completed one) and its chain into a scratch directory,
/// recovers it to `p_target` (default: the end of the archived WAL) on a throwaway server,
/// checks it and removes it. Returns the drill_id of its restore_drills row; with `p_wait`,
/// once the drill has finished.
#[pg_extern(volatile)]
fn run_restore_drill(
    p_backup_id: default!(Option<i64>, "NULL"),
    p_target: default!(Option<TimestampWithTimeZone>, "NULL"),
    p_wait: default!(Option<bool>, false),
) -> i64 {
    let wait = require(p_wait, "p_wait");
    // SAFETY: reads this backend's user.
    if !unsafe { pg_sys::superuser() } {
        ToolkitError::insufficient_privilege(
            "only superusers may run restore drills: a drill reads every backup and starts a server as the server's OS user",
        )
        .raise();
    }
    if crate::settings::drill_directory().is_none() {
        ToolkitError::wrong_state("admin_toolkit.drill_directory is not set")
            .with_hint("Set it to a directory outside the data directory with room for a restored backup, and reload.")
            .raise();
    }
    if let Ok(Some(running)) = crate::query::read_scalar::<i64>(ONE_AT_A_TIME) {
        ToolkitError::wrong_state(format!(
            "restore drill {running} is running; one drill runs at a time"
        ))
        .raise();
    }
    if let Some(id) = p_backup_id {
        let status = Spi::get_one_with_args::<String>(
            "SELECT status || '/' || backup_type FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[id.into()],
        )
        .ok()
        .flatten();
        match status.as_deref() {
            None => ToolkitError::undefined_object(format!("backup {id} does not exist")).raise(),
            Some("completed/full") | Some("completed/incremental") => {}
            Some(other) => ToolkitError::wrong_state(format!(
                "backup {id} cannot be drilled: it is {}",
                other.replace('/', " ")
            ))
            .with_hint("Drill a completed full or incremental backup.")
            .raise(),
        }
    }
    let target = p_target.map(|t| {
        Spi::get_one_with_args::<i64>(
            "SELECT (extract(epoch FROM $1) * 1000000)::int8",
            &[t.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| ToolkitError::invalid_parameter("unreadable p_target").raise())
    });
    let drill_id = next_drill_id();
    // SAFETY: reads this backend's user.
    let role = unsafe { pg_sys::GetUserId() }.to_u32();
    let job = jobs::here(
        JobKind::Drill {
            schedule_id: 0,
            drill_id,
            backup_id: p_backup_id.unwrap_or(0),
            target,
        },
        role,
    );
    let worker = jobs::start(&job, true).unwrap_or_else(|e| e.raise());
    jobs::wait(worker, wait, Duration::from_secs(5), || {
        drill_row_exists(drill_id)
    });
    if wait && !drill_row_exists(drill_id) {
        ToolkitError::wrong_state(format!(
            "the drill job exited without recording drill {drill_id}; see the server log"
        ))
        .raise();
    }
    drill_id
}

/// Whether `program` (admin_toolkit.cli_path) is an executable file, which the drill's
/// restore_command runs.
fn check_program(program: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(program) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => Err(format!(
            "admin_toolkit.cli_path \"{}\" is not an executable program, and the drill's recovery runs its wal-get: install admin-toolkit (the Debian package puts it in /usr/bin; from source, scripts/setup.sh or `cargo build --release -p admin-toolkit-cli`) and set admin_toolkit.cli_path to it",
            program.display()
        )),
    }
}

/// Entry point of a restore drill job worker.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_drill_job(_arg: pg_sys::Datum) {
    if let Some(JobDescriptor {
        kind:
            JobKind::Drill {
                schedule_id,
                drill_id,
                backup_id,
                target,
            },
        ..
    }) = jobs::begin()
    {
        run(schedule_id, drill_id, backup_id, target);
    }
}

/// What the drill works on, read when it starts.
struct Start {
    backup_id: i64,
    backup_path: String,
    superuser: String,
    scratch: PathBuf,
}

/// Starts recording drill `drill_id`: its row, 'running' with the backup it restores, or
/// 'failed' with why it cannot run. Holds the retention lock for the drill's life, so that
/// cleanup never deletes the backup or WAL it reads.
fn begin(
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
    let insert = |status: &str, reason: Option<&str>| {
        jobs::bookkeeping(|| {
            if status == "running" {
                Spi::run(super::retention::SHARE_RETENTION_LOCK)?;
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
                    status.into(),
                    reason.into(),
                    pid.into(),
                    scratch.clone().into(),
                ],
            )
        })
    };
    if let Some(why) = refusal {
        insert("failed", Some(&why))?;
        log!("admin_toolkit job: restore drill {drill_id} refused: {why}");
        return Ok(None);
    }
    if let Err(e) = insert("running", None) {
        // The unique index on running drills: another one started meanwhile.
        let why = format!("another restore drill is running; one drill runs at a time ({e})");
        insert("failed", Some(&why))?;
        return Ok(None);
    }
    Ok(chosen.ok())
}

/// The backup to drill and the drill's scratch directory, or why there is none. Needs a
/// transaction.
fn choose(schedule: Option<i32>, backup_id: i64, drill_id: i64) -> Result<Start, String> {
    let Some(dir) = crate::settings::drill_directory() else {
        return Err("admin_toolkit.drill_directory is not set".into());
    };
    if let Ok(Some(running)) = crate::query::read_scalar::<i64>(ONE_AT_A_TIME) {
        return Err(format!(
            "restore drill {running} is running; one drill runs at a time"
        ));
    }
    let row = Spi::connect(|c| {
        let rows = c.select(
            "SELECT h.backup_id, h.backup_path, (SELECT rolname::text FROM pg_catalog.pg_authid WHERE oid = 10) \
               FROM admin_toolkit.backup_history h \
              WHERE h.status = 'completed' AND h.backup_type IN ('full', 'incremental') \
                AND ($1::int8 = 0 OR h.backup_id = $1) \
                AND ($2::int4 IS NULL OR h.schedule_id = (SELECT backup_schedule_id \
                       FROM admin_toolkit.restore_drill_schedules WHERE schedule_id = $2) \
                     OR (SELECT backup_schedule_id FROM admin_toolkit.restore_drill_schedules \
                          WHERE schedule_id = $2) IS NULL) \
              ORDER BY h.end_lsn DESC NULLS LAST, h.backup_id DESC LIMIT 1",
            Some(1),
            &[backup_id.into(), schedule.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let r = rows.first();
        Ok::<_, spi::Error>(Some((
            r.get::<i64>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
        )))
    })
    .map_err(|e| e.to_string())?;
    let Some((backup_id, backup_path, superuser)) = row else {
        return Err(if backup_id > 0 {
            format!("backup {backup_id} is not a completed full or incremental backup")
        } else {
            "there is no completed backup to drill".to_string()
        });
    };
    let data = super::schedule::data_directory();
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

/// A failed or cancelled drill: its status and why.
type Failure = (&'static str, String);

fn failed(why: impl Into<String>) -> Failure {
    ("failed", why.into())
}

/// A drill stopped by a cancellation or a shutdown.
fn stopped(stop: Option<jobs::Interruption>) -> Failure {
    let (status, why) = stop.unwrap_or(("cancelled", "cancelled"));
    (status, format!("{why} during the drill"))
}

/// The drill's scratch directory, removed when the drill ends however it ends.
struct Scratch(PathBuf);

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
struct Measures {
    backup_ids: Vec<i64>,
    restored_bytes: Option<u64>,
    restore_seconds: Option<f64>,
    wal_bytes: Option<u64>,
    wal_seconds: Option<f64>,
    rto_seconds: Option<f64>,
    last_replayed_micros: Option<i64>,
    rpo_seconds: Option<f64>,
    checks_seconds: Option<f64>,
    checks: Value,
}

fn run(schedule_id: i32, drill_id: i64, backup_id: i64, target: Option<i64>) {
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
            Some(why) => ("failed", Some(why)),
            None => ("passed", None),
        },
        Err((status, why)) => (status, Some(why)),
    };
    finish(drill_id, status, reason.as_deref(), &measures);
}

fn check_failure_of(m: &Measures) -> Option<String> {
    m.checks
        .get("failure")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Every step of a drill; an error ends it with that status and reason.
fn drill(
    start: &Start,
    drill_id: i64,
    target: Option<i64>,
    began: DateTime<Utc>,
    m: &mut Measures,
) -> Result<(), Failure> {
    // The program recovery runs comes first: without it, restoring would be wasted work.
    check_program(&crate::settings::cli_path()).map_err(failed)?;
    let s3 = crate::settings::s3();
    let keys = crate::settings::key_dir();
    // Accepted only as what its catalog row says (key, backup, cluster, chain).
    let manifest: Manifest = try_transaction(|| super::store::expected_of(start.backup_id))
        .and_then(|expected| expected)
        .and_then(|expected| {
            BackupStore::open(&start.backup_path, &s3)
                .and_then(|store| store.load_manifest(&keys, &expected))
        })
        .and_then(|manifest| {
            try_transaction(|| super::store::check_chain(&manifest)).and_then(|c| c)?;
            Ok(manifest)
        })
        .map_err(|e| failed(format!("backup {} cannot be read: {e}", start.backup_id)))?;
    m.backup_ids = manifest.chain.iter().map(|l| l.backup_id).collect();
    record_progress(drill_id, m);
    // The WAL it needs must all be in the archive: a gap is named before anything is restored.
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
    let plan = storage::open(&archive, &s3)
        .map_err(|e| e.to_string())
        .and_then(|st| {
            Archive::read(
                st.as_ref(),
                &manifest.system_identifier,
                manifest.wal_segment_size,
                &keys,
                super::store::archive_sealed(),
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
    // Free space first, with the figures: WAL is counted up to 64 segments, as recovery keeps
    // only the segments it reads and recycles the rest at restartpoints.
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
    // The scratch directory, removed at the end whatever happens.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&start.scratch)
        .map_err(|e| {
            failed(format!(
                "cannot create \"{}\": {e}",
                start.scratch.display()
            ))
        })?;
    let _scratch = Scratch(start.scratch.clone());
    std::fs::write(start.scratch.join(MARKER_FILE), drill_id.to_string()).map_err(|e| {
        failed(format!(
            "cannot write in \"{}\": {e}",
            start.scratch.display()
        ))
    })?;
    let data = start.scratch.join("data");

    let restore_started = Instant::now();
    let mut stop = None;
    let restored = restore(
        &manifest,
        &data,
        default_threads(),
        &s3,
        &keys,
        &mut |_, _| match interruption() {
            Some(why) => {
                stop = Some(why);
                Err("stopped".into())
            }
            None => Ok(()),
        },
    );
    let restored = match restored {
        Ok(r) => r,
        Err(_) if stop.is_some() => return Err(stopped(stop)),
        Err(e) => {
            return Err(failed(format!(
                "restoring backup {} failed: {e}",
                start.backup_id
            )))
        }
    };
    m.restored_bytes = Some(restored.bytes);
    m.restore_seconds = Some(restore_started.elapsed().as_secs_f64());
    record_progress(drill_id, m);

    let recovery_target = target.map(|t| {
        RecoveryTarget::Time(
            DateTime::from_timestamp_micros(t)
                .unwrap_or_default()
                .format("%Y-%m-%d %H:%M:%S%.6f+00")
                .to_string(),
        )
    });
    // The restored directory is production's: its settings never reach the drill's server.
    restored::neutralise(&data, &start.scratch).map_err(failed)?;
    let program = crate::settings::cli_path();
    write_recovery_settings(
        &data,
        &RecoverySettings {
            backup: &start.backup_path,
            program: &program,
            archive: Some(&archive),
            target: recovery_target.as_ref(),
            s3: &s3,
            keys: &keys,
            require_sealed: super::store::archive_sealed(),
            keep_archiving: false,
            // The drill's server gets its network settings on its command line.
            socket_directory: None,
        },
    )
    .map_err(failed)?;

    let bindir = server_bindir();
    let port = 50_000 + u16::try_from(drill_id.rem_euclid(10_000)).unwrap_or(0);
    let replay_started = Instant::now();
    let mut server = Throwaway::start(
        &bindir,
        &start.scratch,
        &data,
        port,
        drill_id,
        &start.superuser,
    )
    .map_err(failed)?;
    let mut stop = None;
    let promoted = server.wait_until_promoted(&mut || {
        stop = interruption();
        stop.is_some()
    });
    match promoted {
        Ok(()) => {}
        Err(Stopped::Asked) => {
            let _stop_error_is_superseded = server.stop(Duration::from_secs(30));
            return Err(stopped(stop));
        }
        Err(Stopped::Exited(why)) => return Err(failed(why)),
    }
    m.wal_seconds = Some(replay_started.elapsed().as_secs_f64());
    m.rto_seconds = Some(restore_started.elapsed().as_secs_f64());
    record_progress_promoted(drill_id, m);

    // What recovery reached: the last transaction replayed, and where it ended.
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
    let reference = target.unwrap_or_else(|| began.timestamp_micros());
    m.rpo_seconds = m
        .last_replayed_micros
        .map(|last| (reference - last) as f64 / 1e6);

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

/// The checks of every restored database (core::drill::checks says how a hostile catalog is
/// kept from steering them): as superuser, amcheck on every B-tree index; as each table's
/// owner, the row counts of its tables.
fn check_databases(server: &Throwaway, superuser: &str) -> Result<Vec<DatabaseChecks>, Failure> {
    server
        .psql_as(
            superuser,
            true,
            "template1",
            &[DISABLE_EVENT_TRIGGERS, PREPARE_CLUSTER],
        )
        .map_err(|e| failed(format!("cannot prepare the restored server's checks: {e}")))?;
    let databases = server
        .psql("template1", DATABASES_SQL)
        .map_err(|e| failed(format!("cannot list the restored databases: {e}")))?;
    let (index_sql, owners_sql, count_sql) = (index_check_sql(), owners_sql(), count_sql());
    let mut results: Vec<DatabaseChecks> = Vec::new();
    for hex in databases.lines().filter(|l| !l.is_empty()) {
        let database = decode_name(hex).map_err(failed)?;
        if let Some(why) = interruption() {
            return Err(stopped(Some(why)));
        }
        let cannot = |e: String| {
            failed(format!(
                "the checks could not run in database \"{database}\": {e}"
            ))
        };
        let mut checks = DatabaseChecks {
            database: database.clone(),
            ..DatabaseChecks::default()
        };
        let output = server
            .psql_as(
                superuser,
                true,
                &database,
                &[DISABLE_EVENT_TRIGGERS, LIFT_FORCED_ROW_SECURITY, &index_sql],
            )
            .map_err(cannot)?;
        parse_checks(&mut checks, &output).map_err(failed)?;
        let owners = server.psql(&database, &owners_sql).map_err(cannot)?;
        for hex in owners.lines().filter(|l| !l.is_empty()) {
            let owner = decode_name(hex).map_err(failed)?;
            let counts = server
                .psql_as(&owner, false, &database, &[&count_sql])
                .map_err(|e| cannot(format!("as \"{owner}\": {e}")))?;
            parse_checks(&mut checks, &counts).map_err(failed)?;
        }
        results.push(checks);
    }
    Ok(results)
}

/// Directory of this server's programs (postgres, psql).
fn server_bindir() -> PathBuf {
    // SAFETY: my_exec_path is set at process start and never changes.
    let exe = unsafe { std::ffi::CStr::from_ptr((&raw const pg_sys::my_exec_path).cast()) };
    Path::new(&*exe.to_string_lossy())
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn checks_json(results: &[DatabaseChecks]) -> Value {
    let databases: Vec<Value> = results
        .iter()
        .map(|d| {
            json!({
                "database": d.database,
                "indexes_checked": d.indexes_checked,
                "index_failures": d.index_failures.iter()
                    .map(|(index, error)| json!({"index": index, "error": error}))
                    .collect::<Vec<_>>(),
                "row_counts": d.row_counts.iter()
                    .map(|(t, n)| (t.clone(), json!(n)))
                    .collect::<serde_json::Map<_, _>>(),
                "skipped": d.skipped.iter()
                    .map(|(o, why)| (o.clone(), json!(why)))
                    .collect::<serde_json::Map<_, _>>(),
                "unreadable": d.unreadable.iter()
                    .map(|(t, why)| (t.clone(), json!(why)))
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let mut checks = json!({
        "databases": databases,
        "indexes_checked": results.iter().map(|d| d.indexes_checked).sum::<u64>(),
        "tables_counted": results.iter().map(|d| d.row_counts.len()).sum::<usize>(),
    });
    if let Some(why) = check_failure(results) {
        checks["failure"] = json!(why);
    }
    checks
}

/// An int8[] literal: [`jobs::record`]'s arguments are made outside a transaction, where an
/// array's type cannot be looked up.
fn id_array(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("{{{}}}", ids.join(","))
}

fn record_progress(drill_id: i64, m: &Measures) {
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

fn record_progress_promoted(drill_id: i64, m: &Measures) {
    jobs::record(
        "UPDATE admin_toolkit.restore_drills SET promoted_at = clock_timestamp(), \
                wal_replay_seconds = $2::float8::numeric, rto_seconds = $3::float8::numeric \
          WHERE drill_id = $1",
        vec![drill_id.into(), m.wal_seconds.into(), m.rto_seconds.into()],
    );
}

/// Records how the drill ended, with everything it measured; should that fail, at least the
/// status and the reason, so that a drill never stays 'running' behind its job.
fn finish(drill_id: i64, status: &str, reason: Option<&str>, m: &Measures) {
    let args = vec![
        drill_id.into(),
        status.into(),
        reason.into(),
        id_array(&m.backup_ids).into(),
        m.wal_bytes.map(|b| b as i64).into(),
        m.last_replayed_micros.into(),
        m.rpo_seconds.into(),
        m.checks_seconds.into(),
        m.checks.to_string().into(),
    ];
    let full = jobs::bookkeeping(|| {
        Spi::run_with_args(
            "UPDATE admin_toolkit.restore_drills SET status = $2, failure_reason = $3, \
                    finished_at = clock_timestamp(), backup_ids = $4::int8[], wal_bytes_replayed = $5::int8, \
                    last_replayed_transaction = to_timestamp($6::int8 / 1e6), \
                    rpo_seconds = round($7::float8::numeric, 6), checks_seconds = $8::float8::numeric, \
                    checks = $9::jsonb \
              WHERE drill_id = $1",
            &args,
        )
    });
    if let Err(e) = full {
        log!("admin_toolkit job: recording drill {drill_id}'s measures failed: {e}");
        let why = reason.map_or_else(
            || format!("the drill's measures could not be recorded: {e}"),
            str::to_string,
        );
        jobs::record(
            "UPDATE admin_toolkit.restore_drills SET status = 'failed', failure_reason = $2, \
                    finished_at = clock_timestamp() WHERE drill_id = $1",
            vec![drill_id.into(), why.into()],
        );
    }
    match reason {
        Some(why) => log!("admin_toolkit job: restore drill {drill_id} {status}: {why}"),
        None => log!("admin_toolkit job: restore drill {drill_id} {status}"),
    }
}

/// Starts a drill job, as the schedule's owner, for every active drill schedule that is due.
pub fn start_due_drills() -> spi::Result<usize> {
    start_due("restore_drill_schedules", |schedule_id, owner| {
        let drill_id = next_drill_id();
        match jobs::owner_oid(owner) {
            Ok(role) => {
                let job = jobs::here(
                    JobKind::Drill {
                        schedule_id,
                        drill_id,
                        backup_id: 0,
                        target: None,
                    },
                    role,
                );
                jobs::start(&job, false).is_ok()
            }
            Err(refusal) => {
                let recorded = Spi::run_with_args(
                    "INSERT INTO admin_toolkit.restore_drills (drill_id, schedule_id, status, failure_reason, finished_at, owner) \
                     VALUES ($1, $2, 'failed', $3, clock_timestamp(), $4)",
                    &[drill_id.into(), schedule_id.into(), refusal.message().into(), owner.into()],
                );
                if let Err(e) = recorded {
                    log!("admin_toolkit worker: recording refused drill {drill_id} failed: {e}");
                }
                true
            }
        }
    })
}

/// Drills whose job is gone (crash, kill, restart) are marked failed; the throwaway server they
/// left is stopped and their scratch directory removed, as is any drill directory no running
/// drill owns.
pub fn upkeep_drills() -> spi::Result<()> {
    let gone: Vec<(i64, Option<String>)> = Spi::connect_mut(|c| {
        c.update(
            "UPDATE admin_toolkit.restore_drills d SET status = 'failed', finished_at = clock_timestamp(), \
                    failure_reason = 'interrupted: the drill job exited before finishing' \
              WHERE status = 'running' AND NOT EXISTS \
                    (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = d.pid \
                        AND a.backend_type = 'admin_toolkit job') \
             RETURNING drill_id, scratch_directory",
            None,
            &[],
        )?
        .map(|r| Ok::<_, spi::Error>((r.get::<i64>(1)?.unwrap_or_default(), r.get::<String>(2)?)))
        .collect::<spi::Result<Vec<_>>>()
    })?;
    for (drill_id, _) in &gone {
        log!("admin_toolkit worker: restore drill {drill_id} was interrupted; marked failed");
    }
    let Some(dir) = crate::settings::drill_directory() else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let running: Vec<i64> = Spi::connect(|c| {
        c.select(
            "SELECT drill_id FROM admin_toolkit.restore_drills WHERE status = 'running'",
            None,
            &[],
        )?
        .map(|r| Ok(r.get::<i64>(1)?.unwrap_or_default()))
        .collect::<spi::Result<Vec<_>>>()
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(drill_id) = drill_of_scratch(&name) else {
            continue;
        };
        let path = entry.path();
        if running.contains(&drill_id) || !path.join(MARKER_FILE).is_file() {
            continue;
        }
        match stop_leftover(&path.join("data")) {
            Ok(true) => {
                log!("admin_toolkit worker: stopped the restored server left by drill {drill_id}")
            }
            Ok(false) => {}
            Err(e) => {
                log!("admin_toolkit worker: {e}");
                continue;
            }
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => log!(
                "admin_toolkit worker: removed \"{}\", left by drill {drill_id}",
                path.display()
            ),
            Err(e) => log!(
                "admin_toolkit worker: cannot remove \"{}\": {e}",
                path.display()
            ),
        }
    }
    Ok(())
}
