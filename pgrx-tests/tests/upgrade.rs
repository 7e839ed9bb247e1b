//! Upgrades, as an administrator does them: admin_toolkit 0.1.0 — built from commit e9c79f5's own
//! sources by scripts/build-0.1.0.sh — is installed, creates its extension and fills every table
//! while its worker runs; then this checkout's build replaces its files, the server restarts on
//! the new library, and ALTER EXTENSION UPDATE runs while the new worker is already at work. The
//! result equals a fresh install object for object, every row is kept, the worker carries on.
//! On a later major (0.1.0 was built for 15 only), 0.1.0's schema is created from its script
//! with this build's library and updated by the same scripts. Released upgrade scripts are never
//! edited.

use admin_toolkit_core::storage::sha256_hex;
use admin_toolkit_it::installed::{install_tree, tree_files, Displaced};
use admin_toolkit_it::{
    count, extension_version, pg_config, server_major, wait_for, wait_for_todays_partition, Cluster,
};
use postgres::Client;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn installed_version(db: &mut Client) -> String {
    db.query_one(
        "SELECT extversion FROM pg_extension WHERE extname = 'admin_toolkit'",
        &[],
    )
    .unwrap()
    .get(0)
}

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql")
}

/// The installed files of 0.1.0: `$ADMIN_TOOLKIT_0_1_0` (scripts/test.sh builds it first), else
/// built now by scripts/build-0.1.0.sh (kept in target/ for the next run).
fn release_0_1_0() -> PathBuf {
    if let Some(path) = std::env::var_os("ADMIN_TOOLKIT_0_1_0") {
        return PathBuf::from(path);
    }
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-0.1.0.sh"))
        .output()
        .expect("run scripts/build-0.1.0.sh");
    assert!(
        out.status.success(),
        "scripts/build-0.1.0.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .trim(),
    )
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

/// The tables whose rows are the users' own and do not grow by themselves: every row, as JSON.
const KEPT: [&str; 8] = [
    "backup_schedules",
    "backup_history",
    "recovery_points",
    "maintenance_schedules",
    "maintenance_runs",
    "alert_rules",
    "alert_events",
    "metric_definitions",
];

/// The filter to the rows users own: built-in rules and metrics come with each version (0.3.0
/// adds the restore drills').
fn users_rows(table: &str) -> &'static str {
    if ["alert_rules", "metric_definitions"].contains(&table) {
        " WHERE NOT builtin"
    } else {
        ""
    }
}

fn kept_rows(db: &mut Client) -> Vec<(String, Vec<serde_json::Value>)> {
    KEPT.iter()
        .map(|t| {
            let own = users_rows(t);
            let rows = db
                .query(
                    &format!("SELECT to_jsonb(t)::text FROM admin_toolkit.{t} t{own}"),
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| serde_json::from_str(&r.get::<_, String>(0)).unwrap())
                .collect();
            (t.to_string(), rows)
        })
        .collect()
}

fn row_counts(db: &mut Client) -> Vec<(String, i64)> {
    TABLES
        .iter()
        .map(|t| {
            let own = users_rows(t);
            (
                t.to_string(),
                count(db, &format!("SELECT count(*) FROM admin_toolkit.{t}{own}")),
            )
        })
        .collect()
}

#[test]
fn an_installed_0_1_0_updates_in_place_keeping_every_row_while_the_worker_runs() {
    let release = release_0_1_0();
    let files = tree_files(&release);
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("admin_toolkit--0.1.0.sql")),
        "{files:?}"
    );
    // 0.1.0 was built for PostgreSQL 15 only (its sources do not compile for 16 and later).
    // On 15 its own library runs first; on a later major, its SQL script is created with this
    // build's library (which still has every C function 0.1.0 declares) and the same scripts
    // update it: what the upgrade path runs on that major.
    let its_own_library = server_major() == 15;
    let script = "admin_toolkit--0.1.0.sql";
    let (mut this_build, create) = if its_own_library {
        let saved = Displaced::save(&files);
        install_tree(&release);
        (saved, "CREATE EXTENSION admin_toolkit")
    } else {
        let source = files
            .iter()
            .find(|f| f.ends_with(script))
            .map(|f| release.join(f.strip_prefix("/").unwrap()))
            .unwrap();
        let into = pg_config("--sharedir").join("extension").join(script);
        let saved = Displaced::save(std::slice::from_ref(&into));
        std::fs::copy(&source, &into).unwrap();
        (saved, "CREATE EXTENSION admin_toolkit VERSION '0.1.0'")
    };
    let mut cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute(create).unwrap();
    let version = installed_version(&mut db);
    assert_eq!(version, "0.1.0");
    if its_own_library {
        // The library loaded is 0.1.0's: it has no build_info (added in 0.2.0).
        let old_library = db.batch_execute(
            "CREATE FUNCTION pg_temp.bi() RETURNS TABLE (a text, b text, c text, d text) \
             LANGUAGE c AS '$libdir/admin_toolkit', 'build_info_wrapper'",
        );
        let missing = old_library
            .expect_err("0.1.0's library has no build_info_wrapper")
            .as_db_error()
            .map(|e| (e.code().code().to_string(), e.message().to_string()));
        assert!(
            matches!(&missing, Some((code, message)) if code == "42883" && message.contains("build_info_wrapper")),
            "{missing:?}"
        );
    }
    // Rows go into partitions the worker made, not into one it is making.
    wait_for_todays_partition(&mut db);
    wait_for("tomorrow's audit partition", || {
        (count(
            &mut db,
            "SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = 'admin_toolkit'::regnamespace \
               AND relname = 'security_audit_log_p' || to_char((now() AT TIME ZONE 'UTC')::date + 1, 'YYYYMMDD')",
        ) == 1)
            .then_some(())
    });
    db.batch_execute(
        "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location) \
           VALUES ('full', '0 2 * * 0', 90, '/srv/backups/full'); \
         INSERT INTO admin_toolkit.backup_history (schedule_id, backup_type, status, backup_path, start_time, end_time) \
           VALUES (1, 'full', 'completed', '/srv/backups/full/b1', now() - interval '1 hour', now()); \
         INSERT INTO admin_toolkit.recovery_points (recovery_name, recovery_time, base_backup_id) VALUES ('before release', now(), 1); \
         INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, schedule_expression) VALUES ('vacuum', '0 3 * * *'); \
         INSERT INTO admin_toolkit.maintenance_runs (schedule_id, maintenance_type, target_object, status) VALUES (1, 'vacuum', 'database', 'success'); \
         INSERT INTO admin_toolkit.metric_definitions (metric_type, metric_name, metric_unit, description) VALUES ('app', 'orders', 'count', 'orders'); \
         INSERT INTO admin_toolkit.alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value, notification_channels) \
           VALUES ('orders', 'app', 'orders', '>', 10, ARRAY['email', 'ops-team']); \
         INSERT INTO admin_toolkit.alert_events (rule_id, value_at_firing, threshold_value, message) SELECT rule_id, 11, 10, 'orders high' FROM admin_toolkit.alert_rules WHERE rule_name = 'orders'; \
         INSERT INTO admin_toolkit.configuration_history (parameter_name, old_value, new_value) VALUES ('work_mem', '4MB', '8MB'); \
         INSERT INTO admin_toolkit.security_audit_log (event_time, username, database_name, operation_type, success) \
           VALUES (now(), 'u', 'postgres', 'LOGIN', true), (now() + interval '1 day', 'u', 'postgres', 'LOGIN', true), \
                  (now() - interval '40 days', 'u', 'postgres', 'LOGIN', false);",
    )
    .unwrap();
    if its_own_library {
        wait_for("metrics collected by the 0.1.0 schema's worker", || {
            (count(
                &mut db,
                "SELECT count(*) FROM admin_toolkit.performance_metrics",
            ) > 0)
                .then_some(())
        });
    }
    // Let the worker keep running: updating must not wait for it nor break it.
    let before = row_counts(&mut db);
    let kept_before = kept_rows(&mut db);
    let audit_partitions = count(
        &mut db,
        "SELECT count(DISTINCT tableoid) FROM admin_toolkit.security_audit_log",
    );
    assert!(audit_partitions >= 2, "audit rows in several partitions");
    // The new build's files, and a restart onto its library (with 0.1.0's schema, its worker
    // logs and retries the steps that need the new one), then the update while it works.
    this_build.put_back();
    if its_own_library {
        drop(db);
        cluster.restart();
        db = cluster.connect("postgres");
        wait_for("the new library's worker", || {
            cluster
                .server_log()
                .matches("admin_toolkit worker started in database")
                .nth(1)
                .map(|_| ())
        });
    }
    db.batch_execute("ALTER EXTENSION admin_toolkit UPDATE")
        .unwrap();
    let version = installed_version(&mut db);
    assert_eq!(version, extension_version());

    // Every row is still there (the worker only ever adds metrics and audit rows meanwhile,
    // and records, as made outside track_config_change, a setting whose default the new
    // library changed).
    let after = row_counts(&mut db);
    // The rows users own are kept value for value (columns added since are not compared).
    let kept_after = kept_rows(&mut db);
    for ((table, b), (_, a)) in kept_before.iter().zip(&kept_after) {
        let keys: Vec<&String> = b
            .first()
            .and_then(|r| r.as_object())
            .map_or(vec![], |o| o.keys().collect());
        let project = |r: &serde_json::Value| -> String {
            keys.iter()
                .map(|k| format!("{k}={}", r[k.as_str()]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut b: Vec<String> = b.iter().map(project).collect();
        let mut a: Vec<String> = a.iter().map(project).collect();
        b.sort();
        a.sort();
        assert_eq!(a, b, "{table}: rows changed by the update");
    }
    // A channel name a 0.1.0 rule used, beyond the built-in ones, became an inactive channel,
    // so the rule can still be updated.
    let migrated: (String, bool) = db
        .query_one(
            "SELECT kind, is_active FROM admin_toolkit.alert_channels WHERE channel_name = 'ops-team'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(migrated, ("webhook".to_string(), false));
    db.batch_execute(
        "UPDATE admin_toolkit.alert_rules SET threshold_value = 12 WHERE rule_name = 'orders'",
    )
    .unwrap();
    for ((table, b), (_, a)) in before.iter().zip(&after) {
        if table == "performance_metrics"
            || table == "security_audit_log"
            || table == "collector_counters"
            || table == "configuration_history"
        {
            assert!(a >= b, "{table}: {b} rows before, {a} after");
        } else {
            assert_eq!(a, b, "{table}");
        }
    }
    let recorded: Vec<String> = db
        .query(
            "SELECT parameter_name FROM admin_toolkit.configuration_history WHERE changed_by = 'external'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        recorded
            .iter()
            .all(|p| p == "admin_toolkit.wal_replay_mb_per_s"),
        "only a changed default is recorded: {recorded:?}"
    );
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
    cluster.assert_no_crash();
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
