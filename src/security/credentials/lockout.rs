//! Lockout at client authentication: every failed login of a role is counted (exactly: under
//! the state's lock, whatever the number of concurrent attempts), the one that reaches
//! `max_auth_failures` locks the role. The worker then makes the role's password count as
//! expired (`duty::lock_in_catalog`), so PostgreSQL itself refuses it as a wrong one; until it
//! has (a tick), and for methods that use no password, this hook refuses a locked role's login
//! with the message of a wrong password.

use super::state;
use crate::settings;
use admin_toolkit_core::credentials::{role_listed, FailureOutcome};
use pgrx::pg_sys;
use std::ffi::{c_char, CStr};

/// What the lockout made of one login.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The role is locked and its password was right: the login must be refused.
    pub refused: bool,
    /// This failure locked the role.
    pub locked_now: bool,
    /// The role is locked (whatever the password).
    pub locked: bool,
}

/// Longest a login waits, after the server's start, for the worker to load the persisted locks.
const LOAD_WAIT_MICROS: i64 = 5_000_000;

/// After a start, logins wait (a few seconds at most) until the worker has loaded the locks it
/// persisted: a role locked before a restart must not get in while they are loading.
fn wait_until_loaded() {
    loop {
        let Some((loaded, since)) = state::read(|s| (s.loaded, s.initialized_at)) else {
            return;
        };
        // SAFETY: reads the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        if loaded || now - since > LOAD_WAIT_MICROS {
            return;
        }
        // SAFETY: a plain sleep, in a backend still authenticating.
        unsafe { pg_sys::pg_usleep(10_000) };
    }
}

/// Whether `role` is never locked: a superuser (unless `lockout_superusers`) or a role listed in
/// `lockout_exempt_roles`.
///
/// # Safety
/// Inside a transaction (syscache lookups).
unsafe fn exempt(role: pg_sys::Oid, name: &str) -> bool {
    (!settings::LOCKOUT_SUPERUSERS.get() && unsafe { pg_sys::superuser_arg(role) })
        || role_listed(&settings::lockout_exempt_roles(), name)
}

/// The role's VALID UNTIL when it has passed (`i64::MIN`: `-infinity`, the catalog lock).
///
/// # Safety
/// Inside a transaction; `user_name` NUL-terminated.
unsafe fn expired_password(user_name: *const c_char, now: i64) -> Option<i64> {
    let cache = pg_sys::SysCacheIdentifier::AUTHNAME as i32;
    unsafe {
        let tuple = pg_sys::SearchSysCache1(cache, pg_sys::Datum::from(user_name));
        if tuple.is_null() {
            return None;
        }
        let mut isnull = true;
        let until = pg_sys::SysCacheGetAttr(
            cache,
            tuple,
            pg_sys::Anum_pg_authid_rolvaliduntil as i16,
            &mut isnull,
        );
        pg_sys::ReleaseSysCache(tuple);
        let until = until.value() as i64;
        (!isnull && until < now).then_some(until)
    }
}

/// Counts a login of `user_name` (`status`: the server's verdict on its password) and says
/// whether to refuse it. A client that went away before answering (`STATUS_EOF`, as psql does
/// to prompt for a password) is not a failure.
///
/// # Safety
/// From the client-authentication hook: inside the backend's start-up transaction, with the
/// server's NUL-terminated user name.
pub unsafe fn authenticate(user_name: *const c_char, status: i32) -> Verdict {
    let policy = super::lockout_policy();
    if policy.max_failures == 0
        || !state::available()
        || user_name.is_null()
        || status == pg_sys::STATUS_EOF
    {
        return Verdict::default();
    }
    wait_until_loaded();
    // Most logins: right password, no role with failures or a lock. Nothing to look up.
    if status == pg_sys::STATUS_OK as i32 && state::read(|s| s.roles_in_use == 0).unwrap_or(true) {
        return Verdict::default();
    }
    let role = unsafe { pg_sys::get_role_oid(user_name, true) };
    let name = unsafe { CStr::from_ptr(user_name) }.to_string_lossy();
    if role == pg_sys::InvalidOid || unsafe { exempt(role, &name) } {
        return Verdict::default();
    }
    let role = u32::from(role);
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    if status == pg_sys::STATUS_OK as i32 {
        // Most logins: a role with nothing counted, seen under the shared lock only.
        if !state::read(|s| s.tracks(role)).unwrap_or(false) {
            return Verdict::default();
        }
        let refused = state::write(|s| s.record_success(role, now, &policy)).unwrap_or(false);
        return Verdict {
            refused,
            locked_now: false,
            locked: refused,
        };
    }
    if let Some(until) = unsafe { expired_password(user_name, now) } {
        // Refused for its expired password, whatever was typed: the lock in the catalog (or one
        // that has just ended, until the worker gives VALID UNTIL back). No guess to count.
        let locked = until == i64::MIN || state::read(|s| s.is_locked(role, now)).unwrap_or(false);
        return Verdict {
            refused: false,
            locked_now: false,
            locked,
        };
    }
    let outcome = state::write(|s| s.record_failure(role, now, &policy));
    // The worker persists the count (and locks the role in the catalog) within its next tick.
    super::wake_worker();
    Verdict {
        refused: false,
        locked_now: outcome == Some(FailureOutcome::Locked),
        locked: matches!(
            outcome,
            Some(FailureOutcome::Locked | FailureOutcome::AlreadyLocked)
        ),
    }
}

/// Refuses the login of a locked role as a wrong password is refused (SQLSTATE 28P01, the same
/// message, no detail); only the server log says why (messages below ERROR reach no client while
/// it authenticates).
///
/// # Safety
/// As [`authenticate`].
pub unsafe fn refuse(user_name: *const c_char) -> ! {
    let name = unsafe { CStr::from_ptr(user_name) }.to_string_lossy();
    pgrx::log!(
        "admin_toolkit: login of role \"{name}\" refused: it is locked after failed logins (admin_toolkit.unlock_role lifts the lock)"
    );
    pgrx::pg_sys::panic::ErrorReport::new(
        pgrx::PgSqlErrorCode::ERRCODE_INVALID_PASSWORD,
        format!("password authentication failed for user \"{name}\""),
        pgrx::pg_sys::function_name!(),
    )
    .report(pgrx::PgLogLevel::FATAL);
    unreachable!("a FATAL error ends the backend")
}
