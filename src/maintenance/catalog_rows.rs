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

/// Tables, materialized views, TOAST tables and sequences of every schema (catalogs included:
/// they count among the oldest tables), and the indexes made after initdb but TOAST tables'.
/// Statistics are read apart (`table_statistics`): one lookup per relation instead of one per
/// pg_stat_get_* call.
const RELATIONS_SQL: &str = "\
SELECT c.oid::int8, c.relnamespace::int8, c.relname::text, c.relkind::text, c.relpersistence = 't', \
       c.relpages::int8, c.reltoastrelid::int8, pg_catalog.age(c.relfrozenxid)::int8, c.relfrozenxid <> '0' \
  FROM pg_catalog.pg_class c \
 WHERE c.relkind IN ('r', 'm', 't', 'S') \
    OR (c.relkind = 'i' AND c.oid >= $1::oid AND c.relnamespace <> 'pg_toast'::pg_catalog.regnamespace)";

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

/// Sequences with whether they are temporary: other sessions' temporary sequences cannot be
/// read (as pg_sequences leaves them out). Last values are read apart (`last_value`).
const SEQUENCES_SQL: &str = "\
SELECT s.seqrelid::int8, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, c.relpersistence = 't' \
  FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid";

fn oid(value: Option<i64>) -> u32 {
    value.unwrap_or_default() as u32
}

fn read(c: &SpiClient<'_>) -> spi::Result<CatalogRows> {
    let first_normal = &[i64::from(FIRST_NORMAL_OID).into()];
    let relations = c
        .select(RELATIONS_SQL, None, first_normal)?
        .map(|r| {
            let mut relation = Relation {
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
                xid_age: r.get(8)?,
                has_frozen_xid: r.get::<bool>(9)?.unwrap_or(false),
                ..Default::default()
            };
            table_statistics(&mut relation);
            Ok(relation)
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
    // (sequence, whether it is another session's temporary one, which cannot be read)
    let listed = c
        .select(SEQUENCES_SQL, None, &[])?
        .map(|r| {
            Ok((
                Sequence {
                    oid: oid(r.get(1)?),
                    start: r.get::<i64>(2)?.unwrap_or(0),
                    increment: r.get::<i64>(3)?.unwrap_or(0),
                    max: r.get::<i64>(4)?.unwrap_or(0),
                    min: r.get::<i64>(5)?.unwrap_or(0),
                    last_value: None,
                },
                r.get::<bool>(6)?.unwrap_or(false),
            ))
        })
        .collect::<spi::Result<Vec<_>>>()?;
    // One raise of rights for every sequence's read, not one per sequence.
    let sequences = crate::environment::as_superuser(|| {
        listed
            .into_iter()
            .map(|(mut sequence, temporary)| {
                if !temporary {
                    sequence.last_value = last_value(sequence.oid);
                }
                sequence
            })
            .collect()
    });
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

/// pg_sequence_last_value of sequence `seq`, or None when it was never called, is locked by
/// someone else (a facts job never waits for a lock), or is gone. The job reads as pg_monitor,
/// which may not read sequences: the caller raises the rights for these calls alone, which run
/// no code but the catalog's.
fn last_value(seq: u32) -> Option<i64> {
    let relid = pg_sys::Oid::from(seq);
    // SAFETY: in a transaction; a lock taken here is held to its end, as the function's own
    // would be; the syscache look-up only tests for the row.
    let locked = unsafe {
        pg_sys::ConditionalLockRelationOid(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE)
            && pg_sys::SearchSysCacheExists(
                pg_sys::SysCacheIdentifier::RELOID as i32,
                pg_sys::Datum::from(relid),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
    };
    if !locked {
        return None;
    }
    // SAFETY: pg_sequence_last_value takes one OID and returns an int8 or NULL.
    unsafe {
        pgrx::direct_function_call::<i64>(
            pg_sys::pg_sequence_last_value,
            &[Some(pg_sys::Datum::from(relid))],
        )
    }
}

/// What pg_stat_get_live_tuples, _dead_tuples and the last (auto)vacuum and (auto)analyze
/// times say of a table, or _numscans, _tuples_returned and _tuples_fetched of an index: no
/// entry reads as 0 and no time as NULL, as they do.
fn table_statistics(relation: &mut Relation) {
    if !matches!(relation.kind, 'r' | 'm' | 'i') {
        return;
    }
    let entry = crate::compat::stats::relation_stats(pg_sys::Oid::from(relation.oid));
    let time = |t: pg_sys::TimestampTz| (t != 0).then_some(t);
    if relation.kind == 'i' {
        relation.counters = [
            Some(entry.scans),
            Some(entry.tuples_returned),
            Some(entry.tuples_fetched),
        ];
    } else {
        relation.counters = [Some(entry.live_tuples), Some(entry.dead_tuples), None];
        relation.times = [
            time(entry.last_vacuum),
            time(entry.last_autovacuum),
            time(entry.last_analyze),
            time(entry.last_autoanalyze),
        ];
    }
}

/// The facts of the database this backend is connected to, as JSON, read as pg_monitor (which
/// sees every statistic): nothing a role of that database planted runs with more rights than
/// that. Needs a transaction.
pub fn facts_json() -> Result<String, String> {
    let monitor = pg_sys::Oid::from(pg_sys::ROLE_PG_MONITOR);
    let rows = crate::environment::with_rights(monitor, || Spi::connect(read))
        .map_err(|e| e.to_string())?;
    let selection = facts::select(&rows);
    // Schema-qualified always: what regclass's text gives depends on the search path.
    let name = |oid: u32| {
        rows.relations
            .iter()
            .find(|r| r.oid == oid)
            .map(|r| {
                let schema = rows.namespaces.get(&r.namespace).map_or("", String::as_str);
                quote_qualified_identifier(schema, &r.name)
            })
            .unwrap_or_else(|| oid.to_string())
    };
    facts::to_json(&rows, &selection, name).map_err(|e| format!("the facts do not serialize: {e}"))
}
