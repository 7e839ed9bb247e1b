//! On a hot standby the worker runs but writes nothing; after promotion it resumes.

use admin_toolkit_it::{wait_for, Cluster};

#[test]
fn standby_makes_no_writes_and_resumes_after_promotion() {
    let primary = Cluster::start();
    let mut db = primary.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();

    // Passes logged: the worker's standby ticks are waited for, not slept through.
    let standby = Cluster::standby_of(&primary, &["log_min_messages = debug1".into()]);
    let mut replica = standby.connect("postgres");
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);

    wait_for("worker on the standby", || {
        replica
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'admin_toolkit worker'",
                &[],
            )
            .unwrap()
            .map(|r| r.get::<_, i32>(0))
    });
    wait_for("standby notice in the log", || {
        standby
            .server_log()
            .contains("hot standby; making no writes")
            .then_some(())
    });
    // Three more ticks: still no errors (a write on a standby would raise one).
    standby.wait_for_passes("admin_toolkit worker: still a hot standby", 3);
    let log = standby.server_log();
    assert_eq!(
        log.matches("hot standby; making no writes").count(),
        1,
        "{log}"
    );
    assert!(standby.our_failures().is_empty(), "{log}");

    replica.batch_execute("SELECT pg_promote()").unwrap();
    wait_for("worker resumes after promotion", || {
        standby
            .server_log()
            .contains("server promoted; resuming work")
            .then_some(())
    });
    let failures = standby.our_failures();
    assert!(failures.is_empty(), "{failures:?}");
}
