//! Credentials beyond a password's shape (see docs/security.md#credentials): the password
//! history a new password may not repeat, and the lockout of a role after failed logins. The
//! state is in shared memory for the whole cluster ([`state`]); the hooks read and change it
//! ([`history`] from the password check, [`lockout`] from client authentication); the worker
//! persists it into admin_toolkit.password_history and role_lockouts and loads it back after a
//! restart ([`duty`]). Decisions are the core crate's (`admin_toolkit_core::credentials`).

pub mod api;
pub mod duty;
pub mod history;
pub mod lockout;
pub mod state;

use crate::settings;
use admin_toolkit_core::credentials::{LockoutPolicy, ReusePolicy};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The reuse rules in force in this session.
pub fn reuse_policy() -> ReusePolicy {
    ReusePolicy {
        history: settings::non_negative(&settings::PASSWORD_REUSE_HISTORY),
        interval_micros: i64::from(settings::non_negative(&settings::PASSWORD_REUSE_INTERVAL))
            * MICROS_PER_DAY,
    }
}

/// The lockout rules in force (server-wide settings).
pub fn lockout_policy() -> LockoutPolicy {
    LockoutPolicy {
        max_failures: settings::non_negative(&settings::MAX_AUTH_FAILURES),
        window_micros: i64::from(settings::non_negative(&settings::AUTH_FAILURE_WINDOW).max(1))
            * MICROS_PER_SECOND,
        duration_micros: match settings::non_negative(&settings::LOCKOUT_DURATION) {
            0 => None,
            s => Some(i64::from(s) * MICROS_PER_SECOND),
        },
    }
}

/// Asks the worker to persist the state soon.
fn wake_worker() {
    crate::worker::signals::request(crate::worker::signals::request_bit(duty::NAME));
}

/// Before `DROP EXTENSION admin_toolkit` (in a database where it exists): every role locked
/// in the catalog gets its VALID UNTIL back and every lock is lifted, since nothing would do it
/// once the tables are gone. Runs as the dropping role, in its transaction.
///
/// # Safety
/// `stmt` is the statement's parse tree, inside a transaction.
pub unsafe fn release_before_drop(stmt: *mut pgrx::pg_sys::Node) {
    use pgrx::pg_sys;
    unsafe {
        if !pgrx::is_a(stmt, pg_sys::NodeTag::T_DropStmt)
            || (*stmt.cast::<pg_sys::DropStmt>()).removeType != pg_sys::ObjectType::OBJECT_EXTENSION
            || pg_sys::get_extension_oid(c"admin_toolkit".as_ptr(), true) == pg_sys::InvalidOid
        {
            return;
        }
        let objects =
            pgrx::PgList::<pg_sys::Node>::from_pg((*stmt.cast::<pg_sys::DropStmt>()).objects);
        let ours = objects.iter_ptr().any(|o| {
            pgrx::is_a(o, pg_sys::NodeTag::T_String)
                && std::ffi::CStr::from_ptr((*o.cast::<pg_sys::String>()).sval).to_bytes()
                    == b"admin_toolkit"
        });
        if !ours {
            return;
        }
    }
    let present = pgrx::Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regclass('admin_toolkit.role_lockouts') IS NOT NULL",
    );
    if present != Ok(Some(true)) {
        return;
    }
    pgrx::Spi::run(&duty::give_back_valid_until(
        "(SELECT role_oid, saved_valid_until FROM admin_toolkit.role_lockouts WHERE valid_until_locked)",
    ))
    .unwrap_or_else(|e| crate::error::ToolkitError::wrong_state(e.to_string()).raise());
    state::write(|s| s.unlock_all());
}

/// Registers the shared memory; `_PG_init` calls this while preloading.
pub fn install() {
    state::install();
}
