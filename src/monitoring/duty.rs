//! The worker's alerting duty: one sample of every metric each admin_toolkit.collection_interval,
//! the alert rules evaluated on it, and the outbox of deliveries sent (what an evaluation queued
//! goes out at once; failed attempts are retried on their own timers).

use super::notifications::Deliverer;
use super::{alerts, collect};
use crate::settings;
use crate::transaction::step::run_step;
use crate::worker::duty::{Context, Duty};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Alerting {
    /// When metrics were last collected (successfully or not: a failure is retried next interval).
    last_collection: Option<Instant>,
    /// Why query metrics were skipped at the last collection (`Some(None)`: they were not;
    /// `None`: no collection yet), to log the first outcome and each change once.
    statements_note: Option<Option<String>>,
    /// Rules without data at the last evaluation, to log each change once.
    no_data_rules: Vec<String>,
    /// The alert outbox: deliveries in flight and when the next one falls due.
    deliveries: Deliverer,
}

impl Alerting {
    fn collection_due(&self) -> bool {
        match (settings::collection_interval(), self.last_collection) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(interval), Some(at)) => at.elapsed() >= interval,
        }
    }

    fn collect_and_evaluate(&mut self) {
        let started = Instant::now();
        let collected = run_step("collect metrics", collect::collect);
        crate::worker::signals::record_collection(started.elapsed().as_micros() as u64);
        match collected {
            Some(Ok(collection)) => {
                debug1!(
                    "admin_toolkit worker: collected {} metrics",
                    collection.inserted
                );
                if self.statements_note.as_ref() != Some(&collection.statements_unavailable) {
                    match &collection.statements_unavailable {
                        Some(why) => log!("admin_toolkit worker: query metrics skipped: {why}"),
                        None => log!(
                            "admin_toolkit worker: query metrics collected from pg_stat_statements"
                        ),
                    }
                    self.statements_note = Some(collection.statements_unavailable);
                }
            }
            Some(Err(e)) => log!(
                "admin_toolkit worker: step \"collect metrics\" failed and will be retried: {e}"
            ),
            None => {}
        }
        match run_step("evaluate alerts", alerts::evaluate) {
            Some(Ok(evaluation)) if evaluation.no_data != self.no_data_rules => {
                if !evaluation.no_data.is_empty() {
                    log!(
                        "admin_toolkit worker: alert rules without data (metric never collected): {}",
                        evaluation.no_data.join(", ")
                    );
                }
                self.no_data_rules = evaluation.no_data;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => log!(
                "admin_toolkit worker: step \"evaluate alerts\" failed and will be retried: {e}"
            ),
            None => {}
        }
    }
}

impl Duty for Alerting {
    fn name(&self) -> &'static str {
        alerts::ALERTING_DUTY
    }

    fn due(&mut self, _: &Context) -> bool {
        self.collection_due() || self.deliveries.due()
    }

    fn wait(&self) -> Option<Duration> {
        let until_collection = settings::collection_interval().map(|interval| {
            self.last_collection
                .map_or(Duration::ZERO, |at| interval.saturating_sub(at.elapsed()))
        });
        [until_collection, self.deliveries.wait()]
            .into_iter()
            .flatten()
            .min()
    }

    fn run(&mut self, _: &mut Context) {
        if self.collection_due() {
            self.last_collection = Some(Instant::now());
            self.collect_and_evaluate();
            // Whatever the evaluation queued goes out now, not at the next tick.
            self.deliveries.requested = true;
        }
        if self.deliveries.due() {
            self.deliveries.run();
        }
    }

    fn woken(&mut self) {
        self.deliveries.requested = true;
    }
}
