//! Configuration changes against a real server: applied for real through a job worker,
//! recorded, restart-only changes marked applied after the restart, external changes detected.

use admin_toolkit_it::{count, duty_done, wait_for, Cluster, ClusterOptions};
use postgres::error::SqlState;

/// changed_by, old_value, new_value, requires_restart, applied
type HistoryRow = (String, Option<String>, Option<String>, bool, bool);

fn history(db: &mut postgres::Client, name: &str) -> Vec<HistoryRow> {
    db.query(
        "SELECT changed_by, old_value, new_value, requires_restart, applied \
         FROM admin_toolkit.configuration_history WHERE parameter_name = $1 ORDER BY config_id",
        &[&name],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

fn started() -> (Cluster, postgres::Client) {
    let cluster = Cluster::start_with(ClusterOptions::default().logging_passes());
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    // The worker's first look only takes the snapshot later changes are compared with.
    wait_for("the first configuration snapshot", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.configuration_snapshot",
        ) > 0)
            .then_some(())
    });
    (cluster, db)
}

#[test]
fn a_tracked_change_is_applied_for_real_and_recorded() {
    let (cluster, mut db) = started();
    let drift = duty_done("configuration drift");
    cluster.wait_for_log_count(&drift, 1);
    let drift_passes = cluster.log_count(&drift);
    let id: i64 = db
        .query_one(
            "SELECT admin_toolkit.track_config_change('log_min_duration_statement', '1000', 'Enable slow query logging')",
            &[],
        )
        .unwrap()
        .get(0);
    let mut fresh = cluster.connect("postgres");
    let shown: String = fresh
        .query_one("SHOW log_min_duration_statement", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "1s");
    let row = db
        .query_one(
            "SELECT old_value, new_value, changed_by, change_reason, requires_restart, applied \
             FROM admin_toolkit.configuration_history WHERE config_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "-1");
    assert_eq!(row.get::<_, String>(1), "1000");
    assert_eq!(row.get::<_, String>(2), "postgres");
    assert_eq!(row.get::<_, String>(3), "Enable slow query logging");
    assert!(!row.get::<_, bool>(4) && row.get::<_, bool>(5));
    // The worker looks for changes made by other means after the reload: once it has.
    cluster.wait_for_log_count(&drift, drift_passes + 1);
    // A pass is logged done even when its step failed (and then runs again): none did.
    let failures = cluster.our_failures();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        history(&mut db, "log_min_duration_statement").len(),
        1,
        "not recorded again as external"
    );
}

#[test]
fn a_restart_only_change_becomes_applied_after_the_restart() {
    let (mut cluster, mut db) = started();
    db.batch_execute(
        "SELECT admin_toolkit.track_config_change('max_connections', '150', 'more clients');
         SELECT admin_toolkit.track_config_change('shared_preload_libraries', 'admin_toolkit,pg_stat_statements', 'query stats')",
    )
    .unwrap();
    let rows = history(&mut db, "max_connections");
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].3 && !rows[0].4,
        "requires restart, not applied yet: {rows:?}"
    );
    cluster.restart();
    let mut db = cluster.connect("postgres");
    let shown: String = db.query_one("SHOW max_connections", &[]).unwrap().get(0);
    assert_eq!(shown, "150");
    // A list setting is written element by element: both libraries are loaded.
    let libraries: String = db
        .query_one("SHOW shared_preload_libraries", &[])
        .unwrap()
        .get(0);
    assert_eq!(libraries, "admin_toolkit, pg_stat_statements");
    assert!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_settings WHERE name LIKE 'pg_stat_statements.%'"
        ) > 0,
        "pg_stat_statements is loaded"
    );
    wait_for("the change marked applied", || {
        let rows = history(&mut db, "max_connections");
        (rows.len() == 1 && rows[0].4).then_some(())
    });
}

#[test]
fn an_external_alter_system_is_recorded() {
    let (_cluster, mut db) = started();
    db.batch_execute("ALTER SYSTEM SET work_mem = '8MB'")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for("the external change recorded", || {
        history(&mut db, "work_mem")
            .into_iter()
            .find(|r| r.0 == "external")
    });
    let row = history(&mut db, "work_mem").pop().unwrap();
    assert_eq!(row.1.as_deref(), Some("4096"));
    assert_eq!(row.2.as_deref(), Some("8192"));
}

#[test]
fn unknown_parameters_and_invalid_values_are_refused_before_anything_is_written() {
    let (_cluster, mut db) = started();
    let err = db
        .batch_execute("SELECT admin_toolkit.track_config_change('no_such_parameter', '1')")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_OBJECT));
    let err = db
        .batch_execute(
            "SELECT admin_toolkit.track_config_change('log_min_duration_statement', 'soon')",
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    let err = db
        .batch_execute("SELECT admin_toolkit.track_config_change('shared_buffers', '-5')")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    // An empty library list would be stored as one empty name: the server would not start.
    let err = db
        .batch_execute("SELECT admin_toolkit.track_config_change('shared_preload_libraries', '')")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    assert_eq!(count(&mut db, "SELECT count(*) FROM admin_toolkit.configuration_history WHERE changed_by <> 'external'"), 0);
    let auto_conf =
        std::fs::read_to_string(format!("{}/postgresql.auto.conf", _cluster.data_dir())).unwrap();
    assert!(
        !auto_conf.contains("log_min_duration_statement")
            && !auto_conf.contains("shared_buffers")
            && !auto_conf.contains("shared_preload_libraries")
    );
}
