-- 0006 roles and row-level security.
--
--   pipeline_migrator  owns every object of the schema (the login that runs migrations must
--                      be a member, or a superuser); the only role that can run
--                      `partitions prune` (DETACH/DROP need the owner).
--   pipeline_writer    the workers: only the DML they need, plus the rollup job.
--   pipeline_analyst   read-only; sees only the rows of the organization its session is
--                      bound to, in every table, rollup, view and function it can read.
--   pipeline_analyst_all  read-only, every organization: internal analysts and
--                      cross-organization reports.
--
-- Roles are cluster-wide and NOLOGIN: grant them to login roles (GRANT pipeline_writer TO
-- worker_login). They are created only if missing (other databases on the server may
-- already use them), and the down migration revokes what this migration granted but does
-- not drop them: other databases (every test database is cloned from one template) hold
-- grants to them or objects owned by them, and DROP ROLE would fail there or, worse,
-- succeed here only to break them. Dropping the roles is a manual step once no database
-- uses them (REASSIGN OWNED / DROP OWNED in each, then DROP ROLE).

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['pipeline_migrator', 'pipeline_writer', 'pipeline_analyst',
                             'pipeline_analyst_all'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created concurrently by a migration of another database
            END;
        END IF;
    END LOOP;
    IF NOT pg_has_role(current_user, 'pipeline_migrator', 'SET') THEN
        RAISE EXCEPTION 'the role running migrations (%) must be a superuser or a member of '
                        'pipeline_migrator to hand it the schema', current_user
            USING HINT = format('as a superuser: GRANT pipeline_migrator TO %I', current_user);
    END IF;
END
$$;

-- Who may bind a session to which organization. An analyst login L may bind to
-- organization O if a row (R, O) or (R, '*') exists for a role R that L is a member of
-- (L itself, or a group). Analysts cannot read or change it: only the owner (the migrator)
-- edits it. A session sets `app.organization_id` itself, so without this table any
-- analyst could pick any organization; with it, a tenant's login can only pick its own,
-- and a trusted front end (a BI server that binds each of its users' sessions) gets '*'.
CREATE TABLE analyst_scopes (
    role_name       name NOT NULL,
    organization_id text NOT NULL,  -- '*' = any organization
    PRIMARY KEY (role_name, organization_id)
);

COMMENT ON TABLE analyst_scopes IS
    'Which login (or group) roles may bind an analyst session to which organization '
    '(''*'' = any). Checked by analyst_organization().';

-- The organization the current session is bound to: app.organization_id if the session's
-- login may bind to it (analyst_scopes), else NULL (and the analyst sees no rows).
-- SECURITY DEFINER only to read analyst_scopes; it reads no tenant data. Policies call it
-- as (SELECT analyst_organization()) so it runs once per query, not once per row.
CREATE FUNCTION analyst_organization() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
AS $$
    SELECT b.organization_id
    FROM (SELECT nullif(current_setting('app.organization_id', true), '') AS organization_id) b
    WHERE EXISTS (SELECT 1
                  FROM analyst_scopes s
                  JOIN pg_roles r ON r.rolname = s.role_name
                  WHERE s.organization_id IN (b.organization_id, '*')
                    AND pg_has_role(session_user, r.oid, 'MEMBER'))
$$;

COMMENT ON FUNCTION analyst_organization() IS
    'Organization the session is bound to (app.organization_id, if analyst_scopes allows the '
    'login to use it), else NULL. Row-level security of analysts filters on it.';

-- Bind the session to an organization; returns it, or NULL if this login may not use it.
-- Equivalent to SET app.organization_id = '...' followed by SELECT analyst_organization().
CREATE FUNCTION set_analyst_organization(p_organization_id text) RETURNS text
LANGUAGE sql
AS $$
    SELECT set_config('app.organization_id', coalesce(p_organization_id, ''), false);
    SELECT analyst_organization();
$$;

COMMENT ON FUNCTION set_analyst_organization(text) IS
    'Binds the session to an organization (app.organization_id); returns it, or NULL when '
    'analyst_scopes does not allow this login to use it.';

-- Search paths of SECURITY DEFINER functions are pinned to this schema so that a caller's
-- own objects can never be picked up in their place.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION analyst_organization() SET search_path = %I, pg_temp',
                   current_schema());
    -- The migrator creates partitions (through ensure_partition) and future objects here.
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO pipeline_migrator', current_schema());
    -- The writer creates partitions (first write into a new range) through
    -- ensure_partition; creating a partition requires owning the parent, so the function
    -- runs as its owner, the migrator.
    EXECUTE format('ALTER FUNCTION ensure_partition(text, timestamptz, timestamptz) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION ensure_partition(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ensure_partitions(timestamptz) FROM PUBLIC;

-- Hand every table, partition, view and function of the schema to the migrator (the
-- runner's own schema_migrations stays with whoever created it).
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name,
               CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                              WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind
        FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND c.relname <> 'schema_migrations'
          AND c.relowner <> 'pipeline_migrator'::regrole
        ORDER BY c.relkind = 'p' DESC, c.oid
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO pipeline_migrator', obj.kind, obj.name);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name
        FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proowner <> 'pipeline_migrator'::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO pipeline_migrator', obj.name);
    END LOOP;
END
$$;

-- The workers: upsert buckets, insert analyses and logs, move the offset watermark,
-- create partitions on first write; and the rollup job (pipeline/maintenance/rollups.py),
-- which reads the base tables, drains rollup_pending and rewrites rollup rows. SELECT on
-- api_usage is needed by INSERT ... ON CONFLICT DO UPDATE itself; INSERT on
-- rollup_pending by the triggers, which run as the writer.
GRANT SELECT, INSERT, UPDATE ON api_usage TO pipeline_writer;
GRANT SELECT, INSERT ON ai_analysis TO pipeline_writer;
GRANT INSERT ON system_logs TO pipeline_writer;
GRANT SELECT, INSERT, UPDATE ON ingest_offsets TO pipeline_writer;
GRANT SELECT ON partition_policies, partition_ranges TO pipeline_writer;
GRANT EXECUTE ON FUNCTION ensure_partition(text, timestamptz, timestamptz) TO pipeline_writer;
GRANT EXECUTE ON FUNCTION ensure_partitions(timestamptz) TO pipeline_writer;
GRANT SELECT, INSERT, DELETE ON rollup_pending TO pipeline_writer;
GRANT SELECT, INSERT, UPDATE ON rollup_state TO pipeline_writer;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON api_usage_daily, api_usage_summary_hourly, api_usage_summary_daily, ai_analysis_hourly,
       ai_analysis_daily, ai_analysis_summary_hourly, ai_analysis_summary_daily
    TO pipeline_writer;

-- Analysts: read the data tables, rollups and views (row-level security below limits the
-- rows of pipeline_analyst), the rollup queue and state (hours and timestamps only, no
-- tenant data: the facts functions read the queue) and the partition policies
-- (retention). Not system_logs (it has no organization to filter on), not
-- ingest_offsets, not analyst_scopes.
GRANT SELECT
    ON api_usage, ai_analysis, api_usage_daily, api_usage_summary_hourly,
       api_usage_summary_daily, ai_analysis_hourly, ai_analysis_daily,
       ai_analysis_summary_hourly, ai_analysis_summary_daily, api_usage_hourly_stats,
       api_usage_daily_stats, ai_analysis_daily_stats, rollup_pending, rollup_state,
       partition_policies
    TO pipeline_analyst, pipeline_analyst_all;

-- Row-level security on every table holding tenant rows. The owner (migrator) and
-- superusers bypass it; the writer and pipeline_analyst_all see every row; an analyst sees
-- the rows of the organization its session is bound to; any other role sees nothing.
-- Views are security_invoker and functions SECURITY INVOKER, so the same policies apply
-- through them. Policies are permissive: a login in both analyst roles sees everything.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_usage', 'ai_analysis', 'api_usage_daily',
                             'api_usage_summary_hourly', 'api_usage_summary_daily',
                             'ai_analysis_hourly', 'ai_analysis_daily',
                             'ai_analysis_summary_hourly', 'ai_analysis_summary_daily'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY writer_all ON %I FOR ALL TO pipeline_writer '
                       'USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY analyst_all_organizations ON %I FOR SELECT '
                       'TO pipeline_analyst_all USING (true)', t);
        EXECUTE format('CREATE POLICY analyst_own_organization ON %I FOR SELECT '
                       'TO pipeline_analyst '
                       'USING (organization_id = (SELECT analyst_organization()))', t);
    END LOOP;
END
$$;
