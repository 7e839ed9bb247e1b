//! Server hooks that capture audit events without anyone calling a function. Each does the least
//! it can on the hot path: decide quickly whether the statement concerns it, copy a few fields
//! into shared memory, return. Every hook chains the one installed before it.

use super::journal;
use super::objects::describe_utility;
use super::queue::{self, AuditEvent};
use crate::security::credentials::lockout;
use crate::settings;
use admin_toolkit_core::audit::{may_carry_secret, redact_secrets};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{c_char, CStr};

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_CLIENT_AUTH: pg_sys::libpq::ClientAuthentication_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;

/// Installs the audit hooks; `_PG_init` calls this while preloading.
pub fn install() {
    // SAFETY: runs once in the postmaster while it loads preload libraries.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_CLIENT_AUTH = pg_sys::libpq::ClientAuthentication_hook;
        pg_sys::libpq::ClientAuthentication_hook = Some(client_authentication);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

/// The session fields every event carries: time, backend, user, database, client, application.
unsafe fn session_event(
    username: *const c_char,
    session_user: *const c_char,
    database: *const c_char,
) -> Box<AuditEvent> {
    let mut e = AuditEvent::empty();
    unsafe {
        e.event_time = pg_sys::GetCurrentTimestamp();
        e.pid = pg_sys::MyProcPid;
        e.session_start = pg_sys::MyStartTime;
        e.username.set_cstr(username);
        e.session_user.set_cstr(session_user);
        e.database.set_cstr(database);
        let port = pg_sys::libpq::be::MyProcPort;
        if !port.is_null() {
            e.client_ip.set_cstr((*port).remote_host);
        }
        e.application.set_cstr(pg_sys::application_name);
    }
    e
}

/// An event for the current session, with the current user and database.
pub fn current_session_event() -> Box<AuditEvent> {
    // SAFETY: called inside a transaction of a normal backend; the lookups are syscache reads.
    unsafe {
        let user = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        let session_user = pg_sys::GetUserNameFromId(pg_sys::GetSessionUserId(), true);
        let database = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        session_event(user, session_user, database)
    }
}

fn statement_text(pstmt: *mut pg_sys::PlannedStmt, query: *const c_char) -> (String, bool) {
    if query.is_null() {
        return (String::new(), false);
    }
    // SAFETY: the server passes a valid statement and its NUL-terminated source text.
    let full = unsafe { CStr::from_ptr(query) }.to_string_lossy();
    let (location, length) = unsafe { ((*pstmt).stmt_location, (*pstmt).stmt_len) };
    let start = usize::try_from(location).unwrap_or(0).min(full.len());
    let end = match usize::try_from(length) {
        Ok(0) | Err(_) => full.len(),
        Ok(n) => (start + n).min(full.len()),
    };
    let own = full.get(start..end).unwrap_or(&full).trim();
    let redacted = redact_secrets(own);
    let truncated = redacted.len() > 1024;
    (redacted, truncated)
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let run = || unsafe {
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    };
    unsafe {
        crate::security::password_policy::check_valid_until_statement((*pstmt).utilityStmt);
        crate::security::credentials::release_before_drop((*pstmt).utilityStmt);
    }
    // Only DDL (what log_statement = 'ddl' logs: CREATE/ALTER/DROP, GRANT/REVOKE, roles,
    // ALTER SYSTEM), only client sessions (the worker's own partition upkeep is not audited),
    // and not the statements of an extension's script: its CREATE/ALTER EXTENSION is.
    let audited = settings::AUDIT_DDL.get()
        && queue::available()
        && !crate::compat::process::is_background_worker()
        && unsafe { !pg_sys::creating_extension }
        && unsafe { pg_sys::GetCommandLogLevel((*pstmt).utilityStmt) }
            == pg_sys::LogStmtLevel::LOGSTMT_DDL;
    if !audited {
        run();
        unsafe { after_statement((*pstmt).utilityStmt) };
        return;
    }
    // Described before running: a DROP's object is gone afterwards.
    let mut event = current_session_event();
    unsafe { describe_utility((*pstmt).utilityStmt, &mut event) };
    let (text, truncated) = statement_text(pstmt, query_string);
    event.query.set(text.as_bytes());
    event.query_truncated = truncated;
    PgTryBuilder::new(run)
        .catch_others(|caught| {
            let mut failed = event.clone();
            failed.success = false;
            if let pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report) = &caught
            {
                failed
                    .error
                    .set(redact_secrets(report.message()).as_bytes());
            }
            capture(&failed);
            caught.rethrow()
        })
        .execute();
    event.success = true;
    capture(&event);
    unsafe { after_statement((*pstmt).utilityStmt) };
}

/// What follows some statements wherever they run: the worker looks at the credentials after
/// DROP ROLE and ALTER ROLE (at commit), and the journal's slot goes after DROP EXTENSION.
unsafe fn after_statement(stmt: *mut pg_sys::Node) {
    unsafe {
        // A dropped role's credentials go; a locked role's changed VALID UNTIL is kept and
        // replaced again.
        if pgrx::is_a(stmt, pg_sys::NodeTag::T_DropRoleStmt)
            || pgrx::is_a(stmt, pg_sys::NodeTag::T_AlterRoleStmt)
        {
            crate::worker::wake::at_commit(crate::security::credentials::duty::NAME);
        }
        drop_journal_slot_after(stmt);
    }
}

/// After DROP EXTENSION admin_toolkit in the worker's database, the journal's slot goes too:
/// nothing would move it again, and it would keep WAL forever.
unsafe fn drop_journal_slot_after(stmt: *mut pg_sys::Node) {
    unsafe {
        if !pgrx::is_a(stmt, pg_sys::NodeTag::T_DropStmt)
            || (*stmt.cast::<pg_sys::DropStmt>()).removeType != pg_sys::ObjectType::OBJECT_EXTENSION
            || pg_sys::get_extension_oid(c"admin_toolkit".as_ptr(), true) != pg_sys::InvalidOid
        {
            return;
        }
        let here = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        let worker_database = settings::DATABASE.get();
        if here.is_null() || worker_database.as_deref() != Some(CStr::from_ptr(here)) {
            return;
        }
    }
    journal::drop_slot();
}

/// Writes an event into the audit journal, flushed when nothing else would flush it soon; where
/// WAL cannot be written, into the shared-memory queue.
pub fn capture(event: &AuditEvent) {
    journal_or_queue(event, journal::needs_flush(event.success));
}

#[pg_guard]
unsafe extern "C-unwind" fn client_authentication(port: *mut pg_sys::libpq::be::Port, status: i32) {
    unsafe {
        if let Some(prev) = PREV_CLIENT_AUTH {
            prev(port, status);
        }
        if port.is_null() {
            return;
        }
        let names = crate::compat::client_port::client_port(port);
        let ok = status == pg_sys::STATUS_OK as i32;
        let verdict = lockout::authenticate(names.user_name, status);
        let audit_login = settings::AUDIT_LOGINS.get();
        if queue::available() && (audit_login || verdict.locked_now) {
            let mut event = session_event(names.user_name, names.user_name, names.database_name);
            event.client_ip.set_cstr(names.remote_host);
            event.application.set_cstr(names.application_name);
            event.object_type.set(b"database");
            event.object.set_cstr(names.database_name);
            if audit_login {
                event.operation.set(b"LOGIN");
                event.success = ok && !verdict.refused;
                if verdict.locked && !verdict.locked_now {
                    event.error.set(b"role is locked");
                } else if !ok {
                    event.error.set(b"authentication failed");
                }
                // A failed login is on disk before the client hears of it; a successful one is
                // flushed with the session's first commit or by the WAL writer.
                journal_or_queue(&event, !event.success);
            }
            if verdict.locked_now {
                event.operation.set(b"ROLE_LOCKED");
                event.object_type.set(b"role");
                event.object.set_cstr(names.user_name);
                event.success = true;
                event.error.set(b"");
                event.info.set(
                    format!(
                        "{{\"max_auth_failures\": {}}}",
                        settings::MAX_AUTH_FAILURES.get()
                    )
                    .as_bytes(),
                );
                journal_or_queue(&event, true);
            }
        }
        if verdict.refused {
            lockout::refuse(names.user_name);
        }
    }
}

/// Writes an event into the audit journal, flushed or not; where WAL cannot be written, into the
/// shared-memory queue.
fn journal_or_queue(event: &AuditEvent, flush: bool) {
    if !journal::write(event, flush) {
        queue::push(event);
    }
}

/// Most distinct tables counted for one statement; more are rare and counted as one batch.
const MAX_READ_TABLES: usize = 32;

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
        if !settings::AUDIT_READS.get()
            || !queue::available()
            || crate::compat::process::is_background_worker()
            || eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0
        {
            return;
        }
        let rtable = (*(*query_desc).plannedstmt).rtable;
        if rtable.is_null() {
            return;
        }
        let mut tables = [0u32; MAX_READ_TABLES];
        let mut n = 0;
        for i in 0..(*rtable).length {
            let rte = pg_sys::list_nth(rtable, i).cast::<pg_sys::RangeTblEntry>();
            let relkind = (*rte).relkind as u8;
            if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
                && crate::compat::executor::required_permissions((*query_desc).plannedstmt, rte)
                    & pg_sys::ACL_SELECT as pg_sys::AclMode
                    != 0
                && u32::from((*rte).relid) >= pg_sys::FirstNormalObjectId
                && (relkind == pg_sys::RELKIND_RELATION
                    || relkind == pg_sys::RELKIND_PARTITIONED_TABLE)
                && n < MAX_READ_TABLES
                && !tables[..n].contains(&u32::from((*rte).relid))
            {
                tables[n] = u32::from((*rte).relid);
                n += 1;
            }
        }
        if n > 0 {
            queue::count_reads(
                u32::from(pg_sys::MyDatabaseId),
                u32::from(pg_sys::GetUserId()),
                &tables[..n],
            );
        }
    }
}

/// Keeps statements that may carry a password out of the server log: the STATEMENT line of any
/// message is suppressed, and a message that quotes the statement (log_statement,
/// log_min_duration_statement) gets the redacted text instead.
#[pg_guard]
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    unsafe {
        let query = pg_sys::debug_query_string;
        if !edata.is_null() && !query.is_null() {
            let text = CStr::from_ptr(query).to_string_lossy();
            if may_carry_secret(&text) {
                (*edata).hide_stmt = true;
                let message = (*edata).message;
                if !message.is_null()
                    && CStr::from_ptr(message)
                        .to_string_lossy()
                        .contains(text.as_ref())
                {
                    let redacted = CStr::from_ptr(message)
                        .to_string_lossy()
                        .replace(text.as_ref(), &redact_secrets(&text));
                    if let Ok(c) = std::ffi::CString::new(redacted) {
                        (*edata).message =
                            pg_sys::MemoryContextStrdup(pg_sys::ErrorContext, c.as_ptr());
                    }
                }
            }
        }
        if let Some(prev) = PREV_EMIT_LOG {
            prev(edata);
        }
    }
}
