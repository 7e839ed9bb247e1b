//! Maintenance facts of one database, chosen from plain catalog rows: the facts job reads
//! pg_class, pg_index, pg_namespace and pg_sequence with flat queries (no joins, so a new
//! backend spends its time reading rather than planning), and everything else is decided here:
//! which tables and indexes are kept, their sizes, duplicate indexes, the fullest sequences
//! and the oldest tables, and the JSON the worker writes into the facts tables.

use serde::Serialize;
use std::collections::HashMap;

/// The 1,000 largest tables, 2,000 largest indexes, 20 fullest sequences and 5 oldest tables.
pub const MAX_TABLES: usize = 1000;
pub const MAX_INDEXES: usize = 2000;
pub const MAX_SEQUENCES: usize = 20;
pub const MAX_OLDEST: usize = 5;

/// OIDs below this were assigned by initdb (PostgreSQL's FirstNormalObjectId): no index of a
/// user table has one, so the job reads only indexes at or above it.
pub const FIRST_NORMAL_OID: u32 = 16384;

/// A pg_class row of kind r (table), m (materialized view), t (TOAST table) or i (index).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: u32,
    pub name: String,
    pub kind: char,
    pub temporary: bool,
    pub pages: i64,
    pub toast: u32,
    /// age(relfrozenxid), as table facts report it even when relfrozenxid is 0.
    pub xid_age: Option<i64>,
    /// relfrozenxid is not 0: only such relations can be among the oldest.
    pub has_frozen_xid: bool,
    /// Tables: pg_stat_get_live_tuples and _dead_tuples; indexes: scans, tuples read, fetched.
    pub counters: [Option<i64>; 3],
    /// Tables: last vacuum, autovacuum, analyze, autoanalyze, as PostgreSQL timestamps
    /// (microseconds since 2000-01-01 UTC).
    pub times: [Option<i64>; 4],
}

/// A pg_index row; the last five fields decide whether two indexes of a table are duplicates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexDefinition {
    pub oid: u32,
    pub table: u32,
    pub valid: bool,
    /// Primary key, unique or exclusion: enforced by a constraint, never "unused".
    pub enforces: bool,
    pub columns: String,
    pub opclasses: String,
    pub collations: String,
    pub expressions: Option<String>,
    pub predicate: Option<String>,
}

/// A pg_sequence row with its last value (`None` when never called).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sequence {
    pub oid: u32,
    pub start: i64,
    pub increment: i64,
    pub max: i64,
    pub min: i64,
    pub last_value: Option<i64>,
}

/// What the job read.
#[derive(Debug, Clone, Default)]
pub struct CatalogRows {
    pub relations: Vec<Relation>,
    pub indexes: Vec<IndexDefinition>,
    pub namespaces: HashMap<u32, String>,
    pub sequences: Vec<Sequence>,
    pub xid_age: Option<i64>,
    pub mxid_age: Option<i64>,
    pub block_size: i64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TableFact {
    pub schemaname: String,
    pub tablename: String,
    pub n_live_tup: Option<i64>,
    pub n_dead_tup: Option<i64>,
    pub total_size: i64,
    pub last_vacuum: Option<String>,
    pub last_autovacuum: Option<String>,
    pub last_analyze: Option<String>,
    pub last_autoanalyze: Option<String>,
    pub xid_age: Option<i64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct IndexFact {
    pub schemaname: String,
    pub tablename: String,
    pub indexname: String,
    pub idx_scan: Option<i64>,
    pub idx_tup_read: Option<i64>,
    pub idx_tup_fetch: Option<i64>,
    pub size_bytes: i64,
    pub is_valid: bool,
    pub enforces_constraint: bool,
}

/// The facts chosen; relations still by OID where the output wants their qualified names.
#[derive(Debug, PartialEq)]
pub struct Selection {
    pub tables: Vec<TableFact>,
    pub indexes: Vec<IndexFact>,
    /// Sequence OIDs with used_pct in tenths of a percent, fullest first.
    pub sequences: Vec<(u32, Option<i64>)>,
    /// (OID, xid age), oldest first.
    pub oldest: Vec<(u32, i64)>,
    /// Each group of duplicate indexes, by OID ascending; groups by their first OID.
    pub duplicates: Vec<Vec<u32>>,
}

/// A PostgreSQL timestamp as RFC 3339 in UTC, which timestamptz input reads back exactly.
pub fn timestamp_text(pg_micros: i64) -> Option<String> {
    const UNIX_TO_PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
    chrono::DateTime::from_timestamp_micros(pg_micros.checked_add(UNIX_TO_PG_EPOCH_MICROS)?)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Schemas whose tables are the system's, not the user's.
fn system_schema(name: &str) -> bool {
    name == "pg_catalog" || name == "information_schema" || name.starts_with("pg_toast")
}

/// round(100 * |last - start| / |limit - start|, 1) in tenths, rounded half away from zero
/// as numeric's round() does; `None` when the range is empty.
pub fn used_tenths(s: &Sequence) -> Option<i64> {
    let last = i128::from(s.last_value?);
    let start = i128::from(s.start);
    let limit = i128::from(if s.increment > 0 { s.max } else { s.min });
    let range = (limit - start).abs();
    if range == 0 {
        return None;
    }
    let used = 1000 * (last - start).abs();
    Some(((2 * used + range) / (2 * range)) as i64)
}

pub fn select(rows: &CatalogRows) -> Selection {
    let by_oid: HashMap<u32, &Relation> = rows.relations.iter().map(|r| (r.oid, r)).collect();
    let schema = |r: &Relation| {
        rows.namespaces
            .get(&r.namespace)
            .cloned()
            .unwrap_or_default()
    };
    let user_table = |r: &Relation| {
        matches!(r.kind, 'r' | 'm')
            && !r.temporary
            && !system_schema(rows.namespaces.get(&r.namespace).map_or("", String::as_str))
    };

    // Indexes of the user tables, with their sizes.
    let mut index_sizes: HashMap<u32, i64> = HashMap::new();
    let mut indexes: Vec<(&IndexDefinition, &Relation, &Relation, i64)> = Vec::new();
    for definition in &rows.indexes {
        let (Some(table), Some(index)) =
            (by_oid.get(&definition.table), by_oid.get(&definition.oid))
        else {
            continue;
        };
        if !user_table(table) {
            continue;
        }
        let size = index.pages * rows.block_size;
        *index_sizes.entry(table.oid).or_default() += size;
        indexes.push((definition, table, index, size));
    }

    let mut tables: Vec<(&Relation, i64)> = rows
        .relations
        .iter()
        .filter(|r| user_table(r))
        .map(|r| {
            let toast_pages = by_oid.get(&r.toast).map_or(0, |t| t.pages);
            let size = (r.pages + toast_pages) * rows.block_size
                + index_sizes.get(&r.oid).copied().unwrap_or(0);
            (r, size)
        })
        .collect();
    tables.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.oid.cmp(&b.0.oid)));
    tables.truncate(MAX_TABLES);

    let duplicates = duplicate_groups(&indexes);
    indexes.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.oid.cmp(&b.0.oid)));
    indexes.truncate(MAX_INDEXES);

    let mut sequences: Vec<(u32, Option<i64>)> = rows
        .sequences
        .iter()
        .filter(|s| s.last_value.is_some())
        .map(|s| (s.oid, used_tenths(s)))
        .collect();
    // Fullest first; None sorts below every Some, so empty ranges come last.
    sequences.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sequences.truncate(MAX_SEQUENCES);

    let mut oldest: Vec<(u32, i64)> = rows
        .relations
        .iter()
        .filter(|r| matches!(r.kind, 'r' | 'm' | 't') && r.has_frozen_xid)
        .filter_map(|r| Some((r.oid, r.xid_age?)))
        .collect();
    oldest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    oldest.truncate(MAX_OLDEST);

    Selection {
        tables: tables
            .into_iter()
            .map(|(r, total_size)| TableFact {
                schemaname: schema(r),
                tablename: r.name.clone(),
                n_live_tup: r.counters[0],
                n_dead_tup: r.counters[1],
                total_size,
                last_vacuum: r.times[0].and_then(timestamp_text),
                last_autovacuum: r.times[1].and_then(timestamp_text),
                last_analyze: r.times[2].and_then(timestamp_text),
                last_autoanalyze: r.times[3].and_then(timestamp_text),
                xid_age: r.xid_age,
            })
            .collect(),
        indexes: indexes
            .into_iter()
            .map(|(d, table, index, size_bytes)| IndexFact {
                schemaname: schema(table),
                tablename: table.name.clone(),
                indexname: index.name.clone(),
                idx_scan: index.counters[0],
                idx_tup_read: index.counters[1],
                idx_tup_fetch: index.counters[2],
                size_bytes,
                is_valid: d.valid,
                enforces_constraint: d.enforces,
            })
            .collect(),
        sequences,
        oldest,
        duplicates,
    }
}

/// Indexes of one table on the same columns, operator classes, collations, expressions and
/// predicate (check_maintenance_health's rule).
fn duplicate_groups(indexes: &[(&IndexDefinition, &Relation, &Relation, i64)]) -> Vec<Vec<u32>> {
    type Key<'a> = (u32, &'a str, &'a str, &'a str, &'a str, &'a str);
    let mut groups: HashMap<Key, Vec<u32>> = HashMap::new();
    for (d, ..) in indexes {
        let key = (
            d.table,
            d.columns.as_str(),
            d.opclasses.as_str(),
            d.collations.as_str(),
            d.expressions.as_deref().unwrap_or(""),
            d.predicate.as_deref().unwrap_or(""),
        );
        groups.entry(key).or_default().push(d.oid);
    }
    let mut groups: Vec<Vec<u32>> = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort_unstable();
            g
        })
        .collect();
    groups.sort();
    groups
}

#[derive(Serialize)]
struct SequenceFact {
    name: String,
    used_pct: Option<f64>,
}

#[derive(Serialize)]
struct OldTable {
    name: String,
    xid_age: i64,
}

#[derive(Serialize)]
struct Facts<'a> {
    xid_age: Option<i64>,
    mxid_age: Option<i64>,
    tables: &'a [TableFact],
    indexes: &'a [IndexFact],
    sequences: Vec<SequenceFact>,
    oldest_tables: Vec<OldTable>,
    duplicate_indexes: Vec<String>,
}

/// The facts as the worker reads them, as JSON text. `name` gives a relation's
/// schema-qualified, quoted name.
pub fn to_json(
    rows: &CatalogRows,
    selection: &Selection,
    name: impl Fn(u32) -> String,
) -> serde_json::Result<String> {
    let facts = Facts {
        xid_age: rows.xid_age,
        mxid_age: rows.mxid_age,
        tables: &selection.tables,
        indexes: &selection.indexes,
        sequences: selection
            .sequences
            .iter()
            .map(|&(oid, tenths)| SequenceFact {
                name: name(oid),
                used_pct: tenths.map(|t| t as f64 / 10.0),
            })
            .collect(),
        oldest_tables: selection
            .oldest
            .iter()
            .map(|&(oid, xid_age)| OldTable {
                name: name(oid),
                xid_age,
            })
            .collect(),
        duplicate_indexes: selection
            .duplicates
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&oid| name(oid))
                    .collect::<Vec<_>>()
                    .join(" = ")
            })
            .collect(),
    };
    serde_json::to_string(&facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn relation(oid: u32, namespace: u32, name: &str, kind: char, pages: i64) -> Relation {
        Relation {
            oid,
            namespace,
            name: name.into(),
            kind,
            pages,
            xid_age: Some(100),
            has_frozen_xid: true,
            ..Default::default()
        }
    }

    fn index(oid: u32, table: u32, columns: &str) -> IndexDefinition {
        IndexDefinition {
            oid,
            table,
            valid: true,
            columns: columns.into(),
            opclasses: "1978".into(),
            collations: "0".into(),
            ..Default::default()
        }
    }

    fn rows() -> CatalogRows {
        let mut toast = relation(20003, 99, "pg_toast_20000", 't', 5);
        toast.xid_age = Some(900);
        let mut big = relation(20000, 2200, "big", 'r', 10);
        big.toast = 20003;
        big.counters = [Some(7), Some(3), None];
        big.times[2] = Some(818_244_000_123_456);
        let mut temp = relation(20010, 2200, "scratch", 'r', 1000);
        temp.temporary = true;
        let mut catalog = relation(1259, 11, "pg_class", 'r', 500);
        catalog.xid_age = Some(1000);
        let mut view_like = relation(20020, 2200, "empty", 'r', 0);
        view_like.has_frozen_xid = false;
        CatalogRows {
            relations: vec![
                big,
                relation(20001, 2200, "small", 'r', 1),
                relation(20002, 2200, "big_pkey", 'i', 4),
                relation(20004, 2200, "big_again", 'i', 2),
                relation(20005, 2200, "big_other", 'i', 3),
                toast,
                temp,
                catalog,
                view_like,
            ],
            indexes: vec![
                IndexDefinition {
                    enforces: true,
                    ..index(20002, 20000, "1")
                },
                index(20004, 20000, "1"),
                IndexDefinition {
                    valid: false,
                    ..index(20005, 20000, "2")
                },
            ],
            namespaces: [(11, "pg_catalog"), (99, "pg_toast"), (2200, "public")]
                .into_iter()
                .map(|(o, n)| (o, n.to_string()))
                .collect(),
            sequences: vec![
                Sequence {
                    oid: 30000,
                    start: 1,
                    increment: 1,
                    max: 1001,
                    min: 1,
                    last_value: Some(501),
                },
                Sequence {
                    oid: 30001,
                    start: 1,
                    increment: 1,
                    max: 1,
                    min: 1,
                    last_value: Some(1),
                },
                Sequence {
                    oid: 30002,
                    start: 1,
                    increment: 1,
                    max: 100,
                    min: 1,
                    last_value: None,
                },
            ],
            xid_age: Some(1234),
            mxid_age: Some(5),
            block_size: 8192,
        }
    }

    #[test]
    fn tables_are_the_users_with_toast_and_indexes_in_their_size() {
        let s = select(&rows());
        let names: Vec<&str> = s.tables.iter().map(|t| t.tablename.as_str()).collect();
        // No temporary table, no catalog; largest first.
        assert_eq!(names, ["big", "small", "empty"]);
        assert_eq!(s.tables[0].total_size, (10 + 5 + 4 + 2 + 3) * 8192);
        assert_eq!(s.tables[0].n_live_tup, Some(7));
        assert_eq!(
            s.tables[0].last_analyze.as_deref(),
            Some("2025-12-05T10:00:00.123456Z")
        );
        assert_eq!(s.tables[0].schemaname, "public");
    }

    #[test]
    fn indexes_largest_first_with_validity_and_constraints() {
        let s = select(&rows());
        let names: Vec<(&str, bool, bool)> = s
            .indexes
            .iter()
            .map(|i| (i.indexname.as_str(), i.is_valid, i.enforces_constraint))
            .collect();
        assert_eq!(
            names,
            [
                ("big_pkey", true, true),
                ("big_other", false, false),
                ("big_again", true, false)
            ]
        );
        assert_eq!(s.indexes[0].size_bytes, 4 * 8192);
        assert_eq!(s.indexes[0].tablename, "big");
    }

    #[test]
    fn duplicates_are_the_same_definition_on_the_same_table() {
        let s = select(&rows());
        assert_eq!(s.duplicates, [vec![20002, 20004]]);
        let mut other_predicate = rows();
        other_predicate.indexes[1].predicate = Some("(id > 0)".into());
        assert!(select(&other_predicate).duplicates.is_empty());
    }

    #[test]
    fn oldest_tables_include_catalogs_and_toast_but_not_unfrozen() {
        let s = select(&rows());
        assert_eq!(
            s.oldest,
            [
                (1259, 1000),
                (20003, 900),
                (20000, 100),
                (20001, 100),
                (20010, 100)
            ]
        );
    }

    #[test]
    fn sequence_use_is_rounded_like_numeric_and_empty_ranges_come_last() {
        let s = select(&rows());
        assert_eq!(s.sequences, [(30000, Some(500)), (30001, None)]);
        let third = Sequence {
            oid: 1,
            start: 0,
            increment: -1,
            max: 0,
            min: -3,
            last_value: Some(-1),
        };
        // 33.333... -> 33.3
        assert_eq!(used_tenths(&third), Some(333));
        let half = Sequence {
            last_value: Some(-2),
            ..third
        };
        // 66.666... -> 66.7
        assert_eq!(used_tenths(&half), Some(667));
        let edge = Sequence {
            oid: 1,
            start: 0,
            increment: 1,
            max: 2000,
            min: 0,
            last_value: Some(1),
        };
        // 0.05 rounds away from zero -> 0.1
        assert_eq!(used_tenths(&edge), Some(1));
        let extreme = Sequence {
            oid: 1,
            start: i64::MIN,
            increment: 1,
            max: i64::MAX,
            min: i64::MIN,
            last_value: Some(i64::MAX),
        };
        assert_eq!(used_tenths(&extreme), Some(1000));
    }

    #[test]
    fn json_has_the_fields_the_worker_reads() {
        let r = rows();
        let s = select(&r);
        let text = to_json(&r, &s, |oid| format!("rel{oid}")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["xid_age"], 1234);
        assert_eq!(v["mxid_age"], 5);
        assert_eq!(v["tables"][0]["tablename"], "big");
        assert_eq!(v["tables"][0]["last_vacuum"], Value::Null);
        assert_eq!(v["indexes"][0]["enforces_constraint"], true);
        assert_eq!(
            v["sequences"][0],
            json!({"name": "rel30000", "used_pct": 50.0})
        );
        assert_eq!(v["sequences"][1]["used_pct"], Value::Null);
        assert_eq!(
            v["oldest_tables"][0],
            json!({"name": "rel1259", "xid_age": 1000})
        );
        assert_eq!(v["duplicate_indexes"], json!(["rel20002 = rel20004"]));
    }

    #[test]
    fn limits_hold() {
        let mut r = rows();
        r.relations = (0..1500)
            .map(|i| relation(20000 + i, 2200, &format!("t{i}"), 'r', i64::from(i)))
            .collect();
        let s = select(&r);
        assert_eq!(s.tables.len(), MAX_TABLES);
        assert_eq!(s.tables[0].tablename, "t1499");
        assert_eq!(s.oldest.len(), MAX_OLDEST);
    }
}
