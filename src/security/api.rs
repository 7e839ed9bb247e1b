//! The SQL-facing functions of security: log an application event, detect suspicious activity,
//! check a password against the policy.

use super::audit::record_event;
use super::password_policy::current_policy;
use crate::error::{require, ToolkitError};
use crate::settings;
use admin_toolkit_core::password::check_password;
use pgrx::prelude::*;
use serde_json::json;

/// Records an application event. The user, database, client address and session are the
/// server's, never the caller's: they cannot be forged. With the library preloaded the event
/// goes through the same queue as the server's own events (so it survives a ROLLBACK of the
/// caller's transaction); without it, it is inserted directly.
#[pg_extern(volatile)]
fn log_security_event(
    p_operation_type: Option<&str>,
    p_object_name: default!(Option<&str>, "NULL"),
    p_object_type: default!(Option<&str>, "NULL"),
    p_success: default!(Option<bool>, true),
    p_error_message: default!(Option<&str>, "NULL"),
    p_additional_info: default!(Option<pgrx::JsonB>, "'{}'"),
) {
    let operation = require(p_operation_type, "p_operation_type");
    if operation.trim().is_empty() {
        ToolkitError::invalid_parameter("p_operation_type must not be empty").raise();
    }
    let info = p_additional_info.map(|j| j.0).unwrap_or_else(|| json!({}));
    if !info.is_object() {
        ToolkitError::invalid_parameter("p_additional_info must be a JSON object").raise();
    }
    let info = info.to_string();
    if info.len() > 256 {
        ToolkitError::invalid_parameter(
            "p_additional_info is too large (at most 256 bytes as JSON)",
        )
        .raise();
    }
    record_event(
        operation,
        p_object_name,
        p_object_type,
        p_success.unwrap_or(true),
        p_error_message,
        &info,
        true,
    );
}
/// The specification's three detection rules, with thresholds from the settings, and the roles
/// locked now after failed logins.
#[allow(clippy::type_complexity)]
#[pg_extern(stable)]
fn detect_suspicious_activity() -> spi::Result<
    TableIterator<
        'static,
        (
            name!(alert_type, String),
            name!(alert_severity, String),
            name!(username, String),
            name!(event_count, i64),
            name!(time_window, String),
            name!(details, pgrx::JsonB),
        ),
    >,
> {
    let query = "
        SELECT 'failed_login_attempts', CASE WHEN count(*) > 2 * $1 THEN 'critical' ELSE 'warning' END,
               username, count(*), 'last_hour',
               jsonb_build_object('client_ips', array_agg(DISTINCT client_ip),
                                  'applications', array_agg(DISTINCT application_name))
          FROM admin_toolkit.security_audit_log
         WHERE event_time >= now() - interval '1 hour' AND operation_type = 'LOGIN' AND NOT success
         GROUP BY username HAVING count(*) > $1
        UNION ALL
        SELECT 'privilege_escalation', 'warning', username, count(*), 'last_24_hours',
               jsonb_build_object('operations', array_agg(DISTINCT operation_type),
                                  'objects', array_agg(DISTINCT object_name))
          FROM admin_toolkit.security_audit_log
         WHERE event_time >= now() - interval '24 hours' AND operation_type IN ('GRANT', 'REVOKE', 'ALTER ROLE')
           AND success
         GROUP BY username HAVING count(*) > $2
        UNION ALL
        SELECT 'excessive_data_access', 'warning', username,
               sum(coalesce((additional_info->>'count')::bigint, 1))::bigint, 'last_hour',
               jsonb_build_object('tables_accessed', array_agg(DISTINCT object_name),
                                  'unique_tables', count(DISTINCT object_name))
          FROM admin_toolkit.security_audit_log
         WHERE event_time >= now() - interval '1 hour' AND operation_type = 'SELECT' AND object_type = 'table'
           AND success
         GROUP BY username
        HAVING sum(coalesce((additional_info->>'count')::bigint, 1)) > $3 OR count(DISTINCT object_name) > $4";
    let args = [
        settings::FAILED_LOGIN_THRESHOLD.get(),
        settings::PRIVILEGE_CHANGE_THRESHOLD.get(),
        settings::READ_COUNT_THRESHOLD.get(),
        settings::DISTINCT_TABLES_THRESHOLD.get(),
    ];
    let rows = Spi::connect(|client| {
        let mut out = Vec::new();
        let result = client.select(
            query,
            None,
            &[
                i64::from(args[0]).into(),
                i64::from(args[1]).into(),
                i64::from(args[2]).into(),
                i64::from(args[3]).into(),
            ],
        )?;
        for row in result {
            out.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?.unwrap_or_default(),
                row.get::<i64>(4)?.unwrap_or_default(),
                row.get::<String>(5)?.unwrap_or_default(),
                row.get::<pgrx::JsonB>(6)?.unwrap_or(pgrx::JsonB(json!({}))),
            ));
        }
        Ok::<_, spi::Error>(out)
    })?;
    // Read from shared memory here, not through lockout_states(), which a role granted this
    // function may not execute.
    let locked = crate::security::credentials::api::locked_now()
        .into_iter()
        .map(|(role, failures, at, until)| {
            (
                "role_locked".to_string(),
                "critical".to_string(),
                role,
                failures,
                "now".to_string(),
                pgrx::JsonB(json!({ "locked_at": at.map(|t| t.to_string()), "locked_until": until.map(|t| t.to_string()) })),
            )
        });
    Ok(TableIterator::new(rows.into_iter().chain(locked)))
}
/// One row per rule: check_name, passed, message. NULL or empty arguments are refused rather
/// than judged, so a caller cannot mistake "no answer" for "no failures".
#[pg_extern(stable, parallel_safe)]
fn validate_password_policy(
    username: Option<&str>,
    password: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(passed, bool),
        name!(message, String),
    ),
> {
    let username = require(username, "username");
    let password = require(password, "password");
    let results = check_password(&current_policy(), username, password)
        .unwrap_or_else(|e| ToolkitError::invalid_parameter(e.to_string()).raise());
    TableIterator::new(
        results
            .into_iter()
            .map(|r| (r.check_name.to_string(), r.passed, r.message)),
    )
}
