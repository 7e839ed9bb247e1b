-- Role hierarchy and row-level-security helpers. Identifiers are always quoted with format(%I)
-- or regclass; nothing supplied by the caller is executed as SQL.

CREATE FUNCTION setup_role_hierarchy(p_schema text DEFAULT 'public')
RETURNS TABLE (step text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r text;
    pair text[];
BEGIN
    IF p_schema IS NULL THEN
        RAISE EXCEPTION 'p_schema must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF to_regnamespace(quote_ident(p_schema)) IS NULL THEN
        RAISE EXCEPTION 'schema "%" does not exist', p_schema USING ERRCODE = '3F000';
    END IF;
    -- Grants on the toolkit's own schema would hand its functions (configuration, backups)
    -- and its tables to the group roles; system schemas are not an application's.
    IF p_schema IN ('@extschema@', 'pg_catalog', 'information_schema')
       OR p_schema LIKE 'pg\_toast%' OR p_schema LIKE 'pg\_temp%' THEN
        RAISE EXCEPTION 'setup_role_hierarchy does not grant on schema "%"', p_schema USING ERRCODE = '22023',
            HINT = 'Name the schema of your application''s tables.';
    END IF;
    -- Group roles only: NOLOGIN, no passwords. Login users are the administrator's to create.
    FOREACH r IN ARRAY ARRAY['app_roles', 'app_readonly', 'app_readwrite', 'app_admin',
                             'data_analyst', 'data_engineer', 'backup_operator'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN INHERIT', r);
            step := 'create role'; detail := r; RETURN NEXT;
        ELSE
            step := 'role exists'; detail := r; RETURN NEXT;
        END IF;
    END LOOP;
    -- The specification's memberships: member role first, then the role it joins.
    FOREACH pair SLICE 1 IN ARRAY ARRAY[
        ['app_readonly', 'app_roles'], ['app_readwrite', 'app_roles'], ['app_admin', 'app_roles'],
        ['app_readonly', 'data_analyst'], ['app_readwrite', 'data_engineer'], ['app_admin', 'backup_operator']] LOOP
        IF NOT pg_has_role(pair[2], pair[1], 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', pair[1], pair[2]);
            step := 'grant role'; detail := format('%s to %s', pair[1], pair[2]); RETURN NEXT;
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO app_roles', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO app_roles, app_readonly, app_readwrite, app_admin', p_schema);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO app_readonly', p_schema);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO app_readwrite', p_schema);
    EXECUTE format('GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA %I TO app_admin', p_schema);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO app_readwrite', p_schema);
    EXECUTE format('GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA %I TO app_admin', p_schema);
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO app_readwrite', p_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO app_readonly', p_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app_readwrite', p_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT ALL PRIVILEGES ON TABLES TO app_admin', p_schema);
    step := 'grant privileges'; detail := format('database %s, schema %s: tables, sequences, functions, default privileges', current_database(), p_schema);
    RETURN NEXT;
END
$$;

CREATE FUNCTION enable_tenant_isolation(p_table regclass, p_column name, p_setting text,
                                        p_roles name[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    column_type text;
    grantees text;
    value_expr text;
BEGIN
    IF p_table IS NULL OR p_column IS NULL OR p_setting IS NULL THEN
        RAISE EXCEPTION 'p_table, p_column and p_setting must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- A custom setting name: prefix.name, letters, digits and underscores only.
    IF p_setting !~ '^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$' THEN
        RAISE EXCEPTION 'invalid setting name "%"', p_setting USING ERRCODE = '22023',
            HINT = 'Use a custom setting such as app.tenant_id.';
    END IF;
    SELECT format_type(a.atttypid, a.atttypmod) INTO column_type
      FROM pg_attribute a
     WHERE a.attrelid = p_table AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF column_type IS NULL THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', p_column, p_table USING ERRCODE = '42703';
    END IF;
    IF p_roles IS NULL OR cardinality(p_roles) = 0 THEN
        grantees := 'PUBLIC';
    ELSE
        SELECT string_agg(quote_ident(r), ', ') INTO grantees FROM unnest(p_roles) AS r;
    END IF;
    -- Fails closed: an unset (NULL) or reset ('') setting matches no row.
    value_expr := format('(NULLIF(current_setting(%L, true), %L))::%s', p_setting, '', column_type);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', p_table);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s FOR ALL TO %s USING (%I = %s) WITH CHECK (%I = %s)',
                   p_table, grantees, p_column, value_expr, p_column, value_expr);
    RETURN format('policy tenant_isolation on %s: %I = current_setting(%L), for %s', p_table, p_column, p_setting, grantees);
END
$$;

CREATE FUNCTION rls_coverage()
RETURNS TABLE (schema_name name, table_name name, rls_enabled boolean, rls_forced boolean,
               policy_count integer, issue text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
           (SELECT count(*)::int FROM pg_policy p WHERE p.polrelid = c.oid),
           CASE
               WHEN NOT c.relrowsecurity THEN 'row level security not enabled'
               WHEN NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
                   THEN 'row level security enabled but no policy: no rows visible to non-owners'
               ELSE 'row level security not forced: the table owner bypasses it'
           END
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
       AND NOT c.relispartition
       AND NOT (c.relrowsecurity AND c.relforcerowsecurity
                AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
     ORDER BY 1, 2
$$;
