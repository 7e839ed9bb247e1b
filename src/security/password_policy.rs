//! The password policy: the check hook on CREATE/ALTER ROLE ... PASSWORD and the rules in force
//! (`validate_password_policy()` is in `api`); the rules themselves are the core crate's.

use super::credentials::history;
use crate::error::ToolkitError;
use crate::settings::{self, PrehashedPasswords};
use admin_toolkit_core::chrono;
use admin_toolkit_core::credentials::SecretKind;
use admin_toolkit_core::password::{check_password, failed_rules, PasswordPolicy};
use pgrx::prelude::*;
use std::ffi::{c_char, CStr};

static mut PREV_CHECK_PASSWORD: pg_sys::check_password_hook_type = None;

/// Installs the server's password check; `_PG_init` calls this.
pub fn install_hook() {
    // SAFETY: runs in _PG_init, before any statement of this process.
    unsafe {
        PREV_CHECK_PASSWORD = pg_sys::check_password_hook;
        pg_sys::check_password_hook = Some(check_password_hook);
    }
}

/// Enforces the policy on CREATE/ALTER ROLE ... PASSWORD with the same rules as
/// validate_password_policy. The error lists every failed rule and never the password; the
/// statement itself is kept out of the server log by the log hook (see audit::hooks::emit_log).
#[pg_guard]
unsafe extern "C-unwind" fn check_password_hook(
    username: *const c_char,
    shadow_pass: *const c_char,
    password_type: pg_sys::PasswordType::Type,
    validuntil_time: pg_sys::Datum,
    validuntil_null: bool,
) {
    unsafe {
        if let Some(prev) = PREV_CHECK_PASSWORD {
            prev(
                username,
                shadow_pass,
                password_type,
                validuntil_time,
                validuntil_null,
            );
        }
    }
    if username.is_null() || shadow_pass.is_null() {
        return;
    }
    // SAFETY: the server passes NUL-terminated strings.
    let (user, secret) = unsafe { (CStr::from_ptr(username), CStr::from_ptr(shadow_pass)) };
    let prehashed = password_type != pg_sys::PasswordType::PASSWORD_TYPE_PLAINTEXT;
    if settings::PASSWORD_POLICY.get() {
        if prehashed {
            check_prehashed_allowed();
        } else {
            check_shape(&user.to_string_lossy(), &secret.to_string_lossy());
        }
    }
    check_valid_until(validuntil_time, validuntil_null);
    let kind = if prehashed {
        SecretKind::Verifier
    } else {
        SecretKind::Plain
    };
    history::check_and_remember(user, kind, secret.to_bytes());
}

/// A pre-hashed password cannot be checked: who may set one is `password_prehashed`'s say.
fn check_prehashed_allowed() {
    let allowed = match settings::PASSWORD_PREHASHED.get() {
        PrehashedPasswords::Refuse => false,
        // SAFETY: reads the current user's role attributes (a syscache lookup).
        PrehashedPasswords::Superuser => unsafe { pg_sys::superuser() },
        PrehashedPasswords::Allow => true,
    };
    if allowed {
        warning!("the password was sent already hashed, so the password policy could not check it");
        return;
    }
    ToolkitError::invalid_parameter("the password was sent already hashed, so the password policy cannot check it")
        .with_hint(
            "Send the password in plain text over an encrypted connection (ALTER ROLE ... PASSWORD '...'), \
             or have a superuser set it (admin_toolkit.password_prehashed = superuser), or set \
             admin_toolkit.password_prehashed = allow.",
        )
        .raise();
}

/// The policy's rules; the error lists every failed rule and never the password.
fn check_shape(user: &str, password: &str) {
    let failures = match check_password(&current_policy(), user, password) {
        Ok(results) => failed_rules(&results)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>(),
        Err(e) => vec![e.to_string()],
    };
    if !failures.is_empty() {
        ToolkitError::invalid_parameter("password does not meet the password policy")
            .with_detail(failures.join("; "))
            .with_hint("SELECT * FROM admin_toolkit.validate_password_policy(<user>, <password>) lists every rule.")
            .raise();
    }
}

/// `password_valid_max`: a password must come with a VALID UNTIL (given, or kept from before
/// by ALTER ROLE) no later than that many days ahead. Refused rather than bounded: the hook
/// cannot change the statement, and a silently shortened validity would surprise whoever set it.
fn check_valid_until(until: pg_sys::Datum, until_null: bool) {
    check_valid_until_micros((!until_null).then(|| until.value() as i64));
}

fn check_valid_until_micros(until: Option<i64>) {
    let days = settings::non_negative(&settings::PASSWORD_VALID_MAX);
    if days == 0 {
        return;
    }
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let bound = now.saturating_add(i64::from(days) * 86_400_000_000);
    if until.is_some_and(|u| u <= bound) {
        return;
    }
    let last_day = chrono::DateTime::from_timestamp_micros(bound + PG_EPOCH_UNIX_MICROS)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    ToolkitError::invalid_parameter(format!("the password must expire within {days} days"))
        .with_detail(if until.is_none() {
            "The statement gives no VALID UNTIL and the role has none.".to_string()
        } else {
            format!("VALID UNTIL is later than {days} days from now.")
        })
        .with_hint(format!(
            "Add VALID UNTIL '{last_day}' or earlier (admin_toolkit.password_valid_max = {days})."
        ))
        .raise();
}

/// `password_valid_max` for `CREATE/ALTER ROLE ... VALID UNTIL` without a password, which the
/// password hook never sees: a later VALID UNTIL cannot stretch a password past the bound. Called
/// by the utility hook before the statement runs (so only with the library preloaded).
///
/// # Safety
/// `stmt` is the statement's parse tree.
pub unsafe fn check_valid_until_statement(stmt: *mut pg_sys::Node) {
    if settings::PASSWORD_VALID_MAX.get() == 0 {
        return;
    }
    let options = unsafe {
        if pgrx::is_a(stmt, pg_sys::NodeTag::T_CreateRoleStmt) {
            (*stmt.cast::<pg_sys::CreateRoleStmt>()).options
        } else if pgrx::is_a(stmt, pg_sys::NodeTag::T_AlterRoleStmt) {
            (*stmt.cast::<pg_sys::AlterRoleStmt>()).options
        } else {
            return;
        }
    };
    let mut until = None;
    for option in unsafe { pgrx::PgList::<pg_sys::DefElem>::from_pg(options) }.iter_ptr() {
        // SAFETY: the parser's DefElems: a NUL-terminated name, a String argument for these two.
        let name = unsafe { CStr::from_ptr((*option).defname) };
        match name.to_bytes() {
            // With a password, the password hook checks VALID UNTIL itself.
            b"password" => return,
            b"validUntil" => unsafe {
                let arg = (*option).arg;
                if pgrx::is_a(arg, pg_sys::NodeTag::T_String) {
                    until = Some((*arg.cast::<pg_sys::String>()).sval);
                }
            },
            _ => {}
        }
    }
    let Some(text) = until else { return };
    // SAFETY: timestamptz_in parses (or raises 22007 for) the statement's own text.
    let micros = unsafe {
        pgrx::direct_function_call::<i64>(
            pg_sys::timestamptz_in,
            &[
                Some(pg_sys::Datum::from(text)),
                Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                Some(pg_sys::Datum::from(-1i32)),
            ],
        )
    };
    let Some(micros) = micros else { return };
    check_valid_until_micros(Some(micros));
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// The policy in force in this session (its minimum length is a superuser setting).
pub fn current_policy() -> PasswordPolicy {
    PasswordPolicy {
        min_length: settings::non_negative(&settings::PASSWORD_MIN_LENGTH) as usize,
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn seed_weak_password_fails_four_rules() {
        let failed = Spi::get_one::<i64>(
            "SELECT count(*) FROM admin_toolkit.validate_password_policy('alice_analyst', 'weak') \
             WHERE NOT passed",
        );
        assert_eq!(failed, Ok(Some(4)));
    }

    #[pg_test]
    fn seed_strong_password_passes_all_six() {
        let rows = Spi::get_two::<i64, i64>(
            "SELECT count(*), count(*) FILTER (WHERE passed) \
             FROM admin_toolkit.validate_password_policy('alice_analyst', 'SecureP@ssw0rd123!')",
        );
        assert_eq!(rows, Ok((Some(6), Some(6))));
    }

    #[pg_test]
    fn rows_come_in_seed_order_with_seed_messages() {
        let names = Spi::get_one::<String>(
            "SELECT string_agg(check_name, ',') \
             FROM admin_toolkit.validate_password_policy('bob', 'bob')",
        );
        assert_eq!(
            names,
            Ok(Some(
                "length,uppercase,lowercase,numbers,special_chars,username_similarity".into()
            ))
        );
        let msg = Spi::get_one::<String>(
            "SELECT message FROM admin_toolkit.validate_password_policy('bob', 'bob') \
             WHERE check_name = 'username_similarity'",
        );
        assert_eq!(msg, Ok(Some("Password must not contain username".into())));
    }

    #[pg_test]
    fn min_length_setting_applies() {
        Spi::run("SET admin_toolkit.password_min_length = 20").unwrap();
        let msg = Spi::get_one::<String>(
            "SELECT message FROM admin_toolkit.validate_password_policy('bob', 'Short1!') \
             WHERE check_name = 'length'",
        );
        assert_eq!(
            msg,
            Ok(Some("Password must be at least 20 characters".into()))
        );
    }

    #[pg_test(error = "password must not be NULL")]
    fn null_password_is_refused() {
        Spi::run("SELECT * FROM admin_toolkit.validate_password_policy('bob', NULL)").unwrap();
    }

    #[pg_test(error = "username must not be empty")]
    fn empty_username_is_refused() {
        Spi::run("SELECT * FROM admin_toolkit.validate_password_policy('', 'x')").unwrap();
    }
}
