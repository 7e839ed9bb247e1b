//! Upgrades: an installed 0.1.0 (the schema of commit e9c79f5, kept as the SQL that version
//! generated: fixtures/admin_toolkit--0.1.0.sql) with rows in every table is updated in place by
//! ALTER EXTENSION UPDATE while the worker runs; the result equals a fresh install object for
//! object, every row is kept, the worker carries on. Released upgrade scripts are never edited.

use admin_toolkit_core::storage::sha256_hex;
use admin_toolkit_it::{count, wait_for, Cluster};
use postgres::Client;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The extension's version: the root package's, which pgrx makes the default_version.
fn extension_version() -> String {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("version in Cargo.toml")
        .to_string()
}

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql")
}

/// Puts the 0.1.0 install script next to the installed extension (as a 0.1.0 package had).
fn install_0_1_0() {
    let out = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_config")
        .arg("--sharedir")
        .output()
        .expect("pg_config");
    let share = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let target = Path::new(&share).join("extension/admin_toolkit--0.1.0.sql");
    std::fs::copy(fixture("admin_toolkit--0.1.0.sql"), &target)
        .unwrap_or_else(|e| panic!("install {} (run the tests as root): {e}", target.display()));
}

fn fingerprint(db: &mut Client) -> Vec<String> {
    let sql = std::fs::read_to_string(fixture("schema_fingerprint.sql")).unwrap();
    db.query(sql.as_str(), &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

const TABLES: [&str; 12] = [
    "backup_schedules",
    "backup_history",
    "recovery_points",
    "maintenance_schedules",
    "maintenance_runs",
    "alert_rules",
    "alert_events",
    "metric_definitions",
    "configuration_history",
    "security_audit_log",
    "performance_metrics",
    "collector_counters",
];

fn row_counts(db: &mut Client) -> Vec<(String, i64)> {
    TABLES
        .iter()
        .map(|t| {
            (
                t.to_string(),
                count(db, &format!("SELECT count(*) FROM admin_toolkit.{t}")),
            )
        })
        .collect()
}

#[test]
fn an_installed_0_1_0_updates_in_place_keeping_every_row_while_the_worker_runs() {
    install_0_1_0();
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit VERSION '0.1.0'")
        .unwrap();
    db.batch_execute(
        "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
           VALUES ('full', '0 2 * * 0', 90, '/srv/backups/full'); \
         INSERT INTO admin_toolkit.backup_history (schedule_id, backup_type, status, backup_path, start_time, end_time) \
           VALUES (1, 'full', 'completed', '/srv/backups/full/b1', now() - interval '1 hour', now()); \
         INSERT INTO admin_toolkit.recovery_points (recovery_name, recovery_time, base_backup_id) VALUES ('before release', now(), 1); \
         INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression) VALUES ('vacuum', '0 3 * * *'); \
         INSERT INTO admin_toolkit.maintenance_runs (schedule_id, maintenance_type, target_object, status) VALUES (1, 'vacuum', 'database', 'success'); \
         INSERT INTO admin_toolkit.metric_definitions (metric_type, metric_name, metric_unit, description) VALUES ('app', 'orders', 'count', 'orders'); \
         INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value) VALUES ('orders', 'app', 'orders', '>', 10); \
         INSERT INTO admin_toolkit.alert_events (rule_id, value_at_firing, threshold_value, message) SELECT rule_id, 11, 10, 'orders high' FROM admin_toolkit.alert_rules WHERE rule_name = 'orders'; \
         INSERT INTO admin_toolkit.configuration_history (parameter_name, old_value, new_value) VALUES ('work_mem', '4MB', '8MB'); \
         INSERT INTO admin_toolkit.security_audit_log (event_time, username, database_name, operation_type, success) \
           VALUES (now(), 'u', 'postgres', 'LOGIN', true), (now() + interval '1 day', 'u', 'postgres', 'LOGIN', true), \
                  (now() - interval '40 days', 'u', 'postgres', 'LOGIN', false);",
    )
    .unwrap();
    wait_for("metrics collected by the 0.1.0 schema's worker", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.performance_metrics",
        ) > 0)
            .then_some(())
    });
    // Let the worker keep running: updating must not wait for it nor break it.
    let before = row_counts(&mut db);
    let audit_partitions = count(
        &mut db,
        "SELECT count(DISTINCT tableoid) FROM admin_toolkit.security_audit_log",
    );
    assert!(audit_partitions >= 2, "audit rows in several partitions");
    db.batch_execute("ALTER EXTENSION admin_toolkit UPDATE")
        .unwrap();
    let version: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'admin_toolkit'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, extension_version());

    // Every row is still there (the worker only ever adds metrics and audit rows meanwhile).
    let after = row_counts(&mut db);
    for ((table, b), (_, a)) in before.iter().zip(&after) {
        if table == "performance_metrics"
            || table == "security_audit_log"
            || table == "collector_counters"
        {
            assert!(a >= b, "{table}: {b} rows before, {a} after");
        } else {
            assert_eq!(a, b, "{table}");
        }
    }
    let owner: String = db
        .query_one(
            "SELECT owner::text FROM admin_toolkit.backup_schedules WHERE schedule_id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        owner, "postgres",
        "0.1.0's schedules are owned by the bootstrap superuser"
    );

    // The updated schema equals a fresh install, object for object.
    db.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = cluster.connect("fresh");
    fresh
        .batch_execute("CREATE EXTENSION admin_toolkit")
        .unwrap();
    let (updated, installed) = (fingerprint(&mut db), fingerprint(&mut fresh));
    let only_updated: Vec<&String> = updated.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<&String> = installed.iter().filter(|l| !updated.contains(l)).collect();
    assert!(
        only_updated.is_empty() && only_fresh.is_empty(),
        "after the update but not in a fresh install: {only_updated:#?}\nin a fresh install but not after the update: {only_fresh:#?}"
    );
    assert!(
        updated.len() > 400,
        "the fingerprint covers the schema ({} lines)",
        updated.len()
    );

    // The worker carries on with the new schema: new metrics, new audit events.
    let metrics = count(
        &mut db,
        "SELECT count(*) FROM admin_toolkit.performance_metrics",
    );
    db.batch_execute("CREATE TABLE after_update (id int)")
        .unwrap();
    wait_for("the worker after the update", || {
        (count(&mut db, "SELECT count(*) FROM admin_toolkit.performance_metrics") > metrics
            && count(
                &mut db,
                "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE object_name = 'after_update'",
            ) == 1)
            .then_some(())
    });
    assert!(!cluster.server_log().contains("terminated by signal"));
}

#[test]
fn released_upgrade_scripts_are_never_edited() {
    let list = std::fs::read_to_string(sql_dir().join("released.sha256")).unwrap();
    let mut listed = Vec::new();
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (sum, name) = line.split_once("  ").expect("\"<sha256>  <file>\"");
        let bytes = std::fs::read(sql_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            sha256_hex(&bytes),
            sum,
            "{name} was released and must not change: add a new upgrade script instead"
        );
        listed.push(name.to_string());
    }
    // Every upgrade script that reaches the current version's predecessors is released.
    for entry in std::fs::read_dir(sql_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("admin_toolkit--") && name.matches("--").count() == 2 {
            assert!(
                listed.contains(&name),
                "{name} is not in sql/released.sha256"
            );
        }
    }
}
