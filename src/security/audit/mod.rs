//! Security auditing: hooks write events into the audit journal, WAL records of the toolkit's
//! own ([`journal`]); the worker turns them into rows of `security_audit_log` in its own
//! transactions ([`insert_events`]), keeping each event's own time, so an event survives the
//! user's ROLLBACK and a crash. Table reads are counted in shared memory ([`queue`]) and
//! summarised ([`write_read_summaries`]).

pub mod duty;
pub mod hooks;
pub mod journal;
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

/// Where the audit journal holds an event: its record's LSN and transaction ID (0: none).
#[derive(Clone, Copy)]
pub struct JournalOrigin {
    pub lsn: u64,
    pub xid: u32,
}

/// One row of the audit log as every writer hands it over; [`insert_rows`] chains it.
#[derive(Default)]
pub struct AuditRow {
    /// Seconds since the Unix epoch; `None`: now.
    pub event_time: Option<f64>,
    pub username: Option<String>,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub object: Option<String>,
    pub object_type: Option<String>,
    pub operation: Option<String>,
    pub client_ip: Option<String>,
    pub application: Option<String>,
    pub query: Option<String>,
    pub success: bool,
    pub error: Option<String>,
    pub session_id: Option<String>,
    /// A JSON object.
    pub info: String,
    pub session_username: Option<String>,
    pub origin: Option<JournalOrigin>,
}

impl AuditRow {
    pub fn of_event(e: &AuditEvent, origin: Option<JournalOrigin>) -> AuditRow {
        AuditRow {
            event_time: Some(e.event_time as f64 / 1e6 + PG_EPOCH_OFFSET_SECONDS),
            username: e.username.get(),
            database: e.database.get(),
            schema: e.schema.get(),
            object: e.object.get(),
            object_type: e.object_type.get(),
            operation: e.operation.get(),
            client_ip: e.client_ip.get(),
            application: e.application.get(),
            query: e.query.get(),
            success: e.success,
            error: e.error.get(),
            session_id: Some(format!("{:x}.{:x}", e.session_start, e.pid)),
            info: additional_info(e),
            session_username: e.session_user.get(),
            origin,
        }
    }
}

/// The rows' typed values, from the arrays bound by [`insert_rows`], numbered (`ord`) in the
/// order given: both of its statements read them through this one expression, so the text that
/// was hashed is the text stored.
const ROW_VALUES: &str = "SELECT e.ord, \
       CASE WHEN e.t IS NULL THEN pg_catalog.now() ELSE pg_catalog.to_timestamp(e.t) END AS event_time, \
       coalesce(e.u, '') AS username, coalesce(e.d, '') AS database_name, e.s AS schema_name, \
       e.o AS object_name, e.ot AS object_type, e.op AS operation_type, \
       CASE WHEN e.ip ~ '^[0-9A-Fa-f:.]+$' THEN e.ip::inet END AS client_ip, e.app AS application_name, \
       e.q AS query_text, e.ok AS success, e.err AS error_message, e.sid AS session_id, \
       e.info::jsonb AS additional_info, e.su AS session_username, e.x::text::xid AS transaction_id, \
       '0/0'::pg_lsn OPERATOR(pg_catalog.+) e.l::numeric AS wal_lsn \
  FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
              $8::text[], $9::text[], $10::text[], $11::bool[], $12::text[], $13::text[], $14::text[], \
              $15::text[], $16::int8[], $17::int8[]) WITH ORDINALITY \
       AS e(t, u, d, s, o, ot, op, ip, app, q, ok, err, sid, info, su, x, l, ord)";

const COLUMNS: &str = "event_time, username, database_name, schema_name, object_name, object_type, \
       operation_type, client_ip, application_name, query_text, success, error_message, session_id, \
       additional_info, session_username, transaction_id, wal_lsn";

/// Inserts rows into the audit log, chained: each gets the next audit_id, the hash of the row
/// before it and its own (`sha256(previous_hash || audit_row_text(row))`), and the chain's head
/// moves to the last, all in the caller's transaction. The head's row lock makes writers of
/// the chain take turns.
pub fn insert_rows(rows: &[AuditRow]) -> spi::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let text = |f: &dyn Fn(&AuditRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let args: Vec<pgrx::datum::DatumWithOid> = vec![
        rows.iter().map(|r| r.event_time).collect::<Vec<_>>().into(),
        text(&|r| r.username.clone()).into(),
        text(&|r| r.database.clone()).into(),
        text(&|r| r.schema.clone()).into(),
        text(&|r| r.object.clone()).into(),
        text(&|r| r.object_type.clone()).into(),
        text(&|r| r.operation.clone()).into(),
        text(&|r| r.client_ip.clone()).into(),
        text(&|r| r.application.clone()).into(),
        text(&|r| r.query.clone()).into(),
        rows.iter().map(|r| r.success).collect::<Vec<_>>().into(),
        text(&|r| r.error.clone()).into(),
        text(&|r| r.session_id.clone()).into(),
        rows.iter()
            .map(|r| r.info.clone())
            .collect::<Vec<_>>()
            .into(),
        text(&|r| r.session_username.clone()).into(),
        rows.iter()
            .map(|r| r.origin.filter(|o| o.xid != 0).map(|o| i64::from(o.xid)))
            .collect::<Vec<_>>()
            .into(),
        rows.iter()
            .map(|r| r.origin.map(|o| o.lsn as i64))
            .collect::<Vec<_>>()
            .into(),
    ];
    let mut head: Vec<u8> =
        Spi::get_one::<Vec<u8>>("SELECT head FROM admin_toolkit.audit_chain FOR UPDATE")?
            .unwrap_or_default();
    // Audit IDs and canonical texts, in audit_id order: the chain's order.
    let numbered: Vec<(i64, i64, String)> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "WITH v AS MATERIALIZED ({ROW_VALUES}), \
                          n AS MATERIALIZED (SELECT v.*, pg_catalog.nextval('admin_toolkit.security_audit_log_audit_id_seq'::regclass) AS audit_id FROM v) \
                     SELECT n.ord, n.audit_id, admin_toolkit.audit_row_text(ROW(n.audit_id, {COLUMNS}, NULL, NULL)::admin_toolkit.security_audit_log) \
                       FROM n ORDER BY n.audit_id"
                ),
                None,
                &args,
            )?
            .map(|row| {
                Ok((
                    row.get::<i64>(1)?.unwrap_or_default(),
                    row.get::<i64>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<spi::Result<Vec<_>>>()
    })?;
    let (mut ords, mut ids, mut previous, mut hashes) = (vec![], vec![], vec![], vec![]);
    for (ord, id, canonical) in numbered {
        let hash = admin_toolkit_core::audit::chain::link(&head, canonical.as_bytes());
        ords.push(ord);
        ids.push(id);
        previous.push(std::mem::replace(&mut head, hash.clone()));
        hashes.push(hash);
    }
    let last_id = *ids.last().unwrap_or(&0);
    let mut all = args;
    all.extend([ords.into(), ids.into(), previous.into(), hashes.into()]);
    Spi::run_with_args(
        &format!(
            "INSERT INTO admin_toolkit.security_audit_log (audit_id, {COLUMNS}, previous_hash, row_hash) \
             SELECT c.id, {COLUMNS}, c.prev, c.h \
               FROM ({ROW_VALUES}) v JOIN unnest($18::int8[], $19::int8[], $20::bytea[], $21::bytea[]) AS c(ord, id, prev, h) \
                 ON c.ord OPERATOR(pg_catalog.=) v.ord"
        ),
        &all,
    )?;
    Spi::run_with_args(
        "UPDATE admin_toolkit.audit_chain SET head = $1, head_audit_id = $2, updated_at = pg_catalog.now()",
        &[head.into(), last_id.into()],
    )
}

/// Writes events waiting in the shared-memory queue; they leave it only once written.
pub fn write_queued_events() -> spi::Result<usize> {
    let events = queue::peek(BATCH);
    if events.is_empty() {
        return Ok(0);
    }
    insert_rows(
        &events
            .iter()
            .map(|e| AuditRow::of_event(e, None))
            .collect::<Vec<_>>(),
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
    let rows = Spi::connect(|client| {
        client
            .select(
                "SELECT coalesce(a.rolname::text, r.role::text), coalesce(d.datname::text, r.db::text), \
                        n.nspname::text, coalesce(c.relname::text, 'oid ' || r.rel), \
                        jsonb_build_object('count', r.n, 'relation_oid', r.rel, 'source', 'read summary', \
                                           'period_seconds', $5::float8)::text \
                   FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) WITH ORDINALITY AS r(db, role, rel, n, ord) \
                   LEFT JOIN pg_catalog.pg_authid a ON a.oid = r.role::oid \
                   LEFT JOIN pg_catalog.pg_database d ON d.oid = r.db::oid \
                   LEFT JOIN pg_catalog.pg_class c ON c.oid = r.rel::oid AND r.db::oid = \
                        (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
                   LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  ORDER BY r.ord",
                None,
                &[databases.into(), roles.into(), relations.into(), counts.into(), period_seconds.into()],
            )?
            .map(|row| {
                Ok(AuditRow {
                    username: row.get::<String>(1)?,
                    database: row.get::<String>(2)?,
                    schema: row.get::<String>(3)?,
                    object: row.get::<String>(4)?,
                    object_type: Some("table".into()),
                    operation: Some("SELECT".into()),
                    success: true,
                    info: row.get::<String>(5)?.unwrap_or_else(|| "{}".into()),
                    ..AuditRow::default()
                })
            })
            .collect::<spi::Result<Vec<_>>>()
    })?;
    insert_rows(&rows)?;
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
        hooks::capture(&event);
        return;
    }
    // Not preloaded: no journal; the row is inserted in the caller's transaction.
    insert_rows(&[AuditRow::of_event(&event, None)])
        .unwrap_or_else(|e| ToolkitError::invalid_parameter(e.to_string()).raise());
}
