//! Maintenance in another database than the toolkit's (`maintenance_schedules.target_database`).
//! A job worker can connect to one database only, and the toolkit's tables live in
//! `admin_toolkit.database`: so the schedule's maintenance job, connected there as the owner,
//! supervises — it records the run — and starts a second job connected to the target database
//! as the same owner, which plans and executes the command there. The work and its outcome
//! pass through files (core::handoff).

use super::plan::{
    execute, lock_schedule, prepare, prepare_described, Schedule, Step, CAPTURE_WARNINGS,
};
use crate::jobs::ledger::MAINTENANCE;
use crate::jobs::{self, handoff_dir, interruption, JobDescriptor, JobKind, RunStatus};
use crate::transaction::step::try_transaction;
use admin_toolkit_core::handoff::{
    self, outcome_path, request_path, MaintenanceOutcome, MaintenanceRequest,
};
use pgrx::bgworkers::BackgroundWorkerStatus;
use pgrx::prelude::*;
use serde_json::json;
use std::time::Duration;

/// What the supervisor learnt before starting the work.
enum Start {
    /// Recorded already (skipped, or refused with the reason).
    Done,
    Run {
        database: u32,
        role: u32,
    },
}

/// Records run `run_id` of `schedule` on `database`, has it executed there, and records the
/// outcome. Runs in the schedule's maintenance job (toolkit database, as the owner).
pub(super) fn supervise(schedule_id: i32, run_id: i64, schedule: &Schedule, database: &str) {
    let pid = unsafe { pg_sys::MyProcPid };
    let described = prepare_described(schedule);
    let start = jobs::bookkeeping(|| -> spi::Result<Start> {
        let insert = |status: RunStatus, error: Option<&str>| {
            Spi::run_with_args(
                "INSERT INTO admin_toolkit.maintenance_runs (run_id, schedule_id, maintenance_type, target_object, \
                   status, error_message, details, finished_at, owner, target_database) \
                 VALUES ($1, $2, $3, $4, $5, $6, jsonb_build_object('pid', $7), \
                         CASE WHEN $5 <> 'running' THEN clock_timestamp() END, session_user, $8)",
                &[
                    run_id.into(),
                    schedule_id.into(),
                    schedule.kind.clone().into(),
                    described.clone().into(),
                    status.text(MAINTENANCE.table).into(),
                    error.into(),
                    pid.into(),
                    database.into(),
                ],
            )
        };
        if !lock_schedule(schedule_id)? {
            let message = format!("a run of schedule {schedule_id} is already in progress");
            insert(RunStatus::Skipped, Some(&message))?;
            return Ok(Start::Done);
        }
        let found = crate::query::one_row(
            "SELECT d.oid::int8, d.datallowconn, \
                        pg_catalog.has_database_privilege(session_user, d.oid, 'CONNECT'), \
                        (SELECT oid::int8 FROM pg_catalog.pg_roles WHERE rolname = session_user) \
                   FROM pg_catalog.pg_database d WHERE d.datname = $1",
            &[database.into()],
            |r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    r.get::<bool>(2)?.unwrap_or(false),
                    r.get::<bool>(3)?.unwrap_or(false),
                    r.get::<i64>(4)?.unwrap_or_default(),
                ))
            },
        )?;
        let refusal = match found {
            None => Some(format!("database \"{database}\" does not exist")),
            Some((_, false, _, _)) => Some(format!(
                "database \"{database}\" does not accept connections"
            )),
            Some((_, _, false, _)) => Some(format!(
                "the schedule's owner may not connect to database \"{database}\""
            )),
            Some(_) => None,
        };
        if let Some(message) = refusal {
            insert(RunStatus::Failed, Some(&message))?;
            return Ok(Start::Done);
        }
        insert(RunStatus::Running, None)?;
        let (database, _, _, role) = found.unwrap_or_default();
        Ok(Start::Run {
            database: database as u32,
            role: role as u32,
        })
    });
    let (database_oid, role) = match start {
        Ok(Start::Run { database, role }) => (database, role),
        Ok(Start::Done) => return,
        Err(e) => return log!("admin_toolkit job: starting run {run_id} failed: {e}"),
    };
    let outcome = delegate(run_id, schedule, database_oid, role);
    let mut outcome = outcome.unwrap_or_else(|(status, error)| MaintenanceOutcome {
        target: described.clone(),
        status: status.text(MAINTENANCE.table).into(),
        command: None,
        error: Some(error),
        details: json!({}),
    });
    if outcome.target.is_empty() {
        outcome.target = described;
    }
    let status = RunStatus::parse(MAINTENANCE.table, &outcome.status).unwrap_or(RunStatus::Failed);
    let _logged = MAINTENANCE.finish(
        run_id,
        status,
        outcome.error.as_deref(),
        vec![
            ("target_object = $", outcome.target.into()),
            ("command = $", outcome.command.into()),
            (
                "details = details || $::jsonb",
                outcome.details.to_string().into(),
            ),
        ],
    );
}

/// Hands the work to a job in the target database and waits for its outcome; a cancellation
/// or shutdown of the supervisor stops that job too.
fn delegate(
    run_id: i64,
    schedule: &Schedule,
    database: u32,
    role: u32,
) -> Result<MaintenanceOutcome, (RunStatus, String)> {
    let dir = handoff_dir();
    let request = MaintenanceRequest {
        run_id,
        kind: schedule.kind.clone(),
        schema: schedule.schema.clone(),
        table: schedule.table.clone(),
        options: schedule.options.clone(),
    };
    handoff::write(&request_path(&dir, run_id), &request).map_err(|e| (RunStatus::Failed, e))?;
    let job = JobDescriptor {
        kind: JobKind::MaintenanceIn { run_id },
        role,
        database,
    };
    let worker = match jobs::start(&job, true) {
        Ok(w) => w,
        Err(e) => {
            handoff::remove(&dir, run_id);
            return Err((RunStatus::Failed, e.message().to_string()));
        }
    };
    let mut stopped = None;
    loop {
        if matches!(
            worker.pid(),
            Err(BackgroundWorkerStatus::Stopped) | Err(BackgroundWorkerStatus::PostmasterDied)
        ) {
            break;
        }
        if let Some(why) = interruption() {
            // The postmaster SIGTERMs the job, which cancels its command.
            stopped = Some(why);
            let _exit_is_what_we_wait_for = worker.terminate().wait_for_shutdown();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let outcome = handoff::read::<MaintenanceOutcome>(&outcome_path(&dir, run_id));
    handoff::remove(&dir, run_id);
    match (stopped, outcome) {
        (Some((_, why)), _) => Err((RunStatus::Failed, format!("interrupted: {why}"))),
        (None, Ok(outcome)) => Ok(outcome),
        (None, Err(e)) => Err((
            RunStatus::Failed,
            format!("the job in the target database exited without an outcome ({e}); see the server log"),
        )),
    }
}

/// The body of the job that does a maintenance run's work in its target database, connected
/// there as the schedule's owner.
pub fn work(run_id: i64) {
    let dir = handoff_dir();
    let request = match handoff::read::<MaintenanceRequest>(&request_path(&dir, run_id)) {
        Ok(r) => r,
        Err(e) => return log!("admin_toolkit job: maintenance run {run_id}: {e}"),
    };
    // Planning runs as the owner: it only reads the catalog of this database.
    let prepared = try_transaction(|| {
        Spi::run(CAPTURE_WARNINGS)?;
        prepare(
            &request.kind,
            &request.schema,
            &request.table,
            &request.options,
        )
    });
    let outcome = match prepared {
        Ok(Ok(prepared)) => match prepared.step {
            Step::Failed(message) => MaintenanceOutcome {
                target: prepared.target,
                status: RunStatus::Failed.text(MAINTENANCE.table).into(),
                command: None,
                error: Some(message),
                details: json!({}),
            },
            Step::Nothing(details) => MaintenanceOutcome {
                target: prepared.target,
                status: RunStatus::Succeeded.text(MAINTENANCE.table).into(),
                command: None,
                error: None,
                details: own_pid(details),
            },
            Step::Execute(plan, details) => {
                let (error, warnings) = execute(&plan);
                let mut details = own_pid(details);
                details["warnings"] = json!(warnings);
                MaintenanceOutcome {
                    target: prepared.target,
                    status: if error.is_some() {
                        RunStatus::Failed
                    } else {
                        RunStatus::Succeeded
                    }
                    .text(MAINTENANCE.table)
                    .into(),
                    command: Some(plan.command.clone()),
                    error,
                    details,
                }
            }
        },
        Ok(Err(e)) => failed_outcome(e.to_string()),
        Err(e) => failed_outcome(e),
    };
    if let Err(e) = handoff::write(&outcome_path(&dir, run_id), &outcome) {
        log!("admin_toolkit job: maintenance run {run_id}: {e}");
    }
}

/// The details with this job's pid as `pid_in_database`: `pid` is the supervisor's.
fn own_pid(mut details: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = details.as_object_mut() {
        if let Some(pid) = fields.remove("pid") {
            fields.insert("pid_in_database".into(), pid);
        }
    }
    details
}

fn failed_outcome(error: String) -> MaintenanceOutcome {
    MaintenanceOutcome {
        target: String::new(),
        status: RunStatus::Failed.text(MAINTENANCE.table).into(),
        command: None,
        error: Some(error),
        details: json!({}),
    }
}
