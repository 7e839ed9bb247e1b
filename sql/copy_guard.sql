-- (0.4.0) The server the schedules were written for: a server whose system identifier or data
-- directory differs (a restored or cloned copy), or whose data directory holds admin-toolkit
-- restore's admin_toolkit.held, runs no schedule and no retention until
-- admin_toolkit.adopt_as_primary(). Written by the worker at its first look, and by adoption.
CREATE TABLE cluster_identity (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    system_identifier  text NOT NULL,
    data_directory     text NOT NULL,
    adopted_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cluster_identity IS
    'The server this catalog''s schedules and retention are for (one row); another one is a copy and holds them until adopt_as_primary().';
SELECT pg_catalog.pg_extension_config_dump('cluster_identity', '');
