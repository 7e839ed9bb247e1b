//! The worker's maintenance duties: upkeep of the extension's partitioned logs (hourly, and at
//! once after a failure, a reload or a new day) with the history of maintenance runs, and the
//! rounds of every database's maintenance facts.

use super::facts::FactsRounds;
use super::partitions::{self, LOGS};
use crate::settings;
use crate::transaction::step::run_step;
use crate::worker::duty::{Context, Duty};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Partitions are checked this often once upkeep has succeeded.
const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct PartitionUpkeep {
    /// Last successful upkeep of each log in `LOGS`, with the UTC day it ran on.
    last_upkeep: [Option<(Instant, i32)>; LOGS.len()],
}

impl PartitionUpkeep {
    fn upkeep_due(&self, index: usize, utc_day: i32) -> bool {
        match self.last_upkeep[index] {
            None => true,
            Some((at, day)) => day != utc_day || at.elapsed() >= UPKEEP_EVERY,
        }
    }
}

impl Duty for PartitionUpkeep {
    fn name(&self) -> &'static str {
        "partition upkeep"
    }

    fn due(&mut self, context: &Context) -> bool {
        (0..LOGS.len()).any(|i| self.upkeep_due(i, context.utc_day))
    }

    fn run(&mut self, context: &mut Context) {
        for (i, log) in LOGS.iter().enumerate() {
            if !self.upkeep_due(i, context.utc_day) {
                continue;
            }
            let step = format!("{} partition upkeep", log.table);
            match run_step(&step, || partitions::upkeep(log)) {
                Some(Ok(_)) => {
                    self.last_upkeep[i] = Some((Instant::now(), context.utc_day));
                    if i == 0 {
                        let retention = settings::MAINTENANCE_HISTORY_DAYS.get();
                        if let Some(Err(e)) = run_step("maintenance history upkeep", || {
                            super::runs::forget_old_runs(retention)
                        }) {
                            log!("admin_toolkit worker: step \"maintenance history upkeep\" failed: {e}");
                        }
                    }
                }
                Some(Err(e)) => {
                    log!("admin_toolkit worker: step \"{step}\" failed and will be retried: {e}")
                }
                None => {} // already logged by run_step
            }
        }
    }

    /// New retention or premake settings take effect at once.
    fn restart(&mut self) {
        self.last_upkeep = Default::default();
    }
}

/// Collection of every database's maintenance facts, one job at a time.
#[derive(Default)]
pub struct Facts(FactsRounds);

impl Duty for Facts {
    fn name(&self) -> &'static str {
        "facts rounds"
    }

    fn due(&mut self, _: &Context) -> bool {
        self.0.due()
    }

    fn wait(&self) -> Option<Duration> {
        self.0.wait()
    }

    fn run(&mut self, _: &mut Context) {
        self.0.step();
    }
}
