-- 0005 analyst functions: SQL functions named for the questions analysts ask, on top of
-- four "facts" functions that return the rows of a time range from the cheapest exact
-- source: ai_usage_facts and api_usage_facts per user (detail rollups),
-- ai_usage_summary_facts and api_usage_summary_facts per organization (summary rollups).
--
-- Every function here is LANGUAGE sql, STABLE and SECURITY INVOKER (the default): it reads
-- with the caller's privileges, so row-level security (0006) applies to it exactly as to a
-- plain SELECT and no function is a way around it. Being single-SELECT SQL functions, they
-- are inlined into the calling query: predicates of the caller reach the tables, and with
-- constant arguments partitions are pruned at plan time. Call them in FROM
-- (SELECT * FROM top_users_by_ai_cost(...)), not in the select list.
--
-- Ranges are half-open, [p_from, p_to), in UTC.

-- Raw ai_analysis rows of [p_from, p_to) in the shape of the rollup tables (one row per
-- analysis, counts of 1/0), so raw rows and rollup rows can be added together.
CREATE FUNCTION ai_analysis_as_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    time_window timestamptz,
    organization_id text, user_id text, model_type text, model_version text,
    region_processed text,
    analyses bigint, completed_count bigint, failed_count bigint, fallback_count bigint,
    cache_hit_count bigint, batch_count bigint, processing_attempts bigint,
    request_tokens bigint, response_tokens bigint, tokens_used bigint, cost numeric,
    processing_time_ms_sum double precision, processing_time_ms_count bigint,
    processing_time_ms_max double precision, queue_wait_time_ms_sum double precision,
    queue_wait_time_ms_count bigint, total_processing_time_ms_sum double precision,
    total_processing_time_ms_count bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT a.created_at, a.organization_id, a.user_id, a.model_type, a.model_version,
           a.region_processed, 1::bigint,
           (a.status = 'completed')::int::bigint, (a.status = 'failed')::int::bigint,
           a.fallback_used::int::bigint, a.caching_used::int::bigint,
           a.batch_processed::int::bigint, a.processing_attempts::bigint,
           a.request_tokens::bigint, a.response_tokens::bigint, a.tokens_used, a.api_cost,
           coalesce(a.processing_time_ms, 0), (a.processing_time_ms IS NOT NULL)::int::bigint,
           a.processing_time_ms,
           coalesce(a.queue_wait_time_ms, 0), (a.queue_wait_time_ms IS NOT NULL)::int::bigint,
           coalesce(a.total_processing_time_ms, 0),
           (a.total_processing_time_ms IS NOT NULL)::int::bigint
    FROM ai_analysis a
    WHERE a.created_at >= p_from AND a.created_at < p_to
$$;

COMMENT ON FUNCTION ai_analysis_as_facts(timestamptz, timestamptz) IS
    'Raw ai_analysis rows of [p_from, p_to) shaped like ai_analysis_hourly rows.';

-- AI-analysis facts of [p_from, p_to), per user, model, version and region: exactly what
-- aggregating ai_analysis over the range gives, read from ai_analysis_daily for whole UTC
-- days, ai_analysis_hourly for the other whole hours and ai_analysis for partial hours at
-- the edges. Hours queued in rollup_pending (and the days holding them) are not trusted to
-- the rollups and are read one level down, so the answer is exact even before the rollup
-- job has run. granularity says which level a row comes from: 'day', 'hour' or 'event'.
-- Each branch has its own range predicate so that it scans only its own partitions.
CREATE FUNCTION ai_usage_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    time_window timestamptz, granularity text,
    organization_id text, user_id text, model_type text, model_version text,
    region_processed text,
    analyses bigint, completed_count bigint, failed_count bigint, fallback_count bigint,
    cache_hit_count bigint, batch_count bigint, processing_attempts bigint,
    request_tokens bigint, response_tokens bigint, tokens_used bigint, cost numeric,
    processing_time_ms_sum double precision, processing_time_ms_count bigint,
    processing_time_ms_max double precision, queue_wait_time_ms_sum double precision,
    queue_wait_time_ms_count bigint, total_processing_time_ms_sum double precision,
    total_processing_time_ms_count bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Whole days none of whose hours is queued: the daily rollup.
    SELECT d.time_window, 'day',
           d.organization_id, d.user_id, d.model_type, d.model_version, d.region_processed,
           d.analyses, d.completed_count, d.failed_count, d.fallback_count,
           d.cache_hit_count, d.batch_count, d.processing_attempts, d.request_tokens,
           d.response_tokens, d.tokens_used, d.cost, d.processing_time_ms_sum,
           d.processing_time_ms_count, d.processing_time_ms_max, d.queue_wait_time_ms_sum,
           d.queue_wait_time_ms_count, d.total_processing_time_ms_sum,
           d.total_processing_time_ms_count
    FROM ai_analysis_daily d
    WHERE d.time_window >= rollup_day_lo(p_from, p_to)
      AND d.time_window < rollup_day_hi(p_from, p_to)
      AND d.time_window NOT IN (SELECT date_trunc('day', q.unit_start, 'UTC')
                                FROM rollup_pending q WHERE q.source = 'ai_analysis')
    UNION ALL
    -- Whole hours before the first whole day, not queued: the hourly rollup.
    SELECT h.time_window, 'hour',
           h.organization_id, h.user_id, h.model_type, h.model_version, h.region_processed,
           h.analyses, h.completed_count, h.failed_count, h.fallback_count,
           h.cache_hit_count, h.batch_count, h.processing_attempts, h.request_tokens,
           h.response_tokens, h.tokens_used, h.cost, h.processing_time_ms_sum,
           h.processing_time_ms_count, h.processing_time_ms_max, h.queue_wait_time_ms_sum,
           h.queue_wait_time_ms_count, h.total_processing_time_ms_sum,
           h.total_processing_time_ms_count
    FROM ai_analysis_hourly h
    WHERE h.time_window >= rollup_hour_lo(p_from, p_to)
      AND h.time_window < rollup_day_lo(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- Whole hours after the last whole day, not queued: the hourly rollup.
    SELECT h.time_window, 'hour',
           h.organization_id, h.user_id, h.model_type, h.model_version, h.region_processed,
           h.analyses, h.completed_count, h.failed_count, h.fallback_count,
           h.cache_hit_count, h.batch_count, h.processing_attempts, h.request_tokens,
           h.response_tokens, h.tokens_used, h.cost, h.processing_time_ms_sum,
           h.processing_time_ms_count, h.processing_time_ms_max, h.queue_wait_time_ms_sum,
           h.queue_wait_time_ms_count, h.total_processing_time_ms_sum,
           h.total_processing_time_ms_count
    FROM ai_analysis_hourly h
    WHERE h.time_window >= rollup_day_hi(p_from, p_to)
      AND h.time_window < rollup_hour_hi(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- The hours, not queued themselves, of whole days that have a queued hour.
    SELECT h.time_window, 'hour',
           h.organization_id, h.user_id, h.model_type, h.model_version, h.region_processed,
           h.analyses, h.completed_count, h.failed_count, h.fallback_count,
           h.cache_hit_count, h.batch_count, h.processing_attempts, h.request_tokens,
           h.response_tokens, h.tokens_used, h.cost, h.processing_time_ms_sum,
           h.processing_time_ms_count, h.processing_time_ms_max, h.queue_wait_time_ms_sum,
           h.queue_wait_time_ms_count, h.total_processing_time_ms_sum,
           h.total_processing_time_ms_count
    FROM ai_analysis_hourly h
    WHERE h.time_window = ANY (ARRAY(
            SELECT generate_series(s.day, s.day + interval '23 hours', interval '1 hour')
            FROM (SELECT DISTINCT date_trunc('day', q.unit_start, 'UTC') AS day
                  FROM rollup_pending q WHERE q.source = 'ai_analysis') s
            WHERE s.day >= rollup_day_lo(p_from, p_to)
              AND s.day < rollup_day_hi(p_from, p_to)))
      AND h.time_window >= rollup_day_lo(p_from, p_to)
      AND h.time_window < rollup_day_hi(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- The partial hour at the start of the range: raw rows.
    SELECT a.time_window, 'event',
           a.organization_id, a.user_id, a.model_type, a.model_version, a.region_processed,
           a.analyses, a.completed_count, a.failed_count, a.fallback_count,
           a.cache_hit_count, a.batch_count, a.processing_attempts, a.request_tokens,
           a.response_tokens, a.tokens_used, a.cost, a.processing_time_ms_sum,
           a.processing_time_ms_count, a.processing_time_ms_max, a.queue_wait_time_ms_sum,
           a.queue_wait_time_ms_count, a.total_processing_time_ms_sum,
           a.total_processing_time_ms_count
    FROM ai_analysis_as_facts(p_from, rollup_hour_lo(p_from, p_to)) a
    UNION ALL
    -- The partial hour at the end of the range: raw rows.
    SELECT a.time_window, 'event',
           a.organization_id, a.user_id, a.model_type, a.model_version, a.region_processed,
           a.analyses, a.completed_count, a.failed_count, a.fallback_count,
           a.cache_hit_count, a.batch_count, a.processing_attempts, a.request_tokens,
           a.response_tokens, a.tokens_used, a.cost, a.processing_time_ms_sum,
           a.processing_time_ms_count, a.processing_time_ms_max, a.queue_wait_time_ms_sum,
           a.queue_wait_time_ms_count, a.total_processing_time_ms_sum,
           a.total_processing_time_ms_count
    FROM ai_analysis_as_facts(rollup_hour_hi(p_from, p_to), p_to) a
    UNION ALL
    -- Queued whole hours: raw rows, one index range scan per hour (the outer bounds let
    -- the planner prune the partitions outside the range).
    SELECT a.time_window, 'event',
           a.organization_id, a.user_id, a.model_type, a.model_version, a.region_processed,
           a.analyses, a.completed_count, a.failed_count, a.fallback_count,
           a.cache_hit_count, a.batch_count, a.processing_attempts, a.request_tokens,
           a.response_tokens, a.tokens_used, a.cost, a.processing_time_ms_sum,
           a.processing_time_ms_count, a.processing_time_ms_max, a.queue_wait_time_ms_sum,
           a.queue_wait_time_ms_count, a.total_processing_time_ms_sum,
           a.total_processing_time_ms_count
    FROM (SELECT DISTINCT q.unit_start AS hour FROM rollup_pending q
          WHERE q.source = 'ai_analysis'
            AND q.unit_start >= rollup_hour_lo(p_from, p_to)
            AND q.unit_start < rollup_hour_hi(p_from, p_to)) s
    CROSS JOIN LATERAL ai_analysis_as_facts(s.hour, s.hour + interval '1 hour') a
    WHERE a.time_window >= rollup_hour_lo(p_from, p_to)
      AND a.time_window < rollup_hour_hi(p_from, p_to)
$$;

COMMENT ON FUNCTION ai_usage_facts(timestamptz, timestamptz) IS
    'AI-analysis facts of [p_from, p_to) per user, model, version and region, from the '
    'cheapest exact source (daily, hourly rollup or raw rows); aggregate them like '
    'ai_analysis_hourly rows.';

-- The same per organization and model only, from the summary rollups: for questions
-- that do not need users, versions or regions (a month of every organization is ~36,000
-- daily rows instead of ~1,000,000).
CREATE FUNCTION ai_usage_summary_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    time_window timestamptz, granularity text,
    organization_id text, model_type text,
    analyses bigint, completed_count bigint, failed_count bigint, fallback_count bigint,
    cache_hit_count bigint, batch_count bigint, processing_attempts bigint,
    request_tokens bigint, response_tokens bigint, tokens_used bigint, cost numeric,
    processing_time_ms_sum double precision, processing_time_ms_count bigint,
    processing_time_ms_max double precision, queue_wait_time_ms_sum double precision,
    queue_wait_time_ms_count bigint, total_processing_time_ms_sum double precision,
    total_processing_time_ms_count bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Whole days none of whose hours is queued: the daily rollup.
    SELECT d.time_window, 'day',
           d.organization_id, d.model_type, d.analyses, d.completed_count, d.failed_count,
           d.fallback_count, d.cache_hit_count, d.batch_count, d.processing_attempts,
           d.request_tokens, d.response_tokens, d.tokens_used, d.cost,
           d.processing_time_ms_sum, d.processing_time_ms_count, d.processing_time_ms_max,
           d.queue_wait_time_ms_sum, d.queue_wait_time_ms_count,
           d.total_processing_time_ms_sum, d.total_processing_time_ms_count
    FROM ai_analysis_summary_daily d
    WHERE d.time_window >= rollup_day_lo(p_from, p_to)
      AND d.time_window < rollup_day_hi(p_from, p_to)
      AND d.time_window NOT IN (SELECT date_trunc('day', q.unit_start, 'UTC')
                                FROM rollup_pending q WHERE q.source = 'ai_analysis')
    UNION ALL
    -- Whole hours before the first whole day, not queued: the hourly rollup.
    SELECT h.time_window, 'hour',
           h.organization_id, h.model_type, h.analyses, h.completed_count, h.failed_count,
           h.fallback_count, h.cache_hit_count, h.batch_count, h.processing_attempts,
           h.request_tokens, h.response_tokens, h.tokens_used, h.cost,
           h.processing_time_ms_sum, h.processing_time_ms_count, h.processing_time_ms_max,
           h.queue_wait_time_ms_sum, h.queue_wait_time_ms_count,
           h.total_processing_time_ms_sum, h.total_processing_time_ms_count
    FROM ai_analysis_summary_hourly h
    WHERE h.time_window >= rollup_hour_lo(p_from, p_to)
      AND h.time_window < rollup_day_lo(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- Whole hours after the last whole day, not queued: the hourly rollup.
    SELECT h.time_window, 'hour',
           h.organization_id, h.model_type, h.analyses, h.completed_count, h.failed_count,
           h.fallback_count, h.cache_hit_count, h.batch_count, h.processing_attempts,
           h.request_tokens, h.response_tokens, h.tokens_used, h.cost,
           h.processing_time_ms_sum, h.processing_time_ms_count, h.processing_time_ms_max,
           h.queue_wait_time_ms_sum, h.queue_wait_time_ms_count,
           h.total_processing_time_ms_sum, h.total_processing_time_ms_count
    FROM ai_analysis_summary_hourly h
    WHERE h.time_window >= rollup_day_hi(p_from, p_to)
      AND h.time_window < rollup_hour_hi(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- The hours, not queued themselves, of whole days that have a queued hour.
    SELECT h.time_window, 'hour',
           h.organization_id, h.model_type, h.analyses, h.completed_count, h.failed_count,
           h.fallback_count, h.cache_hit_count, h.batch_count, h.processing_attempts,
           h.request_tokens, h.response_tokens, h.tokens_used, h.cost,
           h.processing_time_ms_sum, h.processing_time_ms_count, h.processing_time_ms_max,
           h.queue_wait_time_ms_sum, h.queue_wait_time_ms_count,
           h.total_processing_time_ms_sum, h.total_processing_time_ms_count
    FROM ai_analysis_summary_hourly h
    WHERE h.time_window = ANY (ARRAY(
            SELECT generate_series(s.day, s.day + interval '23 hours', interval '1 hour')
            FROM (SELECT DISTINCT date_trunc('day', q.unit_start, 'UTC') AS day
                  FROM rollup_pending q WHERE q.source = 'ai_analysis') s
            WHERE s.day >= rollup_day_lo(p_from, p_to)
              AND s.day < rollup_day_hi(p_from, p_to)))
      AND h.time_window >= rollup_day_lo(p_from, p_to)
      AND h.time_window < rollup_day_hi(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- The partial hour at the start of the range: raw rows.
    SELECT a.time_window, 'event',
           a.organization_id, a.model_type, a.analyses, a.completed_count, a.failed_count,
           a.fallback_count, a.cache_hit_count, a.batch_count, a.processing_attempts,
           a.request_tokens, a.response_tokens, a.tokens_used, a.cost,
           a.processing_time_ms_sum, a.processing_time_ms_count, a.processing_time_ms_max,
           a.queue_wait_time_ms_sum, a.queue_wait_time_ms_count,
           a.total_processing_time_ms_sum, a.total_processing_time_ms_count
    FROM ai_analysis_as_facts(p_from, rollup_hour_lo(p_from, p_to)) a
    UNION ALL
    -- The partial hour at the end of the range: raw rows.
    SELECT a.time_window, 'event',
           a.organization_id, a.model_type, a.analyses, a.completed_count, a.failed_count,
           a.fallback_count, a.cache_hit_count, a.batch_count, a.processing_attempts,
           a.request_tokens, a.response_tokens, a.tokens_used, a.cost,
           a.processing_time_ms_sum, a.processing_time_ms_count, a.processing_time_ms_max,
           a.queue_wait_time_ms_sum, a.queue_wait_time_ms_count,
           a.total_processing_time_ms_sum, a.total_processing_time_ms_count
    FROM ai_analysis_as_facts(rollup_hour_hi(p_from, p_to), p_to) a
    UNION ALL
    -- Queued whole hours: raw rows, one index range scan per hour (the outer bounds let
    -- the planner prune the partitions outside the range).
    SELECT a.time_window, 'event',
           a.organization_id, a.model_type, a.analyses, a.completed_count, a.failed_count,
           a.fallback_count, a.cache_hit_count, a.batch_count, a.processing_attempts,
           a.request_tokens, a.response_tokens, a.tokens_used, a.cost,
           a.processing_time_ms_sum, a.processing_time_ms_count, a.processing_time_ms_max,
           a.queue_wait_time_ms_sum, a.queue_wait_time_ms_count,
           a.total_processing_time_ms_sum, a.total_processing_time_ms_count
    FROM (SELECT DISTINCT q.unit_start AS hour FROM rollup_pending q
          WHERE q.source = 'ai_analysis'
            AND q.unit_start >= rollup_hour_lo(p_from, p_to)
            AND q.unit_start < rollup_hour_hi(p_from, p_to)) s
    CROSS JOIN LATERAL ai_analysis_as_facts(s.hour, s.hour + interval '1 hour') a
    WHERE a.time_window >= rollup_hour_lo(p_from, p_to)
      AND a.time_window < rollup_hour_hi(p_from, p_to)
$$;

COMMENT ON FUNCTION ai_usage_summary_facts(timestamptz, timestamptz) IS
    'AI-analysis facts of [p_from, p_to) per organization and model, from the cheapest exact '
    'source (daily, hourly summary or raw rows).';

-- API-usage facts of [p_from, p_to): the hourly buckets whose hour starts in the range,
-- read from api_usage_daily for whole UTC days none of whose hours is queued, and from
-- api_usage for the rest. Same columns as api_usage (granularity 'day' or 'hour').
CREATE FUNCTION api_usage_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    time_window timestamptz, granularity text,
    service text, endpoint text, method text, user_id text, organization_id text,
    request_count bigint, success_count bigint, error_count bigint, token_usage bigint,
    cost numeric, response_time_ms_sum double precision,
    response_time_ms_max double precision, latency_le_50 bigint, latency_le_100 bigint,
    latency_le_250 bigint, latency_le_500 bigint, latency_le_1000 bigint,
    latency_le_2500 bigint, latency_le_5000 bigint, latency_gt_5000 bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Whole days none of whose hours is queued: the daily rollup.
    SELECT d.time_window, 'day',
           d.service, d.endpoint, d.method, d.user_id, d.organization_id, d.request_count,
           d.success_count, d.error_count, d.token_usage, d.cost, d.response_time_ms_sum,
           d.response_time_ms_max, d.latency_le_50, d.latency_le_100, d.latency_le_250,
           d.latency_le_500, d.latency_le_1000, d.latency_le_2500, d.latency_le_5000,
           d.latency_gt_5000
    FROM api_usage_daily d
    WHERE d.time_window >= rollup_day_lo(p_from, p_to)
      AND d.time_window < rollup_day_hi(p_from, p_to)
      AND d.time_window NOT IN (SELECT date_trunc('day', q.unit_start, 'UTC')
                                FROM rollup_pending q WHERE q.source = 'api_usage')
    UNION ALL
    -- Hours before the first whole day: api_usage.
    SELECT u.time_window, 'hour',
           u.service, u.endpoint, u.method, u.user_id, u.organization_id, u.request_count,
           u.success_count, u.error_count, u.token_usage, u.cost, u.response_time_ms_sum,
           u.response_time_ms_max, u.latency_le_50, u.latency_le_100, u.latency_le_250,
           u.latency_le_500, u.latency_le_1000, u.latency_le_2500, u.latency_le_5000,
           u.latency_gt_5000
    FROM api_usage u
    WHERE u.time_window >= p_from AND u.time_window < rollup_day_lo(p_from, p_to)
    UNION ALL
    -- Hours after the last whole day: api_usage.
    SELECT u.time_window, 'hour',
           u.service, u.endpoint, u.method, u.user_id, u.organization_id, u.request_count,
           u.success_count, u.error_count, u.token_usage, u.cost, u.response_time_ms_sum,
           u.response_time_ms_max, u.latency_le_50, u.latency_le_100, u.latency_le_250,
           u.latency_le_500, u.latency_le_1000, u.latency_le_2500, u.latency_le_5000,
           u.latency_gt_5000
    FROM api_usage u
    WHERE u.time_window >= rollup_day_hi(p_from, p_to) AND u.time_window < p_to
    UNION ALL
    -- Every hour of whole days that have a queued hour: api_usage.
    SELECT u.time_window, 'hour',
           u.service, u.endpoint, u.method, u.user_id, u.organization_id, u.request_count,
           u.success_count, u.error_count, u.token_usage, u.cost, u.response_time_ms_sum,
           u.response_time_ms_max, u.latency_le_50, u.latency_le_100, u.latency_le_250,
           u.latency_le_500, u.latency_le_1000, u.latency_le_2500, u.latency_le_5000,
           u.latency_gt_5000
    FROM api_usage u
    WHERE u.time_window = ANY (ARRAY(
            SELECT generate_series(s.day, s.day + interval '23 hours', interval '1 hour')
            FROM (SELECT DISTINCT date_trunc('day', q.unit_start, 'UTC') AS day
                  FROM rollup_pending q WHERE q.source = 'api_usage') s
            WHERE s.day >= rollup_day_lo(p_from, p_to)
              AND s.day < rollup_day_hi(p_from, p_to)))
      AND u.time_window >= rollup_day_lo(p_from, p_to)
      AND u.time_window < rollup_day_hi(p_from, p_to)
$$;

COMMENT ON FUNCTION api_usage_facts(timestamptz, timestamptz) IS
    'api_usage buckets of [p_from, p_to) from the cheapest exact source (api_usage_daily for '
    'whole up-to-date days, api_usage otherwise); aggregate them like api_usage rows.';

-- API-usage facts per organization and service of [p_from, p_to) (buckets whose hour
-- starts in the range): api_usage_summary_daily for whole UTC days none of whose hours is
-- queued, api_usage_summary_hourly for the other hours that are not queued, api_usage for
-- queued hours.
CREATE FUNCTION api_usage_summary_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    time_window timestamptz, granularity text,
    organization_id text, service text,
    request_count bigint, success_count bigint, error_count bigint, token_usage bigint,
    cost numeric, response_time_ms_sum double precision,
    response_time_ms_max double precision, latency_le_50 bigint, latency_le_100 bigint,
    latency_le_250 bigint, latency_le_500 bigint, latency_le_1000 bigint,
    latency_le_2500 bigint, latency_le_5000 bigint, latency_gt_5000 bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Whole days none of whose hours is queued: the daily summary.
    SELECT d.time_window, 'day',
           d.organization_id, d.service, d.request_count, d.success_count, d.error_count,
           d.token_usage, d.cost, d.response_time_ms_sum, d.response_time_ms_max,
           d.latency_le_50, d.latency_le_100, d.latency_le_250, d.latency_le_500,
           d.latency_le_1000, d.latency_le_2500, d.latency_le_5000, d.latency_gt_5000
    FROM api_usage_summary_daily d
    WHERE d.time_window >= rollup_day_lo(p_from, p_to)
      AND d.time_window < rollup_day_hi(p_from, p_to)
      AND d.time_window NOT IN (SELECT date_trunc('day', q.unit_start, 'UTC')
                                FROM rollup_pending q WHERE q.source = 'api_usage')
    UNION ALL
    -- Hours before the first whole day, not queued: the hourly summary.
    SELECT h.time_window, 'hour',
           h.organization_id, h.service, h.request_count, h.success_count, h.error_count,
           h.token_usage, h.cost, h.response_time_ms_sum, h.response_time_ms_max,
           h.latency_le_50, h.latency_le_100, h.latency_le_250, h.latency_le_500,
           h.latency_le_1000, h.latency_le_2500, h.latency_le_5000, h.latency_gt_5000
    FROM api_usage_summary_hourly h
    WHERE h.time_window >= p_from AND h.time_window < rollup_day_lo(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'api_usage')
    UNION ALL
    -- Hours after the last whole day, not queued: the hourly summary.
    SELECT h.time_window, 'hour',
           h.organization_id, h.service, h.request_count, h.success_count, h.error_count,
           h.token_usage, h.cost, h.response_time_ms_sum, h.response_time_ms_max,
           h.latency_le_50, h.latency_le_100, h.latency_le_250, h.latency_le_500,
           h.latency_le_1000, h.latency_le_2500, h.latency_le_5000, h.latency_gt_5000
    FROM api_usage_summary_hourly h
    WHERE h.time_window >= rollup_day_hi(p_from, p_to) AND h.time_window < p_to
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'api_usage')
    UNION ALL
    -- The hours, not queued themselves, of whole days that have a queued hour.
    SELECT h.time_window, 'hour',
           h.organization_id, h.service, h.request_count, h.success_count, h.error_count,
           h.token_usage, h.cost, h.response_time_ms_sum, h.response_time_ms_max,
           h.latency_le_50, h.latency_le_100, h.latency_le_250, h.latency_le_500,
           h.latency_le_1000, h.latency_le_2500, h.latency_le_5000, h.latency_gt_5000
    FROM api_usage_summary_hourly h
    WHERE h.time_window = ANY (ARRAY(
            SELECT generate_series(s.day, s.day + interval '23 hours', interval '1 hour')
            FROM (SELECT DISTINCT date_trunc('day', q.unit_start, 'UTC') AS day
                  FROM rollup_pending q WHERE q.source = 'api_usage') s
            WHERE s.day >= rollup_day_lo(p_from, p_to)
              AND s.day < rollup_day_hi(p_from, p_to)))
      AND h.time_window >= rollup_day_lo(p_from, p_to)
      AND h.time_window < rollup_day_hi(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'api_usage')
    UNION ALL
    -- Queued hours: the buckets of api_usage.
    SELECT u.time_window, 'hour',
           u.organization_id, u.service, u.request_count, u.success_count, u.error_count,
           u.token_usage, u.cost, u.response_time_ms_sum, u.response_time_ms_max,
           u.latency_le_50, u.latency_le_100, u.latency_le_250, u.latency_le_500,
           u.latency_le_1000, u.latency_le_2500, u.latency_le_5000, u.latency_gt_5000
    FROM api_usage u
    WHERE u.time_window = ANY (ARRAY(
            SELECT DISTINCT q.unit_start FROM rollup_pending q
            WHERE q.source = 'api_usage' AND q.unit_start >= p_from AND q.unit_start < p_to))
      AND u.time_window >= p_from AND u.time_window < p_to
$$;

COMMENT ON FUNCTION api_usage_summary_facts(timestamptz, timestamptz) IS
    'API usage per organization and service of [p_from, p_to) from the cheapest exact '
    'source (daily or hourly summary, api_usage for queued hours).';

-- "What did user U spend on AI over the range, per model?"
CREATE FUNCTION user_ai_cost(p_user_id text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (model_type text, analyses bigint, tokens_used bigint, cost_usd numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT f.model_type, sum(f.analyses)::bigint, sum(f.tokens_used)::bigint, sum(f.cost)
    FROM ai_usage_facts(p_from, p_to) f
    WHERE f.user_id = p_user_id
    GROUP BY f.model_type
    ORDER BY sum(f.cost) DESC, f.model_type
$$;

COMMENT ON FUNCTION user_ai_cost(text, timestamptz, timestamptz) IS
    'AI analyses, tokens and cost (USD) of one user over [p_from, p_to), per model.';

-- "What did organization O use AI for over the range, per model and version, and how well
-- did it go?"
CREATE FUNCTION organization_ai_usage(p_organization_id text, p_from timestamptz,
                                      p_to timestamptz)
RETURNS TABLE (
    model_type text, model_version text, analyses bigint, completed bigint, failed bigint,
    fallbacks bigint, cache_hits bigint, request_tokens bigint, response_tokens bigint,
    tokens_used bigint, cost_usd numeric, avg_cost_usd numeric, failure_rate double precision,
    cache_hit_rate double precision, avg_processing_time_ms double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT f.model_type, f.model_version, sum(f.analyses)::bigint,
           sum(f.completed_count)::bigint, sum(f.failed_count)::bigint,
           sum(f.fallback_count)::bigint, sum(f.cache_hit_count)::bigint,
           sum(f.request_tokens)::bigint, sum(f.response_tokens)::bigint,
           sum(f.tokens_used)::bigint, sum(f.cost),
           round(sum(f.cost) / nullif(sum(f.analyses), 0), 8),
           sum(f.failed_count)::double precision / nullif(sum(f.analyses), 0),
           sum(f.cache_hit_count)::double precision / nullif(sum(f.analyses), 0),
           sum(f.processing_time_ms_sum) / nullif(sum(f.processing_time_ms_count), 0)
    FROM ai_usage_facts(p_from, p_to) f
    WHERE f.organization_id = p_organization_id
    GROUP BY f.model_type, f.model_version
    ORDER BY sum(f.cost) DESC, f.model_type, f.model_version
$$;

COMMENT ON FUNCTION organization_ai_usage(text, timestamptz, timestamptz) IS
    'AI usage of one organization over [p_from, p_to) per model and version: counts, '
    'tokens, cost (USD), failure and cache hit rates, average processing time (ms).';

-- "Which models cost what over the range?" (all organizations the caller may see, or one).
CREATE FUNCTION ai_cost_by_model(p_from timestamptz, p_to timestamptz,
                                 p_organization_id text DEFAULT NULL)
RETURNS TABLE (model_type text, analyses bigint, tokens_used bigint, cost_usd numeric,
               avg_cost_usd numeric, cost_share double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT f.model_type, sum(f.analyses)::bigint, sum(f.tokens_used)::bigint, sum(f.cost),
           round(sum(f.cost) / nullif(sum(f.analyses), 0), 8),
           (sum(f.cost) / nullif(sum(sum(f.cost)) OVER (), 0))::double precision
    FROM ai_usage_summary_facts(p_from, p_to) f
    WHERE p_organization_id IS NULL OR f.organization_id = p_organization_id
    GROUP BY f.model_type
    ORDER BY sum(f.cost) DESC, f.model_type
$$;

COMMENT ON FUNCTION ai_cost_by_model(timestamptz, timestamptz, text) IS
    'AI analyses, tokens and cost (USD) per model over [p_from, p_to), with each model''s '
    'share of the total; optionally for one organization.';

-- "Who are the biggest AI spenders over the range?"
CREATE FUNCTION top_users_by_ai_cost(p_from timestamptz, p_to timestamptz,
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

COMMENT ON FUNCTION top_users_by_ai_cost(timestamptz, timestamptz, integer, text) IS
    'The p_limit users with the highest AI cost (USD) over [p_from, p_to); optionally within '
    'one organization.';

-- "How often did AI analyses hit the cache, per model?"
CREATE FUNCTION ai_cache_hit_rate(p_from timestamptz, p_to timestamptz,
                                  p_organization_id text DEFAULT NULL)
RETURNS TABLE (model_type text, analyses bigint, cache_hits bigint,
               cache_hit_rate double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT f.model_type, sum(f.analyses)::bigint, sum(f.cache_hit_count)::bigint,
           sum(f.cache_hit_count)::double precision / nullif(sum(f.analyses), 0)
    FROM ai_usage_summary_facts(p_from, p_to) f
    WHERE p_organization_id IS NULL OR f.organization_id = p_organization_id
    GROUP BY ROLLUP (f.model_type)
    ORDER BY f.model_type NULLS LAST
$$;

COMMENT ON FUNCTION ai_cache_hit_rate(timestamptz, timestamptz, text) IS
    'Share of AI analyses served with caching per model over [p_from, p_to); the row with '
    'model_type NULL is the total.';

-- "How reliable and fast was each service over the range?"
CREATE FUNCTION service_error_rates(p_from timestamptz, p_to timestamptz,
                                    p_organization_id text DEFAULT NULL)
RETURNS TABLE (service text, requests bigint, errors bigint, error_rate double precision,
               avg_response_time_ms double precision, p50_response_time_ms double precision,
               p95_response_time_ms double precision, p99_response_time_ms double precision,
               max_response_time_ms double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT s.service, s.requests, s.errors,
           s.errors::double precision / nullif(s.requests, 0),
           s.rt_sum / nullif(s.requests, 0),
           latency_quantile(0.50, s.hist, s.rt_max),
           latency_quantile(0.95, s.hist, s.rt_max),
           latency_quantile(0.99, s.hist, s.rt_max),
           s.rt_max
    FROM (
        SELECT f.service, sum(f.request_count)::bigint AS requests,
               sum(f.error_count)::bigint AS errors, sum(f.response_time_ms_sum) AS rt_sum,
               max(f.response_time_ms_max) AS rt_max,
               ARRAY[sum(f.latency_le_50), sum(f.latency_le_100), sum(f.latency_le_250),
                     sum(f.latency_le_500), sum(f.latency_le_1000), sum(f.latency_le_2500),
                     sum(f.latency_le_5000), sum(f.latency_gt_5000)]::bigint[] AS hist
        FROM api_usage_summary_facts(p_from, p_to) f
        WHERE p_organization_id IS NULL OR f.organization_id = p_organization_id
        GROUP BY f.service
    ) s
    ORDER BY s.errors::double precision / nullif(s.requests, 0) DESC NULLS LAST, s.service
$$;

COMMENT ON FUNCTION service_error_rates(timestamptz, timestamptz, text) IS
    'Requests, errors, error rate and response times (average, estimated p50/p95/p99, max; '
    'ms) per service over [p_from, p_to); optionally for one organization.';

-- "What did organization O spend on and get from the APIs, per service?"
CREATE FUNCTION organization_api_usage(p_organization_id text, p_from timestamptz,
                                       p_to timestamptz)
RETURNS TABLE (service text, requests bigint, errors bigint, error_rate double precision,
               tokens bigint, cost_usd numeric, avg_response_time_ms double precision,
               p95_response_time_ms double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT s.service, s.requests, s.errors, s.errors::double precision / nullif(s.requests, 0),
           s.tokens, s.cost, s.rt_sum / nullif(s.requests, 0),
           latency_quantile(0.95, s.hist, s.rt_max)
    FROM (
        SELECT f.service, sum(f.request_count)::bigint AS requests,
               sum(f.error_count)::bigint AS errors, sum(f.token_usage)::bigint AS tokens,
               sum(f.cost) AS cost, sum(f.response_time_ms_sum) AS rt_sum,
               max(f.response_time_ms_max) AS rt_max,
               ARRAY[sum(f.latency_le_50), sum(f.latency_le_100), sum(f.latency_le_250),
                     sum(f.latency_le_500), sum(f.latency_le_1000), sum(f.latency_le_2500),
                     sum(f.latency_le_5000), sum(f.latency_gt_5000)]::bigint[] AS hist
        FROM api_usage_summary_facts(p_from, p_to) f
        WHERE f.organization_id = p_organization_id
        GROUP BY f.service
    ) s
    ORDER BY s.cost DESC, s.service
$$;

COMMENT ON FUNCTION organization_api_usage(text, timestamptz, timestamptz) IS
    'API requests, errors, tokens, cost (USD) and response times (ms) of one organization '
    'over [p_from, p_to), per service.';

-- "How much traffic did each service take, hour by hour?" From api_usage_summary_hourly,
-- and api_usage for the hours still queued for the rollup job.
CREATE FUNCTION api_usage_by_service_hour(p_from timestamptz, p_to timestamptz,
                                          p_organization_id text DEFAULT NULL)
RETURNS TABLE (time_window timestamptz, service text, requests bigint, errors bigint,
               error_rate double precision, avg_response_time_ms double precision,
               p95_response_time_ms double precision, tokens bigint, cost_usd numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT s.time_window, s.service, s.requests, s.errors,
           s.errors::double precision / nullif(s.requests, 0), s.rt_sum / nullif(s.requests, 0),
           latency_quantile(0.95, s.hist, s.rt_max), s.tokens, s.cost
    FROM (
        SELECT u.time_window, u.service, sum(u.request_count)::bigint AS requests,
               sum(u.error_count)::bigint AS errors, sum(u.token_usage)::bigint AS tokens,
               sum(u.cost) AS cost, sum(u.response_time_ms_sum) AS rt_sum,
               max(u.response_time_ms_max) AS rt_max,
               ARRAY[sum(u.latency_le_50), sum(u.latency_le_100), sum(u.latency_le_250),
                     sum(u.latency_le_500), sum(u.latency_le_1000), sum(u.latency_le_2500),
                     sum(u.latency_le_5000), sum(u.latency_gt_5000)]::bigint[] AS hist
        FROM (
            SELECT h.time_window, h.service, h.organization_id, h.request_count,
                   h.error_count, h.token_usage, h.cost, h.response_time_ms_sum,
                   h.response_time_ms_max, h.latency_le_50, h.latency_le_100, h.latency_le_250,
                   h.latency_le_500, h.latency_le_1000, h.latency_le_2500, h.latency_le_5000,
                   h.latency_gt_5000
            FROM api_usage_summary_hourly h
            WHERE h.time_window >= p_from AND h.time_window < p_to
              AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                        WHERE q.source = 'api_usage')
            UNION ALL
            SELECT b.time_window, b.service, b.organization_id, b.request_count,
                   b.error_count, b.token_usage, b.cost, b.response_time_ms_sum,
                   b.response_time_ms_max, b.latency_le_50, b.latency_le_100, b.latency_le_250,
                   b.latency_le_500, b.latency_le_1000, b.latency_le_2500, b.latency_le_5000,
                   b.latency_gt_5000
            FROM api_usage b
            WHERE b.time_window = ANY (ARRAY(
                    SELECT DISTINCT q.unit_start FROM rollup_pending q
                    WHERE q.source = 'api_usage' AND q.unit_start >= p_from
                      AND q.unit_start < p_to))
              AND b.time_window >= p_from AND b.time_window < p_to
        ) u
        WHERE p_organization_id IS NULL OR u.organization_id = p_organization_id
        GROUP BY u.time_window, u.service
    ) s
    ORDER BY s.time_window, s.service
$$;

COMMENT ON FUNCTION api_usage_by_service_hour(timestamptz, timestamptz, text) IS
    'Requests, errors, response times (ms), tokens and cost (USD) per service and UTC hour '
    'over [p_from, p_to); optionally for one organization.';

-- "What did each organization use and spend over the range?" (API calls and AI analyses).
CREATE FUNCTION organization_usage_summary(p_from timestamptz, p_to timestamptz)
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

COMMENT ON FUNCTION organization_usage_summary(timestamptz, timestamptz) IS
    'Per organization over [p_from, p_to): API requests, errors, error rate and cost, AI '
    'analyses, failures and cost, and total cost (USD).';
