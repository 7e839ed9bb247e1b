//! The worker's writing of a facts job's JSON into database_facts, database_table_facts and
//! database_index_facts. The statements are prepared once and their generic plans kept for
//! the worker's life: parsing and planning the write (a custom plan parses the whole JSON at
//! plan time to fold constants) was a third of its cost, and it runs once per database per
//! round.

use crate::jobs::handoff_dir;
use crate::transaction::step::run_step;
use admin_toolkit_core::handoff::facts_path;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgBuiltInOids;
use pgrx::PgOid;
use std::time::Instant;

/// One statement, the JSON parsed once; the facts tables have no unique keys, so the old rows
/// go and the new come in the same statement. $1 database, $2 the job's JSON, $3 job_ms.
const WRITE_SQL: &str = "\
WITH j AS MATERIALIZED (SELECT $2::jsonb AS j), \
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
       collections = d.collections + 1";

/// $1 database, $2 the write's own duration (ms), known only once it has run.
const TIMING_SQL: &str =
    "UPDATE admin_toolkit.database_facts SET ingest_ms = round($2::numeric, 3) WHERE database = $1";

#[derive(Default)]
pub struct FactsIngest {
    write: Option<OwnedPreparedStatement>,
    timing: Option<OwnedPreparedStatement>,
}

/// `plan`, prepared (and kept) the first time.
fn kept<'p>(
    c: &SpiClient<'_>,
    plan: &'p mut Option<OwnedPreparedStatement>,
    sql: &str,
    types: &[PgOid],
) -> spi::Result<&'p OwnedPreparedStatement> {
    if plan.is_none() {
        *plan = Some(c.prepare_mut(sql, types)?.keep());
    }
    Ok(plan.as_ref().expect("prepared above"))
}

impl FactsIngest {
    /// Writes the facts the job of database `name` (OID `oid`), started at `started`, left,
    /// and removes its file.
    pub fn write(&mut self, oid: u32, name: &str, started: Instant) {
        let job_ms = started.elapsed().as_secs_f64() * 1000.0;
        let path = facts_path(&handoff_dir(), oid);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                return log!(
                    "admin_toolkit worker: the facts job of database \"{name}\" left no facts ({e}); see the server log"
                )
            }
        };
        let _removed_or_gone = std::fs::remove_file(&path);
        let writing = Instant::now();
        let written = run_step("write database facts", || {
            Spi::connect_mut(|c| -> spi::Result<()> {
                // Facts are collected again at the next round: a crash may lose the last ones,
                // so the commit does not wait for its WAL flush.
                c.update("SET LOCAL synchronous_commit = off", None, &[])?;
                // Custom plans would parse the JSON while planning, every time.
                c.update("SET LOCAL plan_cache_mode = force_generic_plan", None, &[])?;
                let text_type = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
                let float_type = PgOid::BuiltIn(PgBuiltInOids::FLOAT8OID);
                let write = kept(
                    c,
                    &mut self.write,
                    WRITE_SQL,
                    &[text_type, text_type, float_type],
                )?;
                c.update(
                    write,
                    None,
                    &[name.into(), text.as_str().into(), job_ms.into()],
                )?;
                let timing = kept(c, &mut self.timing, TIMING_SQL, &[text_type, float_type])?;
                let ingest_ms = writing.elapsed().as_secs_f64() * 1000.0;
                c.update(timing, None, &[name.into(), ingest_ms.into()])?;
                Ok(())
            })
        });
        if let Some(Err(e)) = written {
            log!("admin_toolkit worker: writing the facts of database \"{name}\" failed: {e}");
        }
    }
}
