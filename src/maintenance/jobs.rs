//! Maintenance runs: planning a run from its schedule, executing it in a job worker, recording
//! the outcome; `execute_maintenance()` and the scheduler's start of due jobs.

use super::schedule::start_due;
use crate::error::ToolkitError;
use crate::worker::{job, top_level};
use admin_toolkit_core::maintenance::{
    build_command, qualified, quote_ident, valid_timeout, waits_for_older_snapshots,
    MaintenanceOptions, MaintenanceType, Target,
};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use serde_json::{json, Value};

/// A schedule row, as a run needs it.
struct Schedule {
    kind: String,
    schema: Option<String>,
    table: Option<String>,
    options: Value,
}

fn load_schedule(schedule_id: i32, active_only: bool) -> spi::Result<Option<Schedule>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT maintenance_type, target_schema, target_table, maintenance_options::text \
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
}

/// A run row, as the job worker first records it.
struct RunRecord<'a> {
    run_id: i64,
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
           command, error_message, details, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, CASE WHEN $9 THEN clock_timestamp() END)",
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
    let kind_name = schedule.kind.clone();
    let fail = |target: &str, message: String| {
        insert_run(RunRecord {
            run_id,
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
                schedule_id,
                kind: &kind_name,
                target: &target.describe(),
                status: "running",
                command: Some(&command),
                error: None,
                details,
            })?;
            Ok(Some(Plan { command, options }))
        }
    }
}

/// Runs one maintenance run in this job worker: plan and record, execute top-level, record
/// the outcome. Errors of the command are recorded, not raised.
pub fn run(schedule_id: i32, run_id: i64) {
    let plan =
        match PgTryBuilder::new(|| BackgroundWorker::transaction(|| plan(schedule_id, run_id)))
            .catch_others(|e| {
                log!("admin_toolkit job: planning run {run_id} failed: {e:?}");
                Ok(None)
            })
            .execute()
        {
            Ok(Some(plan)) => plan,
            Ok(None) => return,
            Err(e) => {
                log!("admin_toolkit job: planning run {run_id} failed: {e}");
                return;
            }
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
    // SAFETY: a job worker between transactions.
    let error = statements
        .iter()
        .find_map(|sql| unsafe { top_level::execute_catching(sql) });
    let status = if error.is_some() { "error" } else { "success" };
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(
            "UPDATE admin_toolkit.maintenance_runs SET status = $2, error_message = $3, finished_at = clock_timestamp() \
             WHERE run_id = $1",
            &[run_id.into(), status.into(), error.clone().into()],
        )
        .and_then(|_| {
            Spi::run_with_args(
                "UPDATE admin_toolkit.maintenance_schedules SET last_run = \
                   (SELECT started_at FROM admin_toolkit.maintenance_runs WHERE run_id = $1) WHERE schedule_id = $2",
                &[run_id.into(), schedule_id.into()],
            )
        })
        .unwrap_or_else(|e| log!("admin_toolkit job: recording run {run_id} failed: {e}"));
    });
}

fn next_run_id() -> i64 {
    Spi::get_one::<i64>("SELECT nextval('admin_toolkit.maintenance_runs_run_id_seq')")
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            ToolkitError::wrong_state("cannot allocate a maintenance run id").raise()
        })
}

/// Starts a job worker for every active schedule that is due, and moves its next_run on. The
/// worker tick calls this; the jobs run on their own, so a long VACUUM never holds up the tick.
/// Returns how many due jobs could not start (no worker slot free): they stay due.
pub fn start_due_jobs() -> spi::Result<usize> {
    start_due("maintenance_schedules", |schedule_id| {
        let started = job::start_maintenance(schedule_id, next_run_id(), false).is_some();
        if !started {
            debug1!("admin_toolkit worker: no background worker slot for maintenance schedule {schedule_id}");
        }
        started
    })
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
    let run_id = next_run_id();
    let worker = job::start_maintenance(schedule_id, run_id, true).unwrap_or_else(|| {
        ToolkitError::wrong_state("no background worker slot is free to run the maintenance job")
            .with_hint("Raise max_worker_processes.")
            .raise()
    });
    if wait {
        let _ = worker.wait_for_shutdown();
    } else {
        let _ = worker.wait_for_startup();
        // Its run row appears once the job has planned; a short wait, never for the command.
        for _ in 0..100 {
            if crate::query::read_scalar::<bool>(&format!(
                "SELECT EXISTS (SELECT 1 FROM admin_toolkit.maintenance_runs WHERE run_id = {run_id})"
            ))? == Some(true)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
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
