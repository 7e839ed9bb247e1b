//! Job workers: one dynamic background worker per maintenance run, executing its command
//! top-level (see `top_level`) and recording the outcome in a row it creates and owns.

use crate::backup;
use crate::config::changes;
use crate::maintenance::jobs;
use crate::settings;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
};
use pgrx::prelude::*;

fn start(name: &str, extra: &str, notify: bool) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(name)
        .set_type("admin_toolkit job")
        .set_library("admin_toolkit")
        .set_function("admin_toolkit_job_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_extra(extra)
        .set_notify_pid(if notify {
            unsafe { pg_sys::MyProcPid }
        } else {
            0
        })
        .load_dynamic()
        .ok()
}

/// Starts a job worker for one run of a maintenance schedule. With `notify`, this backend is
/// told when it starts and stops, so it can wait for it.
pub fn start_maintenance(
    schedule_id: i32,
    run_id: i64,
    notify: bool,
) -> Option<DynamicBackgroundWorker> {
    start(
        &format!("admin_toolkit maintenance run {run_id}"),
        &format!("maintenance {schedule_id} {run_id}"),
        notify,
    )
}

/// Starts a job worker for one backup run (backup::base); with `notify` this backend can
/// wait for it.
pub fn start_backup(
    schedule_id: i32,
    backup_id: i64,
    notify: bool,
) -> Option<DynamicBackgroundWorker> {
    start(
        &format!("admin_toolkit backup {backup_id}"),
        &format!("backup {schedule_id} {backup_id}"),
        notify,
    )
}

/// Starts a job worker that applies one configuration request (see config::changes); the
/// caller waits for it.
pub fn start_config(request_id: &str) -> Option<DynamicBackgroundWorker> {
    start(
        &format!("admin_toolkit configuration change {request_id}"),
        &format!("config {request_id}"),
        true,
    )
}

/// What PostgreSQL's `die` does: ask the next CHECK_FOR_INTERRUPTS to terminate the process.
unsafe extern "C-unwind" fn job_sigterm(_signal: i32) {
    unsafe {
        (&raw mut pg_sys::InterruptPending).write_volatile(1);
        (&raw mut pg_sys::ProcDiePending).write_volatile(1);
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// Job worker entry point.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_job_main(_arg: pg_sys::Datum) {
    // SIGTERM cancels the running command at once (VACUUM checks for interrupts), as it does
    // for a client backend; the run is then marked interrupted by the worker's upkeep.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(job_sigterm));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    BackgroundWorker::connect_worker_to_spi(Some(&settings::database()), None);
    let extra = BackgroundWorker::get_extra().to_string();
    let mut words = extra.split_whitespace();
    if let ["config", request] = extra.split_whitespace().collect::<Vec<_>>()[..] {
        changes::run_request(request);
        return;
    }
    let (Some(kind @ ("maintenance" | "backup")), Some(schedule), Some(run)) =
        (words.next(), words.next(), words.next())
    else {
        log!("admin_toolkit job: unknown job \"{extra}\"");
        return;
    };
    match (kind, schedule.parse::<i32>(), run.parse::<i64>()) {
        ("maintenance", Ok(schedule_id), Ok(run_id)) => jobs::run(schedule_id, run_id),
        ("backup", Ok(schedule_id), Ok(backup_id)) => backup::base::run(schedule_id, backup_id),
        _ => log!("admin_toolkit job: malformed job \"{extra}\""),
    }
}
