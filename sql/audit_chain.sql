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
