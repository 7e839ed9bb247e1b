//! Security: audit events captured by server hooks, suspicious-activity detection, the enforced
//! password policy, and role and row-level-security helpers (sql/security.sql).

pub mod api;
pub mod audit;
pub mod credentials;
pub mod password_policy;

#[cfg(any(test, feature = "pg_test"))]
mod sql_tests;

/// Installs the hooks: the password check always (it only concerns this process until the
/// library is preloaded), the audit capture, the lockout and their shared memory only when
/// preloading.
pub fn install(preloading: bool) {
    password_policy::install_hook();
    if preloading {
        credentials::install();
        audit::queue::install();
        audit::journal::install();
        audit::hooks::install();
    }
}
