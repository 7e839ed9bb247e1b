//! The database worker: routine work, tick by tick, in `admin_toolkit.database`. What the work
//! is, the features say: the worker runs the duties registered in `crate::worker_duties`
//! (see `duty`), and knows only whether the extension is there and the server writable.

use super::duty::{Context, Duty};
use super::signals;
use crate::settings;
use crate::transaction::step::run_step;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;

/// Longest sleep between ticks: duties that give no wait are looked at least this often.
const IDLE_TICK: Duration = Duration::from_secs(60);

/// What the worker remembers between ticks.
struct WorkerState {
    said_no_extension: bool,
    said_standby: bool,
    /// The extension's OID when last seen: a new one means it was dropped and created again
    /// between two looks, and every duty starts over (partitions, caches of the old objects).
    extension_oid: pg_sys::Oid,
    /// Whether the last tick got past the extension and standby checks.
    working: bool,
    context: Context,
    duties: Vec<Box<dyn Duty>>,
}

impl WorkerState {
    /// Sleep until the next duty may be due, at most `IDLE_TICK`. While the worker cannot work
    /// (no extension yet, hot standby) it looks again every collection interval.
    fn tick_length(&self) -> Duration {
        if !self.working {
            return settings::collection_interval()
                .unwrap_or(IDLE_TICK)
                .clamp(Duration::from_millis(100), IDLE_TICK);
        }
        self.duties
            .iter()
            .filter_map(|d| d.wait())
            .min()
            .unwrap_or(IDLE_TICK)
            .clamp(Duration::from_millis(20), IDLE_TICK)
    }

    fn restart_duties(&mut self) {
        for duty in &mut self.duties {
            duty.restart();
        }
    }
}

/// The extension's OID here, `InvalidOid` when it is not installed: a catalog index lookup, no
/// SQL to parse, since it runs every tick.
fn extension_oid() -> pg_sys::Oid {
    // SAFETY: called inside a transaction (run_step).
    unsafe { pg_sys::get_extension_oid(c"admin_toolkit".as_ptr(), true) }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether the extension is there and the server writable, logging each change once.
fn can_work(state: &mut WorkerState) -> bool {
    let oid = run_step("extension check", extension_oid).unwrap_or(pg_sys::InvalidOid);
    if oid == pg_sys::InvalidOid {
        if !state.said_no_extension {
            log!(
                "admin_toolkit worker: extension admin_toolkit is not installed in database \"{}\"; \
                 waiting for CREATE EXTENSION admin_toolkit",
                settings::database()
            );
            state.said_no_extension = true;
        } else {
            debug1!("admin_toolkit worker: still no extension");
        }
        state.restart_duties();
        return false;
    }
    if state.said_no_extension {
        log!("admin_toolkit worker: extension found; starting work");
        state.said_no_extension = false;
    } else if state.extension_oid != oid && state.extension_oid != pg_sys::InvalidOid {
        log!("admin_toolkit worker: extension admin_toolkit was created again; starting over");
        state.restart_duties();
    }
    state.extension_oid = oid;
    // SAFETY: reads a shared-memory flag of the startup process.
    if unsafe { pg_sys::RecoveryInProgress() } {
        if !state.said_standby {
            log!("admin_toolkit worker: server is a hot standby; making no writes until promotion");
            state.said_standby = true;
        } else {
            debug1!("admin_toolkit worker: still a hot standby");
        }
        return false;
    }
    if state.said_standby {
        log!("admin_toolkit worker: server promoted; resuming work");
        state.said_standby = false;
    }
    true
}

fn tick(state: &mut WorkerState) {
    let requests = signals::take_requests();
    if requests != 0 {
        for duty in &mut state.duties {
            if requests & signals::request_bit(duty.name()) != 0 {
                duty.woken();
            }
        }
    }
    let now = now_secs();
    state.context.minute = now / 60;
    state.context.utc_day = i32::try_from(now / 86_400).unwrap_or(i32::MAX);
    // An idle tick (most of them, once a second) costs next to nothing: no transaction.
    let (context, duties) = (&state.context, &mut state.duties);
    if state.working && !duties.iter_mut().any(|d| d.due(context)) {
        return;
    }
    state.working = false;
    if !can_work(state) {
        return;
    }
    state.working = true;
    let WorkerState {
        context, duties, ..
    } = state;
    for duty in duties.iter_mut() {
        if duty.due(context) {
            duty.run(context);
            // Tests wait for this line (log_min_messages = debug1) to know a pass is over:
            // "nothing happened twice" is then checked after the pass that would have done it.
            debug1!("admin_toolkit worker: duty \"{}\" done", duty.name());
        }
    }
}

/// Database worker entry point.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&settings::database()), None);
    crate::environment::pin_process();
    log!(
        "admin_toolkit worker started in database \"{}\"",
        settings::database()
    );
    // When a step deadlocks with a user's statement (DROP EXTENSION during a step), the worker
    // gives way: it finds the deadlock first and its step is retried at the next tick.
    // SAFETY: sets a setting of this process, outside any transaction.
    unsafe {
        pg_sys::SetConfigOption(
            c"deadlock_timeout".as_ptr(),
            c"100ms".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        )
    };
    let mut state = WorkerState {
        said_no_extension: false,
        said_standby: false,
        extension_oid: pg_sys::InvalidOid,
        working: false,
        context: Context::default(),
        duties: crate::worker_duties(),
    };
    signals::worker_present(true);
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: between ticks, as the postmaster asked.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            state.restart_duties();
        }
        signals::worker_tick();
        tick(&mut state);
        if !BackgroundWorker::wait_latch(Some(state.tick_length())) {
            break;
        }
    }
    for duty in &mut state.duties {
        duty.shutdown();
    }
    signals::worker_present(false);
    log!("admin_toolkit worker stopped");
}
