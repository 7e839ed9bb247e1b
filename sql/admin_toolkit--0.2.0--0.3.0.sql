-- admin_toolkit 0.2.0 -> 0.3.0. Hand-written; never edit once released.
-- Restore drills: restore_drill_schedules and restore_drills, run_restore_drill(), their
-- metrics (age of the last passed drill, its RTO, whether the last one failed) and two
-- built-in alert rules on them; maintenance schedules and runs name their database
-- (target_database), and a schedule deactivated by the worker says why (note); metrics per
-- database (metric_type database, column performance_metrics.database); the facts of
-- every database (database_facts, database_table_facts, database_index_facts), the views
-- cluster_table_bloat_analysis and cluster_index_usage_analysis, and check_maintenance_health()
-- over the whole cluster.
\echo Use "ALTER EXTENSION admin_toolkit UPDATE TO '0.3.0'" to load this file. \quit

CREATE TABLE restore_drill_schedules (
    schedule_id         serial PRIMARY KEY,
    schedule_name       text NOT NULL UNIQUE CHECK (btrim(schedule_name) <> ''),
    schedule_expression text NOT NULL CHECK (btrim(schedule_expression) <> ''),
    -- Drill the latest completed backup of this backup schedule; NULL: of any schedule.
    backup_schedule_id  integer REFERENCES backup_schedules (schedule_id) ON DELETE CASCADE,
    is_active           boolean NOT NULL DEFAULT true,
    owner               name NOT NULL DEFAULT current_user,
    last_run            timestamptz,
    next_run            timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX restore_drill_schedules_due_idx ON restore_drill_schedules (next_run) WHERE is_active;
COMMENT ON TABLE restore_drill_schedules IS
    'Restore drills on cron schedules: each run restores the latest completed backup and recovers it to the end of the archive.';
COMMENT ON COLUMN restore_drill_schedules.owner IS
    'The role its drills run as; it must be a superuser when a drill starts (a drill reads every backup and starts a server).';

-- One row per drill, written by the drill's own job.
CREATE TABLE restore_drills (
    drill_id                  bigserial PRIMARY KEY,
    schedule_id               integer REFERENCES restore_drill_schedules (schedule_id) ON DELETE SET NULL,
    backup_id                 bigint,
    backup_ids                bigint[] NOT NULL DEFAULT '{}',
    target_time               timestamptz,
    status                    text NOT NULL DEFAULT 'running'
                              CHECK (status IN ('running', 'passed', 'failed', 'cancelled')),
    started_at                timestamptz NOT NULL DEFAULT now(),
    restored_at               timestamptz,
    promoted_at               timestamptz,
    finished_at               timestamptz,
    restored_bytes            bigint CHECK (restored_bytes >= 0),
    restore_seconds           numeric CHECK (restore_seconds >= 0),
    wal_bytes_replayed        numeric CHECK (wal_bytes_replayed >= 0),
    wal_replay_seconds        numeric CHECK (wal_replay_seconds >= 0),
    rto_seconds               numeric CHECK (rto_seconds >= 0),
    last_replayed_transaction timestamptz,
    rpo_seconds               numeric,
    checks_seconds            numeric CHECK (checks_seconds >= 0),
    checks                    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(checks) = 'object'),
    failure_reason            text,
    owner                     name NOT NULL DEFAULT current_user,
    pid                       integer,
    scratch_directory         text,
    CONSTRAINT restore_drills_finished_when_not_running
        CHECK ((status = 'running') = (finished_at IS NULL)),
    CONSTRAINT restore_drills_failure_has_reason
        CHECK (status IN ('running', 'passed') OR failure_reason IS NOT NULL)
);
-- One drill at a time, whoever starts it.
CREATE UNIQUE INDEX restore_drills_one_running ON restore_drills ((true)) WHERE status = 'running';
CREATE INDEX restore_drills_started_idx ON restore_drills (started_at DESC);
COMMENT ON TABLE restore_drills IS
    'Every restore drill: the backups restored, the target, restore and replay times, RTO, RPO, the checks and why it failed.';
COMMENT ON COLUMN restore_drills.target_time IS
    'The recovery target; NULL: the end of the archived WAL.';
COMMENT ON COLUMN restore_drills.rto_seconds IS
    'From the start of the restore to the promotion of the restored server.';
COMMENT ON COLUMN restore_drills.rpo_seconds IS
    'The target (the start of the drill for the end of the archive) minus the last transaction replayed.';

INSERT INTO metric_definitions (metric_type, metric_name, metric_unit, description, builtin) VALUES
    ('backup', 'restore_drill_age_seconds', 'seconds', 'Time since the last passed restore drill (with none passed, since the oldest completed backup)', true),
    ('backup', 'restore_drill_rto_seconds', 'seconds', 'RTO of the last passed restore drill: start of the restore to promotion', true),
    ('backup', 'restore_drill_failed', 'count', '1 when the last finished restore drill failed or was cancelled, else 0', true);

INSERT INTO alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value,
                         severity, notification_channels, builtin) VALUES
    ('Restore drill failed', 'backup', 'restore_drill_failed', '>', 0, 'critical', ARRAY['email'], true),
    ('Restore drill overdue', 'backup', 'restore_drill_age_seconds', '>', 7 * 86400, 'warning', ARRAY['email'], true);

SELECT pg_catalog.pg_extension_config_dump('restore_drill_schedules', '');
SELECT pg_catalog.pg_extension_config_dump('restore_drill_schedules_schedule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('restore_drills', '');
SELECT pg_catalog.pg_extension_config_dump('restore_drills_drill_id_seq', '');

-- As sql/finalize.sql.
CREATE TRIGGER restore_drill_schedules_next_run BEFORE INSERT OR UPDATE ON restore_drill_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_next_run();
CREATE TRIGGER restore_drill_schedules_owner_check BEFORE INSERT OR UPDATE ON restore_drill_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_owner_check();

-- As pgrx generates it for src/backup/drill.rs.
CREATE FUNCTION run_restore_drill(
    p_backup_id bigint DEFAULT NULL,
    p_target timestamp with time zone DEFAULT NULL,
    p_wait bool DEFAULT false
) RETURNS bigint
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'run_restore_drill_wrapper';
REVOKE ALL ON FUNCTION run_restore_drill(bigint, timestamptz, boolean) FROM PUBLIC;
GRANT SELECT ON restore_drills TO pg_monitor;

-- Every database of the cluster: maintenance schedules and runs name their database, metrics
-- per database, the worker's facts of every database, the cluster_* views, and
-- check_maintenance_health() over them (as sql/bootstrap.sql, sql/databases.sql,
-- sql/maintenance.sql and sql/finalize.sql).
ALTER TABLE maintenance_schedules ADD COLUMN target_database name, ADD COLUMN note text;
ALTER TABLE maintenance_runs ADD COLUMN target_database name;
ALTER TABLE performance_metrics ADD COLUMN database name;
COMMENT ON COLUMN maintenance_schedules.target_database IS
    'The database its runs maintain, connected as the owner; NULL: admin_toolkit.database.';
COMMENT ON COLUMN maintenance_schedules.note IS
    'Why the worker deactivated the schedule (its database was dropped); cleared when it is activated again.';
COMMENT ON COLUMN maintenance_runs.target_database IS
    'The database the run ran in; NULL: admin_toolkit.database.';

-- Metrics per database: one row per database at each collection, labelled by the column
-- database (an alert rule on one of them sees the largest value across databases).
COMMENT ON COLUMN performance_metrics.database IS
    'The database a per-database metric (metric_type database) is about; NULL for the others.';
INSERT INTO metric_definitions (metric_type, metric_name, metric_unit, description, builtin) VALUES
    ('database', 'size_bytes', 'bytes', 'Size of each database', true),
    ('database', 'connections', 'count', 'Sessions connected to each database', true),
    ('database', 'transactions_per_second', 'per_second', 'Commits and rollbacks per second in each database over the interval', true),
    ('database', 'deadlocks', 'count', 'Deadlocks in each database during the interval', true),
    ('database', 'temp_bytes', 'bytes', 'Bytes written to temporary files in each database during the interval', true),
    ('database', 'xid_age', 'count', 'Transaction ID age (of datfrozenxid) of each database', true);

-- A schedule's database must exist when the schedule is written or activated again.
CREATE FUNCTION schedule_database_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.is_active AND NOT OLD.is_active THEN
            NEW.note := NULL;
        ELSIF NEW.target_database IS NOT DISTINCT FROM OLD.target_database THEN
            RETURN NEW;
        END IF;
    END IF;
    IF NEW.target_database IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = NEW.target_database) THEN
        RAISE EXCEPTION 'database "%" does not exist', NEW.target_database USING ERRCODE = '42704',
            HINT = 'target_database names the database a schedule maintains; NULL means admin_toolkit.database.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER maintenance_schedules_database_check BEFORE INSERT OR UPDATE ON maintenance_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_database_check();

-- Facts of every database that accepts connections, collected by the worker every
-- admin_toolkit.database_facts_interval through one short job per database (connected there),
-- replaced at each collection. check_maintenance_health() and the cluster_* views read them.
CREATE TABLE database_facts (
    database      name PRIMARY KEY,
    collected_at  timestamptz NOT NULL,
    -- What the collection cost: the job's query, the job from its start to its exit (its
    -- connection included), the worker's writing of it here; and how many collections so far.
    collect_ms    numeric NOT NULL CHECK (collect_ms >= 0),
    job_ms        numeric CHECK (job_ms >= 0),
    ingest_ms     numeric CHECK (ingest_ms >= 0),
    collections   bigint NOT NULL DEFAULT 1 CHECK (collections > 0),
    xid_age       bigint,
    mxid_age      bigint,
    sequences     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(sequences) = 'array'),
    oldest_tables jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(oldest_tables) = 'array'),
    duplicate_indexes jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(duplicate_indexes) = 'array')
);
COMMENT ON TABLE database_facts IS
    'Per database: transaction ID and multixact ages, sequences by use, oldest tables, duplicate indexes; as last collected.';
CREATE TABLE database_table_facts (
    database         name NOT NULL,
    schemaname       name NOT NULL,
    tablename        name NOT NULL,
    n_live_tup       bigint,
    n_dead_tup       bigint,
    total_size       bigint,
    last_vacuum      timestamptz,
    last_autovacuum  timestamptz,
    last_analyze     timestamptz,
    last_autoanalyze timestamptz,
    xid_age          bigint
);
-- No unique key (a collection replaces a database's rows in one statement) and no foreign key
-- (its per-row checks were most of the worker's cost of writing a database's facts).
CREATE INDEX database_table_facts_database_idx ON database_table_facts (database);
COMMENT ON TABLE database_table_facts IS
    'Per user table of every database (the 1,000 largest of each): tuples, size (table, TOAST and indexes, from relpages), last (auto)vacuum and analyze, xid age.';
CREATE TABLE database_index_facts (
    database            name NOT NULL,
    schemaname          name NOT NULL,
    tablename           name NOT NULL,
    indexname           name NOT NULL,
    idx_scan            bigint,
    idx_tup_read        bigint,
    idx_tup_fetch       bigint,
    size_bytes          bigint,
    is_valid            boolean NOT NULL,
    enforces_constraint boolean NOT NULL
);
CREATE INDEX database_index_facts_database_idx ON database_index_facts (database);
COMMENT ON TABLE database_index_facts IS
    'Per index of every database (the 2,000 largest of each): scans, size, validity, whether it enforces a constraint.';

CREATE VIEW cluster_table_bloat_analysis AS
SELECT t.database, t.schemaname, t.tablename, t.n_live_tup, t.n_dead_tup,
       round(100.0 * t.n_dead_tup / nullif(t.n_live_tup + t.n_dead_tup, 0), 2) AS dead_tuple_percent,
       pg_catalog.pg_size_pretty(t.total_size) AS size_pretty,
       t.total_size, t.last_vacuum, t.last_autovacuum,
       CASE
           WHEN t.n_dead_tup::float8 / nullif(t.n_live_tup + t.n_dead_tup, 0) > 0.2 THEN 'HIGH'
           WHEN t.n_dead_tup::float8 / nullif(t.n_live_tup + t.n_dead_tup, 0) > 0.1 THEN 'MEDIUM'
           ELSE 'LOW'
       END AS bloat_level,
       f.collected_at
  FROM database_table_facts t JOIN database_facts f USING (database)
 WHERE t.n_live_tup + t.n_dead_tup > 0
 ORDER BY dead_tuple_percent DESC;
COMMENT ON VIEW cluster_table_bloat_analysis IS
    'table_bloat_analysis for every database, from the collected facts (collected_at says when).';

CREATE VIEW cluster_index_usage_analysis AS
SELECT i.database, i.schemaname, i.tablename, i.indexname, i.idx_scan, i.idx_tup_read, i.idx_tup_fetch,
       pg_catalog.pg_size_pretty(i.size_bytes) AS index_size, i.size_bytes,
       CASE
           WHEN i.idx_scan = 0 THEN 'UNUSED'
           WHEN i.idx_scan < 100 THEN 'LOW_USAGE'
           WHEN i.idx_scan < 1000 THEN 'MEDIUM_USAGE'
           ELSE 'HIGH_USAGE'
       END AS usage_category,
       i.is_valid, f.collected_at
  FROM database_index_facts i JOIN database_facts f USING (database)
 ORDER BY i.size_bytes DESC;
COMMENT ON VIEW cluster_index_usage_analysis IS
    'index_usage_analysis for every database, from the collected facts, with is_valid.';

-- What check_maintenance_health() adds for the other databases: only for superusers and
-- pg_monitor members (other databases' object names are theirs to see), nothing for others.
CREATE FUNCTION other_database_health_facts()
RETURNS TABLE (kind text, name text, value numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
WITH allowed AS (
    SELECT pg_has_role(session_user, 'pg_monitor', 'USAGE')
           OR (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) AS ok
), tables AS (
    SELECT t.* FROM @extschema@.database_table_facts t, allowed
     WHERE allowed.ok AND t.database <> current_database()
), indexes AS (
    SELECT i.* FROM @extschema@.database_index_facts i, allowed
     WHERE allowed.ok AND i.database <> current_database()
), dbs AS (
    SELECT f.* FROM @extschema@.database_facts f, allowed
     WHERE allowed.ok AND f.database <> current_database()
)
SELECT 'bloat', format('%I.%I.%I', database, schemaname, tablename),
       round(100.0 * n_dead_tup / nullif(n_live_tup + n_dead_tup, 0), 2)
  FROM tables WHERE n_live_tup + n_dead_tup > 1000
UNION ALL
SELECT 'stale', format('%I.%I.%I', database, schemaname, tablename), NULL
  FROM tables
 WHERE n_live_tup + n_dead_tup > 0
   AND coalesce(greatest(last_analyze, last_autoanalyze), '-infinity') < now() - interval '7 days'
UNION ALL
SELECT 'unused', format('%I.%I.%I', database, schemaname, indexname), NULL
  FROM indexes WHERE idx_scan = 0 AND NOT enforces_constraint AND size_bytes > 1024 * 1024
UNION ALL
SELECT 'invalid', format('%I.%I.%I', database, schemaname, indexname), NULL
  FROM indexes WHERE NOT is_valid
UNION ALL
SELECT 'duplicate', format('%I: %s', database, d), NULL
  FROM dbs, jsonb_array_elements_text(duplicate_indexes) AS d
UNION ALL
SELECT 'sequence', format('%I.%s', database, s->>'name'), (s->>'used_pct')::numeric
  FROM dbs, jsonb_array_elements(sequences) AS s
UNION ALL
SELECT 'oldest_table', format('%I.%s', database, o->>'name'), (o->>'xid_age')::numeric
  FROM dbs, jsonb_array_elements(oldest_tables) AS o
$$;
COMMENT ON FUNCTION other_database_health_facts() IS
    'The collected facts of the other databases that check_maintenance_health() reports on; empty unless the session''s role is a superuser or a pg_monitor member.';

CREATE OR REPLACE FUNCTION check_maintenance_health()
RETURNS TABLE (check_name text, status text, recommendation text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH other AS (
    SELECT kind, name, value FROM @extschema@.other_database_health_facts()
), bloat AS (
    SELECT format('%I.%I', schemaname, relname) AS name,
           100.0 * n_dead_tup / nullif(n_live_tup + n_dead_tup, 0) AS dead_pct
      FROM pg_stat_user_tables WHERE n_live_tup + n_dead_tup > 1000
    UNION ALL
    SELECT name, value FROM other WHERE kind = 'bloat'
), stale AS (
    SELECT format('%I.%I', schemaname, relname) AS name
      FROM pg_stat_user_tables
     WHERE n_live_tup + n_dead_tup > 0
       AND coalesce(greatest(last_analyze, last_autoanalyze), '-infinity') < now() - interval '7 days'
    UNION ALL
    SELECT name FROM other WHERE kind = 'stale'
), unused AS (
    SELECT format('%I.%I', s.schemaname, s.indexrelname) AS name
      FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
     WHERE s.idx_scan = 0 AND NOT i.indisprimary AND NOT i.indisunique
       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
       AND pg_relation_size(s.indexrelid) > 1024 * 1024
    UNION ALL
    SELECT name FROM other WHERE kind = 'unused'
), wrap AS (
    SELECT max(age(datfrozenxid))::float8 / 2147483648 * 100 AS pct,
           (SELECT string_agg(format('%I (%s)', datname, age(datfrozenxid)), ', ' ORDER BY age(datfrozenxid) DESC)
              FROM pg_database WHERE age(datfrozenxid) > current_setting('autovacuum_freeze_max_age')::bigint) AS dbs,
           (SELECT string_agg(format('%s (%s)', name, xid_age), ', ' ORDER BY xid_age DESC) FROM (
               SELECT name, xid_age FROM (
                   SELECT c.oid::regclass::text AS name, age(c.relfrozenxid)::numeric AS xid_age
                     FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> 0
                   UNION ALL
                   SELECT name, value FROM other WHERE kind = 'oldest_table') all_tables
                ORDER BY xid_age DESC LIMIT 5) t) AS oldest_tables
      FROM pg_database
), invalid AS (
    SELECT i.indexrelid::regclass::text AS name FROM pg_index i WHERE NOT i.indisvalid
    UNION ALL
    SELECT name FROM other WHERE kind = 'invalid'
), duplicate AS (
    SELECT string_agg(i.indexrelid::regclass::text, ' = ' ORDER BY i.indexrelid) AS names
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
     GROUP BY i.indrelid, i.indkey::text, i.indclass::text, i.indcollation::text,
              coalesce(pg_get_expr(i.indexprs, i.indrelid), ''), coalesce(pg_get_expr(i.indpred, i.indrelid), '')
    HAVING count(*) > 1
    UNION ALL
    SELECT name FROM other WHERE kind = 'duplicate'
), sequences AS (
    SELECT format('%I.%I', schemaname, sequencename) AS name,
           100.0 * abs(last_value - start_value) / nullif(abs(CASE WHEN increment_by > 0 THEN max_value ELSE min_value END - start_value), 0) AS used_pct
      FROM pg_sequences WHERE last_value IS NOT NULL
    UNION ALL
    SELECT name, value FROM other WHERE kind = 'sequence'
), long_tx AS (
    SELECT format('pid %s (%s, %s)', pid, usename, date_trunc('second', now() - xact_start)) AS name,
           now() - xact_start AS age
      FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND xact_start < now() - interval '1 hour' AND pid <> pg_backend_pid()
), idle_tx AS (
    SELECT format('pid %s (%s, idle %s)', pid, usename, date_trunc('second', now() - state_change)) AS name
      FROM pg_stat_activity
     WHERE state LIKE 'idle in transaction%' AND state_change < now() - interval '5 minutes'
), slots AS (
    SELECT format('%s (%s)', slot_name,
                  pg_size_pretty(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                                      ELSE pg_current_wal_lsn() END, restart_lsn))) AS name
      FROM pg_replication_slots WHERE NOT active AND restart_lsn IS NOT NULL
)
SELECT 'table_bloat',
       CASE WHEN max(dead_pct) > 20 THEN 'critical' WHEN max(dead_pct) > 10 THEN 'warning' ELSE 'ok' END,
       CASE WHEN max(dead_pct) > 20 THEN 'Immediate VACUUM needed for tables: ' || string_agg(name, ', ') FILTER (WHERE dead_pct > 10)
            WHEN max(dead_pct) > 10 THEN 'Schedule VACUUM for tables: ' || string_agg(name, ', ') FILTER (WHERE dead_pct > 10)
            ELSE 'Table maintenance is up to date' END
  FROM bloat
UNION ALL
SELECT 'table_statistics', CASE WHEN count(*) > 0 THEN 'warning' ELSE 'ok' END,
       CASE WHEN count(*) > 0 THEN 'Run ANALYZE on tables: ' || string_agg(name, ', ') ELSE 'Table statistics are current' END
  FROM stale
UNION ALL
SELECT 'unused_indexes', CASE WHEN count(*) > 0 THEN 'info' ELSE 'ok' END,
       CASE WHEN count(*) > 0 THEN 'Consider dropping unused indexes (not primary keys, unique or constraint indexes): ' || string_agg(name, ', ')
            ELSE 'Index usage looks healthy' END
  FROM unused
UNION ALL
SELECT 'xid_wraparound',
       CASE WHEN pct > 75 THEN 'critical' WHEN pct > 50 THEN 'warning' WHEN dbs IS NOT NULL THEN 'info' ELSE 'ok' END,
       format('Oldest transaction ID age is %s%% of the wraparound limit%s; oldest tables: %s', round(pct::numeric, 1),
              CASE WHEN dbs IS NOT NULL THEN '; VACUUM (FREEZE) databases past autovacuum_freeze_max_age: ' || dbs ELSE '' END,
              coalesce(oldest_tables, 'none'))
  FROM wrap
UNION ALL
SELECT 'invalid_indexes', CASE WHEN count(*) > 0 THEN 'warning' ELSE 'ok' END,
       CASE WHEN count(*) > 0 THEN 'Rebuild (REINDEX) or drop invalid indexes, left by a failed CREATE INDEX CONCURRENTLY: ' || string_agg(name, ', ')
            ELSE 'No invalid indexes' END
  FROM invalid
UNION ALL
SELECT 'duplicate_indexes', CASE WHEN count(*) > 0 THEN 'warning' ELSE 'ok' END,
       CASE WHEN count(*) > 0 THEN 'Identical indexes; keep one of each: ' || string_agg(names, '; ') ELSE 'No duplicate indexes' END
  FROM duplicate
UNION ALL
SELECT 'sequence_exhaustion',
       CASE WHEN max(used_pct) > 90 THEN 'critical' WHEN max(used_pct) > 75 THEN 'warning' ELSE 'ok' END,
       CASE WHEN max(used_pct) > 75 THEN 'Sequences near their limit (switch to bigint or widen): '
                 || string_agg(format('%s (%s%%)', name, round(used_pct, 1)), ', ') FILTER (WHERE used_pct > 75)
            ELSE 'Sequences have room' END
  FROM sequences
UNION ALL
SELECT 'long_running_transactions',
       CASE WHEN max(age) > interval '6 hours' THEN 'critical' WHEN count(*) > 0 THEN 'warning' ELSE 'ok' END,
       CASE WHEN count(*) > 0 THEN 'Transactions open over an hour hold back VACUUM: ' || string_agg(name, ', ') ELSE 'No long-running transactions' END
  FROM long_tx
UNION ALL
SELECT 'idle_in_transaction', CASE WHEN count(*) > 0 THEN 'warning' ELSE 'ok' END,
       CASE WHEN count(*) > 0 THEN 'Sessions idle in a transaction over 5 minutes (set idle_in_transaction_session_timeout): ' || string_agg(name, ', ')
            ELSE 'No sessions idle in a transaction' END
  FROM idle_tx
UNION ALL
SELECT 'replication_slots', CASE WHEN count(*) > 0 THEN 'warning' ELSE 'ok' END,
       CASE WHEN count(*) > 0 THEN 'Inactive replication slots retaining WAL (drop them if unused): ' || string_agg(name, ', ')
            ELSE 'No inactive replication slots' END
  FROM slots
$$;
COMMENT ON FUNCTION check_maintenance_health() IS
    'Maintenance health of the whole cluster: bloat, statistics, unused / invalid / duplicate indexes, wraparound, sequences, long and idle transactions, slots.';
GRANT SELECT ON database_facts, database_table_facts, database_index_facts,
                cluster_table_bloat_analysis, cluster_index_usage_analysis TO pg_monitor;
