//! Running one step of the worker's work in its own transaction, so that an error in one step is
//! logged and rolled back without taking the worker down or blocking the other steps.

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;

/// Runs `body` in a new transaction and commits it. On any error the transaction is aborted,
/// the error is logged at LOG level with the step's name, and `None` is returned.
/// Unwind safety is asserted because a failed step's transaction, and all it touched, is
/// thrown away.
pub fn run_step<R, F: FnOnce() -> R>(name: &str, body: F) -> Option<R> {
    let body = AssertUnwindSafe(body);
    let outcome = PgTryBuilder::new(|| Some(BackgroundWorker::transaction(body)))
        .catch_others(|caught| {
            let (message, detail) = describe(&caught);
            log!(
                "admin_toolkit worker: step \"{name}\" failed and will be retried: {message}{}",
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            );
            None
        })
        .execute();
    if outcome.is_none() {
        // SAFETY: we are in a background worker between statements; aborting the failed
        // transaction releases its locks, snapshots, SPI state and memory.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    outcome
}

/// Runs `body` in a new transaction and commits it; on an error (a PostgreSQL ERROR or a Rust
/// panic) aborts the transaction and returns the error's message. For job workers, which
/// record failures in their own rows.
pub fn try_transaction<R, F: FnOnce() -> R>(body: F) -> Result<R, String> {
    let body = AssertUnwindSafe(body);
    let outcome = PgTryBuilder::new(|| Ok(BackgroundWorker::transaction(body)))
        .catch_others(|caught| {
            let (message, detail) = describe(&caught);
            Err(match detail {
                Some(d) => format!("{message} ({d})"),
                None => message,
            })
        })
        .execute();
    if outcome.is_err() {
        // SAFETY: a background worker between statements, as in run_step.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    outcome
}

fn describe(caught: &pg_sys::panic::CaughtError) -> (String, Option<String>) {
    use pg_sys::panic::CaughtError::*;
    match caught {
        PostgresError(report)
        | ErrorReport(report)
        | RustPanic {
            ereport: report, ..
        } => (
            report.message().to_string(),
            report.detail().map(str::to_string),
        ),
    }
}
