//! The facts job's reading: flat scans of pg_class, pg_index, pg_namespace and pg_sequence in
//! the database it is connected to. A new backend pays for every catalog lookup its parser
//! and planner make, so the queries have no joins worth planning and no JSON; the choosing is
//! core::facts's. Sizes come from pg_class.relpages (as of the last VACUUM, ANALYZE or CREATE
//! INDEX): opening every relation to stat its files tripled the job's time.

use admin_toolkit_core::facts::{
    self, CatalogRows, IndexDefinition, Relation, Sequence, FIRST_NORMAL_OID,
};
use pgrx::prelude::*;
use pgrx::spi::{quote_qualified_identifier, SpiClient};
use std::ffi::CStr;

/// Tables, materialized views, TOAST tables and sequences of every schema (catalogs included:
/// they count among the oldest tables), and the indexes made after initdb, with their
/// statistics: a table's tuples and vacuum times, an index's scans.
const RELATIONS_SQL: &str = "\
SELECT c.oid::int8, c.relnamespace::int8, c.relname::text, c.relkind::text, c.relpersistence = 't', \
       c.relpages::int8, c.reltoastrelid::int8, pg_catalog.age(c.relfrozenxid)::int8, c.relfrozenxid <> '0', \
       CASE c.relkind WHEN 'i' THEN pg_catalog.pg_stat_get_numscans(c.oid) \
            WHEN 'S' THEN NULL ELSE pg_catalog.pg_stat_get_live_tuples(c.oid) END, \
       CASE c.relkind WHEN 'i' THEN pg_catalog.pg_stat_get_tuples_returned(c.oid) \
            WHEN 'S' THEN NULL ELSE pg_catalog.pg_stat_get_dead_tuples(c.oid) END, \
       CASE c.relkind WHEN 'i' THEN pg_catalog.pg_stat_get_tuples_fetched(c.oid) END, \
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_stat_get_last_vacuum_time(c.oid) END, \
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_stat_get_last_autovacuum_time(c.oid) END, \
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_stat_get_last_analyze_time(c.oid) END, \
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_stat_get_last_autoanalyze_time(c.oid) END \
  FROM pg_catalog.pg_class c \
 WHERE c.relkind IN ('r', 'm', 't', 'S') OR (c.relkind = 'i' AND c.oid >= $1::oid)";

/// What makes two indexes of a table the same; exclusion constraints have indisexclusion, and
/// primary keys and unique constraints have unique indexes, so `enforces` needs no
/// pg_constraint.
const INDEXES_SQL: &str = "\
SELECT i.indexrelid::int8, i.indrelid::int8, i.indisvalid, i.indisprimary OR i.indisunique OR i.indisexclusion, \
       i.indkey::text, i.indclass::text, i.indcollation::text, \
       pg_catalog.pg_get_expr(i.indexprs, i.indrelid), pg_catalog.pg_get_expr(i.indpred, i.indrelid) \
  FROM pg_catalog.pg_index i WHERE i.indexrelid >= $1::oid";

const NAMESPACES_SQL: &str = "SELECT oid::int8, nspname::text FROM pg_catalog.pg_namespace";

const DATABASE_SQL: &str = "\
SELECT pg_catalog.age(datfrozenxid)::int8, pg_catalog.mxid_age(datminmxid)::int8 \
  FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()";

/// Other sessions' temporary sequences cannot be read (as pg_sequences leaves them out).
const SEQUENCES_SQL: &str = "\
SELECT s.seqrelid::int8, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, \
       CASE WHEN c.relpersistence <> 't' THEN pg_catalog.pg_sequence_last_value(s.seqrelid) END \
  FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid";

fn oid(value: Option<i64>) -> u32 {
    value.unwrap_or_default() as u32
}

fn read(c: &SpiClient<'_>) -> spi::Result<CatalogRows> {
    let first_normal = &[i64::from(FIRST_NORMAL_OID).into()];
    let relations = c
        .select(RELATIONS_SQL, None, first_normal)?
        .map(|r| {
            let frozen_known = r.get::<bool>(9)?.unwrap_or(false);
            let age = r.get::<i64>(8)?;
            let time = |n: usize| -> spi::Result<Option<i64>> {
                Ok(r.get::<TimestampWithTimeZone>(n)?.map(|t| t.into_inner()))
            };
            Ok(Relation {
                oid: oid(r.get(1)?),
                namespace: oid(r.get(2)?),
                name: r.get::<String>(3)?.unwrap_or_default(),
                kind: r
                    .get::<String>(4)?
                    .and_then(|k| k.chars().next())
                    .unwrap_or(' '),
                temporary: r.get::<bool>(5)?.unwrap_or(false),
                pages: r.get::<i64>(6)?.unwrap_or(0),
                toast: oid(r.get(7)?),
                xid_age: age.filter(|_| frozen_known),
                raw_xid_age: age,
                counters: [r.get(10)?, r.get(11)?, r.get(12)?],
                times: [time(13)?, time(14)?, time(15)?, time(16)?],
            })
        })
        .collect::<spi::Result<Vec<_>>>()?;
    let indexes = c
        .select(INDEXES_SQL, None, first_normal)?
        .map(|r| {
            Ok(IndexDefinition {
                oid: oid(r.get(1)?),
                table: oid(r.get(2)?),
                valid: r.get::<bool>(3)?.unwrap_or(false),
                enforces: r.get::<bool>(4)?.unwrap_or(false),
                columns: r.get::<String>(5)?.unwrap_or_default(),
                opclasses: r.get::<String>(6)?.unwrap_or_default(),
                collations: r.get::<String>(7)?.unwrap_or_default(),
                expressions: r.get(8)?,
                predicate: r.get(9)?,
            })
        })
        .collect::<spi::Result<Vec<_>>>()?;
    let namespaces = c
        .select(NAMESPACES_SQL, None, &[])?
        .map(|r| Ok((oid(r.get(1)?), r.get::<String>(2)?.unwrap_or_default())))
        .collect::<spi::Result<_>>()?;
    let database = c.select(DATABASE_SQL, None, &[])?.first();
    let (xid_age, mxid_age) = (database.get::<i64>(1)?, database.get::<i64>(2)?);
    let sequences = c
        .select(SEQUENCES_SQL, None, &[])?
        .map(|r| {
            Ok(Sequence {
                oid: oid(r.get(1)?),
                start: r.get::<i64>(2)?.unwrap_or(0),
                increment: r.get::<i64>(3)?.unwrap_or(0),
                max: r.get::<i64>(4)?.unwrap_or(0),
                min: r.get::<i64>(5)?.unwrap_or(0),
                last_value: r.get(6)?,
            })
        })
        .collect::<spi::Result<Vec<_>>>()?;
    Ok(CatalogRows {
        relations,
        indexes,
        namespaces,
        sequences,
        xid_age,
        mxid_age,
        block_size: i64::from(pg_sys::BLCKSZ),
    })
}

/// A relation's name as `oid::regclass::text` gives it: qualified only when the schema is not
/// on the search path.
fn regclass_text(oid: u32) -> String {
    // SAFETY: regclassout takes an OID and returns a palloc'd C string; called in a transaction.
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::regclassout,
            &[Some(pg_sys::Datum::from(pg_sys::Oid::from(oid)))],
        )
        .map(|d| {
            CStr::from_ptr(d.cast_mut_ptr::<std::ffi::c_char>())
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| oid.to_string())
    }
}

/// The facts of the database this backend is connected to, as JSON. Needs a transaction.
pub fn facts_json() -> spi::Result<String> {
    let rows = Spi::connect(read)?;
    let selection = facts::select(&rows);
    let sequence_name = |oid: u32| {
        rows.relations
            .iter()
            .find(|r| r.oid == oid)
            .map(|r| {
                let schema = rows.namespaces.get(&r.namespace).map_or("", String::as_str);
                quote_qualified_identifier(schema, &r.name)
            })
            .unwrap_or_else(|| oid.to_string())
    };
    Ok(facts::to_json(&rows, &selection, regclass_text, sequence_name).to_string())
}
