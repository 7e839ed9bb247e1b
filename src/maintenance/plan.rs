//! Planning and executing one maintenance run: the schedule as a run reads it, the target and
//! the command (core::maintenance builds it), the schedule's run lock, and the command executed
//! top-level with its timeouts. Used by the run in the toolkit's database (jobs.rs) and by the
//! one in another database (remote.rs).

use crate::transaction::top_level;
use admin_toolkit_core::maintenance::{
    build_command, permission_skip_error, qualified, quote_ident, valid_timeout,
    MaintenanceOptions, MaintenanceType, Target,
};
use pgrx::prelude::*;
use serde_json::{json, Value};
/// A schedule row, as a run needs it.
pub(super) struct Schedule {
    pub kind: String,
    pub owner: String,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub options: Value,
    /// The database it maintains; None: the toolkit's.
    pub target_database: Option<String>,
}

pub(super) fn load_schedule(schedule_id: i32, active_only: bool) -> spi::Result<Option<Schedule>> {
    crate::query::one_row(
        "SELECT maintenance_type, target_schema, target_table, maintenance_options::text, owner::text, \
                    target_database::text \
             FROM admin_toolkit.maintenance_schedules WHERE schedule_id = $1 AND (is_active OR NOT $2)",
        &[schedule_id.into(), active_only.into()],
        |row| {
            Ok(Schedule {
                kind: row.get::<String>(1)?.unwrap_or_default(),
                schema: row.get::<String>(2)?,
                table: row.get::<String>(3)?,
                options: row
                    .get::<String>(4)?
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(json!({})),
                owner: row.get::<String>(5)?.unwrap_or_default(),
                target_database: row.get::<String>(6)?,
            })
        },
    )
}

/// The supported options, and the keys that were ignored (reported in the run's details).
pub(super) fn parse_options(options: &Value) -> Result<(MaintenanceOptions, Vec<String>), String> {
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

fn target_of(
    schema: &Option<String>,
    table: &Option<String>,
) -> spi::Result<Result<Target, String>> {
    let database =
        crate::query::read_scalar::<String>("SELECT current_database()::text")?.unwrap_or_default();
    Ok(match (schema, table) {
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
pub(super) struct Plan {
    pub command: String,
    options: MaintenanceOptions,
    /// The command names its relations (a table or a schema's tables), so a relation skipped
    /// for lack of privilege means the run did not do what it says.
    names_relations: bool,
}

/// What planning decided: fail, nothing to do, or execute a command; each with details.
pub(super) enum Step {
    Failed(String),
    Nothing(Value),
    Execute(Plan, Value),
}

/// A planned run: what it targets and what to do.
pub(super) struct Prepared {
    pub target: String,
    pub step: Step,
}

/// Plans a run of `kind` on the schema / table (none: the database) in the database this job is
/// connected to. Needs a transaction.
pub(super) fn prepare(
    kind: &str,
    schema: &Option<String>,
    table: &Option<String>,
    options: &Value,
) -> spi::Result<Prepared> {
    let pid = unsafe { pg_sys::MyProcPid };
    let described = match (schema, table) {
        (Some(s), Some(t)) => format!("{s}.{t}"),
        (Some(s), None) => s.clone(),
        _ => "database".into(),
    };
    let failed = |message: String| Prepared {
        target: described.clone(),
        step: Step::Failed(message),
    };
    let kind = match MaintenanceType::parse(kind) {
        Ok(k) => k,
        Err(e) => return Ok(failed(e.0)),
    };
    let (options, ignored) = match parse_options(options) {
        Ok(o) => o,
        Err(e) => return Ok(failed(e)),
    };
    let target = match target_of(schema, table)? {
        Ok(t) => t,
        Err(e) => return Ok(failed(e)),
    };
    let stale = if kind == MaintenanceType::StatsUpdate {
        stale_tables(&target)?
    } else {
        Vec::new()
    };
    let details = json!({"pid": pid, "ignored_options": ignored, "stale_tables": stale.len()});
    let step = match build_command(kind, &target, &options, &stale) {
        None => {
            let mut details = details;
            details["note"] = json!("nothing to do");
            Step::Nothing(details)
        }
        Some(command) => Step::Execute(
            Plan {
                command,
                options,
                names_relations: !matches!(target, Target::Database(_)),
            },
            details,
        ),
    };
    Ok(Prepared {
        target: target.describe(),
        step,
    })
}

/// Takes the schedule's run lock (another run in progress: recorded 'skipped').
pub(super) fn lock_schedule(schedule_id: i32) -> spi::Result<bool> {
    let locked = Spi::connect(|c| {
        c.select(
            "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('admin_toolkit.maintenance'), $1)",
            Some(1),
            &[schedule_id.into()],
        )?
        .first()
        .get_one::<bool>()
    })?;
    Ok(locked == Some(true))
}

/// A schedule's target as runs name it before planning.
pub(super) fn prepare_described(schedule: &Schedule) -> String {
    match (&schedule.schema, &schedule.table) {
        (Some(s), Some(t)) => format!("{s}.{t}"),
        (Some(s), None) => s.clone(),
        _ => "database".into(),
    }
}

/// Executes a planned command top-level in this job worker (with its timeouts, as session
/// settings set before it): the error, if any, and the warnings it raised. VACUUM and ANALYZE
/// skip, with a WARNING, what the role may not maintain: for named relations that is a
/// refusal, and the error says so.
pub(super) fn execute(plan: &Plan) -> (Option<String>, Vec<String>) {
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
    if error.is_none() && plan.names_relations {
        error = permission_skip_error(&warnings);
    }
    (error, warnings)
}

/// Makes warnings reach the capture hook (see top_level::execute_capturing).
pub(super) const CAPTURE_WARNINGS: &str =
    "SELECT pg_catalog.set_config('log_min_messages', 'warning', false) \
     WHERE pg_catalog.current_setting('log_min_messages') IN ('error', 'log', 'fatal', 'panic')";
