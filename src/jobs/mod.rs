//! Job workers: one dynamic background worker per job (a maintenance run, a backup, a
//! configuration change), connected to the job's database AS THE JOB'S OWNER ROLE, so that
//! PostgreSQL's own privilege checks decide what the job may do. What a job must do is one
//! typed [`JobDescriptor`] (core), encoded into `bgw_extra` here and decoded here.
//!
//! A job creates and owns the rows it updates: a caller waiting for it cannot see the caller's
//! own uncommitted rows from another process, and never holds a lock the job needs. The job's
//! bookkeeping in the toolkit's tables runs with the bootstrap superuser's rights, sealed
//! ([`as_superuser`]), the work itself with the owner's; both in the pinned environment
//! ([`crate::environment`]) that the job's database and role settings cannot change.
//!
//! Features depend on this module, never the other way round: every job worker starts in
//! [`admin_toolkit_job_main`], which decodes the descriptor, connects, and hands the job to the
//! body `lib.rs` wires for its kind (`crate::run_job`). Runs are recorded through [`ledger`].

pub mod cron;
pub mod due;
pub mod ledger;

use crate::error::ToolkitError;
use crate::transaction::step::try_transaction;
pub use admin_toolkit_core::jobs::{JobDescriptor, JobKind};
pub use ledger::{Interruption, Ledger, RunStatus};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
};
use pgrx::prelude::*;
use std::path::PathBuf;
use std::time::Duration;

/// Where jobs and the processes that start them hand work and results to each other in files
/// (a job cannot see its starter's uncommitted rows, nor another database's tables, and
/// `bgw_extra` holds 128 bytes): the data directory's pg_stat_tmp, readable by the server's OS
/// user only.
pub fn handoff_dir() -> PathBuf {
    // SAFETY: DataDir is set for the life of every backend.
    PathBuf::from(
        unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }
            .to_string_lossy()
            .into_owned(),
    )
    .join("pg_stat_tmp")
}

/// Starts a job worker for `job`. With `notify`, this backend is told when it starts and
/// stops, so it can wait for it.
pub fn start(job: &JobDescriptor, notify: bool) -> Result<DynamicBackgroundWorker, ToolkitError> {
    let extra = job
        .encode()
        .map_err(|e| ToolkitError::invalid_parameter(e.to_string()))?;
    BackgroundWorkerBuilder::new(&job.title())
        .set_type("admin_toolkit job")
        .set_library("admin_toolkit")
        .set_function("admin_toolkit_job_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_extra(&extra)
        .set_notify_pid(if notify {
            unsafe { pg_sys::MyProcPid }
        } else {
            0
        })
        .load_dynamic()
        .map_err(|_| {
            ToolkitError::wrong_state("no background worker slot is free to run the job")
                .with_hint("Raise max_worker_processes.")
        })
}

/// A job for the current database, run as role `role`.
pub fn here(kind: JobKind, role: u32) -> JobDescriptor {
    JobDescriptor {
        kind,
        role,
        // SAFETY: set for the life of every backend connected to a database.
        database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
    }
}

/// The role a job may run as: its OID, or why not (42704 no such role, 42501 the role cannot
/// log in or connect here, which a background worker needs as much as a client). Needs a
/// transaction.
pub fn owner_oid(owner: &str) -> Result<u32, ToolkitError> {
    let row = crate::query::one_row(
        "SELECT r.oid::int8, r.rolcanlogin, \
                    pg_catalog.has_database_privilege(r.oid, pg_catalog.current_database(), 'CONNECT') \
             FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
        &[owner.into()],
        |r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<bool>(2)?.unwrap_or(false),
                r.get::<bool>(3)?.unwrap_or(false),
            ))
        },
    )
    .map_err(|e| ToolkitError::wrong_state(e.to_string()))?;
    match row {
        None => Err(ToolkitError::undefined_object(format!(
            "the job's owner role \"{owner}\" does not exist"
        ))
        .with_hint("Set the schedule's owner to an existing role.")),
        Some((_, false, _)) => Err(ToolkitError::insufficient_privilege(format!(
            "the job's owner role \"{owner}\" cannot log in (NOLOGIN), and jobs run as their owner"
        ))
        .with_hint("Give the role LOGIN, or make a role that can log in the schedule's owner.")),
        Some((_, _, false)) => Err(ToolkitError::insufficient_privilege(format!(
            "the job's owner role \"{owner}\" may not connect to this database"
        ))),
        Some((oid, true, true)) => Ok(oid as u32),
    }
}

/// What PostgreSQL's `die` does: ask the next CHECK_FOR_INTERRUPTS to terminate the process.
unsafe extern "C-unwind" fn job_sigterm(_signal: i32) {
    unsafe {
        (&raw mut pg_sys::InterruptPending).write_volatile(1);
        (&raw mut pg_sys::ProcDiePending).write_volatile(1);
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// Every job worker's entry point: signals, the descriptor, the connection to the job's
/// database as the job's role, then the job's body.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_job_main(_arg: pg_sys::Datum) {
    if let Some(job) = begin() {
        crate::run_job(job);
    }
}

/// Signals, the descriptor, and the connection. `None` (logged) for a malformed descriptor.
fn begin() -> Option<JobDescriptor> {
    // SIGTERM cancels the running command at once (VACUUM checks for interrupts), as it does
    // for a client backend; the run is then marked interrupted by the worker's upkeep.
    unsafe {
        crate::compat::process::set_signal_handler(pg_sys::SIGTERM as i32, Some(job_sigterm));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let extra = BackgroundWorker::get_extra().to_string();
    let job = match JobDescriptor::decode(&extra) {
        Ok(job) => job,
        Err(e) => {
            log!("admin_toolkit job: {e}");
            return None;
        }
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(job.database)),
        Some(pg_sys::Oid::from(job.role)),
    );
    crate::environment::pin_process();
    Some(job)
}

pub use crate::environment::as_superuser;

/// Bookkeeping in a transaction of its own with the superuser's rights; the error's message
/// when it failed (its transaction rolled back).
pub fn bookkeeping<R>(f: impl FnOnce() -> spi::Result<R>) -> Result<R, String> {
    try_transaction(|| as_superuser(f))?.map_err(|e| e.to_string())
}

/// Like [`bookkeeping`], for a statement whose failure is only logged. The arguments are made
/// before the transaction starts: scalars and text only (an array's type needs the catalog).
pub fn record(sql: &str, args: Vec<pgrx::datum::DatumWithOid>) {
    if let Err(e) = bookkeeping(|| Spi::run_with_args(sql, &args)) {
        log!("admin_toolkit job: recording failed: {e}");
    }
}

fn pending(flag: *const i32) -> bool {
    // SAFETY: signal flags of this process, read volatile as the signal handlers write them.
    unsafe { flag.read_volatile() != 0 }
}

pub const SHUTDOWN: &str = "server shutdown";

/// A cancellation (pg_cancel_backend: cancelled) or shutdown request (SIGTERM: failed) that
/// arrived while the job ran outside any transaction. Clears the flags so the cleanup can run.
pub fn interruption() -> Option<Interruption> {
    let die = pending(&raw const pg_sys::ProcDiePending);
    let cancel = pending(&raw const pg_sys::QueryCancelPending);
    if !die && !cancel {
        return None;
    }
    // SAFETY: as above; the job exits after its cleanup when a shutdown was asked for.
    unsafe {
        (&raw mut pg_sys::QueryCancelPending).write_volatile(0);
        (&raw mut pg_sys::InterruptPending).write_volatile(0);
        if die {
            (&raw mut pg_sys::ProcDiePending).write_volatile(0);
        }
    }
    Some(ledger::interrupted(die))
}

/// Starts `job`, which records run `id` in `ledger`, now, and waits: until it exits when
/// `until_exit`, otherwise until its row exists (at most `patience`), never for its work.
/// Returns whether the row exists then.
pub fn run_now(
    job: &JobDescriptor,
    ledger: &Ledger,
    id: i64,
    until_exit: bool,
    patience: Duration,
) -> Result<bool, ToolkitError> {
    let worker = start(job, true)?;
    if until_exit {
        let _exit_status_is_read_from_the_row = worker.wait_for_shutdown();
    } else {
        let _started_or_gone = worker.wait_for_startup();
        let step = Duration::from_millis(20);
        let mut waited = Duration::ZERO;
        while waited < patience && !ledger.exists(id) {
            std::thread::sleep(step);
            waited += step;
        }
    }
    Ok(ledger.exists(id))
}

/// [`run_now`] for a caller that raises: when the job cannot start, or was waited for and
/// exited without recording its run (`what`: "backup 7 of schedule 2", "drill 3").
pub fn run_now_or_raise(
    job: &JobDescriptor,
    ledger: &Ledger,
    id: i64,
    until_exit: bool,
    what: &str,
) {
    let recorded =
        run_now(job, ledger, id, until_exit, Duration::from_secs(5)).unwrap_or_else(|e| e.raise());
    if until_exit && !recorded {
        ToolkitError::wrong_state(format!(
            "the job exited without recording {what}; see the server log"
        ))
        .raise();
    }
}
