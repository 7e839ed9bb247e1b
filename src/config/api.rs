//! The SQL-facing functions of configuration management: a tracked change, the tuning advice.

use super::changes::check_privilege;
use super::changes::current_value;
use super::changes::flags_of;
use super::changes::report_weakening;
use super::changes::request_path;
use super::recommendations::apply_observations;
use super::recommendations::cpus;
use super::recommendations::current;
use super::recommendations::memory_kb;
use super::recommendations::observed;
use crate::error::{require, ToolkitError};
use crate::jobs::{self, JobKind};
use crate::settings::{self, StorageType, WorkloadType};
use admin_toolkit_core::tuning::{
    already_set, alter_system_statement, installed_memory_kb, recommend, Machine, Storage, Value,
    Workload,
};
use pgrx::prelude::*;
use serde_json::json;
use std::ffi::CString;

/// Applies a configuration change for real and records it: refuses unknown parameters (42704),
/// a caller without the right to ALTER SYSTEM that parameter (42501: superuser, or GRANT ALTER
/// SYSTEM ON PARAMETER), a non-superuser switching off admin_toolkit's own protections (42501)
/// and invalid values (22023) before anything is written; writes the value with ALTER SYSTEM
/// (postgresql.auto.conf) as the caller, in a job worker, and reloads. A parameter that needs a restart is recorded with
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
    // Looked up with the C API, not SQL: no function or operator of the caller's search path
    // can run here, and superuser-only parameters are found for every caller.
    if current_value(name).is_none() {
        ToolkitError::undefined_object(format!("unrecognized configuration parameter \"{name}\""))
            .raise();
    }
    let weakened = check_privilege(name, value);
    if let Some(conflict) = admin_toolkit_core::config_guard::archiver_conflict(
        name,
        value,
        &current_value("archive_command").unwrap_or_default(),
        &current_value("archive_library").unwrap_or_default(),
    ) {
        ToolkitError::invalid_parameter(format!("{name} cannot be set: {conflict}"))
            .with_hint("Set the other one to '' first (archive_library = '' stops admin_toolkit's archiving).")
            .raise();
    }
    // PostgreSQL 15's ALTER SYSTEM writes an empty quoted list as one empty element ('""'):
    // for shared_preload_libraries, a library named "" and a server that does not start.
    if flags_of(name) & pg_sys::GUC_LIST_QUOTE as i32 != 0
        && admin_toolkit_core::config_guard::list_elements(value).is_empty()
    {
        ToolkitError::invalid_parameter(format!(
            "an empty list cannot be written for \"{name}\": ALTER SYSTEM would store one empty element and the server would not start"
        ))
        .with_hint("Name the elements to keep, or remove the setting from postgresql.conf and postgresql.auto.conf by hand.")
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
    // SAFETY: the name of this backend's current role, which exists.
    let user =
        unsafe { std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false)) }
            .to_string_lossy()
            .into_owned();
    let path = request_path(&request_id);
    let request = json!({"name": name, "value": value, "reason": p_change_reason, "user": user});
    std::fs::write(&path, request.to_string()).unwrap_or_else(|e| {
        ToolkitError::wrong_state(format!("cannot hand the change to a job worker: {e}")).raise()
    });
    // SAFETY: GetUserId reads this backend's current role.
    let caller = unsafe { pg_sys::GetUserId() }.to_u32();
    let job = jobs::here(
        JobKind::Config {
            request: request_id.clone(),
        },
        caller,
    );
    let worker = jobs::start(&job, true).unwrap_or_else(|e| {
        let _ = std::fs::remove_file(&path);
        e.raise()
    });
    let _ = worker.wait_for_shutdown();
    let answer: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({}));
    let _ = std::fs::remove_file(&path);
    if let Some(id) = answer["config_id"].as_i64() {
        if let Some(lost) = weakened {
            report_weakening(name, &lost, id);
        }
        return id;
    }
    let message = answer["error"]
        .as_str()
        .unwrap_or("the job worker did not answer; see the server log");
    ToolkitError::invalid_parameter(format!("could not apply {name}: {message}")).raise()
}
#[allow(clippy::type_complexity)]
/// The specification's columns: parameter_name, current_value, recommended_value, reasoning,
/// priority; then the statement that applies the advice (`\gexec` in psql runs them).
#[pg_extern(volatile)]
fn get_config_recommendations() -> spi::Result<
    TableIterator<
        'static,
        (
            name!(parameter_name, String),
            name!(current_value, String),
            name!(recommended_value, String),
            name!(reasoning, String),
            name!(priority, String),
            name!(alter_system_statement, String),
        ),
    >,
> {
    let max_connections =
        crate::query::read_scalar::<String>("SELECT current_setting('max_connections')")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
    let Some(memory_kb) = memory_kb() else {
        crate::error::ToolkitError::wrong_state(
            "cannot read the machine's memory from /proc/meminfo",
        )
        .raise()
    };
    let machine = Machine {
        memory_kb: installed_memory_kb(memory_kb),
        cpus: cpus(),
        max_connections,
        workload: match settings::WORKLOAD.get() {
            WorkloadType::Web => Workload::Web,
            WorkloadType::Oltp => Workload::Oltp,
            WorkloadType::Dw => Workload::DataWarehouse,
            WorkloadType::Mixed => Workload::Mixed,
        },
        storage: match settings::STORAGE_TYPE.get() {
            StorageType::Ssd => Storage::Ssd,
            StorageType::Hdd => Storage::Hdd,
            StorageType::San => Storage::San,
        },
    };
    let mut advice = recommend(&machine);
    apply_observations(&mut advice, &observed()?);
    let names: Vec<&str> = advice.iter().map(|a| a.name).collect();
    let settings_now = current(&names)?;
    let rows: Vec<_> = advice
        .into_iter()
        .filter_map(|a| {
            let now = settings_now.get(a.name)?;
            (!already_set(a.value, &now.setting, now.unit.as_deref())).then(|| {
                let recommended = match a.value {
                    Value::Kb(_) => a.value.to_string(),
                    Value::Number(n) => format!("{n}"),
                };
                (
                    a.name.to_string(),
                    now.shown.clone(),
                    recommended,
                    a.reasoning,
                    a.priority.to_string(),
                    alter_system_statement(a.name, a.value),
                )
            })
        })
        .collect();
    Ok(TableIterator::new(rows))
}
