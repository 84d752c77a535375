-- Undoes 0003 latency percentiles exactly.
DROP VIEW api_usage_hourly_stats;
DROP FUNCTION latency_quantile(double precision, bigint[], double precision);
