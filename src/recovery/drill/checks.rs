//! The checks of every restored database, and how their results are recorded.

use super::{failed, stopped, Failure};
use crate::jobs::interruption;
use admin_toolkit_core::drill::checks::{
    check_failure, count_sql, decode_name, index_check_sql, owners_sql, parse_checks,
    DatabaseChecks, DATABASES_SQL, DISABLE_EVENT_TRIGGERS, LIFT_FORCED_ROW_SECURITY,
    PREPARE_CLUSTER,
};
use admin_toolkit_core::drill::server::Throwaway;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The checks of every restored database (core::drill::checks says how a hostile catalog is
/// kept from steering them): as superuser, amcheck on every B-tree index; as each table's
/// owner, the row counts of its tables.
pub(super) fn check_databases(
    server: &Throwaway,
    superuser: &str,
) -> Result<Vec<DatabaseChecks>, Failure> {
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
pub(super) fn server_bindir() -> PathBuf {
    // SAFETY: my_exec_path is set at process start and never changes.
    let exe = unsafe { std::ffi::CStr::from_ptr((&raw const pg_sys::my_exec_path).cast()) };
    Path::new(&*exe.to_string_lossy())
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(super) fn checks_json(results: &[DatabaseChecks]) -> Value {
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
pub(super) fn id_array(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("{{{}}}", ids.join(","))
}
