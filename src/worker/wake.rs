//! Waking the database worker once the current transaction commits: a backend that hands the
//! worker work in tables (backups to delete, alert deliveries) asks after commit, so the worker
//! sees the rows at once instead of at its next routine look, and a rollback wakes nobody.

use pgrx::prelude::*;

static mut WAKE_AT_COMMIT: bool = false;
static mut CALLBACK_REGISTERED: bool = false;

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    // SAFETY: this backend's own flag; waking the worker sets a latch, which cannot fail.
    unsafe {
        if !WAKE_AT_COMMIT {
            return;
        }
        if event == pg_sys::XactEvent::XACT_EVENT_COMMIT {
            WAKE_AT_COMMIT = false;
            crate::security::audit::queue::request_work();
        } else if event == pg_sys::XactEvent::XACT_EVENT_ABORT {
            WAKE_AT_COMMIT = false;
        }
    }
}

/// Asks the worker to look for requested work once this transaction has committed.
pub fn at_commit() {
    // SAFETY: backend-local flags; RegisterXactCallback is called once per backend.
    unsafe {
        if !CALLBACK_REGISTERED {
            pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
            CALLBACK_REGISTERED = true;
        }
        WAKE_AT_COMMIT = true;
    }
}
