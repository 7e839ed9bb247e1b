//! Process identity and signals.

use pgrx::pg_sys;

/// Whether this process is a background worker (the toolkit's own, or another extension's).
/// `IsBackgroundWorker` is gone in 17; the backend type says the same on every major.
pub fn is_background_worker() -> bool {
    // SAFETY: MyBackendType is set when the process starts and only read here.
    unsafe { pg_sys::MyBackendType == pg_sys::BackendType::B_BG_WORKER }
}

/// Installs `handler` for `signal` in this backend. PostgreSQL 18 renamed the backend's
/// `pqsignal` to `pqsignal_be` (and it returns nothing).
///
/// # Safety
/// As `pqsignal`: called by the process itself, with a handler that is async-signal-safe.
pub unsafe fn set_signal_handler(signal: i32, handler: pg_sys::pqsigfunc) {
    #[cfg(not(feature = "pg18"))]
    {
        // The previous handler is not wanted: this one replaces it for good.
        let _previous = unsafe { pg_sys::pqsignal(signal, handler) };
    }
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::pqsignal_be(signal, handler)
    };
}
