//! The start of due schedules, shared by maintenance and backups: every active schedule whose
//! next_run has come gets a job, run as the schedule's owner.

use admin_toolkit_core::chrono::{DateTime, Utc};
use admin_toolkit_core::cron::CronSchedule;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Starts every active schedule of `table` (maintenance_schedules, backup_schedules) whose
/// next_run has come, through `start` (given the schedule and its owner), and moves its
/// next_run on. `start` returns false when no worker slot was free: that schedule stays due.
/// Returns how many stayed due.
pub fn start_due(table: &str, mut start: impl FnMut(i32, &str) -> bool) -> spi::Result<usize> {
    let due: Vec<(i32, String, String)> = Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT schedule_id, schedule_expression, owner::text FROM admin_toolkit.{table} \
                 WHERE is_active AND next_run <= now() ORDER BY next_run"
            ),
            None,
            &[],
        )?;
        rows.map(|r| {
            Ok((
                r.get::<i32>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ))
        })
        .collect::<spi::Result<Vec<_>>>()
    })?;
    let tz = schedule_time_zone();
    let mut deferred = 0;
    for (schedule_id, expression, owner) in due {
        if !start(schedule_id, &owner) {
            deferred += 1;
            continue;
        }
        let next = CronSchedule::parse(&expression)
            .ok()
            .and_then(|s| s.next_after(Utc::now(), tz));
        let micros = next.map(|t: DateTime<Utc>| t.timestamp_micros());
        Spi::run_with_args(
            &format!(
                "UPDATE admin_toolkit.{table} \
                 SET next_run = CASE WHEN $2::bigint IS NULL THEN NULL ELSE to_timestamp($2::bigint / 1e6) END \
                 WHERE schedule_id = $1"
            ),
            &[schedule_id.into(), micros.into()],
        )?;
    }
    Ok(deferred)
}

/// The time zone schedules are read in: `admin_toolkit.timezone`, or the server's TimeZone.
pub fn schedule_time_zone() -> admin_toolkit_core::chrono_tz::Tz {
    let name = crate::settings::timezone().unwrap_or_else(|| {
        crate::query::read_scalar::<String>(
            "SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'TimeZone'",
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| "UTC".into())
    });
    admin_toolkit_core::cron::time_zone(&name).unwrap_or_else(|e| {
        crate::error::ToolkitError::invalid_parameter(e.to_string())
            .with_hint("Set admin_toolkit.timezone to an IANA time zone name.")
            .raise()
    })
}

/// Marks a kind's runs whose job vanished, and the like, before its due jobs start.
pub type Upkeep = fn() -> spi::Result<()>;
/// Starts a kind's due jobs; how many stayed due for want of a worker slot.
pub type StartDue = fn() -> spi::Result<usize>;

/// The worker's duty for one kind of scheduled job (maintenance, backups, drills): once a
/// minute, its upkeep then the start of its due jobs, each a step of its own, so that one
/// kind's failure neither stops another's nor rolls back the next_run of jobs it started.
/// Jobs that found no worker slot stay due and are looked at again next tick. Nothing runs
/// while schedules are held (a restored copy, see crate::copy_guard).
pub struct ScheduleDuty {
    kind: &'static str,
    upkeep: Upkeep,
    start_due: StartDue,
    /// The minute (Unix time / 60) this kind was last looked at with success.
    checked_minute: Option<u64>,
    /// When it was last looked at (admin_toolkit.schedule_check_interval).
    checked_at: Option<Instant>,
    /// The minute a shortage of worker slots was last logged.
    deferred_logged_minute: Option<u64>,
}

impl ScheduleDuty {
    pub fn new(kind: &'static str, upkeep: Upkeep, start_due: StartDue) -> ScheduleDuty {
        ScheduleDuty {
            kind,
            upkeep,
            start_due,
            checked_minute: None,
            checked_at: None,
            deferred_logged_minute: None,
        }
    }
}

impl crate::worker::duty::Duty for ScheduleDuty {
    fn name(&self) -> &'static str {
        self.kind
    }

    fn due(&mut self, context: &crate::worker::duty::Context) -> bool {
        let check_due = self
            .checked_at
            .is_none_or(|at| at.elapsed() >= crate::settings::schedule_check_interval());
        self.checked_minute != Some(context.minute) || check_due
    }

    /// Until the next whole minute (schedules fall on them), or sooner as the check interval
    /// says.
    fn wait(&self) -> Option<Duration> {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let to_next_minute = Duration::from_secs(60).saturating_sub(Duration::from_millis(
            (since_epoch.as_millis() % 60_000) as u64,
        ));
        let interval = crate::settings::schedule_check_interval();
        let to_next_check = self
            .checked_at
            .map_or(Duration::ZERO, |at| interval.saturating_sub(at.elapsed()));
        Some(to_next_minute.min(to_next_check))
    }

    fn run(&mut self, context: &mut crate::worker::duty::Context) {
        self.checked_at = Some(Instant::now());
        if context.held.is_some() {
            self.checked_minute = Some(context.minute);
            return;
        }
        let upkeep = format!("upkeep of {}", self.kind);
        let start = format!("start due {}", self.kind);
        let mut settled = true;
        match crate::transaction::step::run_step(&upkeep, self.upkeep) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"{upkeep}\" failed and will be retried: {e}");
                settled = false;
            }
            None => settled = false, // logged by run_step
        }
        let deferred = match crate::transaction::step::run_step(&start, self.start_due) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                log!("admin_toolkit worker: step \"{start}\" failed and will be retried: {e}");
                settled = false;
                0
            }
            None => {
                settled = false;
                0
            }
        };
        if settled && deferred == 0 {
            self.checked_minute = Some(context.minute);
        } else if deferred > 0 && self.deferred_logged_minute != Some(context.minute) {
            log!(
                "admin_toolkit worker: {deferred} due {} job(s) wait for a free background worker slot \
                 (raise max_worker_processes)",
                self.kind
            );
            self.deferred_logged_minute = Some(context.minute);
        }
    }
}
