//! The worker's retention duty: hourly, the backups past retention are marked for deletion;
//! then (and whenever a backend's cleanup_old_backups committed, or rows wait) a deletion job
//! removes their files and the WAL no longer needed. Nothing while schedules are held (a
//! restored copy must not delete the original's backups).

use super::retention::{self, DeletionJobs};
use crate::transaction::step::run_step;
use crate::worker::duty::{Context, Duty};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How often backups past retention are looked for.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct Retention {
    /// When retention was last applied.
    last_applied: Option<Instant>,
    /// The minute waiting deletions were last looked for.
    checked_minute: Option<u64>,
    deletions: DeletionJobs,
}

impl Retention {
    fn apply_due(&self) -> bool {
        self.last_applied
            .is_none_or(|at| at.elapsed() >= RETENTION_EVERY)
    }
}

impl Duty for Retention {
    fn name(&self) -> &'static str {
        retention::RETENTION_DUTY
    }

    fn due(&mut self, context: &Context) -> bool {
        context.held.is_none()
            && (self.apply_due()
                || self.checked_minute != Some(context.minute)
                || self.deletions.due())
    }

    fn run(&mut self, context: &mut Context) {
        if context.held.is_some() {
            return;
        }
        if self.apply_due() {
            self.last_applied = Some(Instant::now());
            if let Some(Err(e)) = run_step("backup retention", retention::cleanup) {
                log!("admin_toolkit worker: step \"backup retention\" failed: {e}");
            }
            self.deletions.requested = true;
        }
        if self.checked_minute != Some(context.minute) {
            self.checked_minute = Some(context.minute);
            if run_step("look for backups to delete", retention::deletions_pending)
                .and_then(Result::ok)
                == Some(true)
            {
                self.deletions.requested = true;
            }
        }
        self.deletions.start_if_due();
    }

    fn woken(&mut self) {
        self.deletions.requested = true;
    }
}
