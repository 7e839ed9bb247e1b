//! The SQL-facing functions of maintenance: run a schedule now, keep the extension's partitions.

use super::partitions::upkeep;
use super::partitions::LOGS;
use super::plan::{load_schedule, parse_options};
use crate::jobs::ledger::MAINTENANCE;
use crate::jobs::{self, JobKind};
use admin_toolkit_core::maintenance::{waits_for_older_snapshots, MaintenanceType};
use pgrx::prelude::*;
use serde_json::json;

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
    let run_id = MAINTENANCE.next_id();
    let job = jobs::here(
        JobKind::Maintenance {
            schedule_id,
            run_id,
        },
        role,
    );
    // Without waiting for the command, its run row appears once the job has planned.
    let _read_below = jobs::run_now(
        &job,
        &MAINTENANCE,
        run_id,
        wait,
        std::time::Duration::from_secs(2),
    )
    .unwrap_or_else(|e| e.raise());
    let row = crate::query::one_row(
        "SELECT maintenance_type, target_object, status, \
                    round(extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at))::int, \
                    jsonb_build_object('run_id', run_id, 'sql_command', command, 'error', error_message, \
                                       'executed_at', started_at) || details \
             FROM admin_toolkit.maintenance_runs WHERE run_id = $1",
        &[run_id.into()],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<i32>(4)?.unwrap_or_default(),
                r.get::<pgrx::JsonB>(5)?.unwrap_or(pgrx::JsonB(json!({}))),
            ))
        },
    )?;
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
/// Runs partition upkeep now, for both logs, and reports what it did. The worker does the same
/// on its own; this is for administrators who want it at once (e.g. after changing retention).
#[pg_extern(volatile)]
fn maintain_partitions() -> spi::Result<
    TableIterator<
        'static,
        (
            name!(table_name, String),
            name!(action, String),
            name!(partition_name, String),
            name!(rows_affected, i64),
        ),
    >,
> {
    let mut actions = Vec::new();
    for log in &LOGS {
        actions.extend(upkeep(log)?);
    }
    Ok(TableIterator::new(actions.into_iter().map(|a| {
        (
            a.table.to_string(),
            a.action.to_string(),
            a.partition,
            a.rows,
        )
    })))
}
