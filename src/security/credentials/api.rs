//! The SQL face of the lockout: the roles' state (`lockout_states()`, behind the `locked_roles`
//! view) and `unlock_role()`.

use super::state;
use crate::error::ToolkitError;
use crate::security::audit::record_event;
use admin_toolkit_core::credentials::UNTIL_UNLOCKED;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::ffi::CStr;

fn timestamp(micros: i64) -> Option<TimestampWithTimeZone> {
    (micros != 0 && micros != UNTIL_UNLOCKED)
        .then(|| TimestampWithTimeZone::try_from(micros).ok())
        .flatten()
}

/// Every role with counted failed logins or a lock, cluster-wide; empty when the library is not
/// preloaded (then nothing is counted).
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn lockout_states() -> TableIterator<
    'static,
    (
        name!(role_name, Option<String>),
        name!(role_oid, pg_sys::Oid),
        name!(failed_logins, i32),
        name!(first_failure_at, Option<TimestampWithTimeZone>),
        name!(locked, bool),
        name!(locked_at, Option<TimestampWithTimeZone>),
        name!(locked_until, Option<TimestampWithTimeZone>),
    ),
> {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let roles = state::read(|s| s.snapshot().0).unwrap_or_default();
    let rows = roles
        .into_iter()
        .filter(|slot| !slot.state.is_clear(now, &super::lockout_policy()))
        .map(|slot| {
            let oid = pg_sys::Oid::from(slot.role);
            // SAFETY: a syscache lookup; NULL for a role dropped since.
            let name = unsafe {
                let p = pg_sys::GetUserNameFromId(oid, true);
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            };
            let s = slot.state;
            let locked = s.is_locked(now);
            (
                name,
                oid,
                i32::try_from(s.failures).unwrap_or(i32::MAX),
                timestamp(s.first_failure_at),
                locked,
                if locked { timestamp(s.locked_at) } else { None },
                if locked {
                    timestamp(s.locked_until)
                } else {
                    None
                },
            )
        })
        .collect::<Vec<_>>();
    TableIterator::new(rows)
}

/// The roles locked now: name (or OID when dropped), failed logins, lock start and end.
pub fn locked_now() -> Vec<(
    String,
    i64,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
)> {
    lockout_states()
        .filter(|row| row.4)
        .map(|row| {
            (
                row.0.unwrap_or_else(|| u32::from(row.1).to_string()),
                i64::from(row.2),
                row.5,
                row.6,
            )
        })
        .collect()
}

/// Lifts a role's lock and clears its failed logins; whether it was locked. An audit event
/// (`ROLE_UNLOCKED`) records who did it.
#[pg_extern(volatile)]
fn unlock_role(p_role: Option<&str>) -> bool {
    let role_name = crate::error::require(p_role, "p_role");
    if !state::available() {
        ToolkitError::wrong_state("the lockout needs admin_toolkit in shared_preload_libraries")
            .raise();
    }
    let c_name = std::ffi::CString::new(role_name)
        .unwrap_or_else(|_| ToolkitError::invalid_parameter("p_role contains a NUL byte").raise());
    // SAFETY: a syscache lookup.
    let role = unsafe { pg_sys::get_role_oid(c_name.as_ptr(), true) };
    if role == pg_sys::InvalidOid {
        ToolkitError::undefined_object(format!("role \"{role_name}\" does not exist")).raise();
    }
    // A superuser gives the role its VALID UNTIL back at once (with this transaction), before
    // anything else; for a role granted this function, and on a standby, the worker does.
    // SAFETY: reads the current user's role attributes and the recovery state.
    if unsafe { pg_sys::superuser() && !pg_sys::RecoveryInProgress() } {
        Spi::run_with_args(
            &format!(
                "WITH ending AS ( \
                     UPDATE admin_toolkit.role_lockouts \
                        SET valid_until_locked = false, failed_logins = 0, first_failure_at = NULL, \
                            locked_at = NULL, locked_until = NULL \
                      WHERE role_oid OPERATOR(pg_catalog.=) $1 AND valid_until_locked \
                     RETURNING role_oid, saved_valid_until) \
                 {}",
                super::duty::give_back_valid_until("ending")
            ),
            &[role.into()],
        )
        .unwrap_or_else(|e| ToolkitError::wrong_state(e.to_string()).raise());
    }
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let was_locked = state::read(|s| s.is_locked(u32::from(role), now)).unwrap_or(false);
    record_event(
        "ROLE_UNLOCKED",
        Some(role_name),
        Some("role"),
        true,
        None,
        &serde_json::json!({ "was_locked": was_locked }).to_string(),
        false,
    );
    // Last: the lock is lifted in shared memory (not undone by a rollback of the caller).
    state::write(|s| s.unlock(u32::from(role), now));
    super::wake_worker();
    was_locked
}
