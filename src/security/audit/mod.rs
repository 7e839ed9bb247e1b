//! Security auditing: hooks capture events into shared memory ([`queue`]); the worker writes
//! them to `security_audit_log` ([`write_events`], [`write_read_summaries`]) in its own
//! transactions, keeping each event's own time, so an event survives the user's ROLLBACK.

pub mod duty;
pub mod hooks;
mod objects;
pub mod queue;

use crate::error::ToolkitError;
use pgrx::prelude::*;
use queue::AuditEvent;
use serde_json::json;

/// Most events written in one transaction; the rest wait for the next tick.
pub const BATCH: usize = 1000;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_SECONDS: f64 = 946_684_800.0;

fn additional_info(e: &AuditEvent) -> String {
    let mut info = match e
        .info
        .get()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        Some(serde_json::Value::Object(map)) => serde_json::Value::Object(map),
        _ => json!({}),
    };
    info["pid"] = json!(e.pid);
    info["source"] = json!(if e.from_application {
        "application"
    } else {
        "server"
    });
    if e.query_truncated {
        info["query_truncated"] = json!(true);
    }
    info.to_string()
}

/// Writes waiting events to the audit log; they leave the queue only once written.
pub fn write_events() -> spi::Result<usize> {
    let events = queue::peek(BATCH);
    if events.is_empty() {
        return Ok(0);
    }
    let col = |f: &dyn Fn(&AuditEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
    let times: Vec<f64> = events
        .iter()
        .map(|e| e.event_time as f64 / 1e6 + PG_EPOCH_OFFSET_SECONDS)
        .collect();
    let success: Vec<bool> = events.iter().map(|e| e.success).collect();
    let session: Vec<String> = events
        .iter()
        .map(|e| format!("{:x}.{:x}", e.session_start, e.pid))
        .collect();
    let info: Vec<String> = events.iter().map(additional_info).collect();
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.security_audit_log (event_time, username, database_name, schema_name, \
           object_name, object_type, operation_type, client_ip, application_name, query_text, success, \
           error_message, session_id, additional_info) \
         SELECT pg_catalog.to_timestamp(t), coalesce(u, ''), coalesce(d, ''), s, o, ot, op, \
                CASE WHEN ip ~ '^[0-9A-Fa-f:.]+$' THEN ip::inet END, app, q, ok, err, sid, info::jsonb \
           FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                       $8::text[], $9::text[], $10::text[], $11::bool[], $12::text[], $13::text[], $14::text[]) \
                AS e(t, u, d, s, o, ot, op, ip, app, q, ok, err, sid, info)",
        &[
            times.into(),
            col(&|e| e.username.get()).into(),
            col(&|e| e.database.get()).into(),
            col(&|e| e.schema.get()).into(),
            col(&|e| e.object.get()).into(),
            col(&|e| e.object_type.get()).into(),
            col(&|e| e.operation.get()).into(),
            col(&|e| e.client_ip.get()).into(),
            col(&|e| e.application.get()).into(),
            col(&|e| e.query.get()).into(),
            success.into(),
            col(&|e| e.error.get()).into(),
            session.into(),
            info.into(),
        ],
    )?;
    queue::commit(events.len());
    Ok(events.len())
}

/// Writes one summary row per (database, role, table) read since the last summary:
/// operation_type 'SELECT', object_type 'table', the count in additional_info.
/// Counts that could not be written are put back into the queue.
pub fn write_read_summaries(period_seconds: f64) -> spi::Result<usize> {
    let reads = queue::take_reads();
    if reads.is_empty() {
        return Ok(0);
    }
    // Put back unless written: an error unwinds through this guard too.
    struct PutBack<'a>(Option<&'a [queue::ReadCount]>);
    impl Drop for PutBack<'_> {
        fn drop(&mut self) {
            if let Some(reads) = self.0 {
                queue::restore_reads(reads);
            }
        }
    }
    let mut put_back = PutBack(Some(&reads));
    let databases: Vec<i64> = reads.iter().map(|r| i64::from(r.database)).collect();
    let roles: Vec<i64> = reads.iter().map(|r| i64::from(r.role)).collect();
    let relations: Vec<i64> = reads.iter().map(|r| i64::from(r.relation)).collect();
    let counts: Vec<i64> = reads
        .iter()
        .map(|r| i64::try_from(r.count).unwrap_or(i64::MAX))
        .collect();
    // Names of tables resolve only in this database; other databases' tables keep their OID.
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.security_audit_log (username, database_name, schema_name, object_name, \
           object_type, operation_type, success, additional_info) \
         SELECT coalesce(a.rolname::text, r.role::text), coalesce(d.datname::text, r.db::text), \
                n.nspname, coalesce(c.relname::text, 'oid ' || r.rel), 'table', 'SELECT', true, \
                jsonb_build_object('count', r.n, 'relation_oid', r.rel, 'source', 'read summary', \
                                   'period_seconds', $5::float8) \
           FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS r(db, role, rel, n) \
           LEFT JOIN pg_catalog.pg_authid a ON a.oid = r.role::oid \
           LEFT JOIN pg_catalog.pg_database d ON d.oid = r.db::oid \
           LEFT JOIN pg_catalog.pg_class c ON c.oid = r.rel::oid AND r.db::oid = \
                (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
           LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
        &[databases.into(), roles.into(), relations.into(), counts.into(), period_seconds.into()],
    )?;
    put_back.0 = None;
    Ok(reads.len())
}

/// Records an event of this session (user, database, client and session are the server's),
/// through the queue when the library is preloaded, so that it survives a ROLLBACK of the
/// caller's transaction; otherwise inserted directly. `from_application` marks events of
/// log_security_event().
pub fn record_event(
    operation: &str,
    object: Option<&str>,
    object_type: Option<&str>,
    success: bool,
    error: Option<&str>,
    info: &str,
    from_application: bool,
) {
    let mut event = hooks::current_session_event();
    event.operation.set(operation.as_bytes());
    event.object.set(object.unwrap_or_default().as_bytes());
    event
        .object_type
        .set(object_type.unwrap_or_default().as_bytes());
    event.success = success;
    event.error.set(error.unwrap_or_default().as_bytes());
    event.info.set(info.as_bytes());
    event.from_application = from_application;
    if queue::available() {
        queue::push(&event);
        return;
    }
    let source = if from_application {
        "application"
    } else {
        "server"
    };
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.security_audit_log (username, database_name, object_name, object_type, \
           operation_type, client_ip, application_name, success, error_message, session_id, additional_info) \
         VALUES (current_user, pg_catalog.current_database(), $1, $2, $3, pg_catalog.inet_client_addr(), \
                 pg_catalog.current_setting('application_name'), $4, $5, \
                 (SELECT pg_catalog.to_hex(pg_catalog.trunc(pg_catalog.date_part('epoch', backend_start))::bigint) \
                         OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pg_catalog.to_hex(pid) \
                    FROM pg_catalog.pg_stat_activity WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()), \
                 $6::jsonb OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('source', $7::text, 'pid', pg_catalog.pg_backend_pid()))",
        &[
            event.object.get().into(),
            event.object_type.get().into(),
            operation.into(),
            success.into(),
            event.error.get().into(),
            info.into(),
            source.into(),
        ],
    )
    .unwrap_or_else(|e| ToolkitError::invalid_parameter(e.to_string()).raise());
}
