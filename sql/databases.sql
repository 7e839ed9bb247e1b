-- Every database of the cluster (0.3.0): maintenance schedules name the database they maintain.
-- sql/admin_toolkit--0.2.0--0.3.0.sql holds the same statements for installed 0.2.0.

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
