//! Maintenance facts of every database: the worker collects them every
//! `admin_toolkit.database_facts_interval` through one short job per database that accepts
//! connections (a job can connect to one database only), one job at a time; each job reads the
//! catalogs (catalog_rows), has core::facts choose the facts and leaves their JSON in a file
//! (core::handoff), which the worker writes into database_facts, database_table_facts and
//! database_index_facts.

use crate::jobs::{self, handoff_dir, JobDescriptor, JobKind};
use crate::worker::step::{run_step, try_transaction};
use admin_toolkit_core::handoff::{facts_path, write_bytes};
use pgrx::bgworkers::{BackgroundWorkerStatus, DynamicBackgroundWorker};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Entry point of a facts job: connected to one database as the bootstrap superuser (the
/// worker's own work, as the worker's), it reads the facts and leaves them for the worker.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn admin_toolkit_facts_job(_arg: pg_sys::Datum) {
    let Some(JobDescriptor {
        kind: JobKind::Facts,
        database,
        ..
    }) = jobs::begin()
    else {
        return;
    };
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
}

/// Longest a facts job may take before the worker stops waiting for it.
const JOB_PATIENCE: Duration = Duration::from_secs(300);

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
                ingest(&running);
            } else {
                log!(
                    "admin_toolkit worker: the facts job of database \"{}\" runs over {} s; not waiting for it",
                    running.name,
                    JOB_PATIENCE.as_secs()
                );
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

/// Writes a finished job's facts into the tables, and removes its file.
fn ingest(running: &Running) {
    let job_ms = running.started.elapsed().as_secs_f64() * 1000.0;
    let path = facts_path(&handoff_dir(), running.oid);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return log!(
                "admin_toolkit worker: the facts job of database \"{}\" left no facts ({e}); see the server log",
                running.name
            )
        }
    };
    let _removed_or_gone = std::fs::remove_file(&path);
    let started = Instant::now();
    let name = running.name.clone();
    let written = run_step("write database facts", || -> spi::Result<()> {
        // Facts are collected again at the next round: a crash may lose the last ones, so the
        // commit does not wait for its WAL flush.
        Spi::run("SET LOCAL synchronous_commit = off")?;
        // One statement, the JSON parsed once; the facts tables have no unique keys, so the
        // old rows go and the new come in the same statement.
        Spi::run_with_args(
            "WITH j AS MATERIALIZED (SELECT $2::jsonb AS j), \
             old_tables AS (DELETE FROM admin_toolkit.database_table_facts WHERE database = $1), \
             old_indexes AS (DELETE FROM admin_toolkit.database_index_facts WHERE database = $1), \
             new_tables AS (INSERT INTO admin_toolkit.database_table_facts \
                SELECT $1, t.* FROM j, jsonb_to_recordset(j.j->'facts'->'tables') AS t( \
                    schemaname name, tablename name, n_live_tup int8, n_dead_tup int8, total_size int8, \
                    last_vacuum timestamptz, last_autovacuum timestamptz, last_analyze timestamptz, \
                    last_autoanalyze timestamptz, xid_age int8)), \
             new_indexes AS (INSERT INTO admin_toolkit.database_index_facts \
                SELECT $1, i.* FROM j, jsonb_to_recordset(j.j->'facts'->'indexes') AS i( \
                    schemaname name, tablename name, indexname name, idx_scan int8, idx_tup_read int8, \
                    idx_tup_fetch int8, size_bytes int8, is_valid bool, enforces_constraint bool)) \
             INSERT INTO admin_toolkit.database_facts AS d (database, collected_at, collect_ms, job_ms, \
                    xid_age, mxid_age, sequences, oldest_tables, duplicate_indexes) \
             SELECT $1, now(), (j->>'collect_ms')::numeric, round($3::numeric, 3), \
                    (j->'facts'->>'xid_age')::int8, (j->'facts'->>'mxid_age')::int8, j->'facts'->'sequences', \
                    j->'facts'->'oldest_tables', j->'facts'->'duplicate_indexes' \
               FROM j \
             ON CONFLICT (database) DO UPDATE SET collected_at = EXCLUDED.collected_at, \
                    collect_ms = EXCLUDED.collect_ms, job_ms = EXCLUDED.job_ms, xid_age = EXCLUDED.xid_age, \
                    mxid_age = EXCLUDED.mxid_age, sequences = EXCLUDED.sequences, \
                    oldest_tables = EXCLUDED.oldest_tables, duplicate_indexes = EXCLUDED.duplicate_indexes, \
                    collections = d.collections + 1",
            &[name.as_str().into(), text.as_str().into(), job_ms.into()],
        )?;
        Spi::run_with_args(
            "UPDATE admin_toolkit.database_facts SET ingest_ms = round($2::numeric, 3) WHERE database = $1",
            &[name.as_str().into(), (started.elapsed().as_secs_f64() * 1000.0).into()],
        )
    });
    if let Some(Err(e)) = written {
        log!("admin_toolkit worker: writing the facts of database \"{name}\" failed: {e}");
    }
}
