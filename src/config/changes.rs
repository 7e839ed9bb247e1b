//! Tracked configuration changes: `track_config_change()` applies a setting for real (ALTER
//! SYSTEM, then a reload) through a job worker, because ALTER SYSTEM refuses to run inside a
//! transaction block or function; the job records the change in `configuration_history`.
//! Changes made by other means are detected by the worker (see `detect_external_changes`).

use crate::error::{require, ToolkitError};
use crate::worker::{job, top_level};
use admin_toolkit_core::maintenance::quote_ident;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// The request file the caller hands to the job worker: a file, because the caller's own
/// uncommitted rows are invisible to the worker and `bgw_extra` holds 128 bytes.
fn request_path(request_id: &str) -> PathBuf {
    // SAFETY: DataDir is set for the life of every backend.
    let data = unsafe { CStr::from_ptr(pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    PathBuf::from(data)
        .join("pg_stat_tmp")
        .join(format!("admin_toolkit_config_{request_id}.json"))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// In the job worker: ALTER SYSTEM, reload, and the history row. Errors are recorded in the
/// request file's answer for the caller.
pub fn run_request(request_id: &str) {
    let path = request_path(request_id);
    let request: Value = match std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        Some(r) => r,
        None => {
            log!("admin_toolkit job: configuration request {request_id} is missing");
            return;
        }
    };
    let name = request["name"].as_str().unwrap_or_default().to_string();
    let value = request["value"].as_str().unwrap_or_default().to_string();
    let old = BackgroundWorker::transaction(|| {
        crate::query::read_scalar::<String>(&format!(
            "SELECT current_setting({}, true)",
            literal(&name)
        ))
    })
    .ok()
    .flatten();
    let statement = format!(
        "ALTER SYSTEM SET {} = {}",
        quote_ident(&name),
        literal(&value)
    );
    // SAFETY: a job worker between transactions.
    let error = unsafe { top_level::execute_catching(&statement) };
    let answer = match &error {
        Some(message) => json!({"error": message}),
        None => {
            // Recorded and committed before the reload, so the worker's detection of external
            // changes, woken by that reload, already sees it.
            let recorded = BackgroundWorker::transaction(|| {
                Spi::get_one_with_args::<i64>(
                    "INSERT INTO admin_toolkit.configuration_history (parameter_name, old_value, new_value, changed_by, \
                       change_reason, requires_restart, applied) \
                     SELECT $1, $2, $3, $4, $5, s.context = 'postmaster', s.context <> 'postmaster' \
                       FROM pg_catalog.pg_settings s WHERE s.name = $1 \
                     RETURNING config_id",
                    &[
                        name.clone().into(),
                        old.clone().into(),
                        value.clone().into(),
                        request["user"].as_str().unwrap_or("unknown").into(),
                        request["reason"].as_str().into(),
                    ],
                )
            });
            let reloaded =
                BackgroundWorker::transaction(|| Spi::run("SELECT pg_catalog.pg_reload_conf()"));
            if let Err(e) = reloaded {
                log!("admin_toolkit job: reload after ALTER SYSTEM failed: {e}");
            }
            match recorded {
                Ok(Some(id)) => json!({"config_id": id}),
                Ok(None) => json!({"error": "the change was applied but could not be recorded"}),
                Err(e) => json!({"error": e.to_string()}),
            }
        }
    };
    if let Err(e) = std::fs::write(&path, answer.to_string()) {
        log!("admin_toolkit job: cannot answer configuration request {request_id}: {e}");
    }
}

/// Applies a configuration change for real and records it: refuses unknown parameters (42704)
/// and invalid values (22023) before anything is written; writes the value with ALTER SYSTEM
/// (postgresql.auto.conf) and reloads. A parameter that needs a restart is recorded with
/// `requires_restart = true, applied = false`; the worker marks it applied after the restart.
/// Returns the new configuration_history row's config_id.
#[pg_extern(volatile)]
fn track_config_change(
    p_parameter_name: Option<&str>,
    p_new_value: Option<&str>,
    p_change_reason: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = require(p_parameter_name, "p_parameter_name");
    let value = require(p_new_value, "p_new_value");
    let exists = Spi::connect(|c| {
        c.select(
            "SELECT 1 FROM pg_catalog.pg_settings WHERE name = $1",
            Some(1),
            &[name.into()],
        )
        .map(|r| !r.is_empty())
    })
    .unwrap_or(false);
    if !exists {
        ToolkitError::undefined_object(format!("unrecognized configuration parameter \"{name}\""))
            .raise();
    }
    let (Ok(cname), Ok(cvalue)) = (CString::new(name), CString::new(value)) else {
        ToolkitError::invalid_parameter("parameter names and values cannot contain NUL bytes")
            .raise()
    };
    // Validate without changing anything (changeVal = false). The postmaster context passes
    // every parameter's context check, so only the value itself is judged, as ALTER SYSTEM does.
    unsafe {
        pg_sys::set_config_option(
            cname.as_ptr(),
            cvalue.as_ptr(),
            pg_sys::GucContext::PGC_POSTMASTER,
            pg_sys::GucSource::PGC_S_FILE,
            pg_sys::GucAction::GUC_ACTION_SET,
            false,
            pg_sys::PGERROR as i32,
            false,
        )
    };
    // Unique per call: this backend's PID and the current time.
    let request_id = format!(
        "{}-{}",
        unsafe { pg_sys::MyProcPid },
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    );
    let user = crate::query::read_scalar::<String>("SELECT current_user::text")
        .ok()
        .flatten()
        .unwrap_or_default();
    let path = request_path(&request_id);
    let request = json!({"name": name, "value": value, "reason": p_change_reason, "user": user});
    std::fs::write(&path, request.to_string()).unwrap_or_else(|e| {
        ToolkitError::wrong_state(format!("cannot hand the change to a job worker: {e}")).raise()
    });
    let worker = job::start_config(&request_id).unwrap_or_else(|| {
        let _ = std::fs::remove_file(&path);
        ToolkitError::wrong_state("no background worker slot is free to apply the change")
            .with_hint("Raise max_worker_processes.")
            .raise()
    });
    let _ = worker.wait_for_shutdown();
    let answer: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({}));
    let _ = std::fs::remove_file(&path);
    if let Some(id) = answer["config_id"].as_i64() {
        return id;
    }
    let message = answer["error"]
        .as_str()
        .unwrap_or("the job worker did not answer; see the server log");
    ToolkitError::invalid_parameter(format!("could not apply {name}: {message}")).raise()
}

/// In the worker, on startup and after every reload: settings whose file value changed since
/// the last look are recorded with changed_by = 'external' (ALTER SYSTEM by hand, an edited
/// postgresql.conf), and recorded restart-only changes that are now in effect are marked
/// applied. The first look after installation only takes the snapshot.
pub fn detect_external_changes() -> spi::Result<i64> {
    Spi::run(
        "UPDATE admin_toolkit.configuration_history h SET applied = true \
          WHERE NOT applied AND requires_restart \
            AND current_setting(h.parameter_name, true) IS NOT NULL \
            AND NOT (SELECT pending_restart FROM pg_catalog.pg_settings WHERE name = h.parameter_name)",
    )?;
    let recorded = Spi::get_one::<i64>(
        "WITH now_values AS ( \
            SELECT name, setting, context FROM pg_catalog.pg_settings \
             WHERE source IN ('configuration file', 'default') OR pending_restart \
         ), changed AS ( \
            SELECT n.name, s.value AS old_value, n.setting AS new_value, n.context \
              FROM now_values n JOIN admin_toolkit.configuration_snapshot s ON s.name = n.name \
             WHERE s.value IS DISTINCT FROM n.setting \
               AND NOT EXISTS (SELECT 1 FROM admin_toolkit.configuration_history h \
                                WHERE h.parameter_name = n.name AND h.changed_at > s.taken_at) \
         ), recorded AS ( \
            INSERT INTO admin_toolkit.configuration_history (parameter_name, old_value, new_value, changed_by, \
                   change_reason, requires_restart, applied) \
            SELECT name, old_value, new_value, 'external', 'detected by the admin_toolkit worker', \
                   context = 'postmaster', true FROM changed RETURNING 1 \
         ), snapshot AS ( \
            INSERT INTO admin_toolkit.configuration_snapshot (name, value, taken_at) \
            SELECT name, setting, now() FROM now_values \
            ON CONFLICT (name) DO UPDATE SET value = excluded.value, taken_at = excluded.taken_at \
            WHERE configuration_snapshot.value IS DISTINCT FROM excluded.value \
         ) SELECT count(*) FROM recorded",
    )?;
    Ok(recorded.unwrap_or(0))
}
