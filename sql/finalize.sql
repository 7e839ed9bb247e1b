-- Runs last in the extension script, after every function exists.

-- Nothing that changes the server is callable by PUBLIC.
REVOKE ALL ON FUNCTION maintain_partitions() FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

COMMENT ON SCHEMA @extschema@ IS 'admin_toolkit: backups, monitoring, security, maintenance, configuration.';
COMMENT ON FUNCTION validate_password_policy(text, text) IS
    'Checks a password against the password policy; one row per rule (never stores or logs the password).';
COMMENT ON FUNCTION maintain_partitions() IS
    'Runs partition upkeep of performance_metrics and security_audit_log now (the worker also does it).';
COMMENT ON FUNCTION is_preloaded() IS
    'Whether admin_toolkit is in shared_preload_libraries (needed by the worker and the hooks).';

DO $$
BEGIN
    IF NOT @extschema@.is_preloaded() THEN
        -- CREATE EXTENSION raises client_min_messages to warning while its script runs; give
        -- the session back its own level for this one notice (undone when the script ends).
        PERFORM pg_catalog.set_config('client_min_messages',
            (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'client_min_messages'), true);
        RAISE NOTICE 'admin_toolkit is not in shared_preload_libraries: its functions work, but the background worker and the server hooks do not run'
            USING HINT = 'Add admin_toolkit to shared_preload_libraries in postgresql.conf and restart the server.';
    END IF;
END
$$;
