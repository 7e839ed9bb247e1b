//! The environment the toolkit's own code runs in, chosen by nobody else.
//!
//! PostgreSQL applies `ALTER DATABASE/ROLE … SET` to background workers as to any session, and
//! resolves unqualified functions and operators through `search_path`, where an exact-type
//! overload in any visible schema beats `pg_catalog`'s. So every process the toolkit starts
//! calls [`pin_process`] right after connecting: the settings its work depends on are set at
//! `PGC_S_OVERRIDE`, above every database and role setting (and what `RESET` returns to).
//! Code that runs with more rights than its caller does so through [`with_rights`]: a new GUC
//! nest level with the pinned settings and `SECURITY_RESTRICTED_OPERATION`, undone on every
//! exit path, as a `SECURITY DEFINER` function with `SET search_path` would.

use pgrx::prelude::*;
use std::ffi::CStr;

/// The search path of every toolkit process and of raised rights: the catalog, then this
/// session's own temporary schema (which only it can write, and where functions and operators
/// are never looked up).
pub const SEARCH_PATH: &CStr = c"pg_catalog, pg_temp";

/// Settings whose meaning the toolkit's SQL depends on, with the values it was written for.
/// Pinned at connection and again inside raised rights.
const PINNED: &[(&CStr, &CStr)] = &[
    (c"search_path", SEARCH_PATH),
    (c"session_replication_role", c"origin"),
    (c"row_security", c"on"),
    (c"transform_null_equals", c"off"),
    (c"quote_all_identifiers", c"off"),
    (c"standard_conforming_strings", c"on"),
    (c"check_function_bodies", c"on"),
    (c"array_nulls", c"on"),
    (c"DateStyle", c"ISO, MDY"),
    (c"IntervalStyle", c"postgres"),
    (c"extra_float_digits", c"1"),
    (c"bytea_output", c"hex"),
    (c"default_tablespace", c""),
    (c"temp_tablespaces", c""),
    (c"default_table_access_method", c"heap"),
];

/// Settings of a whole session only: a transaction's defaults and the limits a database or role
/// could set to stop the toolkit's work (a job sets its own limits after this).
const PINNED_AT_CONNECTION: &[(&CStr, &CStr)] = &[
    (c"role", c"none"),
    (c"default_transaction_read_only", c"off"),
    (c"default_transaction_isolation", c"read committed"),
    (c"default_transaction_deferrable", c"off"),
    (c"statement_timeout", c"0"),
    (c"lock_timeout", c"0"),
    (c"idle_in_transaction_session_timeout", c"0"),
    (c"idle_session_timeout", c"0"),
    (c"exit_on_error", c"off"),
    // The toolkit's triggers and SQL functions are PL/pgSQL, run in the toolkit's processes.
    (c"plpgsql.extra_errors", c"none"),
    (c"plpgsql.extra_warnings", c"none"),
    (c"plpgsql.variable_conflict", c"error"),
];

fn set(
    name: &CStr,
    value: &CStr,
    source: pg_sys::GucSource::Type,
    action: pg_sys::GucAction::Type,
) {
    // SAFETY: valid C strings; ERROR on a bad value (none here: constants PostgreSQL accepts).
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            source,
            action,
            true,
            pg_sys::PGERROR as i32,
            false,
        );
    }
}

/// Right after a toolkit process connects (worker, launcher, job of any kind, /metrics
/// endpoint): every setting the toolkit depends on, at a source that database and role
/// settings cannot override and that `RESET` returns to. Outside any transaction.
pub fn pin_process() {
    let pinned = PINNED
        .iter()
        .chain(PINNED_AT_CONNECTION)
        .chain(crate::compat::session::PINNED_AT_CONNECTION);
    for (name, value) in pinned {
        set(
            name,
            value,
            pg_sys::GucSource::PGC_S_OVERRIDE,
            pg_sys::GucAction::GUC_ACTION_SET,
        );
    }
}

/// A job's own limits on its statements and lock waits, set after [`pin_process`] at session
/// level. Outside any transaction.
pub fn set_session_limits(statement_timeout: &CStr, lock_timeout: &CStr) {
    for (name, value) in [
        (c"statement_timeout", statement_timeout),
        (c"lock_timeout", lock_timeout),
    ] {
        set(
            name,
            value,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SET,
        );
    }
}

/// Runs `f` as `role` with the pinned settings and `SECURITY_RESTRICTED_OPERATION`, in a GUC
/// nest level of its own that is undone however `f` ends (return, ERROR or panic). In a
/// transaction. For every piece of code that runs with more rights than its caller.
pub fn with_rights<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    struct Restore {
        user: pg_sys::Oid,
        context: i32,
        nest_level: i32,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: undoes what `with_rights` did below, in reverse order; an aborting
            // transaction would undo the nest level anyway, and undoing it twice is harmless
            // (AtEOXact_GUC pops only what is above the level).
            unsafe {
                pg_sys::AtEOXact_GUC(true, self.nest_level);
                pg_sys::SetUserIdAndSecContext(self.user, self.context);
            }
        }
    }
    let (mut user, mut context) = (pg_sys::InvalidOid, 0i32);
    // SAFETY: reads this backend's user id state, then opens a GUC nest level.
    let nest_level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::NewGUCNestLevel()
    };
    let _restore = Restore {
        user,
        context,
        nest_level,
    };
    for (name, value) in PINNED {
        set(
            name,
            value,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
        );
    }
    // SAFETY: sets this backend's user id state; `_restore` puts it back.
    unsafe {
        pg_sys::SetUserIdAndSecContext(
            role,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    f()
}

/// [`with_rights`] of the bootstrap superuser: for the toolkit's bookkeeping in its own tables
/// and look-ups that need those rights, never for a job's work.
pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    with_rights(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), f)
}
