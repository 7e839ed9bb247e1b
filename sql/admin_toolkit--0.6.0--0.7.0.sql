-- admin_toolkit 0.6.0 -> 0.7.0. Hand-written; never edit once released.
-- Credentials: the password history and the lockout after failed logins, kept in shared memory
-- for the whole cluster and persisted by the worker into these tables.
\echo Use "ALTER EXTENSION admin_toolkit UPDATE TO '0.7.0'" to load this file. \quit

CREATE TABLE password_history (
    role_oid    oid NOT NULL,
    set_at      timestamptz NOT NULL,
    secret_kind text NOT NULL CHECK (secret_kind IN ('password', 'verifier')),
    salt        bytea NOT NULL,
    hash        bytea NOT NULL,
    PRIMARY KEY (role_oid, set_at, hash)
);
COMMENT ON TABLE password_history IS
    'Earlier passwords of each role as salted PBKDF2-SHA-256 hashes (never the password, never the server''s verifier), for password_reuse_history and password_reuse_interval; written by the worker.';
CREATE TABLE role_lockouts (
    role_oid         oid PRIMARY KEY,
    failed_logins    integer NOT NULL,
    first_failure_at timestamptz,
    locked_at        timestamptz,
    locked_until     timestamptz,
    -- While locked, the role's password counts as expired (rolvaliduntil = '-infinity'); its
    -- own VALID UNTIL is kept here and given back when the lock ends.
    valid_until_locked boolean NOT NULL DEFAULT false,
    saved_valid_until  timestamptz
);
COMMENT ON TABLE role_lockouts IS
    'Failed logins and locks of roles (max_auth_failures) as the worker last persisted them; loaded back after a restart. locked_until NULL with locked_at set: until unlock_role(). valid_until_locked: the role''s VALID UNTIL is -infinity for the lock, saved_valid_until its own.';

CREATE FUNCTION "lockout_states"() RETURNS TABLE (
    "role_name" TEXT,
    "role_oid" oid,
    "failed_logins" INT,
    "first_failure_at" timestamp with time zone,
    "locked" bool,
    "locked_at" timestamp with time zone,
    "locked_until" timestamp with time zone
)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'lockout_states_wrapper';
REVOKE ALL ON FUNCTION lockout_states() FROM PUBLIC;
COMMENT ON FUNCTION lockout_states() IS
    'Every role with counted failed logins or a lock, cluster-wide, from shared memory.';

CREATE FUNCTION "unlock_role"("p_role" TEXT) RETURNS bool
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'unlock_role_wrapper';
REVOKE ALL ON FUNCTION unlock_role(text) FROM PUBLIC;
COMMENT ON FUNCTION unlock_role(text) IS
    'Lifts a role''s lock after failed logins and clears its count; returns whether it was locked (audited as ROLE_UNLOCKED).';

CREATE VIEW locked_roles AS
SELECT role_name, role_oid, failed_logins, first_failure_at, locked_at, locked_until
  FROM @extschema@.lockout_states()
 WHERE locked;
REVOKE ALL ON locked_roles FROM PUBLIC;
COMMENT ON VIEW locked_roles IS
    'Roles locked now after failed logins (admin_toolkit.max_auth_failures); unlock_role() lifts a lock.';

COMMENT ON FUNCTION detect_suspicious_activity() IS
    'Failed logins, privilege changes and excessive reads above the admin_toolkit.*_threshold settings, and roles locked now.';
