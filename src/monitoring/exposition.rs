//! What a /metrics scrape shows: the latest collected metrics and the toolkit's own state
//! (backup freshness, WAL archiving, audit queue, alert states, job outcomes, worker liveness),
//! read in short sections. Each section runs in its own transaction with tight lock and
//! statement timeouts, so a slow or locked table costs that section only, never the scrape.

use crate::security::audit::queue;
use crate::settings;
use crate::transaction::step::try_transaction;
use admin_toolkit_core::prometheus::{cap_series, metric_name, Family, Kind, Sample};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// One section's families, or why it failed.
type Section = fn() -> spi::Result<Vec<Family>>;

const SECTIONS: [(&str, Section); 8] = [
    ("metrics", collected_metrics),
    ("held", held),
    ("audit", audit),
    ("backups", backups),
    ("wal_archive", wal_archive),
    ("alerts", alerts),
    ("jobs", jobs),
    ("tables", tables),
];

/// Every family of one scrape, and the sections that failed (logged by the caller).
pub fn scrape() -> (Vec<Family>, Vec<(String, String)>) {
    let mut families = process_families();
    let mut failed = Vec::new();
    for (name, section) in SECTIONS {
        // Timeouts: set once for the endpoint's process (endpoint.rs).
        let outcome = try_transaction(section);
        match outcome {
            Ok(Ok(f)) => families.extend(f),
            Ok(Err(e)) => failed.push((name.to_string(), e.to_string())),
            Err(e) => failed.push((name.to_string(), e)),
        }
    }
    let mut errors = Family::new(
        "admin_toolkit_scrape_section_failed",
        Kind::Gauge,
        "1 when a section of this scrape could not be read (see the server log), else 0",
    );
    for (name, _) in SECTIONS {
        let bad = failed.iter().any(|(n, _)| n == name);
        errors.push(&[("section", name)], if bad { 1.0 } else { 0.0 });
    }
    families.push(errors);
    (dedupe(families), failed)
}

/// A name twice (a user metric that sanitises to a built-in name) would make the text invalid:
/// the first family wins.
fn dedupe(families: Vec<Family>) -> Vec<Family> {
    let mut seen = HashSet::new();
    families
        .into_iter()
        .filter(|f| seen.insert(f.name.clone()))
        .collect()
}

/// From shared memory, without a query: the audit queue and the database worker.
fn process_families() -> Vec<Family> {
    let mut out = vec![Family::single(
        "admin_toolkit_up",
        Kind::Gauge,
        "The admin_toolkit /metrics endpoint answers",
        1.0,
    )];
    let (Some(w), Some(q)) = (crate::worker::signals::state(), queue::state()) else {
        return out;
    };
    out.push(Family::single(
        "admin_toolkit_worker_up",
        Kind::Gauge,
        "1 while the admin_toolkit database worker runs",
        if w.running { 1.0 } else { 0.0 },
    ));
    if w.tick != 0 {
        out.push(Family::single(
            "admin_toolkit_worker_last_tick_timestamp_seconds",
            Kind::Gauge,
            "When the database worker last went round its loop (at most a minute apart while it lives)",
            pg_epoch_seconds(w.tick),
        ));
    }
    out.push(Family::single(
        "admin_toolkit_collection_duration_seconds",
        Kind::Gauge,
        "How long the worker's last metrics collection took",
        w.collection_micros as f64 / 1e6,
    ));
    out.push(Family::single(
        "admin_toolkit_audit_events_queued",
        Kind::Gauge,
        "Audit events seen on a hot standby (where WAL cannot be written), waiting in shared memory",
        q.queued as f64,
    ));
    out.push(Family::single(
        "admin_toolkit_audit_events_dropped_total",
        Kind::Counter,
        "Audit events seen on a hot standby and dropped since the server started because its queue was full",
        q.dropped as f64,
    ));
    out.push(Family::single(
        "admin_toolkit_audit_reads_dropped_total",
        Kind::Counter,
        "Table read counts dropped since the server started because the counter table was full",
        q.reads_dropped as f64,
    ));
    out.extend(credential_families());
    out
}

/// The lockout and the password history, from their shared memory.
fn credential_families() -> Vec<Family> {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let Some(c) = crate::security::credentials::state::read(|c| {
        (
            c.locked_count(now),
            c.locks_total,
            c.failures_counted_total,
            c.refused_while_locked_total,
            c.reuse_refused_total,
            c.untracked_total,
            c.history_evicted_total,
            c.unlocks_total,
        )
    }) else {
        return Vec::new();
    };
    let series: [(&str, Kind, &str, u64); 8] = [
        ("admin_toolkit_roles_locked", Kind::Gauge, "Roles locked now after failed logins (admin_toolkit.max_auth_failures)", c.0 as u64),
        ("admin_toolkit_role_locks_total", Kind::Counter, "Roles locked after failed logins since the server started", c.1),
        ("admin_toolkit_auth_failures_counted_total", Kind::Counter, "Failed logins counted towards a lock since the server started", c.2),
        ("admin_toolkit_logins_refused_locked_total", Kind::Counter, "Logins refused because their role was locked, since the server started", c.3),
        ("admin_toolkit_password_reuse_refused_total", Kind::Counter, "New passwords refused as reused (password_reuse_history / password_reuse_interval) since the server started", c.4),
        ("admin_toolkit_lockout_untracked_total", Kind::Counter, "Failed logins not counted because every lockout slot was taken", c.5),
        ("admin_toolkit_password_history_evicted_total", Kind::Counter, "Password history entries pushed out because the history was full", c.6),
        ("admin_toolkit_role_unlocks_total", Kind::Counter, "Locks lifted by unlock_role() since the server started", c.7),
    ];
    series
        .into_iter()
        .map(|(name, kind, help, value)| Family::single(name, kind, help, value as f64))
        .collect()
}

/// Seconds since the Unix epoch of a PostgreSQL timestamp (microseconds since 2000-01-01).
fn pg_epoch_seconds(ts: pg_sys::TimestampTz) -> f64 {
    const UNIX_TO_PG_SECONDS: f64 = 946_684_800.0;
    ts as f64 / 1e6 + UNIX_TO_PG_SECONDS
}

// The scrape's queries, each kept as a plan (see select_kept).
const LATEST_METRICS: &str =
    "SELECT d.metric_type, d.metric_name, coalesce(d.description, ''), m.metric_value::float8, \
    extract(epoch FROM m.collected_at)::float8, m.database::text \
    FROM admin_toolkit.metric_definitions d \
    CROSS JOIN LATERAL ( \
    SELECT p.metric_value, p.collected_at, p.database FROM admin_toolkit.performance_metrics p \
    WHERE p.metric_type = d.metric_type AND p.metric_name = d.metric_name \
    AND p.collected_at = (SELECT q.collected_at FROM admin_toolkit.performance_metrics q \
    WHERE q.metric_type = d.metric_type AND q.metric_name = d.metric_name \
    AND q.collected_at > now() - interval '1 day' ORDER BY q.collected_at DESC LIMIT 1)) m \
    WHERE m.metric_value IS NOT NULL \
    ORDER BY 1, 2, 6";

const BACKUP_FRESHNESS: &str = "SELECT s.schedule_id::text, s.backup_type, \
    extract(epoch FROM max(h.end_time) FILTER (WHERE h.status = 'completed'))::float8, \
    extract(epoch FROM now() - max(h.end_time) FILTER (WHERE h.status = 'completed'))::float8 \
    FROM admin_toolkit.backup_schedules s \
    LEFT JOIN admin_toolkit.backup_history h USING (schedule_id) \
    WHERE s.is_active GROUP BY s.schedule_id, s.backup_type ORDER BY s.schedule_id";

const BACKUPS_BY_STATUS: &str =
    "SELECT status, count(*)::float8 FROM admin_toolkit.backup_history GROUP BY 1 ORDER BY 1";

const ARCHIVER: &str = "SELECT r.ready::float8, \
    archived_count::float8, failed_count::float8, \
    extract(epoch FROM last_archived_time)::float8, \
    extract(epoch FROM last_failed_time)::float8, \
    coalesce(extract(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) r.oldest), 0)::float8 \
    FROM pg_catalog.pg_stat_archiver, \
    (SELECT count(*) AS ready, min(modification) AS oldest FROM pg_catalog.pg_ls_archive_statusdir() \
      WHERE name OPERATOR(pg_catalog.~~) '%.ready') r";

const ALERT_STATES: &str = "SELECT r.rule_name, r.severity, \
    EXISTS (SELECT 1 FROM admin_toolkit.alert_events e \
    WHERE e.rule_id = r.rule_id AND e.resolved_at IS NULL)::int::float8 \
    FROM admin_toolkit.alert_rules r WHERE r.is_active ORDER BY r.rule_name";

const DELIVERIES_BY_STATUS: &str = "SELECT channel_name, status, count(*)::float8 \
    FROM admin_toolkit.alert_deliveries GROUP BY 1, 2 ORDER BY 1, 2";

const JOB_RUNS: &str = "SELECT 'maintenance', status, count(*)::float8 FROM admin_toolkit.maintenance_runs GROUP BY 2 \
    UNION ALL SELECT 'backup', status, count(*)::float8 FROM admin_toolkit.backup_history GROUP BY 2 \
    ORDER BY 1, 2";

const TABLE_STATS: &str = "SELECT n.nspname::text, c.relname::text, \
    pg_catalog.pg_stat_get_live_tuples(c.oid)::float8, \
    pg_catalog.pg_stat_get_dead_tuples(c.oid)::float8, \
    c.relpages::float8 * current_setting('block_size')::float8 \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'm') \
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'";

thread_local! {
    /// Plans kept for the life of the process: planning the partitioned metrics query costs
    /// several times what running it does, and the endpoint runs the same queries at every
    /// scrape. Without parameters a kept plan is generic, and its partition pruning on now()
    /// happens when it runs.
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs `sql` (no parameters) through its kept plan, preparing it the first time.
fn select_kept<'conn>(
    c: &SpiClient<'conn>,
    sql: &'static str,
) -> spi::Result<SpiTupleTable<'conn>> {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(sql) {
            let plan = c.prepare(sql, &[])?.keep();
            plans.insert(sql, plan);
        }
        c.select(&plans[sql], None, &[])
    })
}

fn text(row: &pgrx::spi::SpiHeapTupleData, i: usize) -> spi::Result<String> {
    Ok(row.get::<String>(i)?.unwrap_or_default())
}

fn float(row: &pgrx::spi::SpiHeapTupleData, i: usize) -> spi::Result<Option<f64>> {
    row.get::<f64>(i)
}

/// The latest value of every defined metric collected in the last day: one family per metric
/// (admin_toolkit_<type>_<name>), one series each, or one per database for the per-database
/// metrics (label database).
fn collected_metrics() -> spi::Result<Vec<Family>> {
    Spi::connect(|c| {
        let rows = select_kept(c, LATEST_METRICS)?;
        let mut out = Vec::new();
        let mut newest: Option<f64> = None;
        for r in rows {
            let (kind, name, help) = (text(&r, 1)?, text(&r, 2)?, text(&r, 3)?);
            let Some(value) = float(&r, 4)? else { continue };
            if let Some(at) = float(&r, 5)? {
                newest = Some(newest.map_or(at, |n| n.max(at)));
            }
            let family = metric_name(&format!("admin_toolkit_{kind}_{name}"));
            // Per-database metrics: one series per database of the latest collection.
            let database = r.get::<String>(6)?;
            if out.last().is_none_or(|f: &Family| f.name != family) {
                out.push(Family::new(
                    &family,
                    Kind::Gauge,
                    &format!("{help} (latest collected value)"),
                ));
            }
            if let Some(last) = out.last_mut() {
                match &database {
                    Some(db) => last.push(&[("database", db)], value),
                    None => last.push(&[], value),
                }
            }
        }
        if let Some(at) = newest {
            out.push(Family::single(
                "admin_toolkit_last_collection_timestamp_seconds",
                Kind::Gauge,
                "When the newest metric shown here was collected",
                at,
            ));
        }
        Ok(out)
    })
}

/// Per backup schedule: when its last backup completed, and its age (+Inf: never); backups in
/// the history by status.
/// Whether this server's schedules and retention are held (a restored copy not yet adopted).
fn held() -> spi::Result<Vec<Family>> {
    let held = crate::copy_guard::held_now()?.is_some();
    Ok(vec![Family::single(
        "admin_toolkit_schedules_held",
        Kind::Gauge,
        "1 when this server is a restored or copied one whose schedules and retention wait for adopt_as_primary(), else 0",
        if held { 1.0 } else { 0.0 },
    )])
}

/// The head of the audit log's hash chain (to compare with the last backup's, or with an
/// earlier scrape: a rewritten log shows another hash for the same audit_id) and how far the
/// worker is behind the audit journal.
fn audit() -> spi::Result<Vec<Family>> {
    let (id, hash, lag) = Spi::get_three::<i64, String, f64>(
        "SELECT c.head_audit_id, pg_catalog.encode(c.head, 'hex'), \
                CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN \
                     pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_flush_lsn(), j.read_through)::float8 END \
           FROM admin_toolkit.audit_chain c, admin_toolkit.audit_journal j",
    )?;
    let mut out = Vec::new();
    if let (Some(id), Some(hash)) = (id, hash) {
        let mut head = Family::new(
            "admin_toolkit_audit_chain_head",
            Kind::Gauge,
            "audit_id of the last row of security_audit_log's hash chain, its row_hash as label",
        );
        head.push(&[("hash", hash.as_str())], id as f64);
        out.push(head);
    }
    if let Some(lag) = lag {
        out.push(Family::single(
            "admin_toolkit_audit_journal_lag_bytes",
            Kind::Gauge,
            "WAL flushed and not yet read by the worker for audit events (the audit journal)",
            lag.max(0.0),
        ));
    }
    Ok(out)
}

fn backups() -> spi::Result<Vec<Family>> {
    Spi::connect(|c| {
        let rows = select_kept(c, BACKUP_FRESHNESS)?;
        let mut last = Family::new(
            "admin_toolkit_backup_last_success_timestamp_seconds",
            Kind::Gauge,
            "When the last completed backup of an active schedule ended (0: never)",
        );
        let mut age = Family::new(
            "admin_toolkit_backup_last_success_age_seconds",
            Kind::Gauge,
            "Seconds since the last completed backup of an active schedule ended (+Inf: never)",
        );
        for r in rows {
            let (id, kind) = (text(&r, 1)?, text(&r, 2)?);
            let labels = [("schedule_id", id.as_str()), ("backup_type", kind.as_str())];
            last.push(&labels, float(&r, 3)?.unwrap_or(0.0));
            age.push(&labels, float(&r, 4)?.unwrap_or(f64::INFINITY));
        }
        let mut by_status = Family::new(
            "admin_toolkit_backups",
            Kind::Gauge,
            "Backups in backup_history by status",
        );
        for r in select_kept(c, BACKUPS_BY_STATUS)? {
            by_status.push(&[("status", &text(&r, 1)?)], float(&r, 2)?.unwrap_or(0.0));
        }
        Ok(vec![last, age, by_status])
    })
}

/// WAL archiving: segments waiting for the archiver, and pg_stat_archiver's counters.
fn wal_archive() -> spi::Result<Vec<Family>> {
    Spi::connect(|c| {
        let r = select_kept(c, ARCHIVER)?.first();
        let mut out = vec![
            Family::single(
                "admin_toolkit_wal_segments_ready",
                Kind::Gauge,
                "WAL segments ready for archiving and not archived yet (archive lag)",
                r.get::<f64>(1)?.unwrap_or(0.0),
            ),
            Family::single(
                "admin_toolkit_wal_oldest_ready_age_seconds",
                Kind::Gauge,
                "How long the oldest WAL file waiting for the archiver has waited (archive lag in seconds; 0 when none waits)",
                r.get::<f64>(6)?.unwrap_or(0.0),
            ),
            Family::single(
                "admin_toolkit_wal_archived_total",
                Kind::Counter,
                "WAL segments archived (pg_stat_archiver.archived_count)",
                r.get::<f64>(2)?.unwrap_or(0.0),
            ),
            Family::single(
                "admin_toolkit_wal_archive_failures_total",
                Kind::Counter,
                "Failed WAL archive attempts (pg_stat_archiver.failed_count)",
                r.get::<f64>(3)?.unwrap_or(0.0),
            ),
        ];
        if let Some(at) = r.get::<f64>(4)? {
            out.push(Family::single(
                "admin_toolkit_wal_last_archived_timestamp_seconds",
                Kind::Gauge,
                "When the archiver last archived a segment",
                at,
            ));
        }
        if let Some(at) = r.get::<f64>(5)? {
            out.push(Family::single(
                "admin_toolkit_wal_last_archive_failure_timestamp_seconds",
                Kind::Gauge,
                "When an archive attempt last failed",
                at,
            ));
        }
        Ok(out)
    })
}

/// 1 for each active rule with an open alert event, 0 for the others.
fn alerts() -> spi::Result<Vec<Family>> {
    Spi::connect(|c| {
        let mut firing = Family::new(
            "admin_toolkit_alert_firing",
            Kind::Gauge,
            "1 while an active alert rule has an unresolved alert event",
        );
        for r in select_kept(c, ALERT_STATES)? {
            firing.push(
                &[("rule", &text(&r, 1)?), ("severity", &text(&r, 2)?)],
                float(&r, 3)?.unwrap_or(0.0),
            );
        }
        let mut deliveries = Family::new(
            "admin_toolkit_alert_deliveries",
            Kind::Gauge,
            "Alert notifications in the outbox by channel and status (pending, delivered, failed)",
        );
        for r in select_kept(c, DELIVERIES_BY_STATUS)? {
            deliveries.push(
                &[("channel", &text(&r, 1)?), ("status", &text(&r, 2)?)],
                float(&r, 3)?.unwrap_or(0.0),
            );
        }
        Ok(vec![firing, deliveries])
    })
}

/// Job runs kept in the histories, by kind and outcome.
fn jobs() -> spi::Result<Vec<Family>> {
    Spi::connect(|c| {
        let mut runs = Family::new(
            "admin_toolkit_job_runs",
            Kind::Gauge,
            "Job runs in the toolkit's histories by kind and status (failed and error runs are failures)",
        );
        for r in select_kept(c, JOB_RUNS)? {
            runs.push(
                &[("kind", &text(&r, 1)?), ("status", &text(&r, 2)?)],
                float(&r, 3)?.unwrap_or(0.0),
            );
        }
        Ok(vec![runs])
    })
}

/// Per table of the toolkit's database: live and dead rows, and size as of the last VACUUM or
/// ANALYZE, at most admin_toolkit.metrics_table_series series each (the rest summed).
fn tables() -> spi::Result<Vec<Family>> {
    let cap = settings::METRICS_TABLE_SERIES.get().max(1) as usize;
    Spi::connect(|c| {
        let rows = select_kept(c, TABLE_STATS)?;
        let (mut live, mut dead, mut size) = (Vec::new(), Vec::new(), Vec::new());
        for r in rows {
            let labels = vec![
                ("schema".to_string(), text(&r, 1)?),
                ("table".to_string(), text(&r, 2)?),
            ];
            let sample = |v: Option<f64>| Sample {
                labels: labels.clone(),
                value: v.unwrap_or(0.0),
            };
            live.push(sample(float(&r, 3)?));
            dead.push(sample(float(&r, 4)?));
            size.push(sample(float(&r, 5)?));
        }
        let family = |name: &str, help: &str, samples: Vec<Sample>| Family {
            samples: cap_series(samples, cap, "table"),
            ..Family::new(name, Kind::Gauge, help)
        };
        Ok(vec![
            family(
                "admin_toolkit_table_live_rows",
                "Estimated live rows per table (the largest tables; the rest summed as table=\"(other)\")",
                live,
            ),
            family(
                "admin_toolkit_table_dead_rows",
                "Estimated dead rows per table (the largest; the rest summed as table=\"(other)\")",
                dead,
            ),
            family(
                "admin_toolkit_table_size_bytes",
                "Table size as of its last VACUUM or ANALYZE (the largest; the rest summed as table=\"(other)\")",
                size,
            ),
        ])
    })
}
