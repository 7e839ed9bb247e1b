//! The SQL-facing functions of monitoring: collect metrics now, evaluate the alert rules now.

use super::alerts::evaluate;
use super::collect::collect;
use pgrx::prelude::*;

/// Collects one sample of every metric now (the worker does this every
/// `admin_toolkit.collection_interval` seconds). Returns void, as in the specification.
#[pg_extern(volatile)]
fn collect_performance_metrics() -> spi::Result<()> {
    let collection = collect()?;
    if let Some(why) = &collection.statements_unavailable {
        notice!("query metrics skipped: {why}");
    }
    Ok(())
}
/// Evaluates the alert rules now (the worker does this after every collection) and returns the
/// alerts that currently hold, with the specification's columns. Rules whose metric has never
/// been collected are reported with a NOTICE each.
// The result type stays inline: pgrx derives the SQL signature from it and cannot see through a
// type alias.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn process_alerts() -> spi::Result<
    TableIterator<
        'static,
        (
            name!(rule_name, String),
            name!(severity, String),
            name!(current_value, Option<AnyNumeric>),
            name!(threshold_value, AnyNumeric),
            name!(alert_message, String),
        ),
    >,
> {
    let evaluation = evaluate()?;
    for rule in &evaluation.no_data {
        notice!("alert rule \"{rule}\" has no data: its metric has never been collected");
    }
    Ok(TableIterator::new(evaluation.holding.into_iter().map(
        |a| {
            (
                a.rule_name,
                a.severity,
                a.current_value,
                a.threshold_value,
                a.message,
            )
        },
    )))
}
