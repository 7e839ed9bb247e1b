//! The Prometheus endpoint (admin_toolkit.metrics_listen): a real scrape shows the collected
//! metrics and the toolkit's own state, `promtool check metrics` accepts it, a real Prometheus
//! scrapes it (up == 1 and a toolkit metric through its HTTP API), per-table series are capped,
//! and it still answers with every client connection slot taken.

use admin_toolkit_it::{
    free_port, occurrences, wait_for, wait_for_todays_partition, Cluster, ClusterOptions,
    ScratchDir,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROMETHEUS_BIN: &str = "/opt/admin_toolkit-test/prometheus/usr/bin";

/// GET of `path` on 127.0.0.1:`port`: (status, body); None while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn endpoint_cluster(extra: &[&str]) -> (Cluster, u16) {
    let port = free_port();
    let mut options = ClusterOptions::default();
    options
        .settings
        .push(format!("admin_toolkit.metrics_listen = '127.0.0.1:{port}'"));
    options.settings.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(options);
    (cluster, port)
}

/// The value of the series `series` (name with labels, exactly as exposed).
fn value_of(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape_when(port: u16, what: &str, ready: impl Fn(&str) -> bool) -> String {
    wait_for(what, || {
        http_get(port, "/metrics")
            .filter(|(status, body)| *status == 200 && ready(body))
            .map(|(_, body)| body)
    })
}

#[test]
fn a_scrape_shows_collected_metrics_and_the_toolkits_state_and_promtool_accepts_it() {
    let (cluster, port) = endpoint_cluster(&["admin_toolkit.metrics_table_series = 5"]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for_todays_partition(&mut db);
    db.batch_execute(
        "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location)
              VALUES ('full', '0 2 * * 0', 7, '/srv/never'), ('incremental', '0 2 * * 1-6', 7, '/srv/never');
         INSERT INTO admin_toolkit.backup_history (schedule_id, backup_type, status, backup_path, start_time, end_time)
              VALUES (1, 'full', 'completed', '/srv/never/b1', now() - interval '2 hours', now() - interval '1 hour'),
                     (2, 'incremental', 'failed', '/srv/never/b2', now() - interval '1 hour', now());
         INSERT INTO admin_toolkit.metric_definitions (metric_type, metric_name, metric_unit, description)
              VALUES ('app', 'orders', 'count', 'Orders waiting');
         INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value)
              VALUES ('Orders \"piling\" up', 'app', 'orders', '>', 10);
         INSERT INTO admin_toolkit.performance_metrics (metric_type, metric_name, metric_value) VALUES ('app', 'orders', 11);
         INSERT INTO admin_toolkit.alert_events (rule_id, value_at_firing, threshold_value, message)
              SELECT rule_id, 11, 10, 'orders piling up' FROM admin_toolkit.alert_rules WHERE rule_name LIKE 'Orders%';",
    )
    .unwrap();
    for i in 0..12 {
        db.batch_execute(&format!(
            "CREATE TABLE t{i} AS SELECT g FROM generate_series(1, {}) g; ANALYZE t{i};",
            (i + 1) * 100
        ))
        .unwrap();
    }

    let body = scrape_when(port, "a scrape with collected metrics", |b| {
        // Table statistics reach the shared stats a moment after the session's transactions.
        b.contains("admin_toolkit_storage_database_size_bytes ")
            && b.contains("admin_toolkit_table_live_rows{schema=\"public\",table=\"t11\"} 1200")
    });
    assert_eq!(value_of(&body, "admin_toolkit_up"), Some(1.0));
    assert_eq!(value_of(&body, "admin_toolkit_worker_up"), Some(1.0));
    // The lockout's series, from shared memory: off, nothing locked.
    assert_eq!(value_of(&body, "admin_toolkit_roles_locked"), Some(0.0));
    assert_eq!(value_of(&body, "admin_toolkit_role_locks_total"), Some(0.0));
    assert!(value_of(&body, "admin_toolkit_storage_database_size_bytes").unwrap() > 1e6);
    assert_eq!(value_of(&body, "admin_toolkit_app_orders"), Some(11.0));
    let age = value_of(
        &body,
        "admin_toolkit_backup_last_success_age_seconds{schedule_id=\"1\",backup_type=\"full\"}",
    )
    .unwrap();
    assert!((3500.0..4000.0).contains(&age), "full backup age {age}");
    assert!(body.contains(
        "admin_toolkit_backup_last_success_age_seconds{schedule_id=\"2\",backup_type=\"incremental\"} +Inf"
    ));
    assert_eq!(
        value_of(
            &body,
            "admin_toolkit_alert_firing{rule=\"Orders \\\"piling\\\" up\",severity=\"warning\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value_of(
            &body,
            "admin_toolkit_job_runs{kind=\"backup\",status=\"failed\"}"
        ),
        Some(1.0)
    );
    // The audit chain's head: a row of the log, with that hash.
    let head = body
        .lines()
        .find(|l| l.starts_with("admin_toolkit_audit_chain_head{hash=\""))
        .unwrap_or_else(|| panic!("no audit chain head in {body}"));
    let (hash, id) = head
        .trim_start_matches("admin_toolkit_audit_chain_head{hash=\"")
        .split_once("\"} ")
        .unwrap();
    assert_eq!(hash.len(), 64, "{head}");
    let id: f64 = id.parse().unwrap();
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE audit_id = $1::float8::bigint \
               AND encode(row_hash, 'hex') = $2",
            &[&id, &hash],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "{head}");
    assert!(value_of(&body, "admin_toolkit_audit_journal_lag_bytes").is_some());
    for section in [
        "metrics",
        "audit",
        "backups",
        "wal_archive",
        "alerts",
        "jobs",
        "tables",
    ] {
        assert_eq!(
            value_of(
                &body,
                &format!("admin_toolkit_scrape_section_failed{{section=\"{section}\"}}")
            ),
            Some(0.0),
            "{section}"
        );
    }
    // 12 tables with admin_toolkit.metrics_table_series = 5: the 4 largest and one sum. The
    // toolkit's own tables grow as the worker collects, so the figures are compared with
    // pg_stat_user_tables (an independent view) read before and after one scrape that agree.
    let live_rows = |body: &str| -> Vec<(String, f64)> {
        body.lines()
            .filter_map(|l| l.strip_prefix("admin_toolkit_table_live_rows{"))
            .map(|l| {
                let (labels, value) = l.rsplit_once("} ").unwrap();
                (labels.to_string(), value.parse::<f64>().unwrap())
            })
            .collect()
    };
    // (all live rows, the 4 largest tables' live rows, largest first)
    let oracle = |db: &mut postgres::Client| -> (f64, Vec<f64>) {
        let rows: Vec<f64> = db
            .query(
                "SELECT n_live_tup::float8 FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
                  WHERE c.relkind IN ('r', 'm') ORDER BY n_live_tup DESC",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (rows.iter().sum(), rows.into_iter().take(4).collect())
    };
    let (live, (total, largest)) = wait_for("a scrape between two equal readings", || {
        let before = oracle(&mut db);
        let (_, body) = http_get(port, "/metrics")?;
        (oracle(&mut db) == before).then(|| (live_rows(&body), before))
    });
    assert_eq!(live.len(), 5, "{live:?}");
    assert!(
        live.iter()
            .any(|(l, v)| l == "schema=\"public\",table=\"t11\"" && *v == 1200.0),
        "{live:?}"
    );
    let shown: Vec<f64> = live.iter().take(4).map(|(_, v)| *v).collect();
    assert_eq!(shown, largest, "the 4 largest, largest first: {live:?}");
    assert!(live[4].0.contains("table=\"(other)\""), "{live:?}");
    let summed: f64 = live.iter().map(|(_, v)| v).sum();
    assert_eq!(summed, total, "every row counted once: {live:?}");

    // promtool, Prometheus's own checker, accepts the text.
    let mut promtool = Command::new(Path::new(PROMETHEUS_BIN).join("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/prereqs.sh unpacks it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    assert_eq!(http_get(port, "/nothing").map(|r| r.0), Some(404));
    cluster.assert_no_crash();
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ignored = self.0.kill();
        let _reaped = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_endpoint() {
    let (cluster, port) = endpoint_cluster(&[]);
    cluster
        .connect("postgres")
        .batch_execute("CREATE EXTENSION admin_toolkit")
        .unwrap();
    let scratch = ScratchDir::new("admin_toolkit_prometheus_");
    let config = scratch.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: admin_toolkit\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prometheus = Prometheus(
        Command::new(Path::new(PROMETHEUS_BIN).join("prometheus"))
            .arg(format!("--config.file={config}"))
            .arg(format!("--storage.tsdb.path={}", scratch.join("tsdb")))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/prereqs.sh unpacks it)"),
    );
    let query = |q: &str| {
        http_get(web, &format!("/api/v1/query?query={q}"))
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    };
    let up = wait_for("Prometheus to scrape the endpoint", || {
        query("up%7Bjob%3D%22admin_toolkit%22%7D").filter(|b| b.contains("\"value\":["))
    });
    assert!(up.contains("\"1\"]"), "up == 1: {up}");
    let worker = wait_for("a toolkit metric in Prometheus", || {
        query("admin_toolkit_worker_up").filter(|b| b.contains("\"value\":["))
    });
    assert!(worker.contains("\"1\"]"), "{worker}");
}

#[test]
fn the_endpoint_answers_with_every_connection_slot_taken() {
    let (cluster, port) =
        endpoint_cluster(&["max_connections = 6", "superuser_reserved_connections = 0"]);
    cluster
        .connect("postgres")
        .batch_execute("CREATE EXTENSION admin_toolkit")
        .unwrap();
    scrape_when(port, "the endpoint", |b| b.contains("admin_toolkit_up 1"));
    let mut held = Vec::new();
    let refused = loop {
        match postgres::Client::connect(&cluster.conninfo("postgres"), postgres::NoTls) {
            Ok(c) => held.push(c),
            Err(e) => {
                break e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            }
        }
        assert!(held.len() <= 6, "max_connections is 6");
    };
    assert!(refused.contains("too many clients"), "{refused}");
    let body = scrape_when(port, "a scrape with no slot free", |b| {
        b.contains("admin_toolkit_up 1")
    });
    assert_eq!(
        value_of(
            &body,
            "admin_toolkit_scrape_section_failed{section=\"backups\"}"
        ),
        Some(0.0),
        "{body}"
    );
    drop(held);
}

#[test]
fn a_locked_table_costs_one_section_not_the_scrape() {
    let (cluster, port) = endpoint_cluster(&[]);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    scrape_when(port, "the endpoint", |b| {
        b.contains("admin_toolkit_scrape_section_failed{section=\"backups\"} 0")
    });
    // A client holds backup_history locked (as VACUUM FULL would) and does not let go.
    let mut locker = cluster.connect("postgres");
    locker
        .batch_execute("BEGIN; LOCK TABLE admin_toolkit.backup_history IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = Instant::now();
    let (status, body) = http_get(port, "/metrics").expect("an answer");
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    assert_eq!(
        value_of(
            &body,
            "admin_toolkit_scrape_section_failed{section=\"backups\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value_of(
            &body,
            "admin_toolkit_scrape_section_failed{section=\"alerts\"}"
        ),
        Some(0.0)
    );
    assert_eq!(value_of(&body, "admin_toolkit_worker_up"), Some(1.0));
    locker.batch_execute("ROLLBACK").unwrap();
    scrape_when(port, "the section back once the lock is gone", |b| {
        b.contains("admin_toolkit_scrape_section_failed{section=\"backups\"} 0")
    });
    assert_eq!(
        occurrences(&cluster.server_log(), "section \"backups\" failed"),
        1,
        "a lasting failure is logged once"
    );
}

#[test]
fn a_slow_client_holds_nobody_up() {
    let (_cluster, port) = endpoint_cluster(&[]);
    scrape_when(port, "the endpoint", |_| true);
    // One client trickles its request a byte every 4 s; a scrape beside it is answered
    // before the trickler's next byte, and the trickler is dropped at its deadline.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"G").unwrap();
    let trickler = std::thread::spawn(move || {
        let mut sent = 1;
        for byte in b"ET /metrics HTTP/1.1\r\n\r\n" {
            std::thread::sleep(Duration::from_secs(4));
            if slow.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("a scrape answered while another client trickles its request");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("admin_toolkit_scrape_duration_seconds"));
    // Dropped at its deadline: its second or third byte finds the connection closed.
    let sent = trickler.join().unwrap();
    assert!(sent < 5, "the trickling client was kept for {sent} bytes");
}
