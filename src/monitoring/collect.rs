//! Collection (`collect_performance_metrics()` in `api`, and the worker's duty): one sample of every metric in `metric_definitions`, written
//! to `performance_metrics` in one INSERT. Gauges are stored as read; cumulative counters as the
//! delta or rate since the previous collection (kept in `collector_counters`).

use crate::error::ToolkitError;
use crate::query::read_scalar;
use admin_toolkit_core::counters::{
    delta, percent_of_deltas, rate_per_second, xid_wraparound_percent, Sample,
};
use admin_toolkit_core::metric_catalogue::{self as catalogue, MetricDef};
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use serde_json::{json, Value};
use std::collections::HashMap;

/// One metric row about to be inserted.
struct Metric {
    metric_type: &'static str,
    name: &'static str,
    unit: &'static str,
    value: Option<f64>,
    data: Value,
    /// The database a per-database metric is about.
    database: Option<String>,
}

fn metric(def: &'static MetricDef, value: Option<f64>) -> Metric {
    Metric {
        metric_type: def.kind,
        name: def.name,
        unit: def.unit,
        value,
        data: json!({}),
        database: None,
    }
}

/// What one collection did.
pub struct Collection {
    pub inserted: usize,
    /// Why the query metric was skipped, when it was (pg_stat_statements unavailable).
    pub statements_unavailable: Option<String>,
}

/// Gauges, read in one round trip. The session's own backend is left out, so the numbers are
/// the same whether the worker or a user collects.
const GAUGES: &str = "
WITH act AS (SELECT * FROM pg_catalog.pg_stat_activity WHERE pid <> pg_catalog.pg_backend_pid()),
     waiting AS (SELECT mode, locktype FROM pg_catalog.pg_locks WHERE NOT granted)
SELECT
  pg_catalog.pg_database_size(pg_catalog.current_database())::float8,
  (SELECT count(*) FROM act WHERE state IS NOT NULL)::float8,
  (SELECT coalesce(jsonb_object_agg(state, n), '{}') FROM
      (SELECT state, count(*) AS n FROM act WHERE state IS NOT NULL GROUP BY state) s)::text,
  (SELECT coalesce(jsonb_object_agg(db, n), '{}') FROM
      (SELECT coalesce(datname::text, '(none)') AS db, count(*) AS n FROM act
        WHERE state IS NOT NULL GROUP BY 1) d)::text,
  (SELECT count(*) FROM act WHERE state LIKE 'idle in transaction%')::float8,
  (SELECT 100.0 * count(*) / pg_catalog.current_setting('max_connections')::int
     FROM act WHERE backend_type = 'client backend')::float8,
  (SELECT coalesce(max(extract(epoch FROM pg_catalog.clock_timestamp() - xact_start)), 0)
     FROM act WHERE backend_type = 'client backend' AND xact_start IS NOT NULL)::float8,
  (SELECT count(*) FROM waiting)::float8,
  (SELECT coalesce(jsonb_object_agg(mode, n), '{}') FROM
      (SELECT mode, count(*) AS n FROM waiting GROUP BY mode) m)::text,
  (SELECT coalesce(jsonb_object_agg(locktype, n), '{}') FROM
      (SELECT locktype, count(*) AS n FROM waiting GROUP BY locktype) t)::text,
  (SELECT max(pg_catalog.age(datfrozenxid)) FROM pg_catalog.pg_database)::float8,
  (SELECT coalesce(max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)), 0)
     FROM pg_catalog.pg_replication_slots WHERE restart_lsn IS NOT NULL)::float8,
  (SELECT coalesce(max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), replay_lsn)), 0)
     FROM pg_catalog.pg_stat_replication)::float8,
  (SELECT jsonb_build_object('replica_count', count(*),
                             'sync_replicas', count(*) FILTER (WHERE sync_state = 'sync'),
                             'async_replicas', count(*) FILTER (WHERE sync_state = 'async'))
     FROM pg_catalog.pg_stat_replication)::text";

/// Cumulative counters, read in one round trip; names match the columns, in order.
const COUNTER_NAMES: [&str; 10] = [
    "xact_commit",
    "xact_rollback",
    "deadlocks",
    "temp_bytes",
    "blks_hit",
    "blks_read",
    "checkpoints_req",
    "checkpoints_timed",
    "wal_bytes",
    "archive_failed_count",
];
const COUNTERS: &str = concat!(
    "
SELECT extract(epoch FROM pg_catalog.clock_timestamp())::float8,
  (SELECT sum(xact_commit) FROM pg_catalog.pg_stat_database)::float8,
  (SELECT sum(xact_rollback) FROM pg_catalog.pg_stat_database)::float8,
  (SELECT sum(deadlocks) FROM pg_catalog.pg_stat_database)::float8,
  (SELECT sum(temp_bytes) FROM pg_catalog.pg_stat_database)::float8,
  (SELECT blks_hit FROM pg_catalog.pg_stat_database WHERE datname = pg_catalog.current_database())::float8,
  (SELECT blks_read FROM pg_catalog.pg_stat_database WHERE datname = pg_catalog.current_database())::float8,
  (SELECT requested FROM ",
    crate::checkpoint_counts!(),
    " c)::float8,
  (SELECT timed FROM ",
    crate::checkpoint_counts!(),
    " c)::float8,
  (SELECT wal_bytes FROM pg_catalog.pg_stat_wal)::float8,
  (SELECT failed_count FROM pg_catalog.pg_stat_archiver)::float8"
);

fn json_text(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({}))
}

fn read_gauges(out: &mut Vec<Metric>) -> spi::Result<()> {
    Spi::connect(|client| {
        let row = client.select(GAUGES, Some(1), &[])?.first();
        let f = |i: usize| row.get::<f64>(i);
        let t = |i: usize| row.get::<String>(i);
        out.push(metric(&catalogue::DATABASE_SIZE_BYTES, f(1)?));
        let mut active = metric(&catalogue::ACTIVE_CONNECTIONS, f(2)?);
        active.data = json!({"by_state": json_text(t(3)?), "by_database": json_text(t(4)?)});
        out.push(active);
        out.push(metric(&catalogue::IDLE_IN_TRANSACTION_SESSIONS, f(5)?));
        out.push(metric(&catalogue::CONNECTION_USAGE_PERCENT, f(6)?));
        out.push(metric(&catalogue::LONGEST_TRANSACTION_SECONDS, f(7)?));
        let mut locks = metric(&catalogue::WAITING_LOCKS, f(8)?);
        locks.data = json!({"by_mode": json_text(t(9)?), "by_type": json_text(t(10)?)});
        out.push(locks);
        out.push(metric(
            &catalogue::XID_AGE_PERCENT,
            f(11)?.map(xid_wraparound_percent),
        ));
        out.push(metric(&catalogue::SLOT_RETAINED_WAL_BYTES, f(12)?));
        let mut lag = metric(&catalogue::REPLICA_LAG_BYTES, f(13)?);
        lag.data = json_text(t(14)?);
        out.push(lag);
        Ok(())
    })
}

/// Restore drills: seconds since the last passed drill (with none passed, since the oldest
/// completed backup: the time backups have gone untested) where drills are in use (a drill
/// schedule is active, or a drill has run), its RTO, and whether the last finished drill failed
/// (cancelled drills say nothing about the backups and are skipped). Nothing is stored for what
/// does not exist yet: no drill age where drills are not in use, so "Restore drill overdue"
/// fires only where drills are configured.
const DRILLS: &str = "
SELECT CASE WHEN EXISTS (SELECT 1 FROM admin_toolkit.restore_drill_schedules WHERE is_active)
              OR EXISTS (SELECT 1 FROM admin_toolkit.restore_drills) THEN
       (extract(epoch FROM pg_catalog.now() - coalesce(
         (SELECT max(finished_at) FROM admin_toolkit.restore_drills WHERE status = 'passed'),
         (SELECT min(end_time) FROM admin_toolkit.backup_history
           WHERE status = 'completed' AND backup_type <> 'wal_archive'))))::float8 END,
       (SELECT rto_seconds FROM admin_toolkit.restore_drills WHERE status = 'passed'
         ORDER BY finished_at DESC LIMIT 1)::float8,
       (SELECT CASE status WHEN 'failed' THEN 1 ELSE 0 END FROM admin_toolkit.restore_drills
         WHERE status IN ('passed', 'failed') ORDER BY finished_at DESC LIMIT 1)::float8";

fn read_drill_gauges(out: &mut Vec<Metric>) -> spi::Result<()> {
    Spi::connect(|client| {
        let row = client.select(DRILLS, Some(1), &[])?.first();
        for (i, def) in [
            (1, &catalogue::RESTORE_DRILL_AGE_SECONDS),
            (2, &catalogue::RESTORE_DRILL_RTO_SECONDS),
            (3, &catalogue::RESTORE_DRILL_FAILED),
        ] {
            if let Some(value) = row.get::<f64>(i)? {
                out.push(metric(def, Some(value)));
            }
        }
        Ok(())
    })
}

/// WAL archiving: 1 when archiving is on and its last attempt failed (a later success clears
/// it), else 0; nothing with archiving off.
const ARCHIVING: &str = "
SELECT CASE WHEN pg_catalog.current_setting('archive_mode') <> 'off' THEN
       (CASE WHEN last_failed_time > coalesce(last_archived_time, '-infinity') THEN 1 ELSE 0 END)::float8 END
  FROM pg_catalog.pg_stat_archiver";

/// Active full and incremental schedules: their cron expression, creation, last completed
/// backup, and whether their last finished backup failed.
const BACKUP_SCHEDULES: &str = "
SELECT s.schedule_id, s.schedule_expression, extract(epoch FROM s.created_at)::float8,
       (SELECT extract(epoch FROM max(h.end_time))::float8 FROM admin_toolkit.backup_history h
         WHERE h.schedule_id = s.schedule_id AND h.status = 'completed'),
       coalesce((SELECT h.status = 'failed' FROM admin_toolkit.backup_history h
                  WHERE h.schedule_id = s.schedule_id AND h.status IN ('completed', 'failed')
                  ORDER BY h.backup_id DESC LIMIT 1), false)
  FROM admin_toolkit.backup_schedules s
 WHERE s.is_active AND s.backup_type IN ('full', 'incremental')
 ORDER BY s.schedule_id";

/// Backups: whether archiving fails, how many schedules' last backup failed, and how many are
/// overdue (core::backup::overdue); the schedules in each metric's data. Nothing about
/// schedules where none is active.
fn read_backup_gauges(out: &mut Vec<Metric>) -> spi::Result<()> {
    use admin_toolkit_core::backup::overdue::is_overdue;
    use admin_toolkit_core::chrono::{DateTime, Utc};
    use admin_toolkit_core::cron::CronSchedule;
    let failing = read_scalar::<f64>(ARCHIVING)?;
    if failing.is_some() {
        out.push(metric(&catalogue::ARCHIVE_FAILING, failing));
    }
    let time = |secs: f64| DateTime::<Utc>::from_timestamp_micros((secs * 1e6) as i64);
    let now = Utc::now();
    let tz = crate::jobs::due::schedule_time_zone();
    let (mut active, mut failed, mut overdue) = (0, Vec::new(), Vec::new());
    Spi::connect(|client| {
        for row in client.select(BACKUP_SCHEDULES, None, &[])? {
            active += 1;
            let id = row.get::<i32>(1)?.unwrap_or_default();
            if row.get::<bool>(5)? == Some(true) {
                failed.push(id);
            }
            let schedule = row
                .get::<String>(2)?
                .and_then(|e| CronSchedule::parse(&e).ok());
            let created = row.get::<f64>(3)?.and_then(time);
            let last = row.get::<f64>(4)?.and_then(time);
            if let (Some(schedule), Some(created)) = (schedule, created) {
                if is_overdue(&schedule, last, created, now, tz) {
                    overdue.push(id);
                }
            }
        }
        Ok::<_, spi::Error>(())
    })?;
    if active > 0 {
        for (def, ids) in [
            (&catalogue::FAILED_BACKUP_SCHEDULES, failed),
            (&catalogue::OVERDUE_BACKUP_SCHEDULES, overdue),
        ] {
            let mut m = metric(def, Some(ids.len() as f64));
            m.data = json!({ "schedule_ids": ids });
            out.push(m);
        }
    }
    Ok(())
}

/// Per database that accepts connections (templates aside): size, sessions, transaction and
/// deadlock and temp-file counters, transaction ID age. One round trip.
const PER_DATABASE: &str = "
SELECT d.datname::text, pg_catalog.pg_database_size(d.oid)::float8,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity a
         WHERE a.datid = d.oid AND a.pid <> pg_catalog.pg_backend_pid())::float8,
       (s.xact_commit + s.xact_rollback)::float8, s.deadlocks::float8, s.temp_bytes::float8,
       pg_catalog.age(d.datfrozenxid)::float8
  FROM pg_catalog.pg_database d LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
 WHERE d.datallowconn AND NOT d.datistemplate
 ORDER BY 1";

/// The per-database metrics (metric_type 'database', labelled with their database); the
/// counters' readings go into `readings` under `database:<name>:<counter>`.
fn read_per_database(
    previous: &HashMap<String, Sample>,
    now: f64,
    readings: &mut Vec<(String, f64)>,
    out: &mut Vec<Metric>,
) -> spi::Result<()> {
    Spi::connect(|client| {
        for row in client.select(PER_DATABASE, None, &[])? {
            let Some(database) = row.get::<String>(1)? else {
                continue;
            };
            let mut push = |def: &'static MetricDef, value: Option<f64>| {
                let mut m = metric(def, value);
                m.database = Some(database.clone());
                out.push(m);
            };
            push(&catalogue::PER_DATABASE_SIZE_BYTES, row.get::<f64>(2)?);
            push(&catalogue::PER_DATABASE_CONNECTIONS, row.get::<f64>(3)?);
            let mut counter = |key: &str, value: Option<f64>| {
                let key = format!("database:{database}:{key}");
                let value = value?;
                let prev = previous.get(&key).copied();
                readings.push((key, value));
                Some((prev, value))
            };
            let xacts = counter("xacts", row.get::<f64>(4)?);
            let deadlocks = counter("deadlocks", row.get::<f64>(5)?);
            let temp = counter("temp_bytes", row.get::<f64>(6)?);
            push(
                &catalogue::PER_DATABASE_TRANSACTIONS_PER_SECOND,
                xacts.and_then(|(prev, value)| {
                    rate_per_second(
                        prev,
                        Sample {
                            value,
                            at_seconds: now,
                        },
                    )
                }),
            );
            push(
                &catalogue::PER_DATABASE_DEADLOCKS,
                deadlocks.and_then(|(p, v)| delta(p, v)),
            );
            push(
                &catalogue::PER_DATABASE_TEMP_BYTES,
                temp.and_then(|(p, v)| delta(p, v)),
            );
            push(&catalogue::PER_DATABASE_XID_AGE, row.get::<f64>(7)?);
        }
        Ok(())
    })
}

fn previous_samples() -> spi::Result<HashMap<String, Sample>> {
    Spi::connect(|client| {
        let mut map = HashMap::new();
        let rows = client.select(
            "SELECT counter_name, value, extract(epoch FROM sampled_at)::float8 \
             FROM admin_toolkit.collector_counters",
            None,
            &[],
        )?;
        for row in rows {
            if let (Some(name), Some(value), Some(at)) = (
                row.get::<String>(1)?,
                row.get::<f64>(2)?,
                row.get::<f64>(3)?,
            ) {
                map.insert(
                    name,
                    Sample {
                        value,
                        at_seconds: at,
                    },
                );
            }
        }
        Ok(map)
    })
}

fn save_samples(now: f64, samples: &[(String, f64)]) -> spi::Result<()> {
    let names: Vec<String> = samples.iter().map(|(n, _)| n.clone()).collect();
    let values: Vec<f64> = samples.iter().map(|(_, v)| *v).collect();
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.collector_counters (counter_name, value, sampled_at) \
         SELECT n, v, pg_catalog.to_timestamp($3) FROM unnest($1::text[], $2::float8[]) AS c(n, v) \
         ON CONFLICT (counter_name) DO UPDATE SET value = excluded.value, sampled_at = excluded.sampled_at",
        &[names.into(), values.into(), now.into()],
    )
}

/// Reads the counters, appends their per-interval metrics, and returns the readings to save.
fn read_counters(
    previous: &HashMap<String, Sample>,
    out: &mut Vec<Metric>,
) -> spi::Result<(f64, Vec<(String, f64)>)> {
    let (now, readings) = Spi::connect(|client| {
        let row = client.select(COUNTERS, Some(1), &[])?.first();
        let now = row.get::<f64>(1)?.unwrap_or(0.0);
        let mut readings = Vec::new();
        for (i, name) in COUNTER_NAMES.iter().enumerate() {
            if let Some(v) = row.get::<f64>(i + 2)? {
                readings.push((name.to_string(), v));
            }
        }
        if crate::security::audit::queue::available() {
            let (events, reads) = crate::security::audit::queue::dropped();
            readings.push(("audit_events_dropped".to_string(), (events + reads) as f64));
        }
        Ok::<_, spi::Error>((now, readings))
    })?;
    let reading = |name: &str| readings.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let prev = |name: &str| previous.get(name).copied();
    let change = |name: &str| reading(name).and_then(|v| delta(prev(name), v));
    let per_second = |name: &str| {
        reading(name).and_then(|v| {
            rate_per_second(
                prev(name),
                Sample {
                    value: v,
                    at_seconds: now,
                },
            )
        })
    };

    out.push(metric(
        &catalogue::COMMITS_PER_SECOND,
        per_second("xact_commit"),
    ));
    out.push(metric(
        &catalogue::ROLLBACKS_PER_SECOND,
        per_second("xact_rollback"),
    ));
    out.push(metric(&catalogue::DEADLOCKS, change("deadlocks")));
    out.push(metric(&catalogue::TEMP_BYTES, change("temp_bytes")));
    out.push(metric(
        &catalogue::REQUESTED_CHECKPOINTS,
        change("checkpoints_req"),
    ));
    out.push(metric(
        &catalogue::TIMED_CHECKPOINTS,
        change("checkpoints_timed"),
    ));
    out.push(metric(
        &catalogue::WAL_BYTES_PER_SECOND,
        per_second("wal_bytes"),
    ));
    out.push(metric(
        &catalogue::FAILED_ARCHIVES,
        change("archive_failed_count"),
    ));
    if reading("audit_events_dropped").is_some() {
        out.push(metric(
            &catalogue::AUDIT_EVENTS_DROPPED,
            change("audit_events_dropped"),
        ));
    }
    // Over the interval once there is a previous reading; since the last stats reset before.
    let hit_ratio = match (change("blks_hit"), change("blks_read")) {
        (Some(hit), Some(read)) => Some(percent_of_deltas(hit, hit + read)),
        _ => reading("blks_hit")
            .zip(reading("blks_read"))
            .map(|(hit, read)| percent_of_deltas(hit, hit + read)),
    };
    out.push(metric(&catalogue::CACHE_HIT_RATIO, hit_ratio));
    Ok((now, readings))
}

/// Schema of pg_stat_statements when it is installed here and loaded; otherwise why not.
fn statements_schema() -> spi::Result<Result<String, String>> {
    let schema = read_scalar::<String>(
        "SELECT (SELECT n.nspname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements')",
    )?;
    let Some(schema) = schema else {
        return Ok(Err(
            "pg_stat_statements is not installed in this database".into()
        ));
    };
    // Its settings exist only when the library is loaded through shared_preload_libraries.
    let loaded = read_scalar::<bool>(
        "SELECT pg_catalog.current_setting('pg_stat_statements.max', true) IS NOT NULL",
    )?;
    Ok(if loaded == Some(true) {
        Ok(schema)
    } else {
        Err("pg_stat_statements is not in shared_preload_libraries".into())
    })
}

/// The query metric: mean execution time over the interval, with the slowest statements.
fn read_statements(
    schema: &str,
    previous: &HashMap<String, Sample>,
    readings: &mut Vec<(String, f64)>,
    out: &mut Vec<Metric>,
) -> spi::Result<()> {
    let view = format!("{}.pg_stat_statements", quote_identifier(schema));
    let query = format!(
        "SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time), 0)::float8, \
           (SELECT coalesce(jsonb_agg(jsonb_build_object('query', left(query, 100), 'calls', calls, \
                   'avg_time', round(mean_exec_time::numeric, 2)) ORDER BY mean_exec_time DESC), '[]') \
              FROM (SELECT query, calls, mean_exec_time FROM {view} \
                     WHERE calls > 0 AND mean_exec_time > 1000 \
                     ORDER BY mean_exec_time DESC LIMIT 10) slow)::text \
         FROM {view} WHERE calls > 0"
    );
    let (calls, total_ms, top) = Spi::connect(|client| {
        let row = client.select(&query, Some(1), &[])?.first();
        Ok::<_, spi::Error>((
            row.get::<f64>(1)?.unwrap_or(0.0),
            row.get::<f64>(2)?.unwrap_or(0.0),
            json_text(row.get::<String>(3)?),
        ))
    })?;
    let (d_calls, d_ms) = match (
        delta(previous.get("statement_calls").copied(), calls),
        delta(previous.get("statement_time_ms").copied(), total_ms),
    ) {
        (Some(c), Some(t)) => (c, t),
        _ => (calls, total_ms), // first reading: since pg_stat_statements was last reset
    };
    readings.push(("statement_calls".into(), calls));
    readings.push(("statement_time_ms".into(), total_ms));
    let avg = (d_calls > 0.0).then(|| d_ms / d_calls);
    let mut m = metric(&catalogue::AVG_QUERY_TIME_MS, avg);
    m.data = json!({"total_queries": d_calls, "total_time_ms": d_ms, "top_queries": top});
    out.push(m);
    Ok(())
}

/// Collects every metric once. Errors with 55000 on a hot standby (it cannot write).
pub fn collect() -> spi::Result<Collection> {
    // SAFETY: reads shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        ToolkitError::wrong_state("cannot collect metrics on a hot standby: it is read-only")
            .with_hint("Collect on the primary; its metrics replicate to the standby.")
            .raise();
    }
    let previous = previous_samples()?;
    let mut metrics = Vec::with_capacity(24);
    read_gauges(&mut metrics)?;
    read_drill_gauges(&mut metrics)?;
    read_backup_gauges(&mut metrics)?;
    let (now, mut readings) = read_counters(&previous, &mut metrics)?;
    read_per_database(&previous, now, &mut readings, &mut metrics)?;
    let statements_unavailable = match statements_schema()? {
        Ok(schema) => {
            read_statements(&schema, &previous, &mut readings, &mut metrics)?;
            None
        }
        Err(why) => Some(why),
    };
    save_samples(now, &readings)?;

    let types: Vec<&str> = metrics.iter().map(|m| m.metric_type).collect();
    let names: Vec<&str> = metrics.iter().map(|m| m.name).collect();
    let values: Vec<Option<f64>> = metrics.iter().map(|m| m.value).collect();
    let units: Vec<&str> = metrics.iter().map(|m| m.unit).collect();
    let data: Vec<String> = metrics.iter().map(|m| m.data.to_string()).collect();
    let databases: Vec<Option<String>> = metrics.iter().map(|m| m.database.clone()).collect();
    // Only metrics this schema defines: a new library runs before ALTER EXTENSION UPDATE adds
    // its metrics.
    Spi::run_with_args(
        "INSERT INTO admin_toolkit.performance_metrics \
           (collected_at, metric_type, metric_name, metric_value, metric_unit, additional_data, database) \
         SELECT pg_catalog.now(), t, n, v::numeric, u, d::jsonb, db \
         FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[]) AS m(t, n, v, u, d, db) \
         WHERE EXISTS (SELECT 1 FROM admin_toolkit.metric_definitions md \
                        WHERE md.metric_type OPERATOR(pg_catalog.=) m.t AND md.metric_name OPERATOR(pg_catalog.=) m.n)",
        &[types.into(), names.into(), values.into(), units.into(), data.into(), databases.into()],
    )?;
    Ok(Collection {
        inserted: metrics.len(),
        statements_unavailable,
    })
}
