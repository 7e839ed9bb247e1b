//! Helpers of the security tests: a cluster with password authentication, the audit log, and
//! the check that no secret reached a log.

use crate::{count, wait_for, Cluster, ClusterOptions};
use postgres::Client;

/// Waits until at least `at_least` rows of the audit log satisfy `condition`.
pub fn wait_for_audit(db: &mut Client, condition: &str, at_least: i64) {
    wait_for(&format!("{at_least} audit rows where {condition}"), || {
        (audit_count(db, condition) >= at_least).then_some(())
    });
}

/// A preloaded cluster with scram-sha-256 on 127.0.0.1, every statement logged (so tests can
/// grep the log for secrets), 1 s collection and read-summary intervals, `extra` settings, and
/// the extension created.
pub fn secure_cluster(extra: &[&str]) -> Cluster {
    let mut settings = vec![
        "admin_toolkit.collection_interval = 1".to_string(),
        "admin_toolkit.audit_read_interval = 1".to_string(),
        "log_statement = 'all'".to_string(),
    ];
    settings.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(ClusterOptions {
        settings,
        scram: true,
        ..ClusterOptions::default()
    });
    cluster
        .connect("postgres")
        .batch_execute("CREATE EXTENSION admin_toolkit")
        .unwrap();
    cluster
}

/// Rows of the audit log where `condition` holds.
pub fn audit_count(client: &mut Client, condition: &str) -> i64 {
    count(
        client,
        &format!("SELECT count(*) FROM admin_toolkit.security_audit_log WHERE {condition}"),
    )
}

/// Fails the test if any of `secrets` is in the audit log's text columns or the server log.
/// Checked here in Rust: a query naming the secrets would itself put them in the server log.
pub fn assert_secrets_nowhere(cluster: &Cluster, db: &mut Client, secrets: &[&str]) {
    let stored: Vec<String> = db
        .query(
            "SELECT concat_ws(' ', query_text, error_message, additional_info::text) FROM admin_toolkit.security_audit_log",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let log = cluster.server_log();
    for secret in secrets {
        assert!(
            !stored.iter().any(|s| s.contains(secret)),
            "{secret} reached the audit log"
        );
        assert!(!log.contains(secret), "{secret} reached the server log");
    }
}
