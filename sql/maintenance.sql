-- check_maintenance_health(): one row per check (check_name, status ok / info / warning /
-- critical, recommendation naming the objects). Built on OIDs and real PostgreSQL 15 columns.
-- The current database is read live; the others (0.3.0) from their collected facts, named
-- database.schema.object, for superusers and pg_monitor members.

CREATE FUNCTION check_maintenance_health()
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
      FROM pg_replication_slots
     -- admin_toolkit_audit is the audit journal's own, moved on by the worker.
     WHERE NOT active AND restart_lsn IS NOT NULL AND slot_name <> 'admin_toolkit_audit'
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
