//! Every `admin_toolkit.*` setting, in one place. The README's settings table mirrors this file.
//!
//! Contexts are chosen on purpose: what the postmaster needs at start (the worker's database) is
//! `postmaster`; intervals and retention are `sighup` so that a reload changes them; policy
//! switches are `superuser` so that a session cannot weaken them for itself.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Database the background worker connects to and works in.
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Seconds between metric collections by the worker; 0 turns collection off.
pub static COLLECTION_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Days of metrics kept; older daily partitions are dropped.
pub static METRICS_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
/// Days of audit events kept; older daily partitions are dropped.
pub static AUDIT_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(90);
/// Daily partitions made ahead of today.
pub static PARTITION_PREMAKE_DAYS: GucSetting<i32> = GucSetting::<i32>::new(3);
/// Minimum password length of the password policy, in characters.
pub static PASSWORD_MIN_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(12);

/// Registers every setting and reserves the `admin_toolkit` prefix, so that a misspelt
/// `admin_toolkit.*` name is reported instead of silently becoming a placeholder.
///
/// `preloading`: the library is being loaded through shared_preload_libraries. Postmaster-context
/// settings can only be defined then (PostgreSQL refuses them later, with a FATAL error); they
/// only matter to the background worker, which exists only when preloaded.
pub fn register(preloading: bool) {
    if preloading {
        GucRegistry::define_string_guc(
            c"admin_toolkit.database",
            c"Database the admin_toolkit background worker works in.",
            c"The extension must be created in this database for the worker to do anything.",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
    }
    GucRegistry::define_int_guc(
        c"admin_toolkit.collection_interval",
        c"Seconds between metric collections by the background worker (0 disables collection).",
        c"",
        &COLLECTION_INTERVAL,
        0,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.metrics_retention_days",
        c"Days of performance_metrics kept; older daily partitions are dropped.",
        c"",
        &METRICS_RETENTION_DAYS,
        1,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.audit_retention_days",
        c"Days of security_audit_log kept; older daily partitions are dropped.",
        c"",
        &AUDIT_RETENTION_DAYS,
        1,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.partition_premake_days",
        c"Daily partitions of the metric and audit logs created ahead of today.",
        c"",
        &PARTITION_PREMAKE_DAYS,
        2,
        366,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.password_min_length",
        c"Minimum password length, in characters, of the password policy.",
        c"",
        &PASSWORD_MIN_LENGTH,
        1,
        1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    reserve_prefix();
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
fn reserve_prefix() {
    unsafe { pgrx::pg_sys::EmitWarningsOnPlaceholders(c"admin_toolkit".as_ptr()) }
}

#[cfg(not(any(feature = "pg13", feature = "pg14")))]
fn reserve_prefix() {
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"admin_toolkit".as_ptr()) }
}

/// The worker's database name.
pub fn database() -> String {
    DATABASE
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".to_string())
}

/// A non-negative setting as an unsigned number (GUC bounds already forbid negatives).
pub fn non_negative(setting: &GucSetting<i32>) -> u32 {
    u32::try_from(setting.get()).unwrap_or(0)
}
