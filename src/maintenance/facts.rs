//! Maintenance facts of every database: the worker collects them every
//! `admin_toolkit.database_facts_interval` through one short job per database that accepts
//! connections (a job can connect to one database only), one job at a time; each job reads the
//! catalogs (catalog_rows), has core::facts choose the facts and leaves their JSON in a file
//! (core::handoff), which the worker writes into database_facts, database_table_facts and
//! database_index_facts.

use crate::jobs::{self, handoff_dir, JobDescriptor, JobKind};
use crate::transaction::step::{run_step, try_transaction};
use admin_toolkit_core::handoff::{facts_path, write_bytes};
use pgrx::bgworkers::{BackgroundWorkerStatus, DynamicBackgroundWorker};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// A facts job's body: connected to database `database` as the bootstrap superuser (which
/// any database lets in), it reads the facts as pg_monitor (catalog_rows), waiting for no lock
/// and running no statement long, and leaves them for the worker.
pub fn collect_job(database: u32) {
    crate::environment::set_session_limits(FACTS_STATEMENT_TIMEOUT, FACTS_LOCK_TIMEOUT);
    let started = Instant::now();
    let facts = match try_transaction(super::catalog_rows::facts_json) {
        Ok(Ok(facts)) => facts,
        Ok(Err(e)) => return log!("admin_toolkit job: collecting facts failed: {e}"),
        Err(e) => return log!("admin_toolkit job: collecting facts failed: {e}"),
    };
    let text = format!(
        "{{\"collect_ms\": {:.3}, \"facts\": {facts}}}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    if let Err(e) = write_bytes(&facts_path(&handoff_dir(), database), text.as_bytes()) {
        log!("admin_toolkit job: {e}");
    }
}

/// The job collecting one database.
struct Running {
    worker: DynamicBackgroundWorker,
    oid: u32,
    name: String,
    started: Instant,
}

/// The worker's rounds of collection: a queue of databases and at most one job at a time.
#[derive(Default)]
pub struct FactsRounds {
    queue: Vec<(u32, String)>,
    running: Option<Running>,
    /// When the current (or last) round started.
    round_started: Option<Instant>,
    in_round: bool,
    /// The worker's writing of each job's facts, its plans kept across rounds.
    ingest: super::facts_ingest::FactsIngest,
}

/// Longest a facts job may take before the worker terminates it: a statement of the job is
/// cancelled well before (FACTS_STATEMENT_TIMEOUT).
const JOB_PATIENCE: Duration = Duration::from_secs(300);
/// Limits of a facts job's statements: its catalog reads take seconds at most, and a lock held
/// by someone else (a VACUUM FULL of a catalog) costs a round, not a stuck job.
const FACTS_STATEMENT_TIMEOUT: &std::ffi::CStr = c"120s";
const FACTS_LOCK_TIMEOUT: &std::ffi::CStr = c"1s";

impl FactsRounds {
    fn interval() -> Option<Duration> {
        match crate::settings::non_negative(&crate::settings::DATABASE_FACTS_INTERVAL) {
            0 => None,
            s => Some(Duration::from_secs(u64::from(s))),
        }
    }

    fn round_due(&self) -> bool {
        !self.in_round
            && Self::interval()
                .is_some_and(|i| self.round_started.is_none_or(|at| at.elapsed() >= i))
    }

    /// Whether there is anything to do now.
    pub fn due(&self) -> bool {
        self.in_round || self.round_due()
    }

    /// How long the worker may sleep as far as facts are concerned (a job's exit sets its
    /// latch anyway).
    pub fn wait(&self) -> Option<Duration> {
        if self.in_round {
            return Some(Duration::from_secs(1));
        }
        let interval = Self::interval()?;
        Some(
            self.round_started
                .map_or(Duration::ZERO, |at| interval.saturating_sub(at.elapsed())),
        )
    }

    /// One step: take in a finished job's facts, start the next job, start or end a round.
    pub fn step(&mut self) {
        if let Some(running) = &self.running {
            let finished = matches!(
                running.worker.pid(),
                Err(BackgroundWorkerStatus::Stopped) | Err(BackgroundWorkerStatus::PostmasterDied)
            );
            if !finished && running.started.elapsed() < JOB_PATIENCE {
                return;
            }
            let Some(running) = self.running.take() else {
                return;
            };
            if finished {
                self.ingest
                    .write(running.oid, &running.name, running.started);
            } else {
                log!(
                    "admin_toolkit worker: the facts job of database \"{}\" runs over {} s; terminated",
                    running.name,
                    JOB_PATIENCE.as_secs()
                );
                let _stopping = running.worker.terminate();
            }
        }
        if self.in_round && self.queue.is_empty() {
            self.in_round = false;
            if let Some(Err(e)) = run_step("forget the facts of dropped databases", || {
                Spi::run(
                    "WITH gone AS (DELETE FROM admin_toolkit.database_facts f WHERE NOT EXISTS \
                       (SELECT 1 FROM pg_catalog.pg_database d WHERE d.datname = f.database AND d.datallowconn) \
                       RETURNING database), \
                     tables AS (DELETE FROM admin_toolkit.database_table_facts WHERE database IN (SELECT database FROM gone)) \
                     DELETE FROM admin_toolkit.database_index_facts WHERE database IN (SELECT database FROM gone)",
                )
            }) {
                log!("admin_toolkit worker: {e}");
            }
            return;
        }
        if self.round_due() {
            let listed = run_step("list databases for facts", || {
                Spi::connect(|c| {
                    c.select(
                        "SELECT oid::int8, datname::text FROM pg_catalog.pg_database \
                          WHERE datallowconn AND NOT datistemplate ORDER BY datname DESC",
                        None,
                        &[],
                    )?
                    .map(|r| {
                        Ok((
                            r.get::<i64>(1)?.unwrap_or_default() as u32,
                            r.get::<String>(2)?.unwrap_or_default(),
                        ))
                    })
                    .collect::<spi::Result<Vec<_>>>()
                })
            });
            self.round_started = Some(Instant::now());
            match listed {
                Some(Ok(databases)) => {
                    self.queue = databases;
                    self.in_round = true;
                }
                Some(Err(e)) => log!("admin_toolkit worker: listing databases failed: {e}"),
                None => {}
            }
        }
        if self.running.is_none() {
            if let Some((oid, name)) = self.queue.pop() {
                let job = JobDescriptor {
                    kind: JobKind::Facts,
                    role: pg_sys::BOOTSTRAP_SUPERUSERID,
                    database: oid,
                };
                match jobs::start(&job, true) {
                    Ok(worker) => {
                        self.running = Some(Running {
                            worker,
                            oid,
                            name,
                            started: Instant::now(),
                        })
                    }
                    // No worker slot now: try again at the next tick.
                    Err(_) => self.queue.push((oid, name)),
                }
            }
        }
    }
}
