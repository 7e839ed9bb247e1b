-- admin_toolkit 0.5.0 -> 0.6.0. Hand-written; never edit once released.
-- The audit journal: audit events are WAL records the worker turns into rows, so that none is
-- lost to a crash; each row says who was logged in beside the current user, and which
-- transaction and WAL position it came from.
\echo Use "ALTER EXTENSION admin_toolkit UPDATE TO '0.6.0'" to load this file. \quit

ALTER TABLE security_audit_log
    ADD COLUMN session_username text,
    ADD COLUMN transaction_id xid,
    ADD COLUMN wal_lsn pg_lsn,
    ADD COLUMN previous_hash bytea,
    ADD COLUMN row_hash bytea;
COMMENT ON COLUMN security_audit_log.username IS
    'The current user when the event happened (SET ROLE and SECURITY DEFINER functions change it).';
COMMENT ON COLUMN security_audit_log.session_username IS
    'The session''s login role.';
COMMENT ON COLUMN security_audit_log.transaction_id IS
    'The transaction the event belongs to, when it had an ID (recovery_target_xid).';
COMMENT ON COLUMN security_audit_log.wal_lsn IS
    'Where the audit journal (WAL) holds the event.';

CREATE TABLE audit_journal (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    read_through pg_lsn NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- From the oldest WAL still in pg_wal: events the preloaded library journaled before this
-- (logins, the statements before CREATE EXTENSION or the update) are read too, as far as the
-- server kept their WAL.
INSERT INTO audit_journal (read_through)
SELECT coalesce(
    (SELECT '0/0'::pg_lsn + (min(('x' || substr(w.name, 9, 8))::bit(32)::bigint * 4294967296
                                 + ('x' || substr(w.name, 17, 8))::bit(32)::bigint
                                   * (SELECT s.setting::bigint FROM pg_catalog.pg_settings s
                                       WHERE s.name = 'wal_segment_size')))::numeric
       FROM pg_catalog.pg_ls_waldir() w
      WHERE w.name ~ '^[0-9A-F]{24}$'
        -- not the segments recycled ahead of the current one
        AND w.name <= pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_insert_lsn())
     ),
    pg_catalog.pg_current_wal_insert_lsn());
COMMENT ON TABLE audit_journal IS
    'How far the worker has read the audit journal in WAL; written with the rows it wrote.';
-- The hash chain begins with the first row written after the update; rows before have none.
CREATE TABLE audit_chain (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    head          bytea NOT NULL,
    head_audit_id bigint,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Rows from this audit_id on are chained; those before (written before 0.6.0) are not.
    chain_start_id bigint NOT NULL DEFAULT 0,
    chain_started_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_chain (head, chain_start_id)
SELECT '\x', coalesce(max(audit_id), 0) + 1 FROM security_audit_log;
COMMENT ON TABLE audit_chain IS
    'The head of security_audit_log''s hash chain: the last row written and its row_hash.';
COMMENT ON COLUMN security_audit_log.previous_hash IS
    'row_hash of the row before it (audit_id order); empty for the first row of the chain.';
COMMENT ON COLUMN security_audit_log.row_hash IS
    'sha256(previous_hash || audit_row_text(row)): see verify_audit_log().';

-- The journal's slot is the toolkit's own: check_maintenance_health() no longer reports it as
-- an inactive slot retaining WAL.
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

-- Tamper evidence: each row of security_audit_log carries the hash of its predecessor
-- (previous_hash, in audit_id order) and its own: row_hash = sha256(previous_hash || the row's
-- canonical text). The worker, the one writer, computes them as it inserts and keeps the head
-- of the chain in audit_chain, in the same transaction. verify_audit_log() recomputes them.

-- The canonical text of an audit row, what its hash covers: every column but the two hashes,
-- each quoted (NULL as NULL), the time as microseconds since the Unix epoch, so that no setting
-- (DateStyle, TimeZone) changes it.
CREATE FUNCTION audit_row_text(r security_audit_log)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT concat_ws(',', quote_nullable(r.audit_id), quote_nullable(extract(epoch FROM r.event_time) * 1000000),
                 quote_nullable(r.username), quote_nullable(r.database_name), quote_nullable(r.schema_name),
                 quote_nullable(r.object_name), quote_nullable(r.object_type), quote_nullable(r.operation_type),
                 quote_nullable(r.client_ip), quote_nullable(r.application_name), quote_nullable(r.query_text),
                 quote_nullable(r.success), quote_nullable(r.error_message), quote_nullable(r.session_id),
                 quote_nullable(r.additional_info), quote_nullable(r.session_username),
                 quote_nullable(r.transaction_id), quote_nullable(r.wal_lsn))
$$;
COMMENT ON FUNCTION audit_row_text(security_audit_log) IS
    'The canonical text of an audit row that its row_hash covers.';

-- One row per problem in the audit IDs that the period's rows span (and the link to the row
-- just before them); no row when the log verifies clean.
CREATE FUNCTION verify_audit_log(p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL)
RETURNS TABLE (audit_id bigint, event_time timestamptz, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH span AS (
    SELECT min(l.audit_id) AS lo, max(l.audit_id) AS hi
      FROM @extschema@.security_audit_log l
     WHERE (p_from IS NULL OR l.event_time >= p_from) AND (p_to IS NULL OR l.event_time < p_to)
), chain AS (
    -- Rows below chain_start_id were written before the chain began (before 0.6.0). Once
    -- retention has dropped days of the chain (whole old days; rows of a day near its midnight
    -- may have been written after some of the next day's), links within the oldest day kept
    -- are not checked.
    SELECT c.head, c.head_audit_id, c.chain_start_id,
           CASE WHEN o.oldest > c.chain_started_at + interval '1 day' THEN o.oldest + interval '1 day'
                ELSE '-infinity' END AS links_from
      FROM @extschema@.audit_chain c,
           LATERAL (SELECT min(l.event_time) AS oldest FROM @extschema@.security_audit_log l
                     WHERE l.audit_id >= c.chain_start_id) o
), linked AS (
    SELECT l.audit_id, l.event_time, l.previous_hash, l.row_hash,
           sha256(l.previous_hash || convert_to(@extschema@.audit_row_text(l), 'UTF8')) AS computed,
           lag(l.audit_id) OVER w AS before_id, lag(l.row_hash) OVER w AS before_hash
      FROM @extschema@.security_audit_log l, span
     WHERE l.audit_id >= coalesce((SELECT max(b.audit_id) FROM @extschema@.security_audit_log b
                                    WHERE b.audit_id < span.lo), span.lo)
       AND l.audit_id <= span.hi
    WINDOW w AS (ORDER BY l.audit_id)
)
SELECT r.audit_id, r.event_time,
       CASE WHEN r.row_hash IS NULL OR r.previous_hash IS NULL
                 OR r.audit_id > chain.head_audit_id
                 THEN 'not written by the audit writer: inserted or its hashes removed'
            WHEN r.computed IS DISTINCT FROM r.row_hash
                 THEN 'altered: its content no longer matches its hash'
            ELSE format('the chain breaks before it: the rows after audit_id %s were removed '
                        '(deleted, or a partition truncated or dropped), or one was inserted there',
                        r.before_id)
       END
  FROM linked r, span, chain
 WHERE r.audit_id >= span.lo
   AND r.audit_id >= chain.chain_start_id
   AND (r.row_hash IS NULL OR r.previous_hash IS NULL
        OR r.audit_id > chain.head_audit_id
        OR r.computed IS DISTINCT FROM r.row_hash
        OR (r.before_id >= chain.chain_start_id AND r.event_time >= chain.links_from
            AND r.previous_hash IS DISTINCT FROM r.before_hash))
UNION ALL
SELECT chain.head_audit_id, NULL::timestamptz,
       'the head of the chain is missing or altered: the latest rows were removed or rewritten'
  FROM chain, span
 WHERE chain.head_audit_id IS NOT NULL
   AND (p_to IS NULL OR span.hi IS NULL OR chain.head_audit_id <= span.hi)
   AND NOT EXISTS (SELECT FROM @extschema@.security_audit_log l
                    WHERE l.audit_id = chain.head_audit_id AND l.row_hash = chain.head)
ORDER BY 1
$$;
COMMENT ON FUNCTION verify_audit_log(timestamptz, timestamptz) IS
    'Checks the hash chain of security_audit_log over a period: one row per altered, removed or inserted row; none when clean.';
REVOKE ALL ON FUNCTION audit_row_text(security_audit_log) FROM PUBLIC;
REVOKE ALL ON FUNCTION verify_audit_log(timestamptz, timestamptz) FROM PUBLIC;
