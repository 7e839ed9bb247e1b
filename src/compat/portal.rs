//! Running a portal to completion.

use pgrx::pg_sys;

/// `PortalRun` with every row fetched at once. PostgreSQL 18 dropped its `run_once` argument
/// (always true here).
///
/// # Safety
/// As `PortalRun`: a started portal, valid receivers, in a transaction.
pub unsafe fn run_to_completion(
    portal: pg_sys::Portal,
    is_top_level: bool,
    receiver: *mut pg_sys::DestReceiver,
    completion: *mut pg_sys::QueryCompletion,
) -> bool {
    #[cfg(not(feature = "pg18"))]
    unsafe {
        pg_sys::PortalRun(
            portal,
            i64::MAX as _,
            is_top_level,
            true,
            receiver,
            receiver,
            completion,
        )
    }
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::PortalRun(
            portal,
            i64::MAX as _,
            is_top_level,
            receiver,
            receiver,
            completion,
        )
    }
}
