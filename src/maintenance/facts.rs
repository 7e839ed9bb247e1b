//! Maintenance facts of every database: the worker collects them every
//! `admin_toolkit.database_facts_interval` through one short job per database that accepts
//! connections (a job can connect to one database only), one job at a time; each job runs one
//! query and leaves its JSON in a file (core::handoff), which the worker writes into
//! database_facts, database_table_facts and database_index_facts.

use crate::jobs::{self, handoff_dir, JobDescriptor, JobKind};
use crate::worker::step::{run_step, try_transaction};
use admin_toolkit_core::handoff::{facts_path, write_bytes};
use pgrx::bgworkers::{BackgroundWorkerStatus, DynamicBackgroundWorker};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// One query, in the database the job is connected to: the facts as one JSON object. Bounded:
/// the 1,000 largest tables and 2,000 largest indexes, the 20 fullest sequences, the 5 oldest
/// tables. Cheap in a new connection: catalogs are scanned, never opened relation by relation
/// (sizes come from pg_class.relpages, as of the last VACUUM, ANALYZE or CREATE INDEX: opening
/// every relation to stat its files tripled the job's time), statistics through the
/// pg_stat_get_* functions rather than the views, names made only for the rows kept.
const FACTS_SQL: &str = r#"
WITH t AS MATERIALIZED (
    SELECT c.oid, n.nspname, c.relname, c.reltoastrelid, c.relfrozenxid, c.relpages
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
), ix AS MATERIALIZED (
    SELECT i.indexrelid, i.indrelid, t.nspname, t.relname AS tablename, ic.relname AS indexname, i.indisvalid,
           (i.indisprimary OR i.indisunique OR k.conindid IS NOT NULL) AS enforces,
           ic.relpages::int8 * current_setting('block_size')::int8 AS size
      FROM pg_catalog.pg_index i JOIN t ON t.oid = i.indrelid JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
      LEFT JOIN (SELECT DISTINCT conindid FROM pg_catalog.pg_constraint WHERE conindid <> 0) k ON k.conindid = i.indexrelid
), ts AS MATERIALIZED (
    SELECT t.*, (t.relpages + coalesce(tc.relpages, 0))::int8 * current_setting('block_size')::int8
             + coalesce(s.size, 0) AS total_size
      FROM t LEFT JOIN pg_catalog.pg_class tc ON tc.oid = t.reltoastrelid
      LEFT JOIN (SELECT indrelid, sum(size) AS size FROM ix GROUP BY indrelid) s ON s.indrelid = t.oid
)
SELECT json_build_object(
  'xid_age', (SELECT pg_catalog.age(datfrozenxid) FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()),
  'mxid_age', (SELECT pg_catalog.mxid_age(datminmxid) FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()),
  'tables', (SELECT coalesce(json_agg(x), '[]') FROM (
      SELECT nspname AS schemaname, relname AS tablename,
             pg_catalog.pg_stat_get_live_tuples(oid) AS n_live_tup, pg_catalog.pg_stat_get_dead_tuples(oid) AS n_dead_tup,
             total_size, pg_catalog.pg_stat_get_last_vacuum_time(oid) AS last_vacuum,
             pg_catalog.pg_stat_get_last_autovacuum_time(oid) AS last_autovacuum,
             pg_catalog.pg_stat_get_last_analyze_time(oid) AS last_analyze,
             pg_catalog.pg_stat_get_last_autoanalyze_time(oid) AS last_autoanalyze,
             pg_catalog.age(relfrozenxid) AS xid_age
        FROM ts ORDER BY total_size DESC LIMIT 1000) x),
  'indexes', (SELECT coalesce(json_agg(y), '[]') FROM (
      SELECT nspname AS schemaname, tablename, indexname,
             pg_catalog.pg_stat_get_numscans(indexrelid) AS idx_scan,
             pg_catalog.pg_stat_get_tuples_returned(indexrelid) AS idx_tup_read,
             pg_catalog.pg_stat_get_tuples_fetched(indexrelid) AS idx_tup_fetch,
             size AS size_bytes, indisvalid AS is_valid, enforces AS enforces_constraint
        FROM ix ORDER BY size DESC LIMIT 2000) y),
  'sequences', (SELECT coalesce(json_agg(q), '[]') FROM (
      SELECT format('%I.%I', schemaname, sequencename) AS name,
             round(100.0 * abs(last_value - start_value)
                   / nullif(abs(CASE WHEN increment_by > 0 THEN max_value ELSE min_value END - start_value), 0), 1) AS used_pct
        FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL
       ORDER BY 2 DESC NULLS LAST LIMIT 20) q),
  'oldest_tables', (SELECT coalesce(json_agg(json_build_object('name', o.oid::regclass::text, 'xid_age', o.xid_age)), '[]') FROM (
      SELECT c.oid, pg_catalog.age(c.relfrozenxid) AS xid_age
        FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0'
       ORDER BY 2 DESC LIMIT 5) o),
  'duplicate_indexes', (SELECT coalesce(json_agg(d.names), '[]') FROM (
      SELECT (SELECT string_agg(x::regclass::text, ' = ' ORDER BY x) FROM unnest(g.ids) AS x) AS names FROM (
          SELECT array_agg(i.indexrelid) AS ids
            FROM pg_catalog.pg_index i JOIN t ON t.oid = i.indrelid
           GROUP BY i.indrelid, i.indkey::text, i.indclass::text, i.indcollation::text,
                    coalesce(pg_catalog.pg_get_expr(i.indexprs, i.indrelid), ''),
                    coalesce(pg_catalog.pg_get_expr(i.indpred, i.indrelid), '')
          HAVING count(*) > 1) g) d)
)::text"#;

/// Entry point of a facts job: connected to one database as the bootstrap superuser (the
/// worker's own work, as the worker's), it runs [`FACTS_SQL`] and leaves the result.
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
    let facts = match try_transaction(|| Spi::get_one::<String>(FACTS_SQL)) {
        Ok(Ok(Some(facts))) => facts,
        Ok(Ok(None)) => return log!("admin_toolkit job: the facts query returned nothing"),
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
