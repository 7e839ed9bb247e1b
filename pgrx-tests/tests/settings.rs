//! Settings that only the configuration file can set (context sighup), each changed on a real
//! server and seen to change what the toolkit does: the time zone schedules are read in, and
//! how long metrics, audit events and maintenance runs are kept.

use admin_toolkit_it::{
    count, duty_done, wait_for, wait_for_todays_partition, Cluster, ClusterOptions,
};
use postgres::Client;

/// When `expression` next falls after `after`, in UTC, as cron_next_run() says.
fn next_run_utc(db: &mut Client, expression: &str, after: &str) -> String {
    db.query_one(
        "SELECT to_char(admin_toolkit.cron_next_run($1, $2::text::timestamptz) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')",
        &[&expression, &after],
    )
    .unwrap()
    .get(0)
}

#[test]
fn schedules_are_read_in_the_configured_time_zone() {
    let mut options = ClusterOptions::default();
    options.settings.push("timezone = 'UTC'".into());
    let cluster = Cluster::start_with(options);
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    db.batch_execute("ALTER SYSTEM SET admin_toolkit.timezone = 'America/New_York'")
        .unwrap();
    cluster.reload_until("admin_toolkit.timezone", Some("America/New_York"));
    let mut db = cluster.connect("postgres");
    // 03:00 in New York: 07:00 UTC in summer (EDT), 08:00 in winter (EST).
    assert_eq!(
        next_run_utc(&mut db, "0 3 * * *", "2026-07-01 00:00+00"),
        "2026-07-01 07:00"
    );
    assert_eq!(
        next_run_utc(&mut db, "0 3 * * *", "2026-01-10 00:00+00"),
        "2026-01-10 08:00"
    );
    // Without it, the server's TimeZone.
    db.batch_execute("ALTER SYSTEM RESET admin_toolkit.timezone")
        .unwrap();
    cluster.reload_until("admin_toolkit.timezone", None);
    let mut fresh = cluster.connect("postgres");
    assert_eq!(
        next_run_utc(&mut fresh, "0 3 * * *", "2026-07-01 00:00+00"),
        "2026-07-01 03:00"
    );
}

/// Rows five days old, kept by the defaults (30 days of metrics and audit events, 90 of
/// maintenance runs), go once the retention is set to three days and the configuration reloaded.
#[test]
fn retention_settings_take_effect_at_the_next_reload() {
    let cluster = Cluster::start_with(ClusterOptions::default().logging_passes());
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
    wait_for_todays_partition(&mut db);
    let upkeep = duty_done("partition upkeep");
    cluster.wait_for_log_count(&upkeep, 1);
    db.batch_execute(
        "INSERT INTO admin_toolkit.performance_metrics (collected_at, metric_type, metric_name, metric_value) \
           VALUES (now() - interval '5 days', 'storage', 'database_size_bytes', 1); \
         INSERT INTO admin_toolkit.security_audit_log (event_time, username, database_name, operation_type, success) \
           VALUES (now() - interval '5 days', 'old', 'postgres', 'OLD', true); \
         INSERT INTO admin_toolkit.maintenance_runs (maintenance_type, target_object, started_at, finished_at, status) \
           VALUES ('analyze', 'old', now() - interval '5 days', now() - interval '5 days', 'success')",
    )
    .unwrap();
    let old = |db: &mut Client| {
        [
            "SELECT count(*) FROM admin_toolkit.performance_metrics WHERE collected_at < now() - interval '4 days'",
            "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'OLD'",
            "SELECT count(*) FROM admin_toolkit.maintenance_runs WHERE target_object = 'old'",
        ]
        .map(|q| count(db, q))
    };
    // A reload makes upkeep look again at once; with the defaults everything stays.
    let passes = cluster.log_count(&upkeep);
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    cluster.wait_for_log_count(&upkeep, passes + 1);
    // A pass is logged done even when its step failed (and then runs again): none did.
    let failures = cluster.our_failures();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(old(&mut db), [1, 1, 1]);

    for setting in [
        "metrics_retention_days",
        "audit_retention_days",
        "maintenance_history_days",
    ] {
        db.batch_execute(&format!("ALTER SYSTEM SET admin_toolkit.{setting} = 3"))
            .unwrap();
    }
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_for("the old rows to go", || {
        (old(&mut db) == [0, 0, 0]).then_some(())
    });
}
