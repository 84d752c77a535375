-- Undoes 0004 rollups exactly (dropping a partitioned table drops its partitions).
DROP VIEW ai_analysis_daily_stats;
DROP VIEW api_usage_daily_stats;
DROP FUNCTION rollup_requeue(text, timestamptz, timestamptz);
DROP TRIGGER ai_analysis_rollup_delete ON ai_analysis;
DROP TRIGGER ai_analysis_rollup_update ON ai_analysis;
DROP TRIGGER ai_analysis_rollup_insert ON ai_analysis;
DROP TRIGGER api_usage_rollup_delete ON api_usage;
DROP TRIGGER api_usage_rollup_update ON api_usage;
DROP TRIGGER api_usage_rollup_insert ON api_usage;
DROP FUNCTION rollup_queue_ai_analysis();
DROP FUNCTION rollup_queue_api_usage();
DROP TABLE rollup_state;
DROP TABLE rollup_pending;
DELETE FROM partition_policies
WHERE parent_table IN ('api_usage_daily', 'api_usage_summary_hourly', 'api_usage_summary_daily',
                       'ai_analysis_hourly', 'ai_analysis_daily', 'ai_analysis_summary_hourly',
                       'ai_analysis_summary_daily');
DROP TABLE ai_analysis_summary_daily;
DROP TABLE ai_analysis_summary_hourly;
DROP TABLE api_usage_summary_daily;
DROP TABLE api_usage_summary_hourly;
DROP TABLE ai_analysis_daily;
DROP TABLE ai_analysis_hourly;
DROP TABLE api_usage_daily;
DROP FUNCTION rollup_day_hi(timestamptz, timestamptz);
DROP FUNCTION rollup_day_lo(timestamptz, timestamptz);
DROP FUNCTION rollup_hour_hi(timestamptz, timestamptz);
DROP FUNCTION rollup_hour_lo(timestamptz, timestamptz);
DROP FUNCTION utc_ceil(text, timestamptz);
