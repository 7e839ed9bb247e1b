//! Every `admin_toolkit.*` setting, in one place. The README's settings table mirrors this file.
//!
//! Contexts are chosen on purpose: what the postmaster needs at start (the worker's database) is
//! `postmaster`; intervals and retention are `sighup` so that a reload changes them; policy
//! switches are `superuser` so that a session cannot weaken them for itself.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;
use std::ffi::CString;

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

pub static STORAGE_TYPE: GucSetting<StorageType> = GucSetting::<StorageType>::new(StorageType::Ssd);
pub static WORKLOAD: GucSetting<WorkloadType> =
    GucSetting::<WorkloadType>::new(WorkloadType::Mixed);

/// Days of maintenance_runs history kept.
pub static MAINTENANCE_HISTORY_DAYS: GucSetting<i32> = GucSetting::<i32>::new(90);
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
pub static PASSWORD_ALLOW_PREHASHED: GucSetting<bool> = GucSetting::<bool>::new(false);
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
        GucRegistry::define_string_guc(
            c"admin_toolkit.metrics_listen",
            c"Address (host:port) of the Prometheus /metrics endpoint; empty for none.",
            c"For example 127.0.0.1:9188. Served by a background process of its own, connected \
              to admin_toolkit.database, so a scrape needs no client connection slot.",
            &METRICS_LISTEN,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
    }
    GucRegistry::define_string_guc(
        c"admin_toolkit.notification_secrets_file",
        c"File of alert notification secrets: lines \"<channel>.<key> = <value>\" (url, routing_key, secret, password).",
        c"Keep it readable by the server's OS user only; secrets never go into a table or a log.",
        &NOTIFICATION_SECRETS_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.notification_max_retry_interval",
        c"Longest wait between two attempts of an alert delivery (5 s, doubling, up to this).",
        c"",
        &NOTIFICATION_MAX_RETRY_INTERVAL,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.notification_give_up_after",
        c"Time after which an alert delivery that keeps failing is marked failed.",
        c"",
        &NOTIFICATION_GIVE_UP_AFTER,
        60,
        30 * 86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.notification_timeout",
        c"Longest time one alert delivery attempt may take.",
        c"",
        &NOTIFICATION_TIMEOUT,
        1,
        300,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"admin_toolkit.notification_allow_link_local",
        c"Lets alert notifications reach link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10).",
        c"Off: a channel whose target resolves only to such addresses fails with the reason, so \
          whoever may write alert_channels cannot read the host's cloud credentials.",
        &NOTIFICATION_ALLOW_LINK_LOCAL,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.metrics_table_series",
        c"Most series of one per-table metric on /metrics; the other tables are summed into one series.",
        c"",
        &METRICS_TABLE_SERIES,
        1,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
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
        c"admin_toolkit.database_facts_interval",
        c"Seconds between two collections of every database's maintenance facts (0 disables them).",
        c"Each collection is one short job per database that accepts connections, one at a time.",
        &DATABASE_FACTS_INTERVAL,
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
    GucRegistry::define_enum_guc(
        c"admin_toolkit.storage_type",
        c"Storage get_config_recommendations() assumes: ssd, hdd or san.",
        c"",
        &STORAGE_TYPE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"admin_toolkit.workload",
        c"Workload get_config_recommendations() assumes: web, oltp, dw or mixed.",
        c"",
        &WORKLOAD,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.maintenance_history_days",
        c"Days of maintenance_runs history kept.",
        c"",
        &MAINTENANCE_HISTORY_DAYS,
        1,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.wal_replay_mb_per_s",
        c"WAL replay speed, in MB/s, that plan_recovery() uses to estimate recovery time.",
        c"Measure yours with a restore drill; the default is below the slowest replay measured on the reference machine.",
        &WAL_REPLAY_MB_PER_S,
        1,
        100_000,
        GucContext::Userset,
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
    GucRegistry::define_string_guc(
        c"admin_toolkit.archive_location",
        c"Where the archive module (archive_library = 'admin_toolkit') stores WAL: an absolute path, file:// URL or s3://bucket/prefix.",
        c"",
        &ARCHIVE_LOCATION,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.encryption_key_dir",
        c"Directory of backup encryption keys (<key id>.key: 64 hex digits, readable only by the server's OS user), outside the data directory.",
        c"",
        &ENCRYPTION_KEY_DIR,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.archive_encryption_key_id",
        c"Key id (in admin_toolkit.encryption_key_dir) the archive module encrypts WAL with; empty: unencrypted.",
        c"",
        &ARCHIVE_ENCRYPTION_KEY_ID,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.s3_endpoint",
        c"S3-compatible endpoint of s3:// locations (http(s)://host:port); empty means AWS in admin_toolkit.s3_region.",
        c"",
        &S3_ENDPOINT,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.s3_region",
        c"Region of s3:// locations.",
        c"",
        &S3_REGION,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_bool_guc(
        c"admin_toolkit.s3_force_path_style",
        c"Address S3 buckets by path (endpoint/bucket/key), as most S3-compatible servers need.",
        c"",
        &S3_FORCE_PATH_STYLE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.s3_timeout",
        c"Overall deadline of one S3 request (connect, send, receive), in seconds; a request and its retries stop after three times this.",
        c"",
        &S3_TIMEOUT,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.s3_ca_file",
        c"PEM file of certificate authorities to trust, besides the public ones, for an https admin_toolkit.s3_endpoint with a private CA.",
        c"",
        &S3_CA_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.s3_credentials_file",
        c"AWS shared-credentials file for s3:// locations, readable by the server's OS user; empty means the AWS_* environment of the server.",
        c"",
        &S3_CREDENTIALS_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.drill_directory",
        c"Directory restore drills restore into, outside the data directory and the archive; empty: drills are refused.",
        c"Each drill uses a scratch directory drill-<id> below it and removes it when done.",
        &DRILL_DIRECTORY,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.drill_space_margin",
        c"Free space a restore drill keeps in reserve beyond the restored backup and WAL.",
        c"A drill is refused, before it restores anything, when the drill directory has less free space than that sum.",
        &DRILL_SPACE_MARGIN,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"admin_toolkit.backup_archive_wait",
        c"Longest a base backup waits for its last WAL segment to be archived, in seconds.",
        c"Past it the backup fails with the reason and releases its locks; the archiver keeps trying.",
        &BACKUP_ARCHIVE_WAIT,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.cli_path",
        c"The admin-toolkit program whose wal-get a restore drill's restore_command runs.",
        c"",
        &CLI_PATH,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"admin_toolkit.timezone",
        c"Time zone of cron schedules (an IANA name); empty means the server's TimeZone.",
        c"",
        &TIMEZONE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    let switches: [(&'static std::ffi::CStr, &'static std::ffi::CStr, &'static GucSetting<bool>); 5] = [
        (c"admin_toolkit.password_policy", c"Enforce the password policy on CREATE/ALTER ROLE ... PASSWORD.", &PASSWORD_POLICY),
        (
            c"admin_toolkit.password_allow_prehashed",
            c"Accept pre-hashed (SCRAM/MD5) passwords, which the policy cannot check, with a warning.",
            &PASSWORD_ALLOW_PREHASHED,
        ),
        (c"admin_toolkit.audit_ddl", c"Audit DDL, GRANT/REVOKE, role changes and ALTER SYSTEM.", &AUDIT_DDL),
        (c"admin_toolkit.audit_logins", c"Audit every login, successful or not.", &AUDIT_LOGINS),
        (c"admin_toolkit.audit_reads", c"Count table reads per role and table for the audit log.", &AUDIT_READS),
    ];
    for (name, description, setting) in switches {
        GucRegistry::define_bool_guc(
            name,
            description,
            c"",
            setting,
            GucContext::Suset,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"admin_toolkit.audit_read_interval",
        c"Seconds between two summaries of table reads in security_audit_log.",
        c"",
        &AUDIT_READ_INTERVAL,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    let thresholds: [(&'static std::ffi::CStr, &'static std::ffi::CStr, &'static GucSetting<i32>); 4] = [
        (c"admin_toolkit.failed_login_threshold", c"Failed logins of one user in an hour above which detect_suspicious_activity() reports.", &FAILED_LOGIN_THRESHOLD),
        (c"admin_toolkit.privilege_change_threshold", c"GRANT/REVOKE/ALTER ROLE by one user in 24 hours above which detect_suspicious_activity() reports.", &PRIVILEGE_CHANGE_THRESHOLD),
        (c"admin_toolkit.read_count_threshold", c"Table reads by one user in an hour above which detect_suspicious_activity() reports.", &READ_COUNT_THRESHOLD),
        (c"admin_toolkit.distinct_tables_threshold", c"Distinct tables read by one user in an hour above which detect_suspicious_activity() reports.", &DISTINCT_TABLES_THRESHOLD),
    ];
    for (name, description, setting) in thresholds {
        GucRegistry::define_int_guc(
            name,
            description,
            c"",
            setting,
            0,
            i32::MAX,
            GucContext::Suset,
            GucFlags::default(),
        );
    }
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

pub fn non_negative(setting: &GucSetting<i32>) -> u32 {
    u32::try_from(setting.get()).unwrap_or(0)
}
