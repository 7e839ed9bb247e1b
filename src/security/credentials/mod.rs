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

/// Registers the shared memory; `_PG_init` calls this while preloading.
pub fn install() {
    state::install();
}
