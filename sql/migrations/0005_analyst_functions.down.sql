-- Undoes 0005 analyst functions exactly.
DROP FUNCTION organization_usage_summary(timestamptz, timestamptz);
DROP FUNCTION api_usage_by_service_hour(timestamptz, timestamptz, text);
DROP FUNCTION organization_api_usage(text, timestamptz, timestamptz);
DROP FUNCTION service_error_rates(timestamptz, timestamptz, text);
DROP FUNCTION ai_cache_hit_rate(timestamptz, timestamptz, text);
DROP FUNCTION top_users_by_ai_cost(timestamptz, timestamptz, integer, text);
DROP FUNCTION ai_cost_by_model(timestamptz, timestamptz, text);
DROP FUNCTION organization_ai_usage(text, timestamptz, timestamptz);
DROP FUNCTION user_ai_cost(text, timestamptz, timestamptz);
DROP FUNCTION api_usage_summary_facts(timestamptz, timestamptz);
DROP FUNCTION api_usage_facts(timestamptz, timestamptz);
DROP FUNCTION ai_usage_summary_facts(timestamptz, timestamptz);
DROP FUNCTION ai_usage_facts(timestamptz, timestamptz);
DROP FUNCTION ai_analysis_as_facts(timestamptz, timestamptz);
