//! The database worker: routine work, tick by tick, in `admin_toolkit.database`.

use super::step::run_step;
use crate::maintenance::partitions::{self, LOGS};
use crate::settings;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Tick length when metric collection is off: partition upkeep and the extension check still run.
const IDLE_TICK: Duration = Duration::from_secs(60);
/// Partitions are checked this often once upkeep has succeeded (and at once after a failure,
/// a reload or a new day).
const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

/// What the worker remembers between ticks.
#[derive(Default)]
struct WorkerState {
    said_no_extension: bool,
    said_standby: bool,
    /// Last successful upkeep of each log in `LOGS`, with the UTC day it ran on.
    last_upkeep: [Option<(Instant, i32)>; LOGS.len()],
}

impl WorkerState {
    fn tick_length() -> Duration {
        match settings::non_negative(&settings::COLLECTION_INTERVAL) {
            0 => IDLE_TICK,
            seconds => Duration::from_secs(u64::from(seconds)).min(IDLE_TICK),
        }
    }

    fn upkeep_due(&self, index: usize, utc_day: i32) -> bool {
        match self.last_upkeep[index] {
            None => true,
            Some((at, day)) => day != utc_day || at.elapsed() >= UPKEEP_EVERY,
        }
    }
}

fn extension_installed() -> bool {
    Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'admin_toolkit')",
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn utc_day_number() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i32::try_from(secs / 86_400).unwrap_or(i32::MAX)
}

fn tick(state: &mut WorkerState) {
    if !run_step("extension check", extension_installed).unwrap_or(false) {
        if !state.said_no_extension {
            log!(
                "admin_toolkit worker: extension admin_toolkit is not installed in database \"{}\"; \
                 waiting for CREATE EXTENSION admin_toolkit",
                settings::database()
            );
            state.said_no_extension = true;
        }
        state.last_upkeep = Default::default();
        return;
    }
    if state.said_no_extension {
        log!("admin_toolkit worker: extension found; starting work");
        state.said_no_extension = false;
    }
    // SAFETY: reads shared recovery state; no transaction needed.
    if unsafe { pg_sys::RecoveryInProgress() } {
        if !state.said_standby {
            log!("admin_toolkit worker: server is a hot standby; making no writes until promotion");
            state.said_standby = true;
        }
        return;
    }
    if state.said_standby {
        log!("admin_toolkit worker: server promoted; resuming work");
        state.said_standby = false;
    }
    let today = utc_day_number();
    for (i, log) in LOGS.iter().enumerate() {
        if !state.upkeep_due(i, today) {
            continue;
        }
        let step = format!("{} partition upkeep", log.table);
        match run_step(&step, || partitions::upkeep(log)) {
            Some(Ok(_)) => state.last_upkeep[i] = Some((Instant::now(), today)),
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"{step}\" failed and will be retried: {e}")
            }
            None => {} // already logged by run_step
        }
    }
}

/// Database worker entry point.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&settings::database()), None);
    log!(
        "admin_toolkit worker started in database \"{}\"",
        settings::database()
    );
    let mut state = WorkerState::default();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: between ticks, as the postmaster asked.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            // New retention or premake settings take effect at once.
            state.last_upkeep = Default::default();
        }
        tick(&mut state);
        if !BackgroundWorker::wait_latch(Some(WorkerState::tick_length())) {
            break;
        }
    }
    log!("admin_toolkit worker stopped");
}
