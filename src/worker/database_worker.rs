//! The database worker: routine work, tick by tick, in `admin_toolkit.database`.

use super::step::run_step;
use crate::backup;
use crate::config::changes;
use crate::maintenance::facts::FactsRounds;
use crate::maintenance::jobs;
use crate::maintenance::partitions::{self, LOGS};
use crate::monitoring::{alerts, collect, notifications::Deliverer};
use crate::security::audit;
use crate::settings;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Longest sleep between ticks: partition upkeep and the extension check run at least this often.
const IDLE_TICK: Duration = Duration::from_secs(60);
/// Longest sleep while the worker works: audit events wait at most this long in shared memory.
const AUDIT_TICK: Duration = Duration::from_secs(1);
/// Partitions are checked this often once upkeep has succeeded (and at once after a failure,
/// a reload or a new day).
const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

/// What the worker remembers between ticks.
#[derive(Default)]
struct WorkerState {
    said_no_extension: bool,
    said_standby: bool,
    /// Whether the last tick got past the extension and standby checks.
    working: bool,
    /// When metrics were last collected (successfully or not: a failure is retried next interval).
    last_collection: Option<Instant>,
    /// Why query metrics were skipped at the last collection (`Some(None)`: they were not;
    /// `None`: no collection yet), to log the first outcome and each change once.
    statements_note: Option<Option<String>>,
    /// Rules without data at the last evaluation, to log each change once.
    no_data_rules: Vec<String>,
    /// When table reads were last summarised into the audit log.
    last_read_summary: Option<Instant>,
    /// Audit events dropped (queue full) as last reported.
    dropped_reported: (u64, u64),
    /// The minute (Unix time / 60) due maintenance jobs were last looked for: cron schedules
    /// fall on whole minutes, so once a minute is enough.
    jobs_checked_minute: Option<u64>,
    /// The minute a shortage of worker slots for due jobs was last logged.
    deferred_logged_minute: Option<u64>,
    /// Configuration changes made by other means are looked for at startup and after a reload.
    config_checked: bool,
    /// Retention's deletions, in a job of their own (asked for when cleanup_old_backups
    /// committed, and each minute while rows wait).
    deletions: backup::retention::DeletionJobs,
    /// The alert outbox: deliveries in flight and when the next one falls due.
    deliveries: Deliverer,
    /// Why schedules and retention are held on this server (a restored copy), as last looked
    /// at each minute; logged when it changes.
    held: Option<String>,
    /// Last successful upkeep of each log in `LOGS`, with the UTC day it ran on.
    last_upkeep: [Option<(Instant, i32)>; LOGS.len()],
    /// Collection of every database's maintenance facts, one job at a time.
    facts: FactsRounds,
}

impl WorkerState {
    fn collection_interval() -> Option<Duration> {
        match settings::non_negative(&settings::COLLECTION_INTERVAL) {
            0 => None,
            seconds => Some(Duration::from_secs(u64::from(seconds))),
        }
    }

    fn collection_due(&self) -> bool {
        match (Self::collection_interval(), self.last_collection) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(interval), Some(at)) => at.elapsed() >= interval,
        }
    }

    /// Sleep until the next thing is due: audit events every `AUDIT_TICK` (when the audit queue
    /// exists), the next collection, and at most `IDLE_TICK`. While the worker cannot work (no
    /// extension yet, hot standby) it looks again every collection interval.
    fn tick_length(&self) -> Duration {
        let interval = Self::collection_interval();
        if !self.working {
            return interval
                .unwrap_or(IDLE_TICK)
                .clamp(Duration::from_millis(100), IDLE_TICK);
        }
        let mut next = if audit::queue::available() {
            AUDIT_TICK
        } else {
            IDLE_TICK
        };
        if let Some(interval) = interval {
            let until_collection = self
                .last_collection
                .map_or(Duration::ZERO, |at| interval.saturating_sub(at.elapsed()));
            next = next.min(until_collection);
        }
        if let Some(until_delivery) = self.deliveries.wait() {
            next = next.min(until_delivery);
        }
        if let Some(until_facts) = self.facts.wait() {
            next = next.min(until_facts);
        }
        next.clamp(Duration::from_millis(20), IDLE_TICK)
    }

    fn upkeep_due(&self, index: usize, utc_day: i32) -> bool {
        match self.last_upkeep[index] {
            None => true,
            Some((at, day)) => day != utc_day || at.elapsed() >= UPKEEP_EVERY,
        }
    }
}

/// Whether the extension exists here: a catalog index lookup, no SQL to parse, since it runs
/// every tick.
fn extension_installed() -> bool {
    // SAFETY: called inside a transaction (run_step).
    unsafe { pg_sys::get_extension_oid(c"admin_toolkit".as_ptr(), true) != pg_sys::InvalidOid }
}

fn utc_day_number() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i32::try_from(secs / 86_400).unwrap_or(i32::MAX)
}

fn unix_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

/// Whether this tick has anything to do. An idle tick (most of them, once a second) must cost
/// next to nothing: no transaction, no catalog access, only the audit queue's counters.
/// Marks backups past retention for deletion (hourly, with partition upkeep), then asks for a
/// deletion job, which removes them and the WAL no longer needed.
fn apply_backup_retention(state: &mut WorkerState) {
    if state.held.is_some() {
        return;
    }
    if let Some(Err(e)) = run_step("backup retention", backup::retention::cleanup) {
        log!("admin_toolkit worker: step \"backup retention\" failed: {e}");
    }
    state.deletions.requested = true;
}

/// Whether this server is a copy whose schedules and retention must wait for an
/// administrator (crate::copy_guard); logged when that changes.
fn look_whether_held(state: &mut WorkerState) {
    let Some(Ok(held)) = run_step("look whether schedules are held", crate::copy_guard::held)
    else {
        return;
    };
    if held != state.held {
        match &held {
            Some(reason) => log!(
                "admin_toolkit worker: {}",
                admin_toolkit_core::copy_guard::held_message(reason)
            ),
            None if state.held.is_some() => {
                log!("admin_toolkit worker: schedules and retention run again (adopted)")
            }
            None => {}
        }
        state.held = held;
    }
}

/// The minute's look at runs and schedules. Each upkeep and each kind of job is a step of its
/// own: one that fails neither stops the others nor rolls back the next_run of jobs another
/// step has started. Done for the minute once every step succeeded and every due job found a
/// worker slot; otherwise looked at again at the next tick.
fn start_due_jobs(state: &mut WorkerState, minute: u64) {
    type Upkeep = fn() -> pgrx::spi::Result<()>;
    type Start = fn() -> pgrx::spi::Result<usize>;
    let upkeep: [(&str, Upkeep); 3] = [
        ("upkeep of backup runs", backup::jobs::upkeep_backups),
        ("upkeep of restore drills", backup::drill::upkeep_drills),
        (
            "deactivate orphaned schedules",
            jobs::deactivate_orphaned_schedules,
        ),
    ];
    let starts: [(&str, Start); 3] = [
        ("start due maintenance jobs", jobs::start_due_jobs),
        ("start due backups", backup::jobs::start_due_backups),
        ("start due restore drills", backup::drill::start_due_drills),
    ];
    let mut settled = true;
    for (name, step) in upkeep {
        match run_step(name, step) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"{name}\" failed and will be retried: {e}");
                settled = false;
            }
            None => settled = false, // logged by run_step
        }
    }
    let mut deferred = 0;
    for (name, start) in starts {
        match run_step(name, start) {
            Some(Ok(n)) => deferred += n,
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"{name}\" failed and will be retried: {e}");
                settled = false;
            }
            None => settled = false,
        }
    }
    if settled && deferred == 0 {
        state.jobs_checked_minute = Some(minute);
    } else if deferred > 0 && state.deferred_logged_minute != Some(minute) {
        // Jobs that found no worker slot stay due: looked at again next tick, not next minute.
        log!(
            "admin_toolkit worker: {deferred} due job(s) wait for a free background worker slot \
             (raise max_worker_processes)"
        );
        state.deferred_logged_minute = Some(minute);
    }
}

fn work_due(state: &mut WorkerState) -> bool {
    if audit::queue::take_work_request() {
        state.deletions.requested = true;
        state.deliveries.requested = true;
    }
    if !state.working {
        return true; // waiting for the extension or a promotion: look again
    }
    let (events, reads) = audit::queue::pending();
    let reads_due = reads
        && state.last_read_summary.is_none_or(|at| {
            at.elapsed().as_secs()
                >= u64::from(settings::non_negative(&settings::AUDIT_READ_INTERVAL))
        });
    let today = utc_day_number();
    events
        || reads_due
        || state.collection_due()
        || state.jobs_checked_minute != Some(unix_minute())
        || (0..LOGS.len()).any(|i| state.upkeep_due(i, today))
        || audit::queue::dropped() != state.dropped_reported
        || !state.config_checked
        || (state.deletions.due() && state.held.is_none())
        || state.deliveries.due()
        || state.facts.due()
}

fn tick(state: &mut WorkerState) {
    if !work_due(state) {
        return;
    }
    state.working = false;
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
    state.working = true;
    let today = utc_day_number();
    for (i, log) in LOGS.iter().enumerate() {
        if !state.upkeep_due(i, today) {
            continue;
        }
        let step = format!("{} partition upkeep", log.table);
        match run_step(&step, || partitions::upkeep(log)) {
            Some(Ok(_)) => {
                state.last_upkeep[i] = Some((Instant::now(), today));
                if i == 0 {
                    let retention = settings::MAINTENANCE_HISTORY_DAYS.get();
                    if let Some(Err(e)) = run_step("maintenance history upkeep", || {
                        jobs::upkeep_runs(retention)
                    }) {
                        log!(
                            "admin_toolkit worker: step \"maintenance history upkeep\" failed: {e}"
                        );
                    }
                    apply_backup_retention(state);
                }
            }
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"{step}\" failed and will be retried: {e}")
            }
            None => {} // already logged by run_step
        }
    }
    if !state.config_checked {
        match run_step(
            "detect configuration changes",
            changes::detect_external_changes,
        ) {
            Some(Ok(n)) => {
                if n > 0 {
                    log!("admin_toolkit worker: recorded {n} configuration change(s) made outside track_config_change()");
                }
                state.config_checked = true;
            }
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"detect configuration changes\" failed: {e}")
            }
            None => {}
        }
    }
    write_audit(state);
    let minute = unix_minute();
    if state.jobs_checked_minute != Some(minute) {
        look_whether_held(state);
    }
    if state.jobs_checked_minute != Some(minute) && state.held.is_some() {
        state.jobs_checked_minute = Some(minute);
    } else if state.jobs_checked_minute != Some(minute) {
        if run_step(
            "look for backups to delete",
            backup::retention::deletions_pending,
        )
        .and_then(Result::ok)
            == Some(true)
        {
            state.deletions.requested = true;
        }
        start_due_jobs(state, minute);
    }
    if state.held.is_none() {
        state.deletions.start_if_due();
    }
    if state.collection_due() {
        state.last_collection = Some(Instant::now());
        collect_and_evaluate(state);
        // Whatever the evaluation queued goes out now, not at the next tick.
        state.deliveries.requested = true;
    }
    if state.deliveries.due() {
        state.deliveries.run();
    }
    if state.facts.due() {
        state.facts.step();
    }
}

/// At shutdown: everything still queued is written before the worker exits (the postmaster
/// waits for it before the shutdown checkpoint), read counts included.
fn drain_audit_queue(state: &mut WorkerState) {
    if !state.working || !audit::queue::available() {
        return;
    }
    state.last_read_summary = None; // summarise now, whatever the interval
    write_audit(state);
    let (events, _) = audit::queue::pending();
    if events {
        log!("admin_toolkit worker: audit events could not all be written at shutdown; see the errors above");
    }
}

/// Moves audit events from shared memory into security_audit_log, batch by batch, and
/// summarises table reads every admin_toolkit.audit_read_interval seconds.
fn write_audit(state: &mut WorkerState) {
    if !audit::queue::available() {
        return;
    }
    while audit::queue::pending().0 {
        match run_step("write audit events", audit::write_events) {
            Some(Ok(n)) if n >= audit::BATCH => continue,
            Some(Err(e)) => log!(
                "admin_toolkit worker: step \"write audit events\" failed and will be retried: {e}"
            ),
            _ => {}
        }
        break;
    }
    let interval = Duration::from_secs(u64::from(settings::non_negative(
        &settings::AUDIT_READ_INTERVAL,
    )));
    let due = state
        .last_read_summary
        .is_none_or(|at| at.elapsed() >= interval);
    if due && audit::queue::pending().1 {
        let period = state
            .last_read_summary
            .map_or(interval.as_secs_f64(), |at| at.elapsed().as_secs_f64());
        state.last_read_summary = Some(Instant::now());
        if let Some(Err(e)) = run_step("summarise table reads", || {
            audit::write_read_summaries(period)
        }) {
            log!("admin_toolkit worker: step \"summarise table reads\" failed: {e}");
        }
    }
    let dropped = audit::queue::dropped();
    if dropped != state.dropped_reported {
        log!(
            "admin_toolkit worker: audit queue full: {} events and {} table-read counts dropped since startup \
             (metric security/audit_events_dropped)",
            dropped.0,
            dropped.1
        );
        state.dropped_reported = dropped;
    }
}

fn collect_and_evaluate(state: &mut WorkerState) {
    let started = Instant::now();
    let collected = run_step("collect metrics", collect::collect);
    audit::queue::record_collection(started.elapsed().as_micros() as u64);
    match collected {
        Some(Ok(collection)) => {
            debug1!(
                "admin_toolkit worker: collected {} metrics",
                collection.inserted
            );
            if state.statements_note.as_ref() != Some(&collection.statements_unavailable) {
                match &collection.statements_unavailable {
                    Some(why) => log!("admin_toolkit worker: query metrics skipped: {why}"),
                    None => log!(
                        "admin_toolkit worker: query metrics collected from pg_stat_statements"
                    ),
                }
                state.statements_note = Some(collection.statements_unavailable);
            }
        }
        Some(Err(e)) => {
            log!("admin_toolkit worker: step \"collect metrics\" failed and will be retried: {e}")
        }
        None => {}
    }
    match run_step("evaluate alerts", alerts::evaluate) {
        Some(Ok(evaluation)) if evaluation.no_data != state.no_data_rules => {
            if !evaluation.no_data.is_empty() {
                log!(
                    "admin_toolkit worker: alert rules without data (metric never collected): {}",
                    evaluation.no_data.join(", ")
                );
            }
            state.no_data_rules = evaluation.no_data;
        }
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            log!("admin_toolkit worker: step \"evaluate alerts\" failed and will be retried: {e}")
        }
        None => {}
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
    let mut state = WorkerState::default();
    audit::queue::register_worker_latch(true);
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: between ticks, as the postmaster asked.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            // New retention or premake settings take effect at once.
            state.last_upkeep = Default::default();
            state.config_checked = false;
        }
        audit::queue::worker_tick();
        tick(&mut state);
        if !BackgroundWorker::wait_latch(Some(state.tick_length())) {
            break;
        }
    }
    drain_audit_queue(&mut state);
    audit::queue::register_worker_latch(false);
    log!("admin_toolkit worker stopped");
}
