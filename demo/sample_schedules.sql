-- The seed document's sample schedules, for the demo cluster only (CREATE EXTENSION does not
-- install them). Backup locations are local directories under :backup_root instead of the
-- seed's s3:// examples, and the reindex sample gets the table it names.
-- Idempotent: run it as often as you like.

CREATE TABLE IF NOT EXISTS public.large_table (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload text NOT NULL
);
INSERT INTO public.large_table (payload)
SELECT md5(g::text) FROM generate_series(1, 10000) AS g
WHERE NOT EXISTS (SELECT 1 FROM public.large_table);

INSERT INTO admin_toolkit.backup_schedules (backup_type, schedule_expression, retention_days, storage_location)
SELECT * FROM (VALUES
    ('full',        '0 2 * * 0',   90, :'backup_root' || '/full'),
    ('incremental', '0 2 * * 1-6', 30, :'backup_root' || '/incremental'),
    ('wal_archive', '*/5 * * * *',  7, :'backup_root' || '/wal')
) AS v(backup_type, schedule_expression, retention_days, storage_location)
WHERE NOT EXISTS (SELECT 1 FROM admin_toolkit.backup_schedules);

INSERT INTO admin_toolkit.maintenance_schedules
    (maintenance_type, target_schema, target_table, schedule_expression, maintenance_options)
SELECT maintenance_type, target_schema, target_table, schedule_expression, maintenance_options::jsonb
FROM (VALUES
    ('vacuum',       'public', NULL,          '0 2 * * *', '{"analyze": true, "freeze": false}'),
    ('analyze',      'public', NULL,          '0 3 * * 0', '{}'),
    ('reindex',      'public', 'large_table', '0 4 * * 0', '{"concurrent": true}'),
    ('stats_update', NULL,     NULL,          '0 1 * * *', '{}')
) AS v(maintenance_type, target_schema, target_table, schedule_expression, maintenance_options)
WHERE NOT EXISTS (SELECT 1 FROM admin_toolkit.maintenance_schedules);
