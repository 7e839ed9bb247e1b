//! Maintenance runs: recording a run planned from its schedule (plan.rs), executing it in a job
//! worker, recording the outcome, and the scheduler's start of due jobs (`execute_maintenance()`
//! is in `api`).

use super::plan::{
    execute, load_schedule, lock_schedule, prepare, prepare_described, Plan, Schedule, Step,
    CAPTURE_WARNINGS,
};
use crate::jobs::ledger::MAINTENANCE;
use crate::jobs::{self, due::start_due, JobKind, RunStatus};
use pgrx::prelude::*;
use serde_json::{json, Value};

/// A run row, as the job worker first records it.
struct RunRecord<'a> {
    run_id: i64,
    owner: &'a str,
    schedule_id: i32,
    kind: &'a str,
    target: &'a str,
    status: RunStatus,
    command: Option<&'a str>,
    error: Option<&'a str>,
    details: Value,
}

fn insert_run(run: RunRecord) -> spi::Result<()> {
    let finished = run.status.finished();
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.maintenance_runs (run_id, schedule_id, maintenance_type, target_object, status, \
           command, error_message, details, finished_at, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, CASE WHEN $9 THEN clock_timestamp() END, $10)",
        &[
            run.run_id.into(),
            run.schedule_id.into(),
            run.kind.into(),
            run.target.into(),
            run.status.text(MAINTENANCE.table).into(),
            run.command.into(),
            run.error.into(),
            run.details.to_string().into(),
            finished.into(),
            run.owner.into(),
        ],
    )
}

/// Plans the run and records it; `None` when there is nothing to execute (recorded already).
fn plan(schedule_id: i32, run_id: i64, schedule: &Schedule) -> spi::Result<Option<Plan>> {
    let pid = unsafe { pg_sys::MyProcPid };
    // The role this job connected as (its schedule's owner); planning itself runs as superuser.
    let owner =
        crate::query::read_scalar::<String>("SELECT session_user::text")?.unwrap_or_default();
    let record = |target: &str,
                  status: RunStatus,
                  command: Option<&str>,
                  error: Option<&str>,
                  details: Value| {
        insert_run(RunRecord {
            run_id,
            owner: &owner,
            schedule_id,
            kind: &schedule.kind,
            target,
            status,
            command,
            error,
            details,
        })
    };
    if !lock_schedule(schedule_id)? {
        let message = format!("a run of schedule {schedule_id} is already in progress");
        let described = prepare_described(schedule);
        record(
            &described,
            RunStatus::Skipped,
            None,
            Some(&message),
            json!({"pid": pid}),
        )?;
        return Ok(None);
    }
    let prepared = prepare(
        &schedule.kind,
        &schedule.schema,
        &schedule.table,
        &schedule.options,
    )?;
    match prepared.step {
        Step::Failed(message) => {
            record(
                &prepared.target,
                RunStatus::Failed,
                None,
                Some(&message),
                json!({"pid": pid}),
            )?;
            Ok(None)
        }
        Step::Nothing(details) => {
            record(&prepared.target, RunStatus::Succeeded, None, None, details)?;
            Ok(None)
        }
        Step::Execute(plan, details) => {
            record(
                &prepared.target,
                RunStatus::Running,
                Some(&plan.command),
                None,
                details,
            )?;
            Ok(Some(plan))
        }
    }
}

/// Runs one maintenance run in this job worker, connected as the schedule's owner: plan and
/// record (bookkeeping, as superuser), execute top-level as the owner, record the outcome.
/// Errors of the command are recorded, not raised.
pub fn run(schedule_id: i32, run_id: i64) {
    let loaded = jobs::bookkeeping(|| {
        Spi::run(CAPTURE_WARNINGS)?;
        let here = crate::query::read_scalar::<String>("SELECT current_database()::text")?
            .unwrap_or_default();
        Ok((load_schedule(schedule_id, false)?, here))
    });
    let schedule = match loaded {
        Ok((Some(schedule), here)) => {
            if let Some(database) = schedule.target_database.clone().filter(|d| *d != here) {
                return super::remote::supervise(schedule_id, run_id, &schedule, &database);
            }
            schedule
        }
        Ok((None, _)) => {
            return log!("admin_toolkit job: maintenance schedule {schedule_id} no longer exists")
        }
        Err(e) => return log!("admin_toolkit job: planning run {run_id} failed: {e}"),
    };
    let plan = match jobs::bookkeeping(|| plan(schedule_id, run_id, &schedule)) {
        Ok(Some(plan)) => plan,
        Ok(None) => return,
        Err(e) => return log!("admin_toolkit job: planning run {run_id} failed: {e}"),
    };
    let (error, warnings) = execute(&plan);
    let status = if error.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    // The warnings as JSON text: arguments are made outside a transaction, where an array's
    // type cannot be looked up.
    let _logged = MAINTENANCE.finish(
        run_id,
        status,
        error.as_deref(),
        vec![(
            "details = details || jsonb_build_object('warnings', $::jsonb)",
            json!(warnings).to_string().into(),
        )],
    );
}

/// Deactivates active schedules whose database no longer exists, with a note saying so: they
/// would otherwise fail at every due time.
fn deactivate_orphaned_schedules() -> spi::Result<()> {
    let gone: Vec<(i32, String)> = Spi::connect_mut(|c| {
        c.update(
            "UPDATE admin_toolkit.maintenance_schedules s SET is_active = false, \
                    note = format('deactivated at %s: database %s no longer exists', \
                                  to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC'), \
                                  quote_ident(target_database)) \
              WHERE is_active AND target_database IS NOT NULL \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d WHERE d.datname = s.target_database) \
             RETURNING schedule_id, target_database::text",
            None,
            &[],
        )?
        .map(|r| {
            Ok::<_, spi::Error>((
                r.get::<i32>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        })
        .collect::<spi::Result<Vec<_>>>()
    })?;
    for (schedule_id, database) in gone {
        log!(
            "admin_toolkit worker: maintenance schedule {schedule_id} deactivated: database \"{database}\" no longer exists"
        );
    }
    Ok(())
}

/// Starts a job worker, as the schedule's owner, for every active schedule that is due, and
/// moves its next_run on. The worker tick calls this; the jobs run on their own, so a long
/// VACUUM never holds up the tick. An owner that cannot run jobs gets an 'error' run saying
/// why. Returns how many due jobs could not start (no worker slot free): they stay due.
pub fn start_due_jobs() -> spi::Result<usize> {
    start_due("maintenance_schedules", |schedule_id, owner| {
        let run_id = MAINTENANCE.next_id();
        let job = jobs::owner_oid(owner).map(|role| {
            jobs::here(
                JobKind::Maintenance {
                    schedule_id,
                    run_id,
                },
                role,
            )
        });
        match job {
            Ok(job) => {
                let started = jobs::start(&job, false).is_ok();
                if !started {
                    debug1!("admin_toolkit worker: no background worker slot for maintenance schedule {schedule_id}");
                }
                started
            }
            Err(refusal) => {
                MAINTENANCE.refuse(run_id, schedule_id, owner, refusal.message());
                true
            }
        }
    })
}

/// The scheduler's upkeep, each minute before due jobs start: runs whose job worker is gone
/// (terminated, crashed, server shutdown) are marked as interrupted errors, and schedules of
/// databases that no longer exist are deactivated.
pub fn upkeep_maintenance() -> spi::Result<()> {
    for run_id in MAINTENANCE.sweep_vanished("job worker")? {
        log!("admin_toolkit worker: maintenance run {run_id} was interrupted; marked as an error");
    }
    deactivate_orphaned_schedules()
}

/// Deletes runs older than the retention (with the hourly upkeep of the logs).
pub fn forget_old_runs(retention_days: i32) -> spi::Result<()> {
    Spi::run_with_args(
        "DELETE FROM admin_toolkit.maintenance_runs WHERE started_at < now() - make_interval(days => $1)",
        &[retention_days.into()],
    )
}
