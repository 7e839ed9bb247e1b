-- Runs last in the extension script, after every function exists.

-- ---------------------------------------------------------------------------------------
-- Monitoring views: the specification's columns, built on OIDs (relid / indexrelid) so that
-- mixed-case names, spaces and quotes work, and on the column names PostgreSQL really has.
-- ---------------------------------------------------------------------------------------

-- pg_stat_statements may be installed in any schema, later than this extension, or not at
-- all: the view reads it through a function that finds it, or says clearly what is missing.
CREATE FUNCTION slow_query_stats()
RETURNS TABLE (query text, calls bigint, total_exec_time double precision,
               mean_exec_time double precision, "rows" bigint, hit_percent numeric,
               time_percent numeric)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    statements_schema name;
BEGIN
    SELECT n.nspname INTO statements_schema
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_stat_statements';
    IF statements_schema IS NULL THEN
        RAISE EXCEPTION 'slow_queries needs the pg_stat_statements extension, which is not installed in this database'
            USING ERRCODE = '55000',
                  HINT = 'Add pg_stat_statements to shared_preload_libraries, restart, then run CREATE EXTENSION pg_stat_statements.';
    END IF;
    IF current_setting('pg_stat_statements.max', true) IS NULL THEN
        RAISE EXCEPTION 'slow_queries needs pg_stat_statements loaded through shared_preload_libraries'
            USING ERRCODE = '55000',
                  HINT = 'Add pg_stat_statements to shared_preload_libraries and restart the server.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT s.query, s.calls, s.total_exec_time, s.mean_exec_time, s.rows,
                100.0 * s.shared_blks_hit / nullif(s.shared_blks_hit + s.shared_blks_read, 0),
                (100.0 * s.total_exec_time / nullif(sum(s.total_exec_time) OVER (), 0))::numeric
           FROM %I.pg_stat_statements s
          ORDER BY s.total_exec_time DESC', statements_schema);
END
$$;

CREATE VIEW slow_queries AS
SELECT query, calls, total_exec_time, mean_exec_time, "rows", hit_percent, time_percent
  FROM @extschema@.slow_query_stats()
 ORDER BY total_exec_time DESC;

CREATE VIEW table_bloat_analysis AS
WITH table_stats AS (
    SELECT s.schemaname, s.relname AS tablename, s.n_live_tup, s.n_dead_tup,
           pg_catalog.pg_total_relation_size(s.relid) AS total_size,
           s.last_vacuum, s.last_autovacuum
      FROM pg_catalog.pg_stat_user_tables s
)
SELECT schemaname, tablename, n_live_tup, n_dead_tup,
       round(100.0 * n_dead_tup / nullif(n_live_tup + n_dead_tup, 0), 2) AS dead_tuple_percent,
       pg_catalog.pg_size_pretty(total_size) AS size_pretty,
       total_size, last_vacuum, last_autovacuum,
       CASE
           WHEN n_dead_tup::float8 / nullif(n_live_tup + n_dead_tup, 0) > 0.2 THEN 'HIGH'
           WHEN n_dead_tup::float8 / nullif(n_live_tup + n_dead_tup, 0) > 0.1 THEN 'MEDIUM'
           ELSE 'LOW'
       END AS bloat_level
  FROM table_stats
 WHERE n_live_tup + n_dead_tup > 0
 ORDER BY dead_tuple_percent DESC;

CREATE VIEW index_usage_analysis AS
SELECT s.schemaname, s.relname AS tablename, s.indexrelname AS indexname,
       s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,
       pg_catalog.pg_size_pretty(pg_catalog.pg_relation_size(s.indexrelid)) AS index_size,
       pg_catalog.pg_relation_size(s.indexrelid) AS size_bytes,
       CASE
           WHEN s.idx_scan = 0 THEN 'UNUSED'
           WHEN s.idx_scan < 100 THEN 'LOW_USAGE'
           WHEN s.idx_scan < 1000 THEN 'MEDIUM_USAGE'
           ELSE 'HIGH_USAGE'
       END AS usage_category
  FROM pg_catalog.pg_stat_user_indexes s
 ORDER BY pg_catalog.pg_relation_size(s.indexrelid) DESC;

CREATE VIEW connection_analysis AS
SELECT datname, usename, application_name, client_addr, state,
       count(*) AS connection_count,
       avg(extract(epoch FROM now() - backend_start)) AS avg_connection_age_seconds,
       max(extract(epoch FROM now() - backend_start)) AS max_connection_age_seconds,
       count(*) FILTER (WHERE state = 'active') AS active_connections,
       count(*) FILTER (WHERE state = 'idle') AS idle_connections,
       count(*) FILTER (WHERE state = 'idle in transaction') AS idle_in_transaction
  FROM pg_catalog.pg_stat_activity
 WHERE pid <> pg_catalog.pg_backend_pid()
 GROUP BY datname, usename, application_name, client_addr, state
 ORDER BY connection_count DESC;

-- ---------------------------------------------------------------------------------------
-- Schedules: an invalid cron expression is refused at insert (22023, naming the field), and
-- next_run is computed from it.
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION schedule_next_run() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.schedule_expression IS DISTINCT FROM OLD.schedule_expression
       OR (NEW.is_active AND NOT OLD.is_active) OR NEW.next_run IS NULL THEN
        NEW.next_run := @extschema@.cron_next_run(NEW.schedule_expression, now());
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER maintenance_schedules_next_run BEFORE INSERT OR UPDATE ON maintenance_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_next_run();
CREATE TRIGGER backup_schedules_next_run BEFORE INSERT OR UPDATE ON backup_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_next_run();
-- Restore drill schedules (0.3.0): the same cron handling, and an owner that exists.
CREATE TRIGGER restore_drill_schedules_next_run BEFORE INSERT OR UPDATE ON restore_drill_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_next_run();
CREATE TRIGGER restore_drill_schedules_owner_check BEFORE INSERT OR UPDATE ON restore_drill_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_owner_check();

-- ---------------------------------------------------------------------------------------
-- Point-in-time recovery: the specification's plan_recovery and variants for an LSN and a named
-- restore point, all on one engine (recovery_plan) that reads the real archive.
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION plan_recovery(target_time timestamptz)
RETURNS TABLE (base_backup_id bigint, base_backup_path text, base_backup_time timestamptz,
               wal_files_needed text[], estimated_recovery_time interval)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF target_time IS NULL THEN
        RAISE EXCEPTION 'target_time must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN QUERY SELECT p.backup_id, p.backup_path, p.backup_time, p.wal_files, make_interval(secs => p.seconds)
      FROM @extschema@.recovery_plan(target_time, NULL, NULL) AS p;
END
$$;
CREATE FUNCTION plan_recovery_to_lsn(target_lsn pg_lsn)
RETURNS TABLE (base_backup_id bigint, base_backup_path text, base_backup_time timestamptz,
               wal_files_needed text[], estimated_recovery_time interval)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF target_lsn IS NULL THEN
        RAISE EXCEPTION 'target_lsn must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN QUERY SELECT p.backup_id, p.backup_path, p.backup_time, p.wal_files, make_interval(secs => p.seconds)
      FROM @extschema@.recovery_plan(NULL, target_lsn::text, NULL) AS p;
END
$$;
CREATE FUNCTION plan_recovery_to_restore_point(restore_point text)
RETURNS TABLE (base_backup_id bigint, base_backup_path text, base_backup_time timestamptz,
               wal_files_needed text[], estimated_recovery_time interval)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF restore_point IS NULL THEN
        RAISE EXCEPTION 'restore_point must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN QUERY SELECT p.backup_id, p.backup_path, p.backup_time, p.wal_files, make_interval(secs => p.seconds)
      FROM @extschema@.recovery_plan(NULL, NULL, restore_point) AS p;
END
$$;

-- A named restore point (pg_create_restore_point), recorded with its WAL position and the
-- backup it would be reached from.
CREATE FUNCTION create_restore_point(p_name text, p_description text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    point pg_lsn;
    new_id integer;
BEGIN
    IF p_name IS NULL OR btrim(p_name) = '' THEN
        RAISE EXCEPTION 'p_name must not be empty' USING ERRCODE = '22023';
    END IF;
    point := pg_create_restore_point(p_name);
    INSERT INTO @extschema@.recovery_points (recovery_name, recovery_time, description, base_backup_id, recovery_lsn)
    VALUES (p_name, clock_timestamp(), p_description,
            (SELECT backup_id FROM @extschema@.backup_history
              WHERE status = 'completed' AND backup_type IN ('full', 'incremental') AND end_lsn <= point
              ORDER BY end_lsn DESC LIMIT 1),
            point)
    RETURNING recovery_id INTO new_id;
    RETURN new_id;
END
$$;

-- Roles locked now after failed logins, cluster-wide (0.7.0).
CREATE VIEW locked_roles AS
SELECT role_name, role_oid, failed_logins, first_failure_at, locked_at, locked_until
  FROM @extschema@.lockout_states()
 WHERE locked;
REVOKE ALL ON locked_roles FROM PUBLIC;

-- ---------------------------------------------------------------------------------------
-- Privileges. Nothing that changes the server is callable by PUBLIC; pg_monitor members read
-- metrics, alerts and the monitoring views; alert rules are changed by superusers (or roles
-- they grant).
-- ---------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
REVOKE ALL ON FUNCTION maintain_partitions() FROM PUBLIC;
REVOKE ALL ON FUNCTION collect_performance_metrics() FROM PUBLIC;
REVOKE ALL ON FUNCTION process_alerts() FROM PUBLIC;
REVOKE ALL ON FUNCTION slow_query_stats() FROM PUBLIC;
-- Security: the audit log and everything that reads it or changes roles are superusers' (or
-- roles they grant); security_audit_log has no grants at all.
REVOKE ALL ON FUNCTION detect_suspicious_activity() FROM PUBLIC;
REVOKE ALL ON FUNCTION log_security_event(text, text, text, boolean, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION setup_role_hierarchy(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION enable_tenant_isolation(regclass, name, text, name[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION rls_coverage() FROM PUBLIC;
REVOKE ALL ON FUNCTION unlock_role(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lockout_states() FROM PUBLIC;
-- Maintenance and backups run as their schedule's owner, configuration changes as the caller:
-- a grant of these functions never gives more than the grantee could do by hand. They are
-- still not PUBLIC's: superusers grant them to the roles that should use them.
REVOKE ALL ON FUNCTION execute_maintenance(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION track_config_change(text, text, text) FROM PUBLIC;
-- Backups: taking, verifying and deleting them is for superusers (or roles they grant).
REVOKE ALL ON FUNCTION execute_backup(integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION cleanup_old_backups() FROM PUBLIC;
REVOKE ALL ON FUNCTION verify_backup(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION recovery_plan(timestamptz, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION plan_recovery(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION plan_recovery_to_lsn(pg_lsn) FROM PUBLIC;
REVOKE ALL ON FUNCTION plan_recovery_to_restore_point(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION validate_recovery_point(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION create_restore_point(text, text) FROM PUBLIC;
-- Restore drills read every backup and start a server as the server's OS user: superusers only
-- (the function checks too, so a grant cannot give more).
REVOKE ALL ON FUNCTION run_restore_drill(bigint, timestamptz, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION adopt_as_primary() FROM PUBLIC;
GRANT SELECT ON restore_drills TO pg_monitor;
-- Every database's facts (0.3.0): for pg_monitor, as the views of the current database.
GRANT SELECT ON database_facts, database_table_facts, database_index_facts,
                cluster_table_bloat_analysis, cluster_index_usage_analysis TO pg_monitor;
GRANT SELECT ON backup_history TO pg_monitor;
GRANT SELECT ON maintenance_runs TO pg_monitor;
GRANT EXECUTE ON FUNCTION slow_query_stats() TO pg_monitor;
GRANT SELECT ON performance_metrics, metric_definitions, alert_rules, alert_events,
                slow_queries, table_bloat_analysis, index_usage_analysis, connection_analysis
   TO pg_monitor;

-- ---------------------------------------------------------------------------------------
-- Comments
-- ---------------------------------------------------------------------------------------
COMMENT ON SCHEMA @extschema@ IS 'admin_toolkit: backups, monitoring, security, maintenance, configuration.';
COMMENT ON FUNCTION validate_password_policy(text, text) IS
    'Checks a password against the password policy; one row per rule (never stores or logs the password).';
COMMENT ON FUNCTION maintain_partitions() IS
    'Runs partition upkeep of performance_metrics and security_audit_log now (the worker also does it).';
COMMENT ON FUNCTION build_info() IS
    'The loaded build of admin_toolkit: version, commit, release or debug profile, the PostgreSQL it was built for.';
COMMENT ON FUNCTION is_preloaded() IS
    'Whether admin_toolkit is in shared_preload_libraries (needed by the worker and the hooks).';
COMMENT ON FUNCTION collect_performance_metrics() IS
    'Collects one sample of every metric into performance_metrics (the worker does it every collection_interval).';
COMMENT ON FUNCTION process_alerts() IS
    'Evaluates alert rules, records fire/resolve in alert_events with NOTIFY admin_toolkit_alerts, returns the alerts that hold.';
COMMENT ON FUNCTION detect_suspicious_activity() IS
    'Failed logins, privilege changes and excessive reads above the admin_toolkit.*_threshold settings, and roles locked now.';
COMMENT ON FUNCTION unlock_role(text) IS
    'Lifts a role''s lock after failed logins and clears its count; returns whether it was locked (audited as ROLE_UNLOCKED).';
COMMENT ON FUNCTION lockout_states() IS
    'Every role with counted failed logins or a lock, cluster-wide, from shared memory.';
COMMENT ON VIEW locked_roles IS
    'Roles locked now after failed logins (admin_toolkit.max_auth_failures); unlock_role() lifts a lock.';
COMMENT ON FUNCTION log_security_event(text, text, text, boolean, text, jsonb) IS
    'Records an application event in security_audit_log with the real user, database, client and session.';
COMMENT ON FUNCTION setup_role_hierarchy(text) IS
    'Creates the NOLOGIN group roles of the role hierarchy with their grants on a schema; idempotent.';
COMMENT ON FUNCTION enable_tenant_isolation(regclass, name, text, name[]) IS
    'Enables and forces RLS with a policy matching a column to a setting; no rows while the setting is unset.';
COMMENT ON FUNCTION rls_coverage() IS
    'Tables without RLS, with RLS but no policy, or with RLS not forced.';
COMMENT ON FUNCTION adopt_as_primary() IS
    'Makes this server the one its schedules and retention are for, after a restore or a copy held them.';
COMMENT ON FUNCTION check_backup_target(text, text) IS
    'Refuses (22023) a backup storage location or encryption key id that no backup could use; called by schedule_owner_check.';
COMMENT ON FUNCTION cron_next_run(text, timestamptz) IS
    'Next run of a cron expression after a time, in admin_toolkit.timezone (or the server''s).';
COMMENT ON FUNCTION execute_maintenance(integer) IS
    'Runs a maintenance schedule now in a job worker (top-level VACUUM/ANALYZE/REINDEX) and returns its outcome.';
COMMENT ON FUNCTION get_config_recommendations() IS
    'Tuning advice (PGTune formulas) from RAM, CPUs, max_connections, storage_type and workload, and from temp files, forced checkpoints and cache hit ratio; with the ALTER SYSTEM statement that applies each.';
COMMENT ON FUNCTION track_config_change(text, text, text) IS
    'Validates, applies (ALTER SYSTEM + reload, through a job worker) and records a configuration change; returns its config_id.';
COMMENT ON FUNCTION execute_backup(integer, boolean) IS
    'Takes a backup of a schedule now in a job worker (base backup, or WAL switch for wal_archive); returns its backup_id, after it finished when p_wait.';
COMMENT ON FUNCTION cleanup_old_backups() IS
    'Deletes backups past retention_days (never the newest full, nor a base a retained incremental needs) and the WAL no retained backup needs.';
COMMENT ON FUNCTION verify_backup(bigint) IS
    'Rereads every file of a backup and its chain against the manifest''s SHA-256 checksums; one row per problem.';
COMMENT ON FUNCTION recovery_plan(timestamptz, text, text) IS
    'Engine of plan_recovery*: backup, WAL segments from the archive and estimate for one target.';
COMMENT ON FUNCTION plan_recovery(timestamptz) IS
    'Latest completed backup ended before the time, every archived WAL segment needed to reach it, and an estimate from measured throughput.';
COMMENT ON FUNCTION plan_recovery_to_lsn(pg_lsn) IS
    'plan_recovery for a WAL position.';
COMMENT ON FUNCTION plan_recovery_to_restore_point(text) IS
    'plan_recovery for a restore point recorded by create_restore_point.';
COMMENT ON FUNCTION create_restore_point(text, text) IS
    'pg_create_restore_point, recorded in recovery_points with its LSN and base backup; returns recovery_id.';
COMMENT ON FUNCTION validate_recovery_point(integer) IS
    'Checks a recovery point for real: backup files against the manifest, WAL segments present with checksums, timeline, target after the backup.';
COMMENT ON FUNCTION schedule_next_run() IS 'Validates schedule_expression and keeps next_run current.';
COMMENT ON FUNCTION slow_query_stats() IS 'pg_stat_statements summary behind the slow_queries view.';
COMMENT ON VIEW slow_queries IS 'Statements by total execution time (needs pg_stat_statements).';
COMMENT ON VIEW table_bloat_analysis IS 'Dead-tuple share and size of each user table.';
COMMENT ON VIEW index_usage_analysis IS 'Scans and size of each user index, with a usage category.';
COMMENT ON VIEW connection_analysis IS 'Sessions grouped by database, user, application, address and state.';

DO $$
BEGIN
    IF NOT @extschema@.is_preloaded() THEN
        -- CREATE EXTENSION raises client_min_messages to warning while its script runs; give
        -- the session back its own level for this one notice (undone when the script ends).
        PERFORM pg_catalog.set_config('client_min_messages',
            (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'client_min_messages'), true);
        RAISE NOTICE 'admin_toolkit is not in shared_preload_libraries: its functions work, but the background worker and the server hooks do not run'
            USING HINT = 'Add admin_toolkit to shared_preload_libraries in postgresql.conf and restart the server.';
    END IF;
END
$$;
