//! Password history at CREATE/ALTER ROLE ... PASSWORD: a password the reuse rules forbid is
//! refused (an audit event says so), and the new one's salted hash is kept once the statement's
//! transaction commits (a change rolled back, to a savepoint too, leaves no entry).

use super::state;
use crate::error::ToolkitError;
use crate::security::audit::record_event;
use admin_toolkit_core::credentials::{HistoryEntry, SecretKind};
use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

/// Refuses `secret` when role `user` may not repeat it, and remembers it at commit.
pub fn check_and_remember(user: &CStr, kind: SecretKind, secret: &[u8]) {
    let policy = super::reuse_policy();
    if !policy.enabled() || !state::available() {
        return;
    }
    // SAFETY: reads the clock; a syscache lookup inside the statement's transaction.
    let (now, role) = unsafe {
        (
            pg_sys::GetCurrentTimestamp(),
            pg_sys::get_role_oid(user.as_ptr(), true),
        )
    };
    let name = user.to_string_lossy();
    if role != pg_sys::InvalidOid {
        let entries = state::read(|s| s.history_of(u32::from(role))).unwrap_or_default();
        if policy.reused(&entries, kind, secret, now).is_some() {
            state::write(|s| s.reuse_refused_total += 1);
            record_event(
                "PASSWORD_REUSE_REFUSED",
                Some(&name),
                Some("role"),
                false,
                Some("the password was used before by this role"),
                "{}",
                false,
            );
            ToolkitError::invalid_parameter(format!(
                "role \"{name}\" used this password before"
            ))
            .with_detail(format!(
                "A role may not repeat one of its last {} passwords (admin_toolkit.password_reuse_history) \
                 nor one it set within {} days (admin_toolkit.password_reuse_interval).",
                policy.history,
                policy.interval_micros / super::MICROS_PER_DAY
            ))
            .with_hint("Choose a password this role has not used.")
            .raise();
        }
    }
    let entry = HistoryEntry::new(kind, secret, now)
        .unwrap_or_else(|e| ToolkitError::invalid_parameter(e).raise());
    // The (sub)transaction that sets the password: an entry is kept only if it committed (a
    // ROLLBACK TO SAVEPOINT or an exception block undoes it, and marks it aborted at once).
    // SAFETY: assigns the (sub)transaction its ID, which the role's update needs anyway.
    let xid = unsafe { pg_sys::GetCurrentTransactionId() };
    let name = CString::from(user);
    // The role is resolved at pre-commit (ALTER ROLE's is the one seen now: a rename later in
    // the transaction cannot move the entry; CREATE ROLE's exists by then) and the entry is
    // added after the commit: the worker, which forgets entries of roles it cannot see, must
    // never find one of a role not yet committed. Nothing here can fail.
    let resolved = AssertUnwindSafe(Rc::new(Cell::new(pg_sys::InvalidOid)));
    let at_commit = AssertUnwindSafe(Rc::clone(&resolved));
    register_xact_callback(PgXactCallbackEvent::PreCommit, move || {
        // SAFETY: reads the transaction status and the syscache, still inside the transaction.
        unsafe {
            if pg_sys::TransactionIdDidAbort(xid) {
                return;
            }
        }
        let role = if role != pg_sys::InvalidOid {
            role
        } else {
            // CREATE ROLE does not always make its new row visible to its own transaction (no
            // command counter increment without memberships): one more increment, as deferred
            // triggers at commit do, shows it.
            // SAFETY: syscache lookups inside the transaction.
            unsafe {
                pg_sys::CommandCounterIncrement();
                pg_sys::get_role_oid(name.as_ptr(), true)
            }
        };
        resolved.set(role);
    });
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        let role = at_commit.get();
        if role != pg_sys::InvalidOid {
            state::write(|s| s.add_history(u32::from(role), &entry));
            super::wake_worker();
        }
    });
}
