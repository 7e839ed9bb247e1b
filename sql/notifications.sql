-- Alert notifications (0.2.0): channels that alert_rules.notification_channels name, and an
-- outbox. Recording an alert event (fired or resolved) writes one delivery per active channel
-- of its rule in the same transaction; the worker sends them with retries and records every
-- attempt. Secrets (SMTP password, PagerDuty routing key, webhook signing secret, a Slack
-- webhook URL) live in the file admin_toolkit.notification_secrets_file names, never here.
-- sql/admin_toolkit--0.1.0--0.2.0.sql holds the same statements for installed 0.1.0.
-- (alert_channels sorts before alert_rules, so pg_restore loads channels before the rules that
-- name them.)

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
