-- Every database of the cluster (0.3.0): maintenance schedules name the database they maintain.
-- sql/admin_toolkit--0.2.0--0.3.0.sql holds the same statements for installed 0.2.0.

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
