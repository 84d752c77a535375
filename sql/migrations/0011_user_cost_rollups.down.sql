-- Undoes 0011 per-user AI cost rollups exactly: top_users_by_ai_cost as 0005 made it.
CREATE OR REPLACE FUNCTION top_users_by_ai_cost(p_from timestamptz, p_to timestamptz,
                                     p_limit integer DEFAULT 10,
                                     p_organization_id text DEFAULT NULL)
RETURNS TABLE (user_id text, organization_id text, analyses bigint, tokens_used bigint,
               cost_usd numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT f.user_id, f.organization_id, sum(f.analyses)::bigint, sum(f.tokens_used)::bigint,
           sum(f.cost)
    FROM ai_usage_facts(p_from, p_to) f
    WHERE f.user_id IS NOT NULL
      AND (p_organization_id IS NULL OR f.organization_id = p_organization_id)
    GROUP BY f.user_id, f.organization_id
    ORDER BY sum(f.cost) DESC, f.user_id
    LIMIT p_limit
$$;

DROP FUNCTION ai_user_facts(timestamptz, timestamptz);
DELETE FROM partition_policies
WHERE parent_table IN ('ai_analysis_user_hourly', 'ai_analysis_user_daily',
                       'ai_analysis_user_monthly');
DROP TABLE ai_analysis_user_monthly;
DROP TABLE ai_analysis_user_daily;
DROP TABLE ai_analysis_user_hourly;
