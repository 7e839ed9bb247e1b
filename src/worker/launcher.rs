//! The launcher: waits for the worker's database, then starts and supervises the database worker.

use crate::settings;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How often the launcher looks at its database and its worker when nothing wakes it.
const POLL: Duration = Duration::from_secs(5);
/// Least time between two starts of the database worker, so a worker that keeps failing at
/// start does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(5);

/// Registers the launcher; called from `_PG_init` while shared_preload_libraries is processed.
pub fn register() {
    BackgroundWorkerBuilder::new("admin_toolkit launcher")
        .set_type("admin_toolkit launcher")
        .set_library("admin_toolkit")
        .set_function("admin_toolkit_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// A process of the launcher's (`name` is also its backend_type), running `function`; the
/// launcher is told when it exits.
fn start_child(name: &str, function: &str) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(name)
        .set_type(name)
        .set_library("admin_toolkit")
        .set_function(function)
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(None)
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

/// Whether a database of that name exists (and accepts connections). A backend connected to no
/// database has only the nailed shared catalogs' descriptors, not their indexes, so this is a
/// heap scan of pg_database, as the autovacuum launcher does; pg_database is small.
fn database_exists(name: &str) -> bool {
    BackgroundWorker::transaction(|| {
        // SAFETY: inside a transaction with a snapshot; the relation is opened and closed here
        // and each tuple is read while the scan holds it.
        unsafe {
            let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as _);
            let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
            let mut found = false;
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
                if pg_sys::name_data_to_str(&(*form).datname) == name && (*form).datallowconn {
                    found = true;
                    break;
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
            found
        }
    })
}

/// A process the launcher keeps running: started when the database exists, started again
/// (after RESTART_DELAY) when it exits.
struct Supervised {
    name: &'static str,
    function: &'static str,
    handle: Option<DynamicBackgroundWorker>,
    last_start: Option<Instant>,
    said_no_slot: bool,
}

impl Supervised {
    fn new(name: &'static str, function: &'static str) -> Supervised {
        Supervised {
            name,
            function,
            handle: None,
            last_start: None,
            said_no_slot: false,
        }
    }

    /// Notices an exit; true when the postmaster is gone.
    fn check(&mut self) -> bool {
        if let Some(w) = &self.handle {
            match w.pid() {
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => {}
                Err(BackgroundWorkerStatus::PostmasterDied) => return true,
                Err(_) => {
                    log!("{} exited; the launcher will start it again", self.name);
                    self.handle = None;
                }
            }
        }
        false
    }

    fn wants_start(&self) -> bool {
        self.handle.is_none() && self.last_start.is_none_or(|t| t.elapsed() >= RESTART_DELAY)
    }

    fn start_if_wanted(&mut self) {
        if !self.wants_start() {
            return;
        }
        self.last_start = Some(Instant::now());
        self.handle = start_child(self.name, self.function);
        if self.handle.is_none() && !self.said_no_slot {
            log!(
                "admin_toolkit launcher: no background worker slot free for {}; raise max_worker_processes",
                self.name
            );
            self.said_no_slot = true;
        } else if self.handle.is_some() {
            self.said_no_slot = false;
        }
    }

    fn stop(&mut self) {
        if let Some(w) = self.handle.take() {
            let _terminating = w.terminate();
        }
    }
}

/// Launcher entry point.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    crate::environment::pin_process();
    let database = settings::database();
    log!("admin_toolkit launcher started; worker database is \"{database}\"");

    let mut worker = Supervised::new("admin_toolkit worker", "admin_toolkit_worker_main");
    // The endpoint's entry point is in crate::monitoring::endpoint.
    let mut endpoint = settings::metrics_listen().map(|_| {
        Supervised::new(
            "admin_toolkit metrics endpoint",
            "admin_toolkit_metrics_endpoint_main",
        )
    });
    let mut said_waiting = false;
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration file between loop iterations, as the
            // postmaster asked us to.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let mut postmaster_gone = worker.check();
        if let Some(e) = endpoint.as_mut() {
            postmaster_gone |= e.check();
        }
        if postmaster_gone {
            break;
        }
        let wanted = worker.wants_start() || endpoint.as_ref().is_some_and(Supervised::wants_start);
        if wanted {
            if !database_exists(&database) {
                if !said_waiting {
                    log!(
                        "admin_toolkit launcher: database \"{database}\" does not exist; waiting for it \
                         (set admin_toolkit.database to choose another)"
                    );
                    said_waiting = true;
                } else {
                    debug1!("admin_toolkit launcher: still no database \"{database}\"");
                }
            } else {
                said_waiting = false;
                worker.start_if_wanted();
                if let Some(e) = endpoint.as_mut() {
                    e.start_if_wanted();
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(POLL)) {
            break;
        }
    }
    // Shutdown normally signals every worker; this covers the launcher being stopped alone.
    worker.stop();
    if let Some(e) = endpoint.as_mut() {
        e.stop();
    }
    log!("admin_toolkit launcher stopped");
}
