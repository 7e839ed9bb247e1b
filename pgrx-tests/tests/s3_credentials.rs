//! S3 credentials from the server's environment, end to end against a server that checks
//! signatures.

use admin_toolkit_it::fixtures::{run_backup, BackupSchedule};
use admin_toolkit_it::s3::S3Server;
use admin_toolkit_it::{Cluster, ClusterOptions, ScratchDir};

/// Credentials from the server's environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), as
/// a service unit sets them, and no credentials file: against a server that checks signatures,
/// the archive module stores WAL and a full backup completes; boto3 finds both in the bucket.
#[test]
fn credentials_from_the_servers_environment_archive_and_back_up() {
    use admin_toolkit_it::s3::{ACCESS_KEY, SECRET_KEY};
    let server = S3Server::start_signing();
    let scratch = ScratchDir::new("admin_toolkit_s3env_");
    // The test's own client creates the bucket; the server never sees this file.
    let credentials = S3Server::write_credentials(&scratch.join("aws-credentials"));
    server.create_bucket(&server.settings(&credentials), "env-backups");
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            "admin_toolkit.collection_interval = 1".into(),
            "archive_mode = on".into(),
            "archive_library = 'admin_toolkit'".into(),
            "admin_toolkit.archive_location = 's3://env-backups/wal/'".into(),
            format!("admin_toolkit.s3_endpoint = '{}'", server.endpoint()),
            "admin_toolkit.s3_region = 'us-east-1'".into(),
            "admin_toolkit.s3_force_path_style = on".into(),
        ],
        environment: vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit; CREATE TABLE t (id int)")
        .unwrap();
    db.batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    let full = BackupSchedule::new("full", "s3://env-backups/base/").insert(&mut db);
    let id = run_backup(&mut db, full);
    let (status, error): (String, Option<String>) = {
        let r = db
            .query_one(
                "SELECT status, error_message FROM admin_toolkit.backup_history WHERE backup_id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "completed", "{error:?}");
    let objects = server.objects("env-backups", "");
    assert!(
        objects
            .iter()
            .any(|k| k.starts_with("base/backup_") && k.contains(&format!("_{id}/"))),
        "{objects:?}"
    );
    assert!(objects.iter().any(|k| k.starts_with("wal/")), "{objects:?}");
    assert!(!cluster.server_log().contains(SECRET_KEY));
}
