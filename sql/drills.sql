-- Restore drills (0.3.0): a job restores a backup and its chain into a scratch directory,
-- recovers it from the archive on a throwaway server (private Unix socket, archiving off),
-- checks it with amcheck and row counts, measures RTO and RPO, and removes it.
-- sql/admin_toolkit--0.2.0--0.3.0.sql holds the same statements for installed 0.2.0.

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
    ('backup', 'restore_drill_failed', 'count', '1 when the last finished restore drill failed, 0 when it passed (cancelled drills are skipped)', true);

INSERT INTO alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value,
                         severity, notification_channels, builtin) VALUES
    ('Restore drill failed', 'backup', 'restore_drill_failed', '>', 0, 'critical', ARRAY['email'], true),
    ('Restore drill overdue', 'backup', 'restore_drill_age_seconds', '>', 7 * 86400, 'warning', ARRAY['email'], true);

SELECT pg_catalog.pg_extension_config_dump('restore_drill_schedules', '');
SELECT pg_catalog.pg_extension_config_dump('restore_drill_schedules_schedule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('restore_drills', '');
SELECT pg_catalog.pg_extension_config_dump('restore_drills_drill_id_seq', '');

-- (0.4.0) The same owner rules as the other schedule tables: a non-superuser sees and writes
-- only its own rows (schedule_owner_check refuses it as an owner anyway); pg_monitor reads
-- every drill.
ALTER TABLE restore_drill_schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE restore_drills ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_rows ON restore_drill_schedules USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY owner_rows ON restore_drills USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY monitor_reads ON restore_drills FOR SELECT TO pg_monitor USING (true);
