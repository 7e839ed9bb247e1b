-- admin_toolkit 0.4.0 -> 0.5.0. Hand-written; never edit once released.
-- Built-in alerts on backups: WAL archiving that fails, a schedule whose last backup failed, a
-- schedule whose last completed backup is older than its cron expression allows (the same
-- statements as sql/backup_alerts.sql).
\echo Use "ALTER EXTENSION admin_toolkit UPDATE TO '0.5.0'" to load this file. \quit

INSERT INTO metric_definitions (metric_type, metric_name, metric_unit, description, builtin) VALUES
    ('backup', 'archive_failing', 'count', '1 when WAL archiving is on and its last attempt failed (pg_stat_archiver), else 0', true),
    ('backup', 'failed_backup_schedules', 'count', 'Active full and incremental backup schedules whose last finished backup failed', true),
    ('backup', 'overdue_backup_schedules', 'count', 'Active full and incremental backup schedules whose last completed backup is older than the longest gap between two of their runs plus an hour', true);

INSERT INTO alert_rules (rule_name, metric_type, metric_name, condition_operator, threshold_value,
                         severity, notification_channels, builtin) VALUES
    ('WAL archiving failing', 'backup', 'archive_failing', '>', 0, 'critical', ARRAY['email', 'pagerduty'], true),
    ('Backup failed', 'backup', 'failed_backup_schedules', '>', 0, 'critical', ARRAY['email'], true),
    ('Backup overdue', 'backup', 'overdue_backup_schedules', '>', 0, 'warning', ARRAY['email'], true);

-- The description said cancelled drills count as failed; they are skipped.
UPDATE metric_definitions
   SET description = '1 when the last finished restore drill failed, 0 when it passed (cancelled drills are skipped)'
 WHERE metric_type = 'backup' AND metric_name = 'restore_drill_failed';
