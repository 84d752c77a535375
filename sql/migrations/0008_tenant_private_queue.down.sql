GRANT SELECT ON rollup_state TO pipeline_analyst;

DROP POLICY analyst_own_organization ON rollup_pending;
DROP POLICY analyst_all_organizations ON rollup_pending;
DROP POLICY writer_all ON rollup_pending;
ALTER TABLE rollup_pending DISABLE ROW LEVEL SECURITY;

-- The trigger functions as migration 0004 created them.
CREATE OR REPLACE FUNCTION rollup_queue_api_usage() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollup_pending (source, unit_start)
        SELECT DISTINCT 'api_usage', n.time_window FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_pending (source, unit_start)
        SELECT 'api_usage', n.time_window FROM new_rows n
        UNION
        SELECT 'api_usage', o.time_window FROM old_rows o;
    ELSE
        INSERT INTO rollup_pending (source, unit_start)
        SELECT DISTINCT 'api_usage', o.time_window FROM old_rows o;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rollup_queue_ai_analysis() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollup_pending (source, unit_start)
        SELECT DISTINCT 'ai_analysis', date_trunc('hour', n.created_at, 'UTC') FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_pending (source, unit_start)
        SELECT 'ai_analysis', date_trunc('hour', n.created_at, 'UTC') FROM new_rows n
        UNION
        SELECT 'ai_analysis', date_trunc('hour', o.created_at, 'UTC') FROM old_rows o;
    ELSE
        INSERT INTO rollup_pending (source, unit_start)
        SELECT DISTINCT 'ai_analysis', date_trunc('hour', o.created_at, 'UTC') FROM old_rows o;
    END IF;
    RETURN NULL;
END
$$;

ALTER TABLE rollup_pending DROP COLUMN organization_id;
