//! Tracked configuration changes: `track_config_change()` (in `api`) applies a setting for real (ALTER
//! SYSTEM, then a reload) through a job worker, because ALTER SYSTEM refuses to run inside a
//! transaction block or function; the job records the change in `configuration_history`.
//! Changes made by other means are detected by the worker (see `detect_external_changes`).

use crate::error::ToolkitError;
use crate::jobs::{self};
use crate::transaction::top_level;
use admin_toolkit_core::config_guard::weakening;
use admin_toolkit_core::maintenance::quote_ident;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::ffi::CString;
use std::path::PathBuf;

/// The request file the caller hands to the job worker: a file, because the caller's own
/// uncommitted rows are invisible to the worker and `bgw_extra` holds 128 bytes.
pub(super) fn request_path(request_id: &str) -> PathBuf {
    crate::jobs::handoff_dir().join(format!("admin_toolkit_config_{request_id}.json"))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// In the job worker: ALTER SYSTEM as the caller (PostgreSQL checks the caller's right once
/// more), then, as superuser, the history row and the reload. Errors are recorded in the
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
    let old = jobs::bookkeeping(|| {
        crate::query::read_scalar::<String>(&format!(
            "SELECT pg_catalog.current_setting({}, true)",
            literal(&name)
        ))
    })
    .ok()
    .flatten();
    let statement = format!(
        "ALTER SYSTEM SET {} = {}",
        quote_ident(&name),
        value_sql(&name, &value)
    );
    // SAFETY: a job worker between transactions.
    let error = unsafe { top_level::execute_catching(&statement) };
    let answer = match &error {
        Some(message) => json!({"error": message}),
        None => {
            // Recorded and committed before the reload, so the worker's detection of external
            // changes, woken by that reload, already sees it.
            let recorded = jobs::bookkeeping(|| {
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
            let reloaded = jobs::bookkeeping(|| Spi::run("SELECT pg_catalog.pg_reload_conf()"));
            if let Err(e) = reloaded {
                log!("admin_toolkit job: reload after ALTER SYSTEM failed: {e}");
            }
            match recorded {
                Ok(Some(id)) => json!({"config_id": id}),
                Ok(None) => json!({"error": "the change was applied but could not be recorded"}),
                Err(e) => json!({"error": e}),
            }
        }
    };
    if let Err(e) = std::fs::write(&path, answer.to_string()) {
        log!("admin_toolkit job: cannot answer configuration request {request_id}: {e}");
    }
}

/// The value as ALTER SYSTEM takes it: a list setting (shared_preload_libraries, search_path,
/// …) as one literal per element, so that `'admin_toolkit,pg_stat_statements'` becomes two
/// libraries, not one library with a comma in its name.
fn value_sql(name: &str, value: &str) -> String {
    if flags_of(name) & pg_sys::GUC_LIST_INPUT as i32 == 0 {
        return literal(value);
    }
    let elements = admin_toolkit_core::config_guard::list_elements(value);
    if elements.is_empty() {
        return literal("");
    }
    elements
        .iter()
        .map(|e| literal(e))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The GUC flags of parameter `name` (0 when unknown).
pub(super) fn flags_of(name: &str) -> i32 {
    let Ok(cname) = CString::new(name) else {
        return 0;
    };
    // SAFETY: looks the parameter up by name; missing_ok, so an unknown one gives 0.
    unsafe { pg_sys::GetConfigOptionFlags(cname.as_ptr(), true) }
}

/// Refuses (42501, before anything is written) a caller who may not ALTER SYSTEM `name`, and a
/// non-superuser whose change would switch off admin_toolkit's own protections. A superuser's
/// such change goes ahead with a WARNING naming what is lost, and is recorded in the audit log.
pub(super) fn check_privilege(name: &str, value: &str) -> Option<String> {
    let cname = CString::new(name).unwrap_or_default();
    // SAFETY: reads this backend's role and the parameter's ACL; a valid C string.
    let (allowed, superuser) = unsafe {
        let role = pg_sys::GetUserId();
        (
            pg_sys::superuser()
                || pg_sys::pg_parameter_aclcheck(
                    cname.as_ptr(),
                    role,
                    pg_sys::ACL_ALTER_SYSTEM as pg_sys::AclMode,
                ) == pg_sys::AclResult::ACLCHECK_OK,
            pg_sys::superuser(),
        )
    };
    if !allowed {
        ToolkitError::insufficient_privilege(format!("permission denied to set parameter \"{name}\""))
            .with_hint("track_config_change applies changes as its caller: a superuser, or a role granted ALTER SYSTEM ON PARAMETER.")
            .raise();
    }
    let current = current_value(name).unwrap_or_default();
    let lost = weakening(name, &current, value)?;
    if !superuser {
        ToolkitError::insufficient_privilege(format!("only superusers may do this: {lost}"))
            .raise();
    }
    Some(lost)
}

/// The running value of parameter `name` in this session, also of superuser-only parameters,
/// or None when there is no such parameter (a placeholder of an unloaded module's prefix
/// counts as none, as pg_settings leaves it out).
pub(super) fn current_value(name: &str) -> Option<String> {
    let cname = CString::new(name).ok()?;
    // SAFETY: a valid C string; missing_ok, so no ERROR; the value is copied at once.
    unsafe {
        let flags = pg_sys::GetConfigOptionFlags(cname.as_ptr(), true);
        let value = pg_sys::GetConfigOption(cname.as_ptr(), true, false);
        if value.is_null() || flags & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 != 0 {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(value)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// The WARNING and audit event of a change that switched off a protection.
pub(super) fn report_weakening(name: &str, lost: &str, config_id: i64) {
    warning!("admin_toolkit: {lost}");
    // The event's info field holds 256 bytes; the whole sentence is in the WARNING.
    let short: String = lost.chars().take(160).collect();
    let info = json!({"config_id": config_id, "consequence": short}).to_string();
    crate::security::audit::record_event(
        "PROTECTION_DISABLED",
        Some(name),
        Some("configuration parameter"),
        true,
        None,
        &info,
        false,
    );
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
