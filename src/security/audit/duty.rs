//! The worker's duty of moving audit events from shared memory into security_audit_log, batch
//! by batch, summarising table reads every admin_toolkit.audit_read_interval seconds, and
//! writing whatever is still queued when the worker stops.

use super::{queue, write_events, write_read_summaries, BATCH};
use crate::settings;
use crate::transaction::step::run_step;
use crate::worker::duty::{Context, Duty};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Longest an audit event waits in shared memory while the worker works.
const AUDIT_TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct AuditWriter {
    /// When table reads were last summarised into the audit log.
    last_read_summary: Option<Instant>,
    /// Audit events dropped (queue full) as last reported.
    dropped_reported: (u64, u64),
}

impl AuditWriter {
    fn read_interval() -> Duration {
        Duration::from_secs(u64::from(settings::non_negative(
            &settings::AUDIT_READ_INTERVAL,
        )))
    }

    fn reads_due(&self) -> bool {
        self.last_read_summary
            .is_none_or(|at| at.elapsed() >= Self::read_interval())
    }
}

impl Duty for AuditWriter {
    fn name(&self) -> &'static str {
        "audit writer"
    }

    fn due(&mut self, _: &Context) -> bool {
        let (events, reads) = queue::pending();
        events || (reads && self.reads_due()) || queue::dropped() != self.dropped_reported
    }

    fn wait(&self) -> Option<Duration> {
        queue::available().then_some(AUDIT_TICK)
    }

    fn run(&mut self, _: &mut Context) {
        if !queue::available() {
            return;
        }
        while queue::pending().0 {
            match run_step("write audit events", write_events) {
                Some(Ok(n)) if n >= BATCH => continue,
                Some(Err(e)) => log!(
                    "admin_toolkit worker: step \"write audit events\" failed and will be retried: {e}"
                ),
                _ => {}
            }
            break;
        }
        if self.reads_due() && queue::pending().1 {
            let period = self
                .last_read_summary
                .map_or(Self::read_interval().as_secs_f64(), |at| {
                    at.elapsed().as_secs_f64()
                });
            self.last_read_summary = Some(Instant::now());
            if let Some(Err(e)) = run_step("summarise table reads", || write_read_summaries(period))
            {
                log!("admin_toolkit worker: step \"summarise table reads\" failed: {e}");
            }
        }
        let dropped = queue::dropped();
        if dropped != self.dropped_reported {
            log!(
                "admin_toolkit worker: audit queue full: {} events and {} table-read counts dropped since startup \
                 (metric security/audit_events_dropped)",
                dropped.0,
                dropped.1
            );
            self.dropped_reported = dropped;
        }
    }

    /// Writes everything still queued, read counts included, whatever the interval.
    fn shutdown(&mut self) {
        self.last_read_summary = None;
        self.run(&mut Context::default());
        if queue::pending().0 {
            log!("admin_toolkit worker: audit events could not all be written at shutdown; see the errors above");
        }
    }
}
