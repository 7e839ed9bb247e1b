//! Waking the database worker once the current transaction commits: a backend that hands the
//! worker work in tables (backups to delete, alert deliveries) asks after commit, so the worker
//! sees the rows at once instead of at its next routine look, and a rollback wakes nobody. Only
//! the duty asked wakes (see `signals`).

use pgrx::prelude::*;

/// Request bits of the duties to wake at commit; 0: none.
static mut WAKE_AT_COMMIT: u32 = 0;
static mut CALLBACK_REGISTERED: bool = false;

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    // SAFETY: this backend's own flag; waking the worker sets a latch, which cannot fail.
    unsafe {
        if WAKE_AT_COMMIT == 0 {
            return;
        }
        if event == pg_sys::XactEvent::XACT_EVENT_COMMIT {
            let requests = WAKE_AT_COMMIT;
            WAKE_AT_COMMIT = 0;
            super::signals::request(requests);
        } else if event == pg_sys::XactEvent::XACT_EVENT_ABORT {
            WAKE_AT_COMMIT = 0;
        }
    }
}

/// Asks the worker's duty named `duty` (its `Duty::name`) to look for requested work once this
/// transaction has committed.
pub fn at_commit(duty: &str) {
    // SAFETY: backend-local flags; RegisterXactCallback is called once per backend.
    unsafe {
        if !CALLBACK_REGISTERED {
            pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
            CALLBACK_REGISTERED = true;
        }
        WAKE_AT_COMMIT |= super::signals::request_bit(duty);
    }
}
