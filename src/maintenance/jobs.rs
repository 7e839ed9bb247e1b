//! Maintenance runs: planning a run from its schedule, executing it in a job worker, recording
//! the outcome; `execute_maintenance()` and the scheduler's start of due jobs.

use crate::error::ToolkitError;
use crate::jobs::{self, schedules::start_due, JobDescriptor, JobKind};
use crate::worker::top_level;
use admin_toolkit_core::maintenance::{
    build_command, qualified, quote_ident, valid_timeout, waits_for_older_snapshots,
    MaintenanceOptions, MaintenanceType, Target,
};
use pgrx::prelude::*;
use serde_json::{json, Value};

/// A schedule row, as a run needs it.
struct Schedule {
    kind: String,
    owner: String,
    schema: Option<String>,
    table: Option<String>,
    options: Value,
}

fn load_schedule(schedule_id: i32, active_only: bool) -> spi::Result<Option<Schedule>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT maintenance_type, target_schema, target_table, maintenance_options::text, owner::text \
             FROM admin_toolkit.maintenance_schedules WHERE schedule_id = $1 AND (is_active OR NOT $2)",
            Some(1),
            &[schedule_id.into(), active_only.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        Ok(Some(Schedule {
            kind: row.get::<String>(1)?.unwrap_or_default(),
            schema: row.get::<String>(2)?,
            table: row.get::<String>(3)?,
            options: row
                .get::<String>(4)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(json!({})),
            owner: row.get::<String>(5)?.unwrap_or_default(),
        }))
    })
}

/// The supported options, and the keys that were ignored (reported in the run's details).
fn parse_options(options: &Value) -> Result<(MaintenanceOptions, Vec<String>), String> {
    let mut parsed = MaintenanceOptions::default();
    let mut ignored = Vec::new();
    for (key, value) in options.as_object().into_iter().flatten() {
        let flag = || {
            value.as_bool().ok_or(format!(
                "maintenance option \"{key}\" must be true or false"
            ))
        };
        let timeout = || {
            value
                .as_str()
                .map(str::to_string)
                .or_else(|| value.as_u64().map(|n| n.to_string()))
                .filter(|v| valid_timeout(v))
                .ok_or(format!(
                    "maintenance option \"{key}\" must be a duration such as \"30s\" or \"500ms\""
                ))
        };
        match key.as_str() {
            "analyze" => parsed.analyze = flag()?,
            "freeze" => parsed.freeze = flag()?,
            "concurrent" => parsed.concurrent = flag()?,
            "lock_timeout" => parsed.lock_timeout = Some(timeout()?),
            "statement_timeout" => parsed.statement_timeout = Some(timeout()?),
            other => ignored.push(other.to_string()),
        }
    }
    Ok((parsed, ignored))
}

fn target_of(s: &Schedule) -> spi::Result<Result<Target, String>> {
    let database =
        crate::query::read_scalar::<String>("SELECT current_database()::text")?.unwrap_or_default();
    Ok(match (&s.schema, &s.table) {
        (Some(schema), Some(table)) => {
            let exists = Spi::connect(|c| {
                c.select(
                    "SELECT to_regclass($1) IS NOT NULL",
                    Some(1),
                    &[qualified(schema, table).into()],
                )?
                .first()
                .get_one::<bool>()
            })?;
            if exists == Some(true) {
                Ok(Target::Table {
                    schema: schema.clone(),
                    table: table.clone(),
                })
            } else {
                Err(format!("table {} does not exist", qualified(schema, table)))
            }
        }
        (Some(schema), None) => {
            let tables: Vec<String> = Spi::connect(|c| {
                let rows = c.select(
                    "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'm', 'p') AND NOT c.relispartition ORDER BY 1",
                    None,
                    &[schema.clone().into()],
                )?;
                rows.map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
                    .collect::<spi::Result<Vec<_>>>()
            })?;
            let exists = Spi::connect(|c| {
                c.select(
                    "SELECT to_regnamespace($1) IS NOT NULL",
                    Some(1),
                    &[quote_ident(schema).into()],
                )?
                .first()
                .get_one::<bool>()
            })?;
            if exists == Some(true) {
                Ok(Target::Schema {
                    schema: schema.clone(),
                    tables,
                })
            } else {
                Err(format!("schema {} does not exist", quote_ident(schema)))
            }
        }
        (None, _) => Ok(Target::Database(database)),
    })
}

/// Tables whose statistics are stale: never analyzed, or changed by more than 10 % (at least
/// 50 rows) since their last ANALYZE, within the target.
fn stale_tables(target: &Target) -> spi::Result<Vec<(String, String)>> {
    let (schema, table) = match target {
        Target::Database(_) => (None, None),
        Target::Schema { schema, .. } => (Some(schema.clone()), None),
        Target::Table { schema, table } => (Some(schema.clone()), Some(table.clone())),
    };
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT schemaname::text, relname::text FROM pg_catalog.pg_stat_user_tables \
             WHERE ($1::text IS NULL OR schemaname = $1) AND ($2::text IS NULL OR relname = $2) \
               AND ((last_analyze IS NULL AND last_autoanalyze IS NULL AND n_live_tup + n_dead_tup > 0) \
                    OR n_mod_since_analyze > greatest(50, 0.1 * n_live_tup)) \
             ORDER BY 1, 2",
            None,
            &[schema.into(), table.into()],
        )?;
        rows.map(|r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        })
        .collect()
    })
}

/// What the job worker runs after planning.
struct Plan {
    command: String,
    options: MaintenanceOptions,
    /// The command names its relations (a table or a schema's tables), so a relation skipped
    /// for lack of privilege means the run did not do what it says.
    names_relations: bool,
}

/// A run row, as the job worker first records it.
struct RunRecord<'a> {
    run_id: i64,
    owner: &'a str,
    schedule_id: i32,
    kind: &'a str,
    target: &'a str,
    status: &'a str,
    command: Option<&'a str>,
    error: Option<&'a str>,
    details: Value,
}

fn insert_run(run: RunRecord) -> spi::Result<()> {
    let finished = run.status != "running";
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.maintenance_runs (run_id, schedule_id, maintenance_type, target_object, status, \
           command, error_message, details, finished_at, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, CASE WHEN $9 THEN clock_timestamp() END, $10)",
        &[
            run.run_id.into(),
            run.schedule_id.into(),
            run.kind.into(),
            run.target.into(),
            run.status.into(),
            run.command.into(),
            run.error.into(),
            run.details.to_string().into(),
            finished.into(),
            run.owner.into(),
        ],
    )
}

/// Plans the run and records it; `None` when there is nothing to execute (recorded already).
fn plan(schedule_id: i32, run_id: i64) -> spi::Result<Option<Plan>> {
    let Some(schedule) = load_schedule(schedule_id, false)? else {
        log!("admin_toolkit job: maintenance schedule {schedule_id} no longer exists");
        return Ok(None);
    };
    let pid = unsafe { pg_sys::MyProcPid };
    // The role this job connected as (its schedule's owner); planning itself runs as superuser.
    let owner =
        crate::query::read_scalar::<String>("SELECT session_user::text")?.unwrap_or_default();
    let kind_name = schedule.kind.clone();
    let fail = |target: &str, message: String| {
        insert_run(RunRecord {
            run_id,
            owner: &owner,
            schedule_id,
            kind: &kind_name,
            target,
            status: "error",
            command: None,
            error: Some(&message),
            details: json!({"pid": pid}),
        })
        .map(|_| None)
    };
    let locked = Spi::connect(|c| {
        c.select(
            "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('admin_toolkit.maintenance'), $1)",
            Some(1),
            &[schedule_id.into()],
        )?
        .first()
        .get_one::<bool>()
    })?;
    let described = match (&schedule.schema, &schedule.table) {
        (Some(s), Some(t)) => format!("{s}.{t}"),
        (Some(s), None) => s.clone(),
        _ => "database".into(),
    };
    if locked != Some(true) {
        let message = format!("a run of schedule {schedule_id} is already in progress");
        return insert_run(RunRecord {
            run_id,
            owner: &owner,
            schedule_id,
            kind: &kind_name,
            target: &described,
            status: "skipped",
            command: None,
            error: Some(&message),
            details: json!({"pid": pid}),
        })
        .map(|_| None);
    }
    let kind = match MaintenanceType::parse(&schedule.kind) {
        Ok(k) => k,
        Err(e) => return fail(&described, e.0),
    };
    let (options, ignored) = match parse_options(&schedule.options) {
        Ok(o) => o,
        Err(e) => return fail(&described, e),
    };
    let target = match target_of(&schedule)? {
        Ok(t) => t,
        Err(e) => return fail(&described, e),
    };
    let stale = if kind == MaintenanceType::StatsUpdate {
        stale_tables(&target)?
    } else {
        Vec::new()
    };
    let details = json!({"pid": pid, "ignored_options": ignored, "stale_tables": stale.len()});
    match build_command(kind, &target, &options, &stale) {
        None => {
            let mut details = details;
            details["note"] = json!("nothing to do");
            insert_run(RunRecord {
                run_id,
                owner: &owner,
                schedule_id,
                kind: &kind_name,
                target: &target.describe(),
                status: "success",
                command: None,
                error: None,
                details,
            })?;
            Ok(None)
        }
        Some(command) => {
            insert_run(RunRecord {
                run_id,
                owner: &owner,
                schedule_id,
                kind: &kind_name,
                target: &target.describe(),
                status: "running",
                command: Some(&command),
                error: None,
                details,
            })?;
            Ok(Some(Plan {
                command,
                options,
                names_relations: !matches!(target, Target::Database(_)),
            }))
        }
    }
}

/// Runs one maintenance run in this job worker, connected as the schedule's owner: plan and
/// record (bookkeeping, as superuser), execute top-level as the owner, record the outcome.
/// Errors of the command are recorded, not raised.
fn run(schedule_id: i32, run_id: i64) {
    // Warnings must reach the capture hook (see top_level::execute_capturing).
    let planned = jobs::bookkeeping(|| {
        Spi::run(
            "SELECT pg_catalog.set_config('log_min_messages', 'warning', false) \
             WHERE pg_catalog.current_setting('log_min_messages') IN ('error', 'log', 'fatal', 'panic')",
        )?;
        plan(schedule_id, run_id)
    });
    let plan = match planned {
        Ok(Some(plan)) => plan,
        Ok(None) => return,
        Err(e) => return log!("admin_toolkit job: planning run {run_id} failed: {e}"),
    };
    // Timeouts are session settings of this job worker, set top-level before the command.
    let timeouts = [
        ("lock_timeout", &plan.options.lock_timeout),
        ("statement_timeout", &plan.options.statement_timeout),
    ];
    let mut statements: Vec<String> = timeouts
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("SET {name} = '{v}'")))
        .collect();
    statements.push(plan.command.clone());
    let mut error = None;
    let mut warnings = Vec::new();
    for sql in &statements {
        // SAFETY: a job worker between transactions.
        let outcome = unsafe { top_level::execute_capturing(sql) };
        warnings.extend(outcome.warnings);
        if outcome.error.is_some() {
            error = outcome.error;
            break;
        }
    }
    // VACUUM and ANALYZE skip, with a WARNING, what the owner may not maintain: for named
    // relations that is a refusal, and the run says so.
    let skipped: Vec<&String> = warnings
        .iter()
        .filter(|w| w.starts_with("skipping"))
        .collect();
    if error.is_none() && plan.names_relations && !skipped.is_empty() {
        error = Some(format!(
            "permission denied: {}",
            skipped
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let status = if error.is_some() { "error" } else { "success" };
    jobs::record(
        "WITH run AS ( \
            UPDATE admin_toolkit.maintenance_runs SET status = $2, error_message = $3, finished_at = clock_timestamp(), \
                   details = details || jsonb_build_object('warnings', $4::jsonb) \
             WHERE run_id = $1 RETURNING started_at) \
         UPDATE admin_toolkit.maintenance_schedules SET last_run = (SELECT started_at FROM run) WHERE schedule_id = $5",
        vec![
            run_id.into(),
            status.into(),
            error.into(),
            // JSON text: arguments are made outside a transaction, where an array's type
            // cannot be looked up.
            json!(warnings).to_string().into(),
            schedule_id.into(),
        ],
    );
}

/// Entry point of a maintenance job worker.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_maintenance_job(_arg: pg_sys::Datum) {
    if let Some(JobDescriptor {
        kind: JobKind::Maintenance {
            schedule_id,
            run_id,
        },
        ..
    }) = jobs::begin()
    {
        run(schedule_id, run_id);
    }
}

fn next_run_id() -> i64 {
    Spi::get_one::<i64>("SELECT nextval('admin_toolkit.maintenance_runs_run_id_seq')")
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            ToolkitError::wrong_state("cannot allocate a maintenance run id").raise()
        })
}

/// Starts a job worker, as the schedule's owner, for every active schedule that is due, and
/// moves its next_run on. The worker tick calls this; the jobs run on their own, so a long
/// VACUUM never holds up the tick. An owner that cannot run jobs gets an 'error' run saying
/// why. Returns how many due jobs could not start (no worker slot free): they stay due.
pub fn start_due_jobs() -> spi::Result<usize> {
    start_due("maintenance_schedules", |schedule_id, owner| {
        let run_id = next_run_id();
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
                if let Err(e) = record_refused(schedule_id, run_id, owner, refusal.message()) {
                    log!("admin_toolkit worker: recording refused maintenance run {run_id} failed: {e}");
                }
                true
            }
        }
    })
}

/// An 'error' run for a schedule whose job could not start as its owner.
fn record_refused(schedule_id: i32, run_id: i64, owner: &str, message: &str) -> spi::Result<()> {
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.maintenance_runs (run_id, schedule_id, maintenance_type, target_object, status, \
           error_message, finished_at, owner) \
         SELECT $1, schedule_id, maintenance_type, coalesce(target_schema || coalesce('.' || target_table, ''), 'database'), \
                'error', $3, clock_timestamp(), $4 \
           FROM admin_toolkit.maintenance_schedules WHERE schedule_id = $2",
        &[run_id.into(), schedule_id.into(), message.into(), owner.into()],
    )
}

/// Marks runs whose job worker is gone (server shutdown, crash, cancellation) as interrupted,
/// and deletes runs older than the retention.
pub fn upkeep_runs(retention_days: i32) -> spi::Result<()> {
    Spi::run_with_args(
        "UPDATE admin_toolkit.maintenance_runs r SET status = 'error', finished_at = clock_timestamp(), \
                error_message = 'interrupted: the job worker exited before finishing' \
          WHERE status = 'running' AND NOT EXISTS \
                (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = (r.details->>'pid')::int \
                    AND a.backend_type = 'admin_toolkit job')",
        &[],
    )?;
    Spi::run_with_args(
        "DELETE FROM admin_toolkit.maintenance_runs WHERE started_at < now() - make_interval(days => $1)",
        &[retention_days.into()],
    )
}

// The result type stays inline: pgrx derives the SQL signature from it.
#[allow(clippy::type_complexity)]
/// Runs a maintenance schedule now, through the same job worker as the scheduler, waits for
/// it and returns its real outcome (the specification's columns). REINDEX CONCURRENTLY is not
/// waited for (it waits for this very transaction's snapshot): its status is 'running' and its
/// outcome lands in maintenance_runs.
#[pg_extern(volatile)]
fn execute_maintenance(
    p_schedule_id: Option<i32>,
) -> spi::Result<
    TableIterator<
        'static,
        (
            name!(schedule_id, i32),
            name!(maintenance_type, String),
            name!(target_object, String),
            name!(status, String),
            name!(duration_seconds, i32),
            name!(details, pgrx::JsonB),
        ),
    >,
> {
    let schedule_id = crate::error::require(p_schedule_id, "p_schedule_id");
    let Some(schedule) = load_schedule(schedule_id, true)? else {
        return Ok(TableIterator::new(vec![(
            schedule_id,
            "unknown".to_string(),
            "N/A".to_string(),
            "error".to_string(),
            0,
            pgrx::JsonB(json!({"error": "Schedule not found or inactive"})),
        )]));
    };
    let wait = match (
        MaintenanceType::parse(&schedule.kind),
        parse_options(&schedule.options),
    ) {
        (Ok(kind), Ok((options, _))) => !waits_for_older_snapshots(kind, &options),
        _ => true,
    };
    let role = jobs::owner_oid(&schedule.owner).unwrap_or_else(|e| e.raise());
    let run_id = next_run_id();
    let job = jobs::here(
        JobKind::Maintenance {
            schedule_id,
            run_id,
        },
        role,
    );
    let worker = jobs::start(&job, true).unwrap_or_else(|e| e.raise());
    // Without waiting for the command, its run row appears once the job has planned.
    jobs::wait(worker, wait, std::time::Duration::from_secs(2), || {
        crate::query::read_scalar::<bool>(&format!(
            "SELECT EXISTS (SELECT 1 FROM admin_toolkit.maintenance_runs WHERE run_id = {run_id})"
        ))
        .ok()
        .flatten()
            == Some(true)
    });
    let row = Spi::connect(|c| {
        let rows = c.select(
            "SELECT maintenance_type, target_object, status, \
                    round(extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at))::int, \
                    jsonb_build_object('run_id', run_id, 'sql_command', command, 'error', error_message, \
                                       'executed_at', started_at) || details \
             FROM admin_toolkit.maintenance_runs WHERE run_id = $1",
            Some(1),
            &[run_id.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let r = rows.first();
        Ok::<_, spi::Error>(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
            r.get::<i32>(4)?.unwrap_or_default(),
            r.get::<pgrx::JsonB>(5)?.unwrap_or(pgrx::JsonB(json!({}))),
        )))
    })?;
    let (kind, target, status, duration, details) = row.unwrap_or_else(|| {
        (
            schedule.kind.clone(),
            "N/A".into(),
            "error".into(),
            0,
            pgrx::JsonB(json!({"run_id": run_id, "error": "the job worker exited without recording the run; see the server log"})),
        )
    });
    Ok(TableIterator::new(vec![(
        schedule_id,
        kind,
        target,
        status,
        duration,
        details,
    )]))
}
