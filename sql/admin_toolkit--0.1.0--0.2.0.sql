-- admin_toolkit 0.1.0 -> 0.2.0. Hand-written; never edit once released.
-- Least privilege: schedules and runs get an owner role (jobs run as it), row-level security
-- on the schedule and history tables, a 'deleting' backup state (files are removed only after
-- the transaction that retires a backup has committed), setup_role_hierarchy refuses the
-- toolkit's and the system's schemas, plan_recovery* name the NULL parameter; build_info().
\echo Use "ALTER EXTENSION admin_toolkit UPDATE TO '0.2.0'" to load this file. \quit

-- Owners. Rows of 0.1.0 were run by the worker as the bootstrap superuser: they keep that role.
ALTER TABLE backup_schedules ADD COLUMN owner name NOT NULL DEFAULT current_user;
ALTER TABLE backup_history ADD COLUMN owner name NOT NULL DEFAULT current_user;
ALTER TABLE maintenance_schedules ADD COLUMN owner name NOT NULL DEFAULT current_user;
ALTER TABLE maintenance_runs ADD COLUMN owner name NOT NULL DEFAULT current_user;
UPDATE backup_schedules SET owner = (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10);
UPDATE backup_history SET owner = (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10);
UPDATE maintenance_schedules SET owner = (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10);
UPDATE maintenance_runs SET owner = (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10);

-- Retention marks backups 'deleting'; the worker removes their files after the commit.
ALTER TABLE backup_history DROP CONSTRAINT backup_history_status_check;
ALTER TABLE backup_history ADD CONSTRAINT backup_history_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'deleting', 'deleted'));

-- As sql/ownership.sql.
CREATE FUNCTION schedule_owner_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = NEW.owner) THEN
        RAISE EXCEPTION 'role "%" does not exist', NEW.owner USING ERRCODE = '42704',
            HINT = 'A schedule''s owner is the role its jobs run as.';
    END IF;
    IF TG_TABLE_NAME <> 'backup_schedules' THEN
        RETURN NEW;
    END IF;
    -- (A separate IF: PL/pgSQL resolves NEW's fields when it first runs an expression.)
    IF TG_OP = 'INSERT' OR NEW.storage_location IS DISTINCT FROM OLD.storage_location
       OR NEW.owner IS DISTINCT FROM OLD.owner THEN
        IF NOT pg_has_role(current_user, 'pg_write_server_files', 'USAGE') THEN
            RAISE EXCEPTION 'permission denied to set a backup storage_location'
                USING ERRCODE = '42501',
                      HINT = 'Backups write files on the server: only superusers and members of pg_write_server_files may set where.';
        END IF;
        IF NOT pg_has_role(NEW.owner, 'pg_write_server_files', 'USAGE') THEN
            RAISE EXCEPTION 'role "%" may not own a backup schedule: its backups would write files on the server', NEW.owner
                USING ERRCODE = '42501',
                      HINT = 'Make the owner a superuser or a member of pg_write_server_files.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER backup_schedules_owner_check BEFORE INSERT OR UPDATE ON backup_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_owner_check();
CREATE TRIGGER maintenance_schedules_owner_check BEFORE INSERT OR UPDATE ON maintenance_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_owner_check();
COMMENT ON FUNCTION schedule_owner_check() IS
    'A schedule''s owner must exist; backup locations are set only by, and for, roles that may write server files.';

ALTER TABLE backup_schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE backup_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE maintenance_schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE maintenance_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_rows ON backup_schedules USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY owner_rows ON backup_history USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY owner_rows ON maintenance_schedules USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY owner_rows ON maintenance_runs USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY monitor_reads ON backup_history FOR SELECT TO pg_monitor USING (true);
CREATE POLICY monitor_reads ON maintenance_runs FOR SELECT TO pg_monitor USING (true);

COMMENT ON COLUMN backup_schedules.owner IS 'The role its backups run as (default: the role that created it).';
COMMENT ON COLUMN maintenance_schedules.owner IS 'The role its runs run as (default: the role that created it).';
COMMENT ON COLUMN backup_history.owner IS 'The role the backup ran as.';
COMMENT ON COLUMN maintenance_runs.owner IS 'The role the run ran as.';

-- As sql/security.sql.
CREATE OR REPLACE FUNCTION setup_role_hierarchy(p_schema text DEFAULT 'public')
RETURNS TABLE (step text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text;
    pair text[];
BEGIN
    IF p_schema IS NULL THEN
        RAISE EXCEPTION 'p_schema must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF to_regnamespace(quote_ident(p_schema)) IS NULL THEN
        RAISE EXCEPTION 'schema "%" does not exist', p_schema USING ERRCODE = '3F000';
    END IF;
    -- Grants on the toolkit's own schema would hand its functions (configuration, backups)
    -- and its tables to the group roles; system schemas are not an application's.
    IF p_schema IN ('@extschema@', 'pg_catalog', 'information_schema')
       OR p_schema LIKE 'pg\_toast%' OR p_schema LIKE 'pg\_temp%' THEN
        RAISE EXCEPTION 'setup_role_hierarchy does not grant on schema "%"', p_schema USING ERRCODE = '22023',
            HINT = 'Name the schema of your application''s tables.';
    END IF;
    -- Group roles only: NOLOGIN, no passwords. Login users are the administrator's to create.
    FOREACH r IN ARRAY ARRAY['app_roles', 'app_readonly', 'app_readwrite', 'app_admin',
                             'data_analyst', 'data_engineer', 'backup_operator'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN INHERIT', r);
            step := 'create role'; detail := r; RETURN NEXT;
        ELSE
            step := 'role exists'; detail := r; RETURN NEXT;
        END IF;
    END LOOP;
    -- The specification's memberships: member role first, then the role it joins.
    FOREACH pair SLICE 1 IN ARRAY ARRAY[
        ['app_readonly', 'app_roles'], ['app_readwrite', 'app_roles'], ['app_admin', 'app_roles'],
        ['app_readonly', 'data_analyst'], ['app_readwrite', 'data_engineer'], ['app_admin', 'backup_operator']] LOOP
        IF NOT pg_has_role(pair[2], pair[1], 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', pair[1], pair[2]);
            step := 'grant role'; detail := format('%s to %s', pair[1], pair[2]); RETURN NEXT;
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO app_roles', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO app_roles, app_readonly, app_readwrite, app_admin', p_schema);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO app_readonly', p_schema);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO app_readwrite', p_schema);
    EXECUTE format('GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA %I TO app_admin', p_schema);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO app_readwrite', p_schema);
    EXECUTE format('GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA %I TO app_admin', p_schema);
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO app_readwrite', p_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO app_readonly', p_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app_readwrite', p_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT ALL PRIVILEGES ON TABLES TO app_admin', p_schema);
    step := 'grant privileges'; detail := format('database %s, schema %s: tables, sequences, functions, default privileges', current_database(), p_schema);
    RETURN NEXT;
END
$$;

-- As sql/finalize.sql.
CREATE OR REPLACE FUNCTION plan_recovery(target_time timestamptz)
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
CREATE OR REPLACE FUNCTION plan_recovery_to_lsn(target_lsn pg_lsn)
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
CREATE OR REPLACE FUNCTION plan_recovery_to_restore_point(restore_point text)
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


-- As src/build_info.rs.
CREATE FUNCTION build_info() RETURNS TABLE (version text, git_commit text, build_profile text, built_for text)
STABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'build_info_wrapper';
COMMENT ON FUNCTION build_info() IS
    'The loaded build of admin_toolkit: version, commit, release or debug profile, the PostgreSQL it was built for.';

-- As src/config/recommendations.rs: a sixth column gives the statement that applies each piece
-- of advice (the result type changes, so the function is dropped and created again).
DROP FUNCTION get_config_recommendations();
CREATE FUNCTION get_config_recommendations() RETURNS TABLE (
    parameter_name text, current_value text, recommended_value text, reasoning text, priority text,
    alter_system_statement text)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'get_config_recommendations_wrapper';
COMMENT ON FUNCTION get_config_recommendations() IS
    'Tuning advice (PGTune formulas) from RAM, CPUs, max_connections, storage_type and workload, and from temp files, forced checkpoints and cache hit ratio; with the ALTER SYSTEM statement that applies each.';

-- As sql/notifications.sql: alert channels and the delivery outbox.
CREATE TABLE alert_channels (
    channel_name text PRIMARY KEY CHECK (channel_name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    kind         text NOT NULL CHECK (kind IN ('email', 'slack', 'pagerduty', 'webhook')),
    target       text CHECK (target IS NULL OR target ~ '^(https?|smtp)://[^/]'),
    options      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    is_active    boolean NOT NULL DEFAULT true,
    builtin      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_channels_target_fits_kind
        CHECK (target IS NULL OR (kind = 'email') = (target LIKE 'smtp://%')),
    CONSTRAINT alert_channels_no_secrets
        CHECK (NOT options ?| ARRAY['password', 'routing_key', 'secret', 'token', 'url'])
);
COMMENT ON TABLE alert_channels IS
    'Where alerts are sent: alert_rules.notification_channels names these rows. Secrets come from admin_toolkit.notification_secrets_file.';
-- The names the specification's sample rules use; inactive until configured.
INSERT INTO alert_channels (channel_name, kind, is_active, builtin) VALUES
    ('email', 'email', false, true),
    ('slack', 'slack', false, true),
    ('pagerduty', 'pagerduty', false, true);

CREATE TABLE alert_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    event_id        bigint NOT NULL REFERENCES alert_events (event_id) ON DELETE CASCADE,
    channel_name    text NOT NULL REFERENCES alert_channels (channel_name) ON DELETE CASCADE ON UPDATE CASCADE,
    action          text NOT NULL CHECK (action IN ('trigger', 'resolve')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    -- The idempotency key: one delivery of each event's trigger and resolve per channel.
    CONSTRAINT alert_deliveries_once UNIQUE (event_id, channel_name, action),
    CONSTRAINT alert_deliveries_delivered_has_time CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (next_attempt_at) WHERE status = 'pending';
COMMENT ON TABLE alert_deliveries IS
    'Outbox: one row per alert event, action and channel; the worker delivers, retrying with backoff.';

CREATE TABLE alert_delivery_attempts (
    attempt_id   bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES alert_deliveries (delivery_id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL,
    succeeded    boolean NOT NULL,
    status_code  integer,
    error        text,
    latency_ms   double precision NOT NULL CHECK (latency_ms >= 0)
);
CREATE INDEX alert_delivery_attempts_delivery_idx ON alert_delivery_attempts (delivery_id);
COMMENT ON TABLE alert_delivery_attempts IS 'Every delivery attempt: when, outcome, HTTP or SMTP status, error, latency.';

-- A rule names existing channels only.
CREATE FUNCTION alert_rule_channels_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
BEGIN
    SELECT string_agg(quote_literal(n), ', ') INTO unknown
      FROM unnest(NEW.notification_channels) AS n
     WHERE NOT EXISTS (SELECT 1 FROM @extschema@.alert_channels c WHERE c.channel_name = n);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown notification channel %', unknown USING ERRCODE = '23503',
            HINT = 'Create it in admin_toolkit.alert_channels first.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER alert_rules_channels_check BEFORE INSERT OR UPDATE OF notification_channels ON alert_rules
    FOR EACH ROW EXECUTE FUNCTION alert_rule_channels_check();

-- A channel a rule names is not removed or renamed under it.
CREATE FUNCTION alert_channel_in_use_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rules text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.channel_name = OLD.channel_name THEN
        RETURN NEW;
    END IF;
    SELECT string_agg(quote_literal(rule_name), ', ') INTO rules
      FROM @extschema@.alert_rules WHERE OLD.channel_name = ANY (notification_channels);
    IF rules IS NOT NULL THEN
        RAISE EXCEPTION 'notification channel "%" is named by alert rule %', OLD.channel_name, rules
            USING ERRCODE = '23503', HINT = 'Remove it from those rules first.';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER alert_channels_in_use_check BEFORE DELETE OR UPDATE OF channel_name ON alert_channels
    FOR EACH ROW EXECUTE FUNCTION alert_channel_in_use_check();

SELECT pg_catalog.pg_extension_config_dump('alert_channels', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('alert_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('alert_deliveries_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('alert_delivery_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('alert_delivery_attempts_attempt_id_seq', '');

GRANT SELECT ON alert_channels, alert_deliveries, alert_delivery_attempts TO pg_monitor;

-- Channel names that 0.1.0 rules used beyond the three built-in ones become inactive channels
-- (a webhook unless the name is a kind), so that those rules can still be updated.
INSERT INTO alert_channels (channel_name, kind, is_active)
SELECT DISTINCT n, CASE WHEN n IN ('email', 'slack', 'pagerduty') THEN n ELSE 'webhook' END, false
  FROM alert_rules, unnest(notification_channels) AS n
 WHERE n ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'
ON CONFLICT DO NOTHING;
