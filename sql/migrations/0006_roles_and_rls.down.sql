-- Undoes 0006 roles and row-level security: everything it granted, created or changed.
-- The roles stay (see the up file: other databases may use them).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_usage', 'ai_analysis', 'api_usage_daily',
                             'api_usage_summary_hourly', 'api_usage_summary_daily',
                             'ai_analysis_hourly', 'ai_analysis_daily',
                             'ai_analysis_summary_hourly', 'ai_analysis_summary_daily'] LOOP
        EXECUTE format('DROP POLICY analyst_own_organization ON %I', t);
        EXECUTE format('DROP POLICY analyst_all_organizations ON %I', t);
        EXECUTE format('DROP POLICY writer_all ON %I', t);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

REVOKE SELECT
    ON api_usage, ai_analysis, api_usage_daily, api_usage_summary_hourly,
       api_usage_summary_daily, ai_analysis_hourly, ai_analysis_daily,
       ai_analysis_summary_hourly, ai_analysis_summary_daily, api_usage_hourly_stats,
       api_usage_daily_stats, ai_analysis_daily_stats, rollup_pending, rollup_state,
       partition_policies
    FROM pipeline_analyst, pipeline_analyst_all;

REVOKE SELECT, INSERT, UPDATE, DELETE
    ON api_usage_daily, api_usage_summary_hourly, api_usage_summary_daily, ai_analysis_hourly,
       ai_analysis_daily, ai_analysis_summary_hourly, ai_analysis_summary_daily
    FROM pipeline_writer;
REVOKE SELECT, INSERT, UPDATE ON rollup_state FROM pipeline_writer;
REVOKE SELECT, INSERT, DELETE ON rollup_pending FROM pipeline_writer;
REVOKE EXECUTE ON FUNCTION ensure_partitions(timestamptz) FROM pipeline_writer;
REVOKE EXECUTE ON FUNCTION ensure_partition(text, timestamptz, timestamptz) FROM pipeline_writer;
REVOKE SELECT ON partition_policies, partition_ranges FROM pipeline_writer;
REVOKE SELECT, INSERT, UPDATE ON ingest_offsets FROM pipeline_writer;
REVOKE INSERT ON system_logs FROM pipeline_writer;
REVOKE SELECT, INSERT ON ai_analysis FROM pipeline_writer;
REVOKE SELECT, INSERT, UPDATE ON api_usage FROM pipeline_writer;

-- Ownership goes back to the role running the down migration (the up took it from the
-- role that ran the earlier migrations, normally the same login).
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
          AND c.relowner = 'pipeline_migrator'::regrole
        ORDER BY c.relkind = 'p' DESC, c.oid
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO CURRENT_USER', obj.kind, obj.name);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name
        FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proowner = 'pipeline_migrator'::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO CURRENT_USER', obj.name);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION ensure_partitions(timestamptz) TO PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_partition(text, timestamptz, timestamptz) TO PUBLIC;
ALTER FUNCTION ensure_partition(text, timestamptz, timestamptz) SECURITY INVOKER RESET search_path;
DO $$
BEGIN
    EXECUTE format('REVOKE USAGE, CREATE ON SCHEMA %I FROM pipeline_migrator', current_schema());
END
$$;

DROP FUNCTION set_analyst_organization(text);
DROP FUNCTION analyst_organization();
DROP TABLE analyst_scopes;
