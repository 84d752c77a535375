-- The rollup queue without a cross-tenant side channel.
--
-- rollup_pending said which UTC hours any organization wrote lately, and rollup_state how
-- many rollup rows the last refresh wrote: an analyst bound to one organization could read
-- both and learn when other organizations were active. The facts functions must still read
-- the queue (an hour queued is read from the base table, so answers are exact before the
-- refresh), so instead of hiding the table, queue rows now carry the organization whose
-- rows changed, and row-level security shows an analyst only its own organization's rows
-- plus the rows queued for every organization (organization_id NULL: rollup_requeue, and
-- rows queued before this migration). Staleness per organization is exactly what its
-- analysts need: the rollups are per organization, so another organization's write
-- cannot make theirs stale.
ALTER TABLE rollup_pending ADD COLUMN organization_id text;

COMMENT ON COLUMN rollup_pending.organization_id IS
    'The organization whose rows changed in unit_start ('''' for rows without one); NULL: '
    'every organization (a requeue by hand). Row-level security filters analysts by it.';

CREATE OR REPLACE FUNCTION rollup_queue_api_usage() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollup_pending (source, unit_start, organization_id)
        SELECT DISTINCT 'api_usage', n.time_window, n.organization_id FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_pending (source, unit_start, organization_id)
        SELECT 'api_usage', n.time_window, n.organization_id FROM new_rows n
        UNION
        SELECT 'api_usage', o.time_window, o.organization_id FROM old_rows o;
    ELSE
        INSERT INTO rollup_pending (source, unit_start, organization_id)
        SELECT DISTINCT 'api_usage', o.time_window, o.organization_id FROM old_rows o;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rollup_queue_ai_analysis() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollup_pending (source, unit_start, organization_id)
        SELECT DISTINCT 'ai_analysis', date_trunc('hour', n.created_at, 'UTC'),
               coalesce(n.organization_id, '')
        FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_pending (source, unit_start, organization_id)
        SELECT 'ai_analysis', date_trunc('hour', n.created_at, 'UTC'),
               coalesce(n.organization_id, '')
        FROM new_rows n
        UNION
        SELECT 'ai_analysis', date_trunc('hour', o.created_at, 'UTC'),
               coalesce(o.organization_id, '')
        FROM old_rows o;
    ELSE
        INSERT INTO rollup_pending (source, unit_start, organization_id)
        SELECT DISTINCT 'ai_analysis', date_trunc('hour', o.created_at, 'UTC'),
               coalesce(o.organization_id, '')
        FROM old_rows o;
    END IF;
    RETURN NULL;
END
$$;

ALTER TABLE rollup_pending ENABLE ROW LEVEL SECURITY;
CREATE POLICY writer_all ON rollup_pending FOR ALL TO pipeline_writer
    USING (true) WITH CHECK (true);
CREATE POLICY analyst_all_organizations ON rollup_pending FOR SELECT
    TO pipeline_analyst_all USING (true);
CREATE POLICY analyst_own_organization ON rollup_pending FOR SELECT TO pipeline_analyst
    USING (organization_id IS NULL OR organization_id = (SELECT analyst_organization()));

-- Refresh statistics are across organizations: for monitoring, not for tenants.
REVOKE SELECT ON rollup_state FROM pipeline_analyst;
