-- admin_toolkit 0.3.0 -> 0.4.0. Hand-written; never edit once released.
-- A restored or copied server holds schedules and retention until adopt_as_primary()
-- (cluster_identity).
-- Backup schedules' locations and key ids are validated when written (check_backup_target).
-- Restore drill schedules get the owner rules of the other schedule tables: their owner must be
-- a superuser (schedule_owner_check), and row-level security shows and lets a non-superuser
-- write only its own schedules and drills (pg_monitor reads every drill).
\echo Use "ALTER EXTENSION admin_toolkit UPDATE TO '0.4.0'" to load this file. \quit

-- A backup schedule's storage_location and encryption_key_id are checked when written (22023).
CREATE FUNCTION "check_backup_target"(
	"p_storage_location" TEXT,
	"p_encryption_key_id" TEXT
) RETURNS void
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'check_backup_target_wrapper';
COMMENT ON FUNCTION check_backup_target(text, text) IS
    'Refuses (22023) a backup storage location or encryption key id that no backup could use; called by schedule_owner_check.';

CREATE OR REPLACE FUNCTION schedule_owner_check() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = NEW.owner) THEN
        RAISE EXCEPTION 'role "%" does not exist', NEW.owner USING ERRCODE = '42704',
            HINT = 'A schedule''s owner is the role its jobs run as.';
    END IF;
    IF TG_TABLE_NAME = 'restore_drill_schedules' THEN
        -- (0.4.0) A drill reads every backup and starts a server as the server's OS user.
        -- (Checked when the owner is set; one demoted later is refused when a drill starts.)
        IF (TG_OP = 'INSERT' OR NEW.owner IS DISTINCT FROM OLD.owner)
           AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = NEW.owner) THEN
            RAISE EXCEPTION 'role "%" may not own a restore drill schedule: drills run as superusers', NEW.owner
                USING ERRCODE = '42501',
                      HINT = 'A drill reads every backup and starts a server as the server''s OS user: make a superuser the owner.';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME <> 'backup_schedules' THEN
        RETURN NEW;
    END IF;
    -- (A separate IF: PL/pgSQL resolves NEW's fields when it first runs an expression.)
    -- (0.4.0) A location or key id no backup could use is refused when it is written (22023).
    IF TG_OP = 'INSERT' OR NEW.storage_location IS DISTINCT FROM OLD.storage_location
       OR NEW.encryption_key_id IS DISTINCT FROM OLD.encryption_key_id THEN
        PERFORM @extschema@.check_backup_target(NEW.storage_location, NEW.encryption_key_id);
    END IF;
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
COMMENT ON FUNCTION schedule_owner_check() IS
    'A schedule''s owner must exist; backup locations are set only by, and for, roles that may write server files; drill schedules are owned by superusers.';

ALTER TABLE restore_drill_schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE restore_drills ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_rows ON restore_drill_schedules USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY owner_rows ON restore_drills USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE POLICY monitor_reads ON restore_drills FOR SELECT TO pg_monitor USING (true);

-- A restored or copied server holds its schedules and retention until adopted.
CREATE TABLE cluster_identity (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    system_identifier  text NOT NULL,
    data_directory     text NOT NULL,
    adopted_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cluster_identity IS
    'The server this catalog''s schedules and retention are for (one row); another one is a copy and holds them until adopt_as_primary().';
SELECT pg_catalog.pg_extension_config_dump('cluster_identity', '');
CREATE FUNCTION "adopt_as_primary"() RETURNS TEXT
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'adopt_as_primary_wrapper';
REVOKE ALL ON FUNCTION adopt_as_primary() FROM PUBLIC;
COMMENT ON FUNCTION adopt_as_primary() IS
    'Makes this server the one its schedules and retention are for, after a restore or a copy held them.';
