//! admin_toolkit: backups, monitoring, security auditing, maintenance and configuration
//! management inside PostgreSQL. This file only wires the extension together: settings, the
//! background worker and (as they land) hooks. Each feature area lives in its own module.

use pgrx::prelude::*;

mod backup;
mod build_info;
mod compat;
mod config;
mod copy_guard;
mod environment;
mod error;
mod jobs;
mod maintenance;
mod monitoring;
mod query;
mod recovery;
mod security;
mod settings;
mod shared_memory;
mod transaction;
mod worker;

::pgrx::pg_module_magic!(name, version);

/// The duties the database worker runs, in this order each tick: every feature's routine work
/// is registered here, and the worker knows none of them (see worker::duty).
pub(crate) fn worker_duties() -> Vec<Box<dyn worker::duty::Duty>> {
    use jobs::due::ScheduleDuty;
    vec![
        // First: after a start, logins wait for the locks it loads.
        Box::new(security::credentials::duty::CredentialKeeper::default()),
        Box::new(maintenance::duty::PartitionUpkeep::default()),
        Box::new(config::duty::ConfigDrift::default()),
        Box::new(security::audit::duty::AuditWriter::default()),
        Box::new(copy_guard::CopyGuard::default()),
        Box::new(ScheduleDuty::new(
            "maintenance jobs",
            maintenance::runs::upkeep_maintenance,
            maintenance::runs::start_due_jobs,
        )),
        Box::new(ScheduleDuty::new(
            "backups",
            backup::runs::upkeep_backups,
            backup::runs::start_due_backups,
        )),
        Box::new(ScheduleDuty::new(
            "restore drills",
            recovery::drill::upkeep_drills,
            recovery::drill::start_due_drills,
        )),
        Box::new(backup::duty::Retention::default()),
        Box::new(monitoring::duty::Alerting::default()),
        Box::new(maintenance::duty::Facts::default()),
    ]
}

/// What each kind of job does, once `jobs::admin_toolkit_job_main` has connected it: every
/// feature's job body is wired here, and the job runtime knows none of them.
pub(crate) fn run_job(job: jobs::JobDescriptor) {
    use jobs::JobKind;
    match job.kind {
        JobKind::Maintenance {
            schedule_id,
            run_id,
        } => maintenance::runs::run(schedule_id, run_id),
        JobKind::MaintenanceIn { run_id } => maintenance::remote::work(run_id),
        JobKind::Facts => maintenance::facts::collect_job(job.database),
        JobKind::Backup {
            schedule_id,
            backup_id,
        } => backup::base::run(schedule_id, backup_id),
        JobKind::Config { request } => config::changes::run_request(&request),
        JobKind::Deletion => backup::retention::deletion_job(),
        JobKind::Drill {
            schedule_id,
            drill_id,
            backup_id,
            target,
        } => recovery::drill::drill_job(schedule_id, drill_id, backup_id, target),
    }
}

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/security.sql",
    name = "security",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/ownership.sql",
    name = "ownership",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/notifications.sql",
    name = "notifications",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/maintenance.sql",
    name = "maintenance",
    requires = ["bootstrap", "databases"]
);
extension_sql_file!(
    "../sql/databases.sql",
    name = "databases",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/drills.sql",
    name = "drills",
    requires = ["bootstrap", "notifications"]
);
extension_sql_file!(
    "../sql/copy_guard.sql",
    name = "copy_guard",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/backup_alerts.sql",
    name = "backup_alerts",
    requires = ["bootstrap", "notifications", "drills"]
);
extension_sql_file!(
    "../sql/audit_chain.sql",
    name = "audit_chain",
    requires = ["bootstrap"]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// Set in `_PG_init` when the library is loaded through shared_preload_libraries; every backend
/// forked afterwards inherits it.
static mut PRELOADED: bool = false;

/// Whether the library was loaded through shared_preload_libraries, which the background worker
/// and the server hooks need.
#[pg_extern(stable, parallel_safe)]
fn is_preloaded() -> bool {
    // SAFETY: written once in the postmaster before any backend is forked; read-only after.
    unsafe { PRELOADED }
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a flag set by the postmaster while it loads preload libraries.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    settings::register(preloading);
    security::install(preloading);
    admin_toolkit_core::storage::set_interrupt_check(asked_to_stop);
    if preloading {
        unsafe { PRELOADED = true };
        worker::register();
    }
}

/// Whether this process was asked to stop: a shutdown (the archiver's, a worker's SIGTERM) or
/// a cancellation. Read by the storage code between retries, possibly from its threads.
fn asked_to_stop() -> bool {
    // SAFETY: signal flags of this process, read volatile as the signal handlers write them.
    unsafe {
        (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0
            || (&raw const pg_sys::ProcDiePending).read_volatile() != 0
            || (&raw const pg_sys::QueryCancelPending).read_volatile() != 0
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'admin_toolkit'"]
    }
}
