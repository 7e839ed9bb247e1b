//! A trickling S3 endpoint (a loopback server answering one byte a second) stalls nothing: the
//! archiver's attempts fail within their deadline, the audit queue keeps draining while
//! retention's deletions go through the endpoint, and the server shuts down promptly.

use admin_toolkit_it::receiver::TricklingServer;
use admin_toolkit_it::s3::S3Server;
use admin_toolkit_it::{
    count, wait_for, wait_for_todays_partition, Cluster, ClusterOptions, ScratchDir,
};
use std::time::Duration;

#[test]
fn a_trickling_object_store_stalls_neither_the_archiver_nor_the_audit_queue_nor_shutdown() {
    let slow = TricklingServer::start();
    let scratch = ScratchDir::new("admin_toolkit_slow_s3_");
    let credentials = S3Server::write_credentials(&scratch.join("credentials"));
    let mut options = ClusterOptions::default();
    options.settings.extend([
        "archive_mode = on".to_string(),
        "archive_library = 'admin_toolkit'".to_string(),
        "admin_toolkit.archive_location = 's3://slow/wal/'".to_string(),
        format!("admin_toolkit.s3_endpoint = '{}'", slow.endpoint()),
        "admin_toolkit.s3_force_path_style = on".to_string(),
        format!("admin_toolkit.s3_credentials_file = '{credentials}'"),
        "admin_toolkit.s3_timeout = 2".to_string(),
    ]);
    let mut cluster = Cluster::start_with(options);
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; CREATE TABLE t (x int); CREATE ROLE reader; SELECT pg_switch_wal()",
    )
    .unwrap();
    wait_for_todays_partition(&mut db);

    // The archiver: each attempt ends at its deadline (2 s a request, three at most with the
    // retries), so the failure is reported, not waited for forever.
    wait_for("the archiver's failed attempt", || {
        let log = cluster.server_log();
        log.contains("admin_toolkit archive: could not archive")
            .then_some(())
    });

    // Retention's deletions through the endpoint: of four full backups past their retention,
    // cleanup marks three (never the newest), and its commit wakes the worker for them.
    db.batch_execute(
        "WITH s AS (INSERT INTO admin_toolkit.backup_schedules
                      (backup_type, schedule_expression, retention_days, storage_location, is_active)
                    VALUES ('full', '0 2 * * 0', 1, 's3://slow/pg/', false) RETURNING schedule_id)
         INSERT INTO admin_toolkit.backup_history (schedule_id, backup_type, status, backup_path, start_time, end_time)
         SELECT s.schedule_id, 'full', 'completed', 's3://slow/pg/backup_' || i || '/',
                now() - interval '30 days', now() - interval '30 days' + i * interval '1 minute'
           FROM s, generate_series(1, 4) i",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.cleanup_old_backups()"
        ),
        3
    );
    wait_for("the deletion job at the endpoint", || {
        slow.requests()
            .iter()
            // A DELETE of its objects, or the listing of its unfinished uploads (the prefix
            // URL-encoded in the query).
            .any(|r| r.contains("backup_"))
            .then_some(())
    });
    // Meanwhile more audit events than the queue holds (4,096) are captured and written.
    for _ in 0..6 {
        db.batch_execute(
            "DO $$ BEGIN FOR i IN 1..1000 LOOP GRANT SELECT ON t TO reader; END LOOP; END $$",
        )
        .unwrap();
    }
    wait_for("every GRANT in the audit log", || {
        (count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.security_audit_log WHERE operation_type = 'GRANT'",
        ) >= 6000)
            .then_some(())
    });
    assert!(
        !cluster.server_log().contains("audit queue full"),
        "audit events were dropped"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.backup_history WHERE status = 'deleting'"
        ),
        3,
        "nothing could be deleted through the trickling endpoint"
    );
    // A fast shutdown does not wait for the endpoint (pg_ctl fails past the timeout).
    drop(db);
    cluster.stop_within(Duration::from_secs(40));
}
