//! Restore drills against real clusters: a clean drill of a full + incremental chain records the
//! source's row counts at the target; each fault (too little space, an index corrupted before
//! the backup, a flipped byte in a pack, a deleted manifest, a missing WAL segment) fails the
//! drill with its reason named; a backup taken from another PostgreSQL major is refused before
//! anything is restored; a cancelled drill and a drill whose job died leave no server
//! and no directory behind.

use admin_toolkit_it::fixtures::{run_backup, BackupSchedule};
use admin_toolkit_it::{
    archive_now, count, drill_settings, other_major_bindir, server_major, wait_for,
    wait_for_within, Cluster, ClusterOptions, ScratchDir, PATIENCE,
};
use postgres::{Client, NoTls};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Drilled {
    status: String,
    reason: Option<String>,
    backup_ids: Vec<i64>,
    checks: Value,
    rto: Option<f64>,
    restore_seconds: Option<f64>,
    wal_bytes: Option<f64>,
    rpo: Option<f64>,
}

fn cluster(store: &ScratchDir) -> Cluster {
    let mut options = ClusterOptions::archiving_to(&store.path().join("wal"));
    options
        .settings
        .extend(drill_settings(&store.path().join("drills")));
    let cluster = Cluster::start_with(options);
    cluster
        .connect("postgres")
        .batch_execute("CREATE EXTENSION admin_toolkit")
        .unwrap();
    cluster
}

fn full_backup(db: &mut Client, store: &ScratchDir, kind: &str) -> (i64, PathBuf) {
    let location = store.path().join("backups").display().to_string();
    let schedule = BackupSchedule::new(kind, &location).insert(db);
    let id: i64 = run_backup(db, schedule);
    let r = db
        .query_one(
            "SELECT backup_id, status, backup_path, error_message FROM admin_toolkit.backup_history \
              WHERE backup_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(
        r.get::<_, String>(1),
        "completed",
        "{:?}",
        r.get::<_, Option<String>>(3)
    );
    (r.get(0), PathBuf::from(r.get::<_, String>(2)))
}

fn drill(db: &mut Client, backup: Option<i64>, target: Option<&str>) -> (i64, Drilled) {
    let id: i64 = db
        .query_one(
            "SELECT admin_toolkit.run_restore_drill($1, $2::text::timestamptz, true)",
            &[&backup, &target],
        )
        .unwrap()
        .get(0);
    (id, drilled(db, id))
}

fn drilled(db: &mut Client, id: i64) -> Drilled {
    let r = db
        .query_one(
            "SELECT status, failure_reason, backup_ids, checks::text, rto_seconds::float8, restore_seconds::float8, \
                    wal_bytes_replayed::float8, rpo_seconds::float8 \
               FROM admin_toolkit.restore_drills WHERE drill_id = $1",
            &[&id],
        )
        .unwrap();
    Drilled {
        status: r.get(0),
        reason: r.get(1),
        backup_ids: r.get(2),
        checks: serde_json::from_str(r.get::<_, &str>(3)).unwrap(),
        rto: r.get(4),
        restore_seconds: r.get(5),
        wal_bytes: r.get(6),
        rpo: r.get(7),
    }
}

fn rows_in(checks: &Value, database: &str, table: &str) -> Option<i64> {
    checks["databases"]
        .as_array()?
        .iter()
        .find(|d| d["database"] == database)?["row_counts"][table]
        .as_i64()
}

/// How many B-tree indexes the drill checked in `database`.
fn indexes_in(checks: &Value, database: &str) -> Option<i64> {
    checks["databases"]
        .as_array()?
        .iter()
        .find(|d| d["database"] == database)?["indexes_checked"]
        .as_i64()
}

fn scratch_of(store: &ScratchDir, drill_id: i64) -> PathBuf {
    store.path().join(format!("drills/drill-{drill_id}"))
}

#[test]
fn a_clean_drill_of_a_chain_records_the_rows_at_the_target() {
    let store = ScratchDir::new("admin_toolkit_drill_");
    let cluster = cluster(&store);
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE INDEX t_v ON t (v); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
    )
    .unwrap();
    db.batch_execute("CREATE DATABASE other").unwrap();
    let mut other = cluster.connect("other");
    other
        .batch_execute(
            "CREATE TABLE o (id int PRIMARY KEY); INSERT INTO o SELECT generate_series(1, 50)",
        )
        .unwrap();
    // no backup yet: refused, recorded with the reason
    let (_, none) = drill(&mut db, None, None);
    assert_eq!(none.status, "failed");
    assert!(
        none.reason
            .as_deref()
            .unwrap()
            .contains("no completed backup"),
        "{:?}",
        none.reason
    );

    let (full, _) = full_backup(&mut db, &store, "full");
    db.batch_execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001, 2000) g")
        .unwrap();
    let (incremental, _) = full_backup(&mut db, &store, "incremental");
    db.batch_execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(2001, 2500) g")
        .unwrap();
    let target: String = db
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(50));
    db.batch_execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(2501, 3000) g")
        .unwrap();
    archive_now(&mut db);

    let (id, d) = drill(&mut db, None, Some(&target));
    assert_eq!(d.status, "passed", "{:?}", d.reason);
    assert_eq!(
        d.backup_ids,
        vec![incremental, full],
        "the chain was restored"
    );
    assert_eq!(
        rows_in(&d.checks, "postgres", "public.t"),
        Some(2500),
        "{}",
        d.checks
    );
    assert_eq!(
        rows_in(&d.checks, "other", "public.o"),
        Some(50),
        "{}",
        d.checks
    );
    // Every database holds the same catalog indexes; beyond them, "other" has the one of
    // o's primary key: the difference shows its user index was checked, not just catalogs.
    assert_eq!(
        indexes_in(&d.checks, "other").unwrap() - indexes_in(&d.checks, "template1").unwrap(),
        1,
        "{}",
        d.checks
    );
    let (rto, restore) = (d.rto.unwrap(), d.restore_seconds.unwrap());
    assert!(
        rto >= restore && restore > 0.0,
        "rto {rto}, restore {restore}"
    );
    assert!(d.wal_bytes.unwrap() > 0.0);
    let rpo = d.rpo.unwrap();
    assert!(
        (0.0..5.0).contains(&rpo),
        "rpo {rpo} s: the target minus the last replayed commit"
    );
    assert!(
        !scratch_of(&store, id).exists(),
        "the scratch directory is removed"
    );

    // the end of the archive: every row, as a schedule would drill it
    let (_, d) = drill(&mut db, None, None);
    assert_eq!(d.status, "passed", "{:?}", d.reason);
    assert_eq!(rows_in(&d.checks, "postgres", "public.t"), Some(3000));

    // its metrics: age 0 days, the RTO, not failed; the built-in rules exist
    db.batch_execute("SELECT admin_toolkit.collect_performance_metrics()")
        .unwrap();
    let r = db
        .query_one(
            "SELECT max(metric_value) FILTER (WHERE metric_name = 'restore_drill_age_seconds')::float8, \
                    max(metric_value) FILTER (WHERE metric_name = 'restore_drill_rto_seconds')::float8, \
                    max(metric_value) FILTER (WHERE metric_name = 'restore_drill_failed')::float8 \
               FROM admin_toolkit.performance_metrics \
              WHERE collected_at = (SELECT max(collected_at) FROM admin_toolkit.performance_metrics)",
            &[],
        )
        .unwrap();
    let (age, rto, failed): (Option<f64>, Option<f64>, Option<f64>) =
        (r.get(0), r.get(1), r.get(2));
    assert!(age.unwrap() < 600.0, "{age:?} s");
    assert!(rto.unwrap() > 0.0);
    assert_eq!(failed, Some(0.0));

    // a schedule drills by itself, once due; a role that is not a superuser cannot own one
    // (42501), and one whose owner stopped being a superuser is refused when it runs, with the
    // reason recorded
    db.batch_execute("CREATE ROLE drill_user LOGIN").unwrap();
    let err = db
        .query(
            "INSERT INTO admin_toolkit.restore_drill_schedules (schedule_name, schedule_expression, owner) \
             VALUES ('by a plain role', '0 4 * * *', 'drill_user')",
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{err}");
    db.batch_execute("ALTER ROLE drill_user SUPERUSER").unwrap();
    let schedule: i32 = db
        .query_one(
            "INSERT INTO admin_toolkit.restore_drill_schedules (schedule_name, schedule_expression) \
             VALUES ('nightly', '0 4 * * *') RETURNING schedule_id",
            &[],
        )
        .unwrap()
        .get(0);
    let not_super: i32 = db
        .query_one(
            "INSERT INTO admin_toolkit.restore_drill_schedules (schedule_name, schedule_expression, owner) \
             VALUES ('by a plain role', '0 4 * * *', 'drill_user') RETURNING schedule_id",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute("ALTER ROLE drill_user NOSUPERUSER")
        .unwrap();
    db.execute(
        "UPDATE admin_toolkit.restore_drill_schedules SET next_run = now() WHERE schedule_id IN ($1, $2)",
        &[&schedule, &not_super],
    )
    .unwrap();
    // Started within a second (schedule_check_interval), then the drill itself.
    let scheduled = wait_for_within("the scheduled drill", PATIENCE * 2, || {
        db.query_opt(
            "SELECT drill_id FROM admin_toolkit.restore_drills WHERE schedule_id = $1 AND status <> 'running'",
            &[&schedule],
        )
        .unwrap()
        .map(|row| row.get::<_, i64>(0))
    });
    let d = drilled(&mut db, scheduled);
    assert_eq!(d.status, "passed", "{:?}", d.reason);
    assert_eq!(rows_in(&d.checks, "postgres", "public.t"), Some(3000));
    let next: bool = db
        .query_one(
            "SELECT next_run > now() AND last_run IS NOT NULL FROM admin_toolkit.restore_drill_schedules WHERE schedule_id = $1",
            &[&schedule],
        )
        .unwrap()
        .get(0);
    assert!(next, "the schedule moved on");
    let refused = db
        .query_one(
            "SELECT status, failure_reason, owner::text FROM admin_toolkit.restore_drills WHERE schedule_id = $1",
            &[&not_super],
        )
        .unwrap();
    assert_eq!(refused.get::<_, String>(0), "failed");
    assert!(refused
        .get::<_, String>(1)
        .contains("the drill's owner is not a superuser"));
    assert_eq!(refused.get::<_, String>(2), "drill_user");

    // one at a time, superusers only
    db.batch_execute("GRANT EXECUTE ON FUNCTION admin_toolkit.run_restore_drill(bigint, timestamptz, boolean) TO drill_user")
        .unwrap();
    let mut user = cluster.connect_as("postgres", "drill_user", "").unwrap();
    let err = user
        .query("SELECT admin_toolkit.run_restore_drill()", &[])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{err}");
    let err = db
        .query("SELECT admin_toolkit.run_restore_drill(999999)", &[])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42704", "{err}");
    cluster.assert_no_crash();
}

/// Sets the key of item `item` (an int4 B-tree leaf tuple) on block `block` of a relation file
/// to `value`: the index's order is broken, its page header is intact.
fn corrupt_btree_key(file: &Path, block: usize, item: usize, value: i32) {
    let mut bytes = std::fs::read(file).unwrap();
    let page = block * 8192;
    let lp = page + 24 + 4 * (item - 1);
    let word = u32::from_le_bytes(bytes[lp..lp + 4].try_into().unwrap());
    let offset = (word & 0x7fff) as usize;
    let key = page + offset + 8;
    bytes[key..key + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn each_fault_fails_the_drill_with_its_reason() {
    let store = ScratchDir::new("admin_toolkit_drill_faults_");
    let mut cluster = cluster(&store);
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE TABLE k (id int) WITH (autovacuum_enabled = off); \
         INSERT INTO k SELECT generate_series(1, 100); CREATE INDEX k_id ON k (id); CHECKPOINT",
    )
    .unwrap();
    let index_file: String = db
        .query_one("SELECT pg_relation_filepath('k_id')", &[])
        .unwrap()
        .get(0);

    // too little free space: refused with the figures, before anything is restored
    let (b1, _) = full_backup(&mut db, &store, "full");
    db.batch_execute("ALTER SYSTEM SET admin_toolkit.drill_space_margin = 2000000000")
        .unwrap();
    cluster.reload_until("admin_toolkit.drill_space_margin", Some("2000000000"));
    let (id, d) = drill(&mut db, Some(b1), None);
    assert_eq!(d.status, "failed");
    let why = d.reason.unwrap();
    eprintln!("drill failed as expected: {why}");
    assert!(
        why.contains("not enough free space") && why.contains("MB needed"),
        "{why}"
    );
    assert!(!scratch_of(&store, id).exists());
    db.batch_execute("ALTER SYSTEM RESET admin_toolkit.drill_space_margin")
        .unwrap();
    cluster.reload_until("admin_toolkit.drill_space_margin", None);

    // an index page corrupted in the source before the backup: amcheck names the index
    drop(db);
    let index_path = Path::new(&cluster.data_dir()).join(&index_file);
    let intact_index = std::fs::read(&index_path).unwrap();
    cluster.restart_with(|| corrupt_btree_key(&index_path, 1, 2, i32::MAX));
    let mut db = cluster.connect("postgres");
    let (b2, _) = full_backup(&mut db, &store, "full");
    let (_, d) = drill(&mut db, Some(b2), None);
    assert_eq!(d.status, "failed");
    let why = d.reason.unwrap();
    eprintln!("drill failed as expected: {why}");
    assert!(
        why.contains("amcheck rejected index public.k_id") && why.contains("\"postgres\""),
        "{why}"
    );
    assert!(d.checks["indexes_checked"].as_u64().unwrap() > 1);
    // The index put back: on clusters with data checksums (initdb's default from PostgreSQL
    // 18) the source itself would refuse the page when the next fault inserts a row.
    drop(db);
    cluster.restart_with(|| std::fs::write(&index_path, &intact_index).unwrap());
    let mut db = cluster.connect("postgres");

    // a flipped byte in a pack chunk
    let (b3, path) = full_backup(&mut db, &store, "full");
    let pack = path.join("data.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();
    let (_, d) = drill(&mut db, Some(b3), None);
    assert_eq!(d.status, "failed");
    let why = d.reason.unwrap();
    eprintln!("drill failed as expected: {why}");
    assert!(
        why.contains(&format!("restoring backup {b3} failed")) && why.contains("damaged"),
        "{why}"
    );

    // a deleted manifest
    let (b4, path) = full_backup(&mut db, &store, "full");
    std::fs::remove_file(path.join("backup.manifest")).unwrap();
    let (_, d) = drill(&mut db, Some(b4), None);
    assert_eq!(d.status, "failed");
    let why = d.reason.unwrap();
    eprintln!("drill failed as expected: {why}");
    assert!(
        why.contains(&format!("backup {b4} cannot be read")) && why.contains("manifest"),
        "{why}"
    );

    // a missing WAL segment: the one the backup starts in
    let (b5, _) = full_backup(&mut db, &store, "full");
    db.batch_execute("INSERT INTO k VALUES (101)").unwrap();
    archive_now(&mut db);
    let segment: String = db
        .query_one(
            "SELECT pg_walfile_name(start_lsn) FROM admin_toolkit.backup_history WHERE backup_id = $1",
            &[&b5],
        )
        .unwrap()
        .get(0);
    std::fs::remove_file(store.path().join(format!("wal/{segment}.zst"))).unwrap();
    let (_, d) = drill(&mut db, Some(b5), None);
    assert_eq!(d.status, "failed");
    let why = d.reason.unwrap();
    eprintln!("drill failed as expected: {why}");
    assert!(
        why.contains(&format!("WAL segment {segment} is missing")),
        "{why}"
    );
    assert!(
        std::fs::read_dir(store.path().join("drills"))
            .unwrap()
            .next()
            .is_none(),
        "no drill left a directory"
    );
    // the built-in alert rule fires on the failed drill
    db.batch_execute(
        "SELECT admin_toolkit.collect_performance_metrics(); SELECT admin_toolkit.process_alerts()",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM admin_toolkit.alert_events e JOIN admin_toolkit.alert_rules r USING (rule_id) \
              WHERE r.rule_name = 'Restore drill failed' AND e.resolved_at IS NULL"
        ),
        1
    );
}

fn alive(pid: i32) -> bool {
    // A zombie (state Z) has exited; it only waits for its parent to read its status.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.split_whitespace()
                .nth(2)
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Starts a drill that stays in recovery (the source's recovery_min_apply_delay holds back the
/// commits after the backup) and returns its id, job pid and throwaway server pid.
fn drill_in_recovery(db: &mut Client, store: &ScratchDir) -> (i64, i32, i32) {
    let id: i64 = db
        .query_one("SELECT admin_toolkit.run_restore_drill()", &[])
        .unwrap()
        .get(0);
    let pid_file = scratch_of(store, id).join("data/postmaster.pid");
    let server: i32 = wait_for("the drill's server", || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
    });
    let job: i32 = db
        .query_one(
            "SELECT pid FROM admin_toolkit.restore_drills WHERE drill_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(drilled(db, id).status, "running");
    assert!(alive(server));
    // It listens on no TCP address, only on a socket in its own scratch directory.
    let lines: Vec<String> = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines[5], "", "listen address of the throwaway server");
    assert!(
        Path::new(&lines[4]).starts_with(scratch_of(store, id)),
        "socket directory {}",
        lines[4]
    );
    // One drill at a time.
    let err = db
        .query("SELECT admin_toolkit.run_restore_drill()", &[])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "55000", "{err}");
    (id, job, server)
}

#[test]
fn cancelled_or_dead_drills_leave_no_server_and_no_directory() {
    let store = ScratchDir::new("admin_toolkit_drill_cancel_");
    let mut cluster = cluster(&store);
    let mut db = cluster.connect("postgres");
    db.batch_execute("ALTER SYSTEM SET recovery_min_apply_delay = '1h'")
        .unwrap();
    cluster.reload_until("recovery_min_apply_delay", Some("3600000"));
    db.batch_execute("CREATE TABLE t (id int)").unwrap();
    full_backup(&mut db, &store, "full");
    db.batch_execute("INSERT INTO t VALUES (1)").unwrap();
    archive_now(&mut db);

    // pg_cancel_backend of the job: cancelled, its server stopped, its directory removed
    let (id, job, server) = drill_in_recovery(&mut db, &store);
    let started = Instant::now();
    db.execute("SELECT pg_cancel_backend($1)", &[&job]).unwrap();
    wait_for("the cancelled drill", || {
        (drilled(&mut db, id).status != "running").then_some(())
    });
    let d = drilled(&mut db, id);
    assert_eq!(d.status, "cancelled", "{:?}", d.reason);
    assert!(!alive(server), "the throwaway server is stopped");
    assert!(!scratch_of(&store, id).exists(), "its directory is removed");
    assert!(started.elapsed() < PATIENCE);

    // the job killed outright (the server restarts every process): the worker marks the drill
    // failed, stops the server it left and removes its directory
    let (id, job, server) = drill_in_recovery(&mut db, &store);
    // SAFETY: a plain signal to a process of the test cluster.
    assert_eq!(unsafe { libc::kill(job, libc::SIGKILL) }, 0);
    drop(db);
    wait_for("the worker's upkeep of the dead drill", || {
        // The postmaster ends every session while it recovers from the killed job: a session
        // opened just before that is closed under the query, which is then tried again.
        let mut db = Client::connect(&cluster.conninfo("postgres"), NoTls).ok()?;
        let status: String = db
            .query_one(
                "SELECT status FROM admin_toolkit.restore_drills WHERE drill_id = $1",
                &[&id],
            )
            .ok()?
            .get(0);
        (status == "failed" && !alive(server) && !scratch_of(&store, id).exists()).then_some(())
    });
    let mut db = cluster.connect("postgres");
    let d = drilled(&mut db, id);
    assert!(d.reason.unwrap().contains("interrupted"));
    assert!(cluster
        .server_log()
        .contains(&format!("stopped the restored server left by drill {id}")));
    cluster.restart();
}

/// A drill starts the restored copy with this server's programs, which start only a data
/// directory of their own major: a backup taken from another major (here by that major's
/// server, with admin_toolkit installed for it) is refused with the reason, before anything is
/// restored.
#[test]
fn a_backup_of_another_major_is_refused_before_anything_is_restored() {
    let store = ScratchDir::new("admin_toolkit_drill_major_");
    let (other_bindir, other_major) = other_major_bindir();
    let (backup_id, row) = {
        let other = Cluster::start_on(
            &other_bindir,
            ClusterOptions::archiving_to(&store.path().join("other_wal")),
        );
        let mut db = other.connect("postgres");
        db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
        let built_for: String = db
            .query_one("SELECT built_for FROM admin_toolkit.build_info()", &[])
            .unwrap()
            .get(0);
        assert!(
            built_for.starts_with(&format!("PostgreSQL {other_major}.")),
            "{built_for}"
        );
        let (id, _) = full_backup(&mut db, &store, "full");
        let row: String = db
            .query_one(
                "SELECT row_to_json(h)::text FROM admin_toolkit.backup_history h WHERE backup_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        (id, row)
    };
    // This major's server, its catalog naming that backup as it was recorded.
    let cluster = cluster(&store);
    let mut db = cluster.connect("postgres");
    let location = store.path().join("backups").display().to_string();
    let schedule = BackupSchedule::new("full", &location).insert(&mut db);
    db.execute(
        "INSERT INTO admin_toolkit.backup_history OVERRIDING SYSTEM VALUE \
         SELECT * FROM jsonb_populate_record(NULL::admin_toolkit.backup_history, \
                                             jsonb_set($1::text::jsonb, '{schedule_id}', to_jsonb($2::int)))",
        &[&row, &schedule],
    )
    .unwrap();
    let (drill_id, d) = drill(&mut db, Some(backup_id), None);
    assert_eq!(d.status, "failed");
    let why = d.reason.unwrap();
    eprintln!("drill failed as expected: {why}");
    assert!(
        why.contains(&format!(
            "backup {backup_id} was taken from PostgreSQL {other_major} and this server is PostgreSQL {}",
            server_major()
        )),
        "{why}"
    );
    // Refused from the manifest, before restoring (the restored PG_VERSION would say the same
    // after): the drill never got as far as naming the backups it restores.
    assert!(d.backup_ids.is_empty(), "{:?}", d.backup_ids);
    assert!(!scratch_of(&store, drill_id).exists());
    cluster.assert_no_crash();
}
