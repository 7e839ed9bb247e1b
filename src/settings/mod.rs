//! Every `admin_toolkit.*` setting, in one place: `DEFINITIONS` is what PostgreSQL is told and
//! what the README's settings table says (a test fails when they differ).
//!
//! Contexts are chosen on purpose: what the postmaster needs at start (the worker's database) is
//! `postmaster`; intervals and retention are `sighup` so that a reload changes them; policy
//! switches are `superuser` so that a session cannot weaken them for itself.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;

mod definitions;
pub use definitions::DEFINITIONS;
use std::ffi::{CStr, CString};

/// Database the background worker connects to and works in.
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// File of notification secrets (`<channel>.<key> = <value>`); empty: none.
pub static NOTIFICATION_SECRETS_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Longest wait between two attempts of one alert delivery, seconds.
pub static NOTIFICATION_MAX_RETRY_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(300);
/// Seconds after which an undelivered alert notification is given up.
pub static NOTIFICATION_GIVE_UP_AFTER: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// Seconds one delivery attempt may take.
pub static NOTIFICATION_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(10);
/// Whether notification targets may be link-local or cloud metadata addresses.
pub static NOTIFICATION_ALLOW_LINK_LOCAL: GucSetting<bool> = GucSetting::<bool>::new(false);
/// host:port the /metrics endpoint listens on; empty: no endpoint.
pub static METRICS_LISTEN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Most series per per-table metric on /metrics; the rest are summed into one.
pub static METRICS_TABLE_SERIES: GucSetting<i32> = GucSetting::<i32>::new(50);
/// Seconds between metric collections by the worker; 0 turns collection off.
pub static COLLECTION_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Seconds between two collections of every database's maintenance facts; 0 turns them off.
pub static DATABASE_FACTS_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(300);
/// Seconds between the worker's looks for due scheduled jobs and interrupted runs.
pub static SCHEDULE_CHECK_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Days of metrics kept; older daily partitions are dropped.
pub static METRICS_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
/// Days of audit events kept; older daily partitions are dropped.
pub static AUDIT_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(90);
/// Storage the tuning advice assumes.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum StorageType {
    #[name = c"ssd"]
    Ssd,
    #[name = c"hdd"]
    Hdd,
    #[name = c"san"]
    San,
}

/// Workload the tuning advice assumes.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum WorkloadType {
    #[name = c"web"]
    Web,
    #[name = c"oltp"]
    Oltp,
    #[name = c"dw"]
    Dw,
    #[name = c"mixed"]
    Mixed,
}

/// Who may set a password sent already hashed (a SCRAM or MD5 verifier: psql's \password,
/// createuser -P, pg_dumpall's role restores), which no policy can inspect.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum PrehashedPasswords {
    #[name = c"refuse"]
    Refuse,
    #[name = c"superuser"]
    Superuser,
    #[name = c"allow"]
    Allow,
}

pub static STORAGE_TYPE: GucSetting<StorageType> = GucSetting::<StorageType>::new(StorageType::Ssd);
pub static WORKLOAD: GucSetting<WorkloadType> =
    GucSetting::<WorkloadType>::new(WorkloadType::Mixed);

/// Days of maintenance_runs history kept.
pub static MAINTENANCE_HISTORY_DAYS: GucSetting<i32> = GucSetting::<i32>::new(90);
/// WAL files the archive module uploads at once, ahead of the archiver's calls (1: one at a time).
pub static ARCHIVE_PARALLELISM: GucSetting<i32> = GucSetting::<i32>::new(4);
/// WAL replay speed that plan_recovery's estimate assumes, in MB/s (measured: docs/benchmarks.md).
pub static WAL_REPLAY_MB_PER_S: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Daily partitions made ahead of today.
pub static PARTITION_PREMAKE_DAYS: GucSetting<i32> = GucSetting::<i32>::new(3);
/// Minimum password length of the password policy, in characters.
pub static PASSWORD_MIN_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(12);
/// Directory (absolute path or file://) the archive module stores WAL in.
pub static ARCHIVE_LOCATION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// S3-compatible endpoint (`http(s)://host:port`); empty: AWS.
pub static S3_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
/// S3 region (signing, and AWS's endpoint).
pub static S3_REGION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"us-east-1"));
/// Path-style S3 URLs, as most S3-compatible servers need.
pub static S3_FORCE_PATH_STYLE: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Overall deadline of one S3 request, in seconds.
pub static S3_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60);
/// PEM file of extra certificate authorities for https S3 endpoints.
pub static S3_CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
/// AWS shared-credentials file; empty: the server's AWS_* environment.
pub static S3_CREDENTIALS_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Directory of encryption keys (`<id>.key`, 64 hex digits, mode 0600), outside the data
/// directory.
pub static ENCRYPTION_KEY_DIR: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Key id the archive module encrypts WAL with; empty: WAL is archived unencrypted.
pub static ARCHIVE_ENCRYPTION_KEY_ID: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Directory restore drills restore into (one scratch directory per drill); empty: no drills.
pub static DRILL_DIRECTORY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Free space, in MB, a drill keeps in reserve beyond the restored size and WAL.
pub static DRILL_SPACE_MARGIN: GucSetting<i32> = GucSetting::<i32>::new(256);
/// Longest a base backup waits for its last WAL segment to be archived, in seconds.
pub static BACKUP_ARCHIVE_WAIT: GucSetting<i32> = GucSetting::<i32>::new(600);
/// The admin-toolkit program a drill's restore_command runs (`wal-get`).
pub static CLI_PATH: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"/usr/bin/admin-toolkit"));
/// IANA time zone of cron schedules; empty: the server's TimeZone.
pub static TIMEZONE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
/// Whether the password policy is enforced on CREATE/ALTER ROLE ... PASSWORD.
pub static PASSWORD_POLICY: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Whether pre-hashed (SCRAM/MD5) passwords, which cannot be checked, are accepted with a warning.
pub static PASSWORD_PREHASHED: GucSetting<PrehashedPasswords> =
    GucSetting::<PrehashedPasswords>::new(PrehashedPasswords::Superuser);
/// Earlier passwords of a role a new one may not repeat (0: none).
pub static PASSWORD_REUSE_HISTORY: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Days within which a role may not repeat a password (0: none).
pub static PASSWORD_REUSE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Days a password set by CREATE/ALTER ROLE may stay valid at most (0: no bound).
pub static PASSWORD_VALID_MAX: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Failed logins that lock a role (0: no lockout).
pub static MAX_AUTH_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Seconds, from a role's first counted failure, within which its failures add up.
pub static AUTH_FAILURE_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(600);
/// Seconds a lock lasts (0: until admin_toolkit.unlock_role).
pub static LOCKOUT_DURATION: GucSetting<i32> = GucSetting::<i32>::new(1800);
/// Roles never locked, comma-separated.
pub static LOCKOUT_EXEMPT_ROLES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Whether superusers can be locked too.
pub static LOCKOUT_SUPERUSERS: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Audit DDL, GRANT/REVOKE, role changes and ALTER SYSTEM.
pub static AUDIT_DDL: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Audit every login, successful or not.
pub static AUDIT_LOGINS: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Count table reads per (role, table) and write them as periodic summaries.
pub static AUDIT_READS: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Seconds between two summaries of table reads in the audit log.
pub static AUDIT_READ_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Detection thresholds of detect_suspicious_activity().
pub static FAILED_LOGIN_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static PRIVILEGE_CHANGE_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(3);
pub static READ_COUNT_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static DISTINCT_TABLES_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(50);

/// Who may change a setting, and when (PostgreSQL's GUC contexts, as pg_settings names them).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Context {
    /// At server start only.
    Postmaster,
    /// In the configuration files, taking effect at a reload.
    Sighup,
    /// Also by a superuser in a session.
    Superuser,
    /// By anyone in a session.
    User,
}

impl Context {
    fn guc(self) -> GucContext {
        match self {
            Context::Postmaster => GucContext::Postmaster,
            Context::Sighup => GucContext::Sighup,
            Context::Superuser => GucContext::Suset,
            Context::User => GucContext::Userset,
        }
    }
}

/// The unit of an integer setting (what a bare number means, and what `60s` converts to).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    None,
    Seconds,
    Megabytes,
}

/// A setting's type, with the static that holds its value.
pub enum Value {
    Text(&'static GucSetting<Option<CString>>),
    Integer {
        setting: &'static GucSetting<i32>,
        min: i32,
        max: i32,
        unit: Unit,
    },
    Switch(&'static GucSetting<bool>),
    Storage(&'static GucSetting<StorageType>),
    Workload(&'static GucSetting<WorkloadType>),
    Prehashed(&'static GucSetting<PrehashedPasswords>),
}

/// One `admin_toolkit.*` setting: what PostgreSQL is told, and the README's line about it.
pub struct Definition {
    pub name: &'static CStr,
    pub context: Context,
    /// Shown (SHOW, pg_settings) to superusers and pg_read_all_settings only: paths and
    /// addresses an ordinary role has no business reading.
    pub superuser_only: bool,
    pub short: &'static CStr,
    pub long: &'static CStr,
    pub value: Value,
    /// The README's settings table describes it so (markdown); the table's other columns
    /// come from what the server reports, and a test keeps the README in step.
    #[cfg_attr(not(any(test, feature = "pg_test")), allow(dead_code))]
    pub readme: &'static str,
}

/// Registers every setting and reserves the `admin_toolkit` prefix, so that a misspelt
/// `admin_toolkit.*` name is reported instead of silently becoming a placeholder.
///
/// `preloading`: the library is being loaded through shared_preload_libraries. Postmaster-context
/// settings can only be defined then (PostgreSQL refuses them later, with a FATAL error); they
/// only matter to the background worker, which exists only when preloaded.
pub fn register(preloading: bool) {
    for d in &DEFINITIONS {
        if d.context == Context::Postmaster && !preloading {
            continue;
        }
        let flags = if d.superuser_only {
            GucFlags::SUPERUSER_ONLY
        } else {
            GucFlags::default()
        };
        match d.value {
            Value::Text(s) => {
                GucRegistry::define_string_guc(d.name, d.short, d.long, s, d.context.guc(), flags)
            }
            Value::Switch(s) => {
                GucRegistry::define_bool_guc(d.name, d.short, d.long, s, d.context.guc(), flags)
            }
            Value::Storage(s) => {
                GucRegistry::define_enum_guc(d.name, d.short, d.long, s, d.context.guc(), flags)
            }
            Value::Workload(s) => {
                GucRegistry::define_enum_guc(d.name, d.short, d.long, s, d.context.guc(), flags)
            }
            Value::Prehashed(s) => {
                GucRegistry::define_enum_guc(d.name, d.short, d.long, s, d.context.guc(), flags)
            }
            Value::Integer {
                setting,
                min,
                max,
                unit,
            } => {
                let unit = match unit {
                    Unit::None => GucFlags::default(),
                    Unit::Seconds => GucFlags::UNIT_S,
                    Unit::Megabytes => GucFlags::UNIT_MB,
                };
                GucRegistry::define_int_guc(
                    d.name,
                    d.short,
                    d.long,
                    setting,
                    min,
                    max,
                    d.context.guc(),
                    flags | unit,
                )
            }
        }
    }
    reserve_prefix();
}

fn reserve_prefix() {
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"admin_toolkit".as_ptr()) }
}

/// The WAL archive location, when set.
pub fn archive_location() -> Option<String> {
    ARCHIVE_LOCATION
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.trim().is_empty())
}

fn text(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|s| s.to_string_lossy().trim().to_string())
        .unwrap_or_default()
}

/// How s3:// locations are reached (the credentials themselves are read when a storage opens,
/// from the file or the environment, and are never kept in a setting or a table). What the
/// settings leave empty comes from the server's AWS environment, as the AWS SDKs read it.
pub fn s3() -> admin_toolkit_core::storage::S3Settings {
    admin_toolkit_core::storage::S3Settings {
        endpoint: text(&S3_ENDPOINT),
        region: text(&S3_REGION),
        force_path_style: S3_FORCE_PATH_STYLE.get(),
        credentials_file: text(&S3_CREDENTIALS_FILE),
        profile: String::new(),
        ca_file: text(&S3_CA_FILE),
        timeout_seconds: u64::try_from(S3_TIMEOUT.get()).unwrap_or(0),
    }
    .with_aws_environment()
}

/// Where encryption keys are read from.
pub fn key_dir() -> admin_toolkit_core::crypto::KeyDir {
    let dir = text(&ENCRYPTION_KEY_DIR);
    admin_toolkit_core::crypto::KeyDir((!dir.is_empty()).then(|| dir.into()))
}

/// The key id WAL is archived with, when set.
pub fn archive_parallelism() -> usize {
    usize::try_from(ARCHIVE_PARALLELISM.get())
        .unwrap_or(1)
        .max(1)
}

pub fn archive_encryption_key_id() -> Option<String> {
    Some(text(&ARCHIVE_ENCRYPTION_KEY_ID)).filter(|id| !id.is_empty())
}

/// The restore drills' directory, when set.
pub fn drill_directory() -> Option<std::path::PathBuf> {
    Some(text(&DRILL_DIRECTORY))
        .filter(|d| !d.is_empty())
        .map(Into::into)
}

/// The admin-toolkit program restore drills run.
pub fn cli_path() -> std::path::PathBuf {
    text(&CLI_PATH).into()
}

/// The schedules' time zone name, when set.
pub fn timezone() -> Option<String> {
    TIMEZONE
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

/// The notification secrets file's path ('' when unset).
pub fn notification_secrets_file() -> String {
    text(&NOTIFICATION_SECRETS_FILE)
}

/// The /metrics endpoint's address, when one is configured.
pub fn metrics_listen() -> Option<String> {
    Some(text(&METRICS_LISTEN)).filter(|v| !v.is_empty())
}

/// The roles never locked (`lockout_exempt_roles`), as written.
pub fn lockout_exempt_roles() -> String {
    text(&LOCKOUT_EXEMPT_ROLES)
}

/// The worker's database name.
pub fn database() -> String {
    DATABASE
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".to_string())
}

/// A non-negative setting as an unsigned number (GUC bounds already forbid negatives).
/// The metric collection interval; `None` when collection is off (0).
pub fn collection_interval() -> Option<std::time::Duration> {
    match non_negative(&COLLECTION_INTERVAL) {
        0 => None,
        seconds => Some(std::time::Duration::from_secs(u64::from(seconds))),
    }
}

/// How often the worker looks for due scheduled jobs and interrupted runs.
pub fn schedule_check_interval() -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(
        non_negative(&SCHEDULE_CHECK_INTERVAL).clamp(1, 60),
    ))
}

pub fn non_negative(setting: &GucSetting<i32>) -> u32 {
    u32::try_from(setting.get()).unwrap_or(0)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::{Value, DEFINITIONS};
    use pgrx::prelude::*;

    /// The README's line for a setting: its description from `DEFINITIONS`, its context and
    /// default as the running server reports them.
    fn readme_row(name: &str, readme: &str, value: &Value) -> String {
        let (context, boot, unit) = Spi::get_three_with_args::<String, String, String>(
            "SELECT context, boot_val, unit FROM pg_catalog.pg_settings WHERE name = $1",
            &[name.into()],
        )
        .unwrap_or_else(|e| panic!("{name} is not registered: {e}"));
        let boot = boot.unwrap_or_default();
        let default = match (value, unit.as_deref()) {
            (Value::Text(_), _) if boot.is_empty() => "`''`".to_string(),
            (Value::Integer { .. }, Some(unit)) => format!("`{boot}` ({unit})"),
            _ => format!("`{boot}`"),
        };
        format!(
            "| `{name}` | {} | {default} | {readme} |",
            context.unwrap_or_default()
        )
    }

    #[pg_test]
    fn readme_settings_table_comes_from_the_definitions() {
        let readme = include_str!("../../README.md");
        let table: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("| `admin_toolkit."))
            .collect();
        let expected: Vec<String> = DEFINITIONS
            .iter()
            .map(|d| readme_row(d.name.to_str().unwrap(), d.readme, &d.value))
            .collect();
        let differing: Vec<String> = (0..table.len().max(expected.len()))
            .filter(|&i| table.get(i).copied() != expected.get(i).map(String::as_str))
            .map(|i| {
                format!(
                    "README.md has:  {}\nit should read: {}",
                    table.get(i).unwrap_or(&"(nothing)"),
                    expected.get(i).map_or("(nothing)", String::as_str)
                )
            })
            .collect();
        assert!(
            differing.is_empty(),
            "README.md's settings table differs from settings::DEFINITIONS and pg_settings:\n{}",
            differing.join("\n")
        );
        // Every registered admin_toolkit.* setting has its definition.
        let registered = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_settings WHERE name LIKE 'admin\\_toolkit.%'",
        );
        assert_eq!(registered, Ok(Some(DEFINITIONS.len() as i64)));
    }
}
