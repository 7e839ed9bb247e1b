-- admin_toolkit catalog: the seed document's tables, with real types and constraints.
-- Runs first in the extension script; every object lands in schema admin_toolkit.
-- Column CHECKs are declared on the column so that PostgreSQL names them
-- <table>_<column>_check: a violation names the offending column.

-- Metrics that exist. Alert rules reference this table, so a rule for a metric that is
-- never collected is refused at insert. `builtin` rows come with the extension and are
-- not dumped by pg_dump (CREATE EXTENSION recreates them).
CREATE TABLE metric_definitions (
    metric_type text NOT NULL CHECK (metric_type ~ '^[a-z][a-z0-9_]*$'),
    metric_name text NOT NULL CHECK (metric_name ~ '^[a-z][a-z0-9_]*$'),
    metric_unit text NOT NULL,
    description text NOT NULL,
    builtin     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (metric_type, metric_name)
);
COMMENT ON TABLE metric_definitions IS
    'Every metric admin_toolkit knows: what performance_metrics may hold and alert_rules may watch.';

INSERT INTO metric_definitions (metric_type, metric_name, metric_unit, description, builtin) VALUES
    ('storage', 'database_size_bytes', 'bytes', 'Size of the current database', true),
    ('connection', 'active_connections', 'count', 'Client sessions with a state, by state and by database', true),
    ('query', 'avg_query_time_ms', 'milliseconds', 'Mean execution time over pg_stat_statements', true),
    ('locks', 'waiting_locks', 'count', 'Lock requests not granted, by mode and by type', true),
    ('replication', 'replica_lag_bytes', 'bytes', 'Largest replay lag among streaming replicas', true),
    ('performance', 'cache_hit_ratio', 'percent', 'Buffer cache hit ratio of the current database over the interval', true),
    ('connection', 'idle_in_transaction_sessions', 'count', 'Sessions idle inside an open transaction', true),
    ('connection', 'connection_usage_percent', 'percent', 'Client backends as a percentage of max_connections', true),
    ('transactions', 'xid_age_percent', 'percent', 'Oldest datfrozenxid age as a percentage of the 2^31 wraparound limit', true),
    ('transactions', 'longest_transaction_seconds', 'seconds', 'Age of the oldest open transaction of a client', true),
    ('transactions', 'commits_per_second', 'per_second', 'Commits per second over the interval, all databases', true),
    ('transactions', 'rollbacks_per_second', 'per_second', 'Rollbacks per second over the interval, all databases', true),
    ('transactions', 'deadlocks', 'count', 'Deadlocks detected during the interval, all databases', true),
    ('io', 'temp_bytes', 'bytes', 'Bytes written to temporary files during the interval, all databases', true),
    ('checkpoint', 'requested_checkpoints', 'count', 'Checkpoints requested (not timed) during the interval', true),
    ('checkpoint', 'timed_checkpoints', 'count', 'Timed checkpoints during the interval', true),
    ('wal', 'wal_bytes_per_second', 'bytes_per_second', 'WAL generated per second over the interval', true),
    ('archiver', 'failed_archives', 'count', 'Failed WAL archive attempts during the interval', true),
    ('replication', 'slot_retained_wal_bytes', 'bytes', 'Most WAL held back by one replication slot', true),
    ('security', 'audit_events_dropped', 'count', 'Audit events and read counts dropped during the interval because the queue was full', true);

-- ---------------------------------------------------------------------------------------
-- Backups
-- ---------------------------------------------------------------------------------------
CREATE TABLE backup_schedules (
    schedule_id         serial PRIMARY KEY,
    backup_type         text NOT NULL
                        CHECK (backup_type IN ('full', 'incremental', 'wal_archive')),
    schedule_expression text NOT NULL CHECK (btrim(schedule_expression) <> ''),
    retention_days      integer NOT NULL CHECK (retention_days > 0),
    storage_location    text NOT NULL CHECK (btrim(storage_location) <> ''),
    encryption_key_id   text,
    compression_level   integer NOT NULL DEFAULT 6 CHECK (compression_level BETWEEN 0 AND 22),
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Added to the specification's columns: kept current from schedule_expression.
    last_run            timestamptz,
    next_run            timestamptz,
    -- Added (0.2.0): the role its backups run as.
    owner               name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE backup_schedules IS
    'Backup jobs: type, cron schedule, retention and where the files go.';
COMMENT ON COLUMN backup_schedules.compression_level IS
    'zstd level 1-22; 0 stores files uncompressed.';

CREATE TABLE backup_history (
    backup_id         bigserial PRIMARY KEY,
    schedule_id       integer REFERENCES backup_schedules (schedule_id) ON DELETE SET NULL,
    backup_type       text NOT NULL
                      CHECK (backup_type IN ('full', 'incremental', 'wal_archive')),
    start_time        timestamptz NOT NULL DEFAULT now(),
    end_time          timestamptz,
    status            text NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'deleting', 'deleted')),
    backup_size_bytes bigint CHECK (backup_size_bytes >= 0),
    backup_path       text NOT NULL,
    start_lsn         pg_lsn,
    end_lsn           pg_lsn,
    error_message     text,
    metadata          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    -- Added (0.2.0): the role the backup ran as.
    owner             name NOT NULL DEFAULT current_user,
    CONSTRAINT backup_history_end_after_start CHECK (end_time IS NULL OR end_time >= start_time),
    CONSTRAINT backup_history_lsn_order CHECK (end_lsn IS NULL OR start_lsn IS NULL OR end_lsn >= start_lsn)
);
CREATE INDEX backup_history_schedule_idx ON backup_history (schedule_id, start_time DESC);
CREATE INDEX backup_history_completed_idx ON backup_history (end_time DESC) WHERE status = 'completed';
COMMENT ON TABLE backup_history IS 'One row per backup run, with its real outcome.';

CREATE TABLE recovery_points (
    recovery_id        serial PRIMARY KEY,
    recovery_name      text NOT NULL CHECK (btrim(recovery_name) <> ''),
    recovery_time      timestamptz NOT NULL,
    description        text,
    base_backup_id     bigint REFERENCES backup_history (backup_id) ON DELETE SET NULL,
    required_wal_files text[],
    created_by         text NOT NULL DEFAULT current_user,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Added to the specification's columns: the WAL position of a named restore point
    -- (create_restore_point), NULL for a point in time.
    recovery_lsn       pg_lsn
);
COMMENT ON TABLE recovery_points IS 'Named recovery targets with the base backup and WAL they need.';

-- ---------------------------------------------------------------------------------------
-- Monitoring
-- ---------------------------------------------------------------------------------------
-- One table partitioned by day (UTC); the worker creates partitions ahead and drops those
-- past admin_toolkit.metrics_retention_days. The default partition catches a row whose day
-- has no partition yet; upkeep moves such rows into their day's partition.
-- Indexes live on each partition, not on the parent (as pg_partman does): an index declared on
-- a parent that belongs to the extension would be cloned onto every partition that pg_restore
-- attaches, and then collide with the partition's own index in the dump.
CREATE TABLE performance_metrics (
    metric_id       bigserial,
    collected_at    timestamptz NOT NULL DEFAULT now(),
    metric_type     text NOT NULL,
    metric_name     text NOT NULL,
    metric_value    numeric,
    metric_unit     text,
    instance_name   text DEFAULT nullif(current_setting('cluster_name'), ''),
    additional_data jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(additional_data) = 'object'),
    FOREIGN KEY (metric_type, metric_name) REFERENCES metric_definitions (metric_type, metric_name),
    -- Added (0.3.0): the database a per-database metric is about; NULL: not per database.
    database        name
) PARTITION BY RANGE (collected_at);
CREATE TABLE performance_metrics_default PARTITION OF performance_metrics DEFAULT;
-- The same indexes upkeep gives every daily partition (see src/maintenance/partitions.rs).
ALTER TABLE performance_metrics_default ADD PRIMARY KEY (metric_id);
-- Latest value of one metric: an index probe, newest first.
CREATE INDEX ON performance_metrics_default (metric_type, metric_name, collected_at DESC);
COMMENT ON TABLE performance_metrics IS
    'Collected metrics, partitioned by day (UTC); old days are dropped by retention.';

-- Last reading of each cumulative statistics counter, so that collection stores per-interval
-- deltas and rates. Internal state of the collector; not dumped.
CREATE TABLE collector_counters (
    counter_name text PRIMARY KEY,
    value        double precision NOT NULL,
    sampled_at   timestamptz NOT NULL
);
COMMENT ON TABLE collector_counters IS
    'Previous readings of cumulative statistics counters (collector state).';

CREATE TABLE alert_rules (
    rule_id               serial PRIMARY KEY,
    rule_name             text NOT NULL UNIQUE CHECK (btrim(rule_name) <> ''),
    metric_type           text NOT NULL,
    metric_name           text NOT NULL,
    condition_operator    text NOT NULL
                          CHECK (condition_operator IN ('>', '<', '>=', '<=', '=', '!=')),
    threshold_value       numeric NOT NULL,
    severity              text NOT NULL DEFAULT 'warning'
                          CHECK (severity IN ('info', 'warning', 'critical')),
    is_active             boolean NOT NULL DEFAULT true,
    notification_channels text[] NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    builtin               boolean NOT NULL DEFAULT false,
    FOREIGN KEY (metric_type, metric_name) REFERENCES metric_definitions (metric_type, metric_name)
);
COMMENT ON TABLE alert_rules IS
    'Conditions on the latest value of a metric. builtin rules come with the extension.';

INSERT INTO alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value,
                         severity, notification_channels, builtin) VALUES
    ('High connection usage', 'connection', 'active_connections', '>', 150, 'warning', ARRAY['email'], true),
    ('Critical connection usage', 'connection', 'active_connections', '>', 180, 'critical', ARRAY['email', 'pagerduty'], true),
    ('Slow query performance', 'query', 'avg_query_time_ms', '>', 5000, 'warning', ARRAY['slack'], true),
    ('Replication lag critical', 'replication', 'replica_lag_bytes', '>', 100000000, 'critical', ARRAY['email', 'pagerduty'], true),
    ('Low cache hit ratio', 'performance', 'cache_hit_ratio', '<', 95, 'warning', ARRAY['email'], true);

-- An alert fires once when its rule's condition starts holding and resolves once when it
-- stops: one row per episode, at most one open (unresolved) per rule.
CREATE TABLE alert_events (
    event_id        bigserial PRIMARY KEY,
    rule_id         integer NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
    fired_at        timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    value_at_firing numeric,
    threshold_value numeric NOT NULL,
    message         text NOT NULL,
    CONSTRAINT alert_events_resolved_after_fired CHECK (resolved_at IS NULL OR resolved_at >= fired_at)
);
CREATE UNIQUE INDEX alert_events_one_open_per_rule ON alert_events (rule_id) WHERE resolved_at IS NULL;
CREATE INDEX alert_events_fired_idx ON alert_events (fired_at DESC);
COMMENT ON TABLE alert_events IS
    'Alert episodes: fired when a rule starts holding, resolved when it stops.';

-- ---------------------------------------------------------------------------------------
-- Security
-- ---------------------------------------------------------------------------------------
CREATE TABLE security_audit_log (
    audit_id         bigserial,
    event_time       timestamptz NOT NULL DEFAULT now(),
    username         text NOT NULL,
    database_name    text NOT NULL,
    schema_name      text,
    object_name      text,
    object_type      text,
    operation_type   text NOT NULL CHECK (btrim(operation_type) <> ''),
    client_ip        inet,
    application_name text,
    query_text       text,
    success          boolean NOT NULL,
    error_message    text,
    session_id       text,
    additional_info  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(additional_info) = 'object'),
    session_username text,
    transaction_id   xid,
    wal_lsn          pg_lsn,
    previous_hash    bytea,
    row_hash         bytea
) PARTITION BY RANGE (event_time);
CREATE TABLE security_audit_log_default PARTITION OF security_audit_log DEFAULT;
-- Per-partition indexes, as for performance_metrics.
ALTER TABLE security_audit_log_default ADD PRIMARY KEY (audit_id);
CREATE INDEX ON security_audit_log_default (event_time);
CREATE INDEX ON security_audit_log_default (username, operation_type, event_time);
-- What detect_suspicious_activity() filters on: one operation in a recent time window.
CREATE INDEX ON security_audit_log_default (operation_type, event_time);
COMMENT ON TABLE security_audit_log IS
    'Security events, partitioned by day (UTC); old days are dropped by retention.';
COMMENT ON COLUMN security_audit_log.username IS
    'The current user when the event happened (SET ROLE and SECURITY DEFINER functions change it).';
COMMENT ON COLUMN security_audit_log.session_username IS
    'The session''s login role.';
COMMENT ON COLUMN security_audit_log.transaction_id IS
    'The transaction the event belongs to, when it had an ID (recovery_target_xid).';
COMMENT ON COLUMN security_audit_log.wal_lsn IS
    'Where the audit journal (WAL) holds the event.';
-- How far the worker has turned the audit journal (WAL records of the toolkit's resource
-- manager) into rows: updated in the same transaction as the rows it wrote.
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
-- The head of the audit log's hash chain: the last row written and its hash.
CREATE TABLE audit_chain (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    head          bytea NOT NULL,
    head_audit_id bigint,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Rows from this audit_id on are chained; those before (written before 0.6.0) are not.
    chain_start_id bigint NOT NULL DEFAULT 0,
    chain_started_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_chain (head) VALUES ('\x');
COMMENT ON TABLE audit_chain IS
    'The head of security_audit_log''s hash chain: the last row written and its row_hash.';
COMMENT ON COLUMN security_audit_log.previous_hash IS
    'row_hash of the row before it (audit_id order); empty for the first row of the chain.';
COMMENT ON COLUMN security_audit_log.row_hash IS
    'sha256(previous_hash || audit_row_text(row)): see verify_audit_log().';

-- Credentials (0.7.0): what the worker persists of the lockout and the password history kept in
-- shared memory for the whole cluster. Superusers only (no grants): salted hashes only.
CREATE TABLE password_history (
    role_oid    oid NOT NULL,
    set_at      timestamptz NOT NULL,
    secret_kind text NOT NULL CHECK (secret_kind IN ('password', 'verifier')),
    salt        bytea NOT NULL,
    hash        bytea NOT NULL,
    PRIMARY KEY (role_oid, set_at, hash)
);
COMMENT ON TABLE password_history IS
    'Earlier passwords of each role as salted PBKDF2-SHA-256 hashes (never the password, never the server''s verifier), for password_reuse_history and password_reuse_interval; written by the worker.';
CREATE TABLE role_lockouts (
    role_oid         oid PRIMARY KEY,
    failed_logins    integer NOT NULL,
    first_failure_at timestamptz,
    locked_at        timestamptz,
    locked_until     timestamptz,
    -- While locked, the role's password counts as expired (rolvaliduntil = '-infinity'); its
    -- own VALID UNTIL is kept here and given back when the lock ends.
    valid_until_locked boolean NOT NULL DEFAULT false,
    saved_valid_until  timestamptz
);
COMMENT ON TABLE role_lockouts IS
    'Failed logins and locks of roles (max_auth_failures) as the worker last persisted them; loaded back after a restart. locked_until NULL with locked_at set: until unlock_role(). valid_until_locked: the role''s VALID UNTIL is -infinity for the lock, saved_valid_until its own.';

-- ---------------------------------------------------------------------------------------
-- Maintenance and configuration
-- ---------------------------------------------------------------------------------------
CREATE TABLE maintenance_schedules (
    schedule_id         serial PRIMARY KEY,
    maintenance_type    text NOT NULL
                        CHECK (maintenance_type IN ('vacuum', 'analyze', 'reindex', 'stats_update')),
    target_schema       text,
    target_table        text,
    schedule_expression text NOT NULL CHECK (btrim(schedule_expression) <> ''),
    maintenance_options jsonb NOT NULL DEFAULT '{}'
                        CHECK (jsonb_typeof(maintenance_options) = 'object'),
    is_active           boolean NOT NULL DEFAULT true,
    last_run            timestamptz,
    next_run            timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Added (0.2.0): the role its runs run as.
    owner               name NOT NULL DEFAULT current_user,
    -- Added (0.3.0): the database it maintains (NULL: the toolkit's), and why the worker
    -- deactivated it, if it did.
    target_database     name,
    note                text,
    CONSTRAINT maintenance_schedules_table_needs_schema
        CHECK (target_table IS NULL OR target_schema IS NOT NULL)
);
CREATE INDEX maintenance_schedules_due_idx ON maintenance_schedules (next_run) WHERE is_active;
COMMENT ON TABLE maintenance_schedules IS 'VACUUM / ANALYZE / REINDEX jobs on cron schedules.';

-- One row per run of a maintenance job, written by the job's own background worker.
CREATE TABLE maintenance_runs (
    run_id           bigserial PRIMARY KEY,
    schedule_id      integer REFERENCES maintenance_schedules (schedule_id) ON DELETE SET NULL,
    maintenance_type text NOT NULL
                     CHECK (maintenance_type IN ('vacuum', 'analyze', 'reindex', 'stats_update')),
    target_object    text NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'success', 'error', 'skipped')),
    command          text,
    error_message    text,
    details          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    duration_seconds numeric GENERATED ALWAYS AS (extract(epoch FROM finished_at - started_at)) STORED,
    -- Added (0.2.0): the role the run ran as.
    owner            name NOT NULL DEFAULT current_user,
    -- Added (0.3.0): the database it ran in (NULL: the toolkit's).
    target_database  name,
    CONSTRAINT maintenance_runs_finished_after_started CHECK (finished_at IS NULL OR finished_at >= started_at)
);
CREATE INDEX maintenance_runs_schedule_idx ON maintenance_runs (schedule_id, started_at DESC);
CREATE INDEX maintenance_runs_started_idx ON maintenance_runs (started_at);
COMMENT ON TABLE maintenance_runs IS 'History of maintenance runs: command, outcome, duration.';

CREATE TABLE configuration_history (
    config_id        bigserial PRIMARY KEY,
    parameter_name   text NOT NULL CHECK (btrim(parameter_name) <> ''),
    old_value        text,
    new_value        text,
    changed_by       text NOT NULL DEFAULT current_user,
    changed_at       timestamptz NOT NULL DEFAULT now(),
    change_reason    text,
    requires_restart boolean NOT NULL DEFAULT false,
    applied          boolean NOT NULL DEFAULT false
);
CREATE INDEX configuration_history_param_idx ON configuration_history (parameter_name, changed_at DESC);

-- The settings' values as the worker last saw them, to detect changes made by other means
-- (ALTER SYSTEM by hand, an edited postgresql.conf). Worker state; not dumped.
CREATE TABLE configuration_snapshot (
    name     text PRIMARY KEY,
    value    text,
    taken_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE configuration_snapshot IS 'Settings as the worker last saw them (change detection state).';
COMMENT ON TABLE configuration_history IS 'Every configuration change: old and new value, who, when, why.';

-- ---------------------------------------------------------------------------------------
-- pg_dump keeps the rows users own. Built-in rows are recreated by CREATE EXTENSION.
-- ---------------------------------------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('metric_definitions', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('alert_rules', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('alert_rules_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('backup_schedules', '');
SELECT pg_catalog.pg_extension_config_dump('backup_schedules_schedule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('backup_history', '');
SELECT pg_catalog.pg_extension_config_dump('backup_history_backup_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('recovery_points', '');
SELECT pg_catalog.pg_extension_config_dump('recovery_points_recovery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('maintenance_schedules', '');
SELECT pg_catalog.pg_extension_config_dump('maintenance_schedules_schedule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('configuration_history', '');
SELECT pg_catalog.pg_extension_config_dump('alert_events', '');
SELECT pg_catalog.pg_extension_config_dump('maintenance_runs', '');
SELECT pg_catalog.pg_extension_config_dump('maintenance_runs_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('alert_events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('configuration_history_config_id_seq', '');
-- The sequences of the partitioned logs, so restored rows and new rows do not collide.
SELECT pg_catalog.pg_extension_config_dump('performance_metrics_metric_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('security_audit_log_audit_id_seq', '');
-- Rows that landed in a default partition (a day without its partition) are dumped too.
SELECT pg_catalog.pg_extension_config_dump('performance_metrics_default', '');
SELECT pg_catalog.pg_extension_config_dump('security_audit_log_default', '');
