//! Running one statement the way a client's simple query runs: parsed, planned and executed
//! through a portal with `isTopLevel = true`, in a transaction of its own that is not a
//! transaction block. That is what VACUUM, REINDEX CONCURRENTLY and ALTER SYSTEM require, and
//! what SPI (always inside the caller's transaction) cannot give. Only for background workers
//! outside any transaction.

use pgrx::pg_sys;
use std::ffi::CString;
use std::ptr::{null, null_mut};

/// Executes `sql` (one or more statements) top-level. Errors are raised as PostgreSQL errors;
/// the caller catches them and aborts the transaction.
///
/// # Safety
/// Call from a background worker connected to a database, with no transaction open.
pub unsafe fn execute(sql: &str) {
    let source = CString::new(sql).unwrap_or_else(|_| CString::new("").expect("empty string"));
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, source.as_ptr());
        // Parse trees and plans must outlive the transaction: VACUUM commits and starts
        // transactions of its own while its portal runs (exec_simple_query keeps them in
        // MessageContext for the same reason).
        let parse_context = pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"admin_toolkit top-level statement".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        // Stays current throughout: the transaction's own context does not survive VACUUM.
        pg_sys::MemoryContextSwitchTo(parse_context);
        let statements = pg_sys::pg_parse_query(source.as_ptr());
        let count = if statements.is_null() {
            0
        } else {
            (*statements).length
        };
        for i in 0..count {
            let raw = pg_sys::list_nth(statements, i).cast::<pg_sys::RawStmt>();
            let tag = pg_sys::CreateCommandTag((*raw).stmt);
            let needs_snapshot = pg_sys::analyze_requires_snapshot(raw);
            if needs_snapshot {
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw,
                source.as_ptr(),
                null_mut(),
                0,
                null_mut(),
            );
            let plans = pg_sys::pg_plan_queries(
                queries,
                source.as_ptr(),
                pg_sys::CURSOR_OPT_PARALLEL_OK as i32,
                null_mut(),
            );
            if needs_snapshot {
                pg_sys::PopActiveSnapshot();
            }
            let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
            (*portal).visible = false;
            pg_sys::PortalDefineQuery(portal, null(), source.as_ptr(), tag, plans, null_mut());
            pg_sys::PortalStart(portal, null_mut(), 0, null_mut());
            let mut text_format: i16 = 0;
            pg_sys::PortalSetResultFormat(portal, 1, &mut text_format);
            let receiver = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone);
            let mut completion: pg_sys::QueryCompletion = std::mem::zeroed();
            crate::compat::portal::run_to_completion(portal, count == 1, receiver, &mut completion);
            if let Some(destroy) = (*receiver).rDestroy {
                destroy(receiver);
            }
            pg_sys::PortalDrop(portal, false);
            pg_sys::CommandCounterIncrement();
        }
        pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        pg_sys::CommitTransactionCommand();
        pg_sys::MemoryContextDelete(parse_context);
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, null());
    }
}

/// Executes `sql` top-level and returns the error message if it failed, with its transaction
/// aborted, so the caller can record the outcome in a fresh transaction.
///
/// # Safety
/// As for [`execute`].
pub unsafe fn execute_catching(sql: &str) -> Option<String> {
    let error = pgrx::prelude::PgTryBuilder::new(|| {
        unsafe { execute(sql) };
        None
    })
    .catch_others(|caught| match &caught {
        pg_sys::panic::CaughtError::PostgresError(r)
        | pg_sys::panic::CaughtError::ErrorReport(r)
        | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => Some(r.message().to_string()),
    })
    .execute();
    if error.is_some() {
        // SAFETY: the failed statement's transaction is still open.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    error
}

/// Warnings raised while [`execute_capturing`] runs (this process only).
static CAPTURED_WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static mut PREVIOUS_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn capture_warning(edata: *mut pg_sys::ErrorData) {
    unsafe {
        if !edata.is_null()
            && (*edata).elevel == pg_sys::WARNING as i32
            && !(*edata).message.is_null()
        {
            let message = std::ffi::CStr::from_ptr((*edata).message)
                .to_string_lossy()
                .into_owned();
            if let Ok(mut captured) = CAPTURED_WARNINGS.lock() {
                captured.push(message);
            }
        }
        if let Some(previous) = PREVIOUS_EMIT_LOG_HOOK {
            previous(edata);
        }
    }
}

/// What a top-level statement did: its error, and the warnings it raised (VACUUM skips, with a
/// WARNING, the tables its role may not vacuum).
pub struct Outcome {
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// [`execute_catching`], also collecting the statement's warnings. Warnings reach the hook only
/// when log_min_messages lets them reach the server log; job workers keep it at `warning` or
/// lower.
///
/// # Safety
/// As for [`execute`].
pub unsafe fn execute_capturing(sql: &str) -> Outcome {
    unsafe {
        if let Ok(mut captured) = CAPTURED_WARNINGS.lock() {
            captured.clear();
        }
        PREVIOUS_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(capture_warning);
        let error = execute_catching(sql);
        pg_sys::emit_log_hook = PREVIOUS_EMIT_LOG_HOOK;
        Outcome {
            error,
            warnings: CAPTURED_WARNINGS
                .lock()
                .map(|mut captured| std::mem::take(&mut *captured))
                .unwrap_or_default(),
        }
    }
}
