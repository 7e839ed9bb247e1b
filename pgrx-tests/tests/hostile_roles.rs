//! Ordinary roles cannot steer the toolkit's superuser code. Each test plants functions and
//! operators that would, if they ran with more rights than their owner's, make their owner a
//! superuser and write a marker file with `COPY … TO PROGRAM` (which only a superuser may
//! run); it then drives a toolkit path through them and checks that neither happened and that
//! the toolkit still did its work. The roads: a caller's search_path into track_config_change,
//! a database's search_path into the facts job, a schedule owner's role settings into a job's
//! bookkeeping, and a restored catalog into a restore drill.

use admin_toolkit_it::{
    archive_now, drill_settings, wait_for, Cluster, ClusterOptions, ScratchDir,
};
use postgres::Client;
use std::path::{Path, PathBuf};

/// SQL planting, in `schema`, a function `pwn()` that makes `escalate` a superuser and touches
/// `marker`, and the look-alikes that call it: `=` and `<>` on "char", text, name and oid,
/// `>=` on oid, and current_database(), current_setting(text, boolean), age(xid), now() and
/// format(text, regclass). Each look-alike then does what the catalog's would.
fn plant_sql(schema: &str, escalate: &str, marker: &Path) -> String {
    let mut sql = format!(
        r#"CREATE FUNCTION {schema}.pwn() RETURNS void LANGUAGE plpgsql AS $p$
BEGIN
    IF pg_catalog.current_user() OPERATOR(pg_catalog.<>) '{escalate}' THEN
        RAISE LOG 'admin_toolkit test: planted code ran as %', pg_catalog.current_user();
    END IF;
    BEGIN EXECUTE 'ALTER ROLE {escalate} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; EXCEPTION WHEN OTHERS THEN NULL; END;
END $p$;
CREATE FUNCTION {schema}.current_database() RETURNS name LANGUAGE plpgsql AS $p$
BEGIN PERFORM {schema}.pwn(); RETURN pg_catalog.current_database(); END $p$;
CREATE FUNCTION {schema}.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS $p$
BEGIN PERFORM {schema}.pwn(); RETURN pg_catalog.current_setting($1, $2); END $p$;
CREATE FUNCTION {schema}.age(xid) RETURNS integer LANGUAGE plpgsql AS $p$
BEGIN PERFORM {schema}.pwn(); RETURN pg_catalog.age($1); END $p$;
CREATE FUNCTION {schema}.now() RETURNS timestamptz LANGUAGE plpgsql AS $p$
BEGIN PERFORM {schema}.pwn(); RETURN pg_catalog.now(); END $p$;
CREATE FUNCTION {schema}.format(text, regclass) RETURNS text LANGUAGE plpgsql AS $p$
BEGIN PERFORM {schema}.pwn(); RETURN pg_catalog.format($1, $2::text); END $p$;
"#,
        marker = marker.display()
    );
    for (i, (op, ty)) in [
        ("=", "\"char\""),
        ("<>", "\"char\""),
        ("=", "text"),
        ("<>", "text"),
        ("=", "name"),
        ("=", "oid"),
        ("<>", "oid"),
        (">=", "oid"),
    ]
    .iter()
    .enumerate()
    {
        sql.push_str(&format!(
            "CREATE FUNCTION {schema}.op{i}({ty}, {ty}) RETURNS boolean LANGUAGE plpgsql AS $p$ \
             BEGIN PERFORM {schema}.pwn(); RETURN $1 OPERATOR(pg_catalog.{op}) $2; END $p$;\n\
             CREATE OPERATOR {schema}.{op} (LEFTARG = {ty}, RIGHTARG = {ty}, FUNCTION = {schema}.op{i});\n"
        ));
    }
    sql
}

fn is_superuser(db: &mut Client, role: &str) -> bool {
    db.query_one(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1",
        &[&role],
    )
    .unwrap()
    .get(0)
}

/// The trap works, so that its silence later means something: called by its owner it does
/// nothing; called by a superuser (`superuser`, in the same database) it writes the marker
/// and logs, and the test then puts everything back.
fn trap_works(
    client: &mut Client,
    superuser: &mut Client,
    schema: &str,
    marker: &Path,
    role: &str,
) {
    client
        .batch_execute(&format!("SELECT {schema}.pwn()"))
        .unwrap();
    assert!(!marker.exists(), "only a superuser can write the marker");
    superuser
        .batch_execute(&format!("SELECT {schema}.pwn()"))
        .unwrap();
    assert!(marker.exists(), "the trap fires with a superuser's rights");
    std::fs::remove_file(marker).unwrap();
    superuser
        .batch_execute(&format!("ALTER ROLE {role} NOSUPERUSER"))
        .unwrap();
}

/// How many times planted code ran as anyone but its owner (its log lines).
fn planted_runs(cluster: &Cluster) -> usize {
    cluster
        .server_log()
        .matches("admin_toolkit test: planted code ran as")
        .count()
}

struct Markers {
    dir: ScratchDir,
}

impl Markers {
    fn new() -> Markers {
        Markers {
            dir: ScratchDir::new("admin_toolkit_hostile_"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn a_planted_operator_never_runs_with_track_config_changes_rights() {
    let markers = Markers::new();
    let marker = markers.path("config");
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; \
         CREATE ROLE mallory LOGIN; \
         CREATE SCHEMA s AUTHORIZATION mallory; \
         GRANT EXECUTE ON FUNCTION admin_toolkit.track_config_change(text, text, text) TO mallory; \
         GRANT ALTER SYSTEM ON PARAMETER work_mem TO mallory; \
         ALTER ROLE mallory SET search_path = s, pg_catalog",
    )
    .unwrap();
    let mut mallory = cluster.connect_as("postgres", "mallory", "").unwrap();
    mallory
        .batch_execute(&plant_sql("s", "mallory", &marker))
        .unwrap();
    trap_works(&mut mallory, &mut db, "s", &marker, "mallory");
    let runs = planted_runs(&cluster);
    // Her session's path and her role's (which the job connecting as her gets) put s first.
    mallory
        .batch_execute("SET search_path = s, pg_catalog")
        .unwrap();
    let id: i64 = mallory
        .query_one(
            "SELECT admin_toolkit.track_config_change('work_mem', '8MB', 'x')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!marker.exists(), "a planted operator ran as superuser");
    assert_eq!(
        planted_runs(&cluster),
        runs,
        "planted code ran with other rights"
    );
    assert!(!is_superuser(&mut db, "mallory"));
    // The toolkit did its work: applied, recorded.
    let row = db
        .query_one(
            "SELECT parameter_name, new_value, changed_by FROM admin_toolkit.configuration_history WHERE config_id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "work_mem");
    assert_eq!(row.get::<_, String>(1), "8MB");
    assert_eq!(row.get::<_, String>(2), "mallory");
    let auto = std::fs::read_to_string(Path::new(&cluster.data_dir()).join("postgresql.auto.conf"))
        .unwrap();
    assert!(auto.contains("work_mem = '8MB'"), "{auto}");
    // An unknown parameter is still 42704, without SQL that her path could reach.
    let err = mallory
        .query(
            "SELECT admin_toolkit.track_config_change('no_such_parameter', '1')",
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42704", "{err}");
    assert!(!marker.exists());
}

#[test]
fn a_createdb_roles_database_settings_never_steer_the_facts_job() {
    let markers = Markers::new();
    let marker = markers.path("facts");
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            "admin_toolkit.collection_interval = 1".into(),
            "admin_toolkit.database_facts_interval = 1".into(),
        ],
        ..ClusterOptions::default()
    });
    let mut db = cluster.connect("postgres");
    db.batch_execute("CREATE EXTENSION admin_toolkit; CREATE ROLE creator LOGIN CREATEDB")
        .unwrap();
    let mut creator = cluster.connect_as("postgres", "creator", "").unwrap();
    creator.batch_execute("CREATE DATABASE hostile").unwrap();
    let mut hostile = cluster.connect_as("hostile", "creator", "").unwrap();
    hostile
        .batch_execute(&format!(
            "CREATE SCHEMA evil; {} \
             CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 100); \
             CREATE SEQUENCE public.locked_seq; SELECT nextval('public.locked_seq'); \
             ALTER DATABASE hostile SET search_path = evil, pg_catalog",
            plant_sql("evil", "creator", &marker)
        ))
        .unwrap();
    let mut hostile_su = cluster.connect("hostile");
    trap_works(&mut hostile, &mut hostile_su, "evil", &marker, "creator");
    drop(hostile_su);
    let runs = planted_runs(&cluster);
    // A sequence locked by someone else (ALTER SEQUENCE holds ShareRowExclusiveLock to the
    // end of its transaction): the facts job skips it rather than wait.
    let mut locker = cluster.connect_as("hostile", "creator", "").unwrap();
    locker
        .batch_execute("BEGIN; ALTER SEQUENCE public.locked_seq INCREMENT BY 2")
        .unwrap();
    let since: std::time::SystemTime = db.query_one("SELECT now()", &[]).unwrap().get(0);
    let tables: i64 = wait_for("the facts of the hostile database", || {
        db.query_opt(
            "SELECT (SELECT count(*) FROM admin_toolkit.database_table_facts t WHERE t.database = f.database) \
               FROM admin_toolkit.database_facts f WHERE f.database = 'hostile' AND f.collected_at > $1",
            &[&since],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    assert!(tables >= 1, "the facts of hostile name its table");
    locker.batch_execute("ROLLBACK").unwrap();
    assert!(!marker.exists(), "a planted operator ran as superuser");
    assert_eq!(
        planted_runs(&cluster),
        runs,
        "planted code ran as pg_monitor or superuser"
    );
    assert!(!is_superuser(&mut db, "creator"));
    assert!(!cluster.server_log().contains("collecting facts failed"));
}

#[test]
fn a_schedule_owners_role_settings_never_reach_the_jobs_bookkeeping() {
    let markers = Markers::new();
    let marker = markers.path("bookkeeping");
    let cluster = Cluster::start();
    let mut db = cluster.connect("postgres");
    db.batch_execute(
        "CREATE EXTENSION admin_toolkit; \
         CREATE ROLE owner1 LOGIN; CREATE SCHEMA mine AUTHORIZATION owner1; \
         CREATE TABLE public.owned (id int); ALTER TABLE public.owned OWNER TO owner1; \
         GRANT SELECT, INSERT ON admin_toolkit.maintenance_schedules TO owner1; \
         GRANT SELECT ON admin_toolkit.maintenance_runs TO owner1; \
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA admin_toolkit TO owner1; \
         GRANT EXECUTE ON FUNCTION admin_toolkit.execute_maintenance(integer) TO owner1; \
         CREATE ROLE drill_owner LOGIN SUPERUSER; CREATE SCHEMA drills AUTHORIZATION drill_owner",
    )
    .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner1", "").unwrap();
    owner
        .batch_execute(&plant_sql("mine", "owner1", &marker))
        .unwrap();
    trap_works(&mut owner, &mut db, "mine", &marker, "owner1");
    let runs = planted_runs(&cluster);
    owner
        .batch_execute("ALTER ROLE owner1 SET search_path = mine, pg_catalog")
        .unwrap();
    let schedule: i32 = owner
        .query_one(
            "INSERT INTO admin_toolkit.maintenance_schedules (maintenance_type, target_schema, target_table, schedule_expression) \
             VALUES ('vacuum', 'public', 'owned', '0 3 * * *') RETURNING schedule_id",
            &[],
        )
        .unwrap()
        .get(0);
    let mut owner = cluster.connect_as("postgres", "owner1", "").unwrap();
    let status: String = owner
        .query_one(
            "SELECT status FROM admin_toolkit.execute_maintenance($1)",
            &[&schedule],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "success");
    assert!(!marker.exists(), "a planted function ran as superuser");
    assert_eq!(
        planted_runs(&cluster),
        runs,
        "planted code ran with other rights"
    );
    assert!(!is_superuser(&mut db, "owner1"));

    // A drill schedule's owner, demoted after writing it, plants the same: the drill job's
    // bookkeeping reaches the refusal without running any of it.
    let drill_marker = markers.path("drill_bookkeeping");
    let mut drill_owner = cluster.connect_as("postgres", "drill_owner", "").unwrap();
    drill_owner
        .batch_execute(&plant_sql("drills", "drill_owner", &drill_marker))
        .unwrap();
    let drill_schedule: i32 = drill_owner
        .query_one(
            "INSERT INTO admin_toolkit.restore_drill_schedules (schedule_name, schedule_expression) \
             VALUES ('nightly', '0 4 * * *') RETURNING schedule_id",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute(
        "ALTER ROLE drill_owner NOSUPERUSER; ALTER ROLE drill_owner SET search_path = drills, pg_catalog",
    )
    .unwrap();
    db.execute(
        "UPDATE admin_toolkit.restore_drill_schedules SET next_run = now() WHERE schedule_id = $1",
        &[&drill_schedule],
    )
    .unwrap();
    let reason: String = wait_for("the refused drill", || {
        db.query_opt(
            "SELECT failure_reason FROM admin_toolkit.restore_drills WHERE schedule_id = $1 AND status = 'failed'",
            &[&drill_schedule],
        )
        .unwrap()
        .map(|r| r.get(0))
    });
    assert!(reason.contains("not a superuser"), "{reason}");
    assert!(
        !drill_marker.exists(),
        "a planted function ran as superuser"
    );
    assert!(!is_superuser(&mut db, "drill_owner"));
}

#[test]
fn a_hostile_restored_catalog_never_steers_a_drill_and_cannot_fail_it() {
    let store = ScratchDir::new("admin_toolkit_hostile_drill_");
    let markers = Markers::new();
    let marker = markers.path("drill");
    let pid_file = markers.path("drill.pid");
    let mut options = ClusterOptions::archiving_to(&store.path().join("wal"));
    options
        .settings
        .extend(drill_settings(&store.path().join("drills")));
    let cluster = Cluster::start_with(options);
    let mut db = cluster.connect("postgres");
    // dbo owns database app and plants in its public schema (the drill's superuser sessions
    // would find public.format(text, regclass) first by overload resolution); an event
    // trigger fires on every DDL there; settings of the database and of the server's
    // auto.conf that a restored copy carries.
    db.batch_execute("CREATE EXTENSION admin_toolkit; CREATE ROLE dbo LOGIN")
        .unwrap();
    db.batch_execute("CREATE DATABASE app OWNER dbo").unwrap();
    db.batch_execute(&format!(
        "ALTER SYSTEM SET external_pid_file = '{}'",
        pid_file.display()
    ))
    .unwrap();
    let mut app_su = cluster.connect("app");
    app_su
        .batch_execute(&format!(
            "CREATE FUNCTION public.drill_event() RETURNS event_trigger LANGUAGE plpgsql AS $p$ \
             BEGIN \
                 IF pg_catalog.current_setting('cluster_name') LIKE 'admin_toolkit drill%' THEN \
                     COPY (SELECT 1) TO PROGRAM 'touch {}'; \
                 END IF; \
             END $p$; \
             CREATE EVENT TRIGGER drill_event ON ddl_command_end EXECUTE FUNCTION public.drill_event(); \
             ALTER EVENT TRIGGER drill_event ENABLE ALWAYS",
            markers.path("event_trigger").display()
        ))
        .unwrap();
    let mut app = cluster.connect_as("app", "dbo", "").unwrap();
    app.batch_execute(&format!(
        "{} \
         CREATE TABLE public.orders (id int PRIMARY KEY, v text); \
         INSERT INTO public.orders SELECT g, g::text FROM generate_series(1, 500) g; \
         CREATE MATERIALIZED VIEW public.later AS SELECT id FROM public.orders WITH NO DATA; \
         CREATE FUNCTION public.plus(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS \
             $p$ BEGIN PERFORM public.pwn(); RETURN $1 + 1; END $p$; \
         CREATE INDEX orders_planted ON public.orders ((id + public.plus(1))); \
         CREATE TABLE public.parted (id int PRIMARY KEY) PARTITION BY RANGE (id); \
         CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (1000); \
         INSERT INTO public.parted SELECT generate_series(1, 10); \
         ALTER DATABASE app SET search_path = public, pg_catalog; \
         ALTER DATABASE app SET default_transaction_read_only = on; \
         REVOKE CONNECT ON DATABASE app FROM PUBLIC",
        plant_sql("public", "dbo", &marker)
    ))
    .unwrap();
    trap_works(&mut app, &mut app_su, "public", &marker, "dbo");
    let location = store.path().join("backups").display().to_string();
    let schedule: i32 = db
        .query_one(
            "INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location, compression_level) \
             VALUES ('full', '0 3 * * *', 7, $1, 1) RETURNING schedule_id",
            &[&location],
        )
        .unwrap()
        .get(0);
    let backup: i64 = db
        .query_one(
            "SELECT admin_toolkit.execute_backup($1, true)",
            &[&schedule],
        )
        .unwrap()
        .get(0);
    archive_now(&mut db);
    let drill: i64 = db
        .query_one(
            "SELECT admin_toolkit.run_restore_drill($1, NULL, true)",
            &[&backup],
        )
        .unwrap()
        .get(0);
    let row = db
        .query_one(
            "SELECT status, failure_reason, checks::text FROM admin_toolkit.restore_drills WHERE drill_id = $1",
            &[&drill],
        )
        .unwrap();
    let (status, reason, checks): (String, Option<String>, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(status, "passed", "{reason:?} {checks}");
    let checks: serde_json::Value = serde_json::from_str(&checks).unwrap();
    let app_checks = checks["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["database"] == "app")
        .unwrap_or_else(|| panic!("app was checked: {checks}"));
    assert_eq!(
        app_checks["row_counts"]["public.orders"], 500,
        "{app_checks}"
    );
    assert!(
        app_checks["skipped"]["public.later"]
            .as_str()
            .unwrap()
            .contains("not populated"),
        "{app_checks}"
    );
    assert!(app_checks["indexes_checked"].as_u64().unwrap() >= 1);
    assert_eq!(
        app_checks["row_counts"]["public.parted_1"], 10,
        "{app_checks}"
    );
    // Nothing ran with the drill's rights, nothing was written outside its directory.
    assert!(
        !marker.exists(),
        "a planted function ran as the drill's superuser"
    );
    assert!(
        !markers.path("event_trigger").exists(),
        "a restored event trigger fired in the drill"
    );
    assert!(
        !pid_file.exists(),
        "the restored external_pid_file was written"
    );
    assert!(!store.path().join(format!("drills/drill-{drill}")).exists());
}
