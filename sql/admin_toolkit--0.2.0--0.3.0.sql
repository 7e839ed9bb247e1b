-- admin_toolkit 0.2.0 -> 0.3.0. Hand-written; never edit once released.
-- Restore drills: restore_drill_schedules and restore_drills, run_restore_drill(), their
-- metrics (age of the last passed drill, its RTO, whether the last one failed) and two
-- built-in alert rules on them; maintenance schedules and runs name their database
-- (target_database), and a schedule deactivated by the worker says why (note).
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
    ('backup', 'restore_drill_age_days', 'days', 'Days since the last passed restore drill (with none passed, since the oldest completed backup)', true),
    ('backup', 'restore_drill_rto_seconds', 'seconds', 'RTO of the last passed restore drill: start of the restore to promotion', true),
    ('backup', 'restore_drill_failed', 'count', '1 when the last finished restore drill failed or was cancelled, else 0', true);

INSERT INTO alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value,
                         severity, notification_channels, builtin) VALUES
    ('Restore drill failed', 'backup', 'restore_drill_failed', '>', 0, 'critical', ARRAY['email'], true),
    ('Restore drill overdue', 'backup', 'restore_drill_age_days', '>', 7, 'warning', ARRAY['email'], true);

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

-- Every database of the cluster: maintenance schedules name the database they maintain (as
-- sql/bootstrap.sql and sql/databases.sql).
ALTER TABLE maintenance_schedules ADD COLUMN target_database name, ADD COLUMN note text;
ALTER TABLE maintenance_runs ADD COLUMN target_database name;
COMMENT ON COLUMN maintenance_schedules.target_database IS
    'The database its runs maintain, connected as the owner; NULL: admin_toolkit.database.';
COMMENT ON COLUMN maintenance_schedules.note IS
    'Why the worker deactivated the schedule (its database was dropped); cleared when it is activated again.';
COMMENT ON COLUMN maintenance_runs.target_database IS
    'The database the run ran in; NULL: admin_toolkit.database.';

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
