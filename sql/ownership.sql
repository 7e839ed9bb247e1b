-- Least privilege (0.2.0): every schedule has an owner role and its jobs run as that role, so a
-- grant never gives more than the grantee could do by hand. Row-level security, as pg_cron's
-- cron.job: a non-superuser sees and changes only the schedules and runs it owns; superusers
-- (and the extension's own worker) see all; pg_monitor members read every run.
-- sql/admin_toolkit--0.1.0--0.2.0.sql holds the same statements for installed 0.1.0.

CREATE FUNCTION schedule_owner_check() RETURNS trigger
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
CREATE TRIGGER backup_schedules_owner_check BEFORE INSERT OR UPDATE ON backup_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_owner_check();
CREATE TRIGGER maintenance_schedules_owner_check BEFORE INSERT OR UPDATE ON maintenance_schedules
    FOR EACH ROW EXECUTE FUNCTION schedule_owner_check();
COMMENT ON FUNCTION schedule_owner_check() IS
    'A schedule''s owner must exist; backup locations are set only by, and for, roles that may write server files; drill schedules are owned by superusers.';

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
