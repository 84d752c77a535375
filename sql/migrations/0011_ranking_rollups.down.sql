-- Undoes 0011 ranking rollups exactly: top_users_by_ai_cost and organization_usage_summary
-- as 0005 made them.
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

CREATE OR REPLACE FUNCTION organization_usage_summary(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (organization_id text, api_requests bigint, api_errors bigint,
               api_error_rate double precision, api_cost_usd numeric, ai_analyses bigint,
               ai_failed bigint, ai_cost_usd numeric, total_cost_usd numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(a.organization_id, i.organization_id),
           coalesce(a.requests, 0), coalesce(a.errors, 0),
           a.errors::double precision / nullif(a.requests, 0), coalesce(a.cost, 0),
           coalesce(i.analyses, 0), coalesce(i.failed, 0), coalesce(i.cost, 0),
           coalesce(a.cost, 0) + coalesce(i.cost, 0)
    FROM (SELECT f.organization_id, sum(f.request_count)::bigint AS requests,
                 sum(f.error_count)::bigint AS errors, sum(f.cost) AS cost
          FROM api_usage_summary_facts(p_from, p_to) f
          WHERE f.organization_id <> ''
          GROUP BY f.organization_id) a
    FULL JOIN (SELECT f.organization_id, sum(f.analyses)::bigint AS analyses,
                      sum(f.failed_count)::bigint AS failed, sum(f.cost) AS cost
               FROM ai_usage_summary_facts(p_from, p_to) f
               WHERE f.organization_id IS NOT NULL
               GROUP BY f.organization_id) i
      ON i.organization_id = a.organization_id
    ORDER BY coalesce(a.cost, 0) + coalesce(i.cost, 0) DESC, 1
$$;

DROP FUNCTION ai_org_facts(timestamptz, timestamptz);
DROP FUNCTION api_org_facts(timestamptz, timestamptz);
DROP FUNCTION ai_user_facts(timestamptz, timestamptz);
DELETE FROM partition_policies
WHERE parent_table IN ('ai_analysis_user_hourly', 'ai_analysis_user_daily',
                       'ai_analysis_user_monthly', 'api_usage_org_hourly',
                       'api_usage_org_daily', 'ai_analysis_org_hourly', 'ai_analysis_org_daily');
DROP TABLE ai_analysis_org_daily;
DROP TABLE ai_analysis_org_hourly;
DROP TABLE api_usage_org_daily;
DROP TABLE api_usage_org_hourly;
DROP TABLE ai_analysis_user_monthly;
DROP TABLE ai_analysis_user_daily;
DROP TABLE ai_analysis_user_hourly;
