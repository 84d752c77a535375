-- 0004 rollups: pre-aggregated copies of api_usage and ai_analysis for long ranges, kept
-- exact by recomputing whole periods ("units") from the base tables.
--
--   detail rollups (same dimensions as the base tables, per user):
--     api_usage_daily             api_usage per UTC day                      (25 months)
--     ai_analysis_hourly          ai_analysis per UTC hour and (org, user,   (90 days, like
--                                 model, version, region)                     the raw rows)
--     ai_analysis_daily           ai_analysis_hourly per UTC day             (25 months)
--   summary rollups (per organization only: small enough to scan every organization of a
--   month in milliseconds, for dashboards and cross-organization reports):
--     api_usage_summary_hourly    per UTC hour, organization and service     (25 months)
--     api_usage_summary_daily     per UTC day, organization and service      (25 months)
--     ai_analysis_summary_hourly  per UTC hour, organization and model       (90 days)
--     ai_analysis_summary_daily   per UTC day, organization and model        (25 months)
--   rollup_pending                the hours whose rollups may be stale, written by
--                                 triggers on the base tables in the writer's transaction
--   rollup_state                  what the last refresh did, for monitoring
--
-- Only sums, counts, maxima and histogram counts are stored, never averages or rates, so
-- any set of rollup rows (and of base rows) adds up exactly. How the queue keeps the
-- rollups exact is explained in pipeline/maintenance/rollups.py; in short: a writer's
-- transaction queues the hours it touched, the refresh job deletes queue rows and
-- recomputes their units from the base tables in one REPEATABLE READ snapshot, so a change
-- is either in the recomputation or still queued, whatever the commit order.

-- UTC boundaries used to split a query range [p_from, p_to) between rollups and base
-- tables. They satisfy p_from <= hour_lo <= day_lo <= day_hi <= hour_hi <= p_to:
--   [day_lo, day_hi)                      whole UTC days         -> daily rollups
--   [hour_lo, day_lo), [day_hi, hour_hi)  other whole UTC hours  -> hourly data
--   [p_from, hour_lo), [hour_hi, p_to)    partial hours at edges -> raw rows
-- Immutable one-expression SQL functions: the planner inlines them, so with constant
-- arguments they fold to constants and partitions are pruned at plan time (with
-- parameters, when the executor starts).

-- p_ts rounded up to a whole UTC hour or day ('hour' or 'day').
CREATE FUNCTION utc_ceil(p_unit text, p_ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN date_trunc(p_unit, p_ts, 'UTC') = p_ts THEN p_ts
                ELSE date_trunc(p_unit, p_ts, 'UTC')
                     + CASE p_unit WHEN 'day' THEN interval '24 hours' ELSE interval '1 hour' END
           END
$$;

CREATE FUNCTION rollup_hour_lo(p_from timestamptz, p_to timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT least(utc_ceil('hour', p_from), p_to) $$;

CREATE FUNCTION rollup_hour_hi(p_from timestamptz, p_to timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT greatest(date_trunc('hour', p_to, 'UTC'), rollup_hour_lo(p_from, p_to)) $$;

CREATE FUNCTION rollup_day_lo(p_from timestamptz, p_to timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT least(utc_ceil('day', rollup_hour_lo(p_from, p_to)), rollup_hour_hi(p_from, p_to)) $$;

CREATE FUNCTION rollup_day_hi(p_from timestamptz, p_to timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT greatest(date_trunc('day', rollup_hour_hi(p_from, p_to), 'UTC'),
                    rollup_day_lo(p_from, p_to))
$$;

COMMENT ON FUNCTION rollup_day_lo(timestamptz, timestamptz) IS
    'Start of the whole UTC days of [p_from, p_to) (see rollup_day_hi, rollup_hour_lo/hi).';

-- api_usage per UTC day. Same key and measures as api_usage (time_window is the day's
-- start), so every query on api_usage runs unchanged on it over whole days.
CREATE TABLE api_usage_daily (
    time_window          timestamptz      NOT NULL,
    service              text             NOT NULL,
    endpoint             text             NOT NULL,
    method               text             NOT NULL,
    user_id              text             NOT NULL,
    organization_id      text             NOT NULL,
    request_count        bigint           NOT NULL,
    success_count        bigint           NOT NULL,
    error_count          bigint           NOT NULL,
    token_usage          bigint           NOT NULL,
    cost                 numeric(20, 8)   NOT NULL,
    response_time_ms_sum double precision NOT NULL,
    response_time_ms_max double precision NOT NULL,
    latency_le_50        bigint           NOT NULL,
    latency_le_100       bigint           NOT NULL,
    latency_le_250       bigint           NOT NULL,
    latency_le_500       bigint           NOT NULL,
    latency_le_1000      bigint           NOT NULL,
    latency_le_2500      bigint           NOT NULL,
    latency_le_5000      bigint           NOT NULL,
    latency_gt_5000      bigint           NOT NULL,
    PRIMARY KEY (time_window, service, endpoint, method, user_id, organization_id),
    CONSTRAINT api_usage_daily_day CHECK (time_window = date_trunc('day', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE api_usage_daily IS
    'api_usage summed per UTC day (time_window = day start); exact sums of the hourly buckets. '
    'Monthly partitions, refreshed by the rollup job.';

-- The same three questions as on api_usage, over days: per service, per user, per org.
CREATE INDEX api_usage_daily_service_time ON api_usage_daily (service, time_window);
CREATE INDEX api_usage_daily_user_service_time ON api_usage_daily (user_id, service, time_window);
CREATE INDEX api_usage_daily_org_time ON api_usage_daily (organization_id, time_window);

-- ai_analysis per UTC hour and dimension. Dimensions are nullable like in ai_analysis;
-- the unique constraint treats NULLs as equal so that it states the grain exactly.
CREATE TABLE ai_analysis_hourly (
    time_window                    timestamptz      NOT NULL,
    organization_id                text,
    user_id                        text,
    model_type                     text             NOT NULL,
    model_version                  text,
    region_processed               text,
    analyses                       bigint           NOT NULL,
    completed_count                bigint           NOT NULL,  -- status = 'completed'
    failed_count                   bigint           NOT NULL,  -- status = 'failed'
    fallback_count                 bigint           NOT NULL,  -- fallback_used
    cache_hit_count                bigint           NOT NULL,  -- caching_used
    batch_count                    bigint           NOT NULL,  -- batch_processed
    processing_attempts            bigint           NOT NULL,  -- sum of processing_attempts
    request_tokens                 bigint           NOT NULL,
    response_tokens                bigint           NOT NULL,
    tokens_used                    bigint           NOT NULL,
    cost                           numeric(20, 8)   NOT NULL,  -- sum of api_cost, USD
    processing_time_ms_sum         double precision NOT NULL,
    processing_time_ms_count       bigint           NOT NULL,  -- rows with a processing time
    processing_time_ms_max         double precision,
    queue_wait_time_ms_sum         double precision NOT NULL,
    queue_wait_time_ms_count       bigint           NOT NULL,
    total_processing_time_ms_sum   double precision NOT NULL,
    total_processing_time_ms_count bigint           NOT NULL,
    CONSTRAINT ai_analysis_hourly_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id, user_id, model_type, model_version, region_processed),
    CONSTRAINT ai_analysis_hourly_hour CHECK (time_window = date_trunc('hour', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_hourly IS
    'ai_analysis summed per UTC hour, organization, user, model, version and region. '
    'Monthly partitions kept 90 days like the raw rows; refreshed by the rollup job.';

-- "AI cost/usage of user U over a period".
CREATE INDEX ai_analysis_hourly_user_time ON ai_analysis_hourly (user_id, time_window);
-- "Organization O's AI usage over a period" and row-level-security-filtered reads.
CREATE INDEX ai_analysis_hourly_org_time ON ai_analysis_hourly (organization_id, time_window);

-- ai_analysis per UTC day: same columns as ai_analysis_hourly, kept 25 months so that cost
-- per user, model and period survives the 90-day retention of the raw rows.
CREATE TABLE ai_analysis_daily (
    LIKE ai_analysis_hourly INCLUDING DEFAULTS,
    CONSTRAINT ai_analysis_daily_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id, user_id, model_type, model_version, region_processed),
    CONSTRAINT ai_analysis_daily_day CHECK (time_window = date_trunc('day', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_daily IS
    'ai_analysis summed per UTC day, organization, user, model, version and region. '
    'Monthly partitions kept 25 months; refreshed by the rollup job from ai_analysis_hourly.';

-- "AI cost/usage of user U over a period".
CREATE INDEX ai_analysis_daily_user_time ON ai_analysis_daily (user_id, time_window);
-- "Organization O's AI usage over a period" and row-level-security-filtered reads.
CREATE INDEX ai_analysis_daily_org_time ON ai_analysis_daily (organization_id, time_window);

-- api_usage per UTC hour, organization and service: every measure of api_usage, summed
-- over endpoints, methods and users. "Service error rates / usage per organization".
CREATE TABLE api_usage_summary_hourly (
    time_window          timestamptz      NOT NULL,
    organization_id      text             NOT NULL,
    service              text             NOT NULL,
    request_count        bigint           NOT NULL,
    success_count        bigint           NOT NULL,
    error_count          bigint           NOT NULL,
    token_usage          bigint           NOT NULL,
    cost                 numeric(20, 8)   NOT NULL,
    response_time_ms_sum double precision NOT NULL,
    response_time_ms_max double precision NOT NULL,
    latency_le_50        bigint           NOT NULL,
    latency_le_100       bigint           NOT NULL,
    latency_le_250       bigint           NOT NULL,
    latency_le_500       bigint           NOT NULL,
    latency_le_1000      bigint           NOT NULL,
    latency_le_2500      bigint           NOT NULL,
    latency_le_5000      bigint           NOT NULL,
    latency_gt_5000      bigint           NOT NULL,
    PRIMARY KEY (time_window, organization_id, service),
    CONSTRAINT api_usage_summary_hourly_hour
        CHECK (time_window = date_trunc('hour', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE api_usage_summary_hourly IS
    'api_usage summed per UTC hour, organization and service. Monthly partitions kept 25 '
    'months; refreshed by the rollup job.';

-- "Organization O's API usage over a period" and row-level-security-filtered reads.
CREATE INDEX api_usage_summary_hourly_org_time
    ON api_usage_summary_hourly (organization_id, time_window);

CREATE TABLE api_usage_summary_daily (
    LIKE api_usage_summary_hourly INCLUDING DEFAULTS,
    PRIMARY KEY (time_window, organization_id, service),
    CONSTRAINT api_usage_summary_daily_day
        CHECK (time_window = date_trunc('day', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE api_usage_summary_daily IS
    'api_usage summed per UTC day, organization and service. Monthly partitions kept 25 '
    'months; refreshed by the rollup job.';

-- "Organization O's API usage over a period" and row-level-security-filtered reads.
CREATE INDEX api_usage_summary_daily_org_time
    ON api_usage_summary_daily (organization_id, time_window);

-- ai_analysis per UTC hour, organization and model: every measure of ai_analysis_hourly,
-- summed over users, versions and regions. "Cost / cache hits per model".
CREATE TABLE ai_analysis_summary_hourly (
    time_window                    timestamptz      NOT NULL,
    organization_id                text,
    model_type                     text             NOT NULL,
    analyses                       bigint           NOT NULL,
    completed_count                bigint           NOT NULL,
    failed_count                   bigint           NOT NULL,
    fallback_count                 bigint           NOT NULL,
    cache_hit_count                bigint           NOT NULL,
    batch_count                    bigint           NOT NULL,
    processing_attempts            bigint           NOT NULL,
    request_tokens                 bigint           NOT NULL,
    response_tokens                bigint           NOT NULL,
    tokens_used                    bigint           NOT NULL,
    cost                           numeric(20, 8)   NOT NULL,
    processing_time_ms_sum         double precision NOT NULL,
    processing_time_ms_count       bigint           NOT NULL,
    processing_time_ms_max         double precision,
    queue_wait_time_ms_sum         double precision NOT NULL,
    queue_wait_time_ms_count       bigint           NOT NULL,
    total_processing_time_ms_sum   double precision NOT NULL,
    total_processing_time_ms_count bigint           NOT NULL,
    CONSTRAINT ai_analysis_summary_hourly_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id, model_type),
    CONSTRAINT ai_analysis_summary_hourly_hour
        CHECK (time_window = date_trunc('hour', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_summary_hourly IS
    'ai_analysis summed per UTC hour, organization and model. Monthly partitions kept 90 '
    'days; refreshed by the rollup job.';

-- "Organization O's AI usage over a period" and row-level-security-filtered reads.
CREATE INDEX ai_analysis_summary_hourly_org_time
    ON ai_analysis_summary_hourly (organization_id, time_window);

CREATE TABLE ai_analysis_summary_daily (
    LIKE ai_analysis_summary_hourly INCLUDING DEFAULTS,
    CONSTRAINT ai_analysis_summary_daily_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id, model_type),
    CONSTRAINT ai_analysis_summary_daily_day
        CHECK (time_window = date_trunc('day', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_summary_daily IS
    'ai_analysis summed per UTC day, organization and model. Monthly partitions kept 25 '
    'months; refreshed by the rollup job.';

-- "Organization O's AI usage over a period" and row-level-security-filtered reads.
CREATE INDEX ai_analysis_summary_daily_org_time
    ON ai_analysis_summary_daily (organization_id, time_window);

-- Retention: api rollups as long as api_usage (25 months); hourly AI rollups as long as the
-- raw rows (90 days: they serve the hours at the edges of ranges the raw rows still
-- cover); daily AI rollups 25 months, so that cost per user, model and period outlives the
-- raw rows. Monthly partitions throughout: even the largest (ai_analysis_hourly) holds a
-- few million rows a month at 10M analyses per 90 days.
INSERT INTO partition_policies
    (parent_table, partition_column, granularity, premake, lookback, retention)
VALUES
    ('api_usage_daily',            'time_window', 'month', 2, 1, interval '25 months'),
    ('api_usage_summary_hourly',   'time_window', 'month', 2, 1, interval '25 months'),
    ('api_usage_summary_daily',    'time_window', 'month', 2, 1, interval '25 months'),
    ('ai_analysis_hourly',         'time_window', 'month', 1, 1, interval '90 days'),
    ('ai_analysis_daily',          'time_window', 'month', 2, 1, interval '25 months'),
    ('ai_analysis_summary_hourly', 'time_window', 'month', 1, 1, interval '90 days'),
    ('ai_analysis_summary_daily',  'time_window', 'month', 2, 1, interval '25 months');

-- The change queue: one row per (writing statement, UTC hour it touched). Append-only for
-- writers (no unique key, so concurrent writers never wait for each other here); the
-- refresh job deletes the rows it has folded into the rollups. A reader treats every hour
-- (and its day) listed here as stale and reads it from the base table instead, which makes
-- rollup-backed answers exact at any moment. No index: the table stays small (emptied
-- every refresh) and both the job and readers read all of a source's rows.
CREATE TABLE rollup_pending (
    source     text        NOT NULL CHECK (source IN ('api_usage', 'ai_analysis')),
    unit_start timestamptz NOT NULL
        CHECK (unit_start = date_trunc('hour', unit_start, 'UTC')),
    queued_at  timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

COMMENT ON TABLE rollup_pending IS
    'UTC hours whose rollups may be stale: queued by triggers in the writing transaction, '
    'deleted by the refresh that recomputes them. Readers read these hours from base tables.';

-- One row per source: what the last refresh did. Monitoring reads it; nothing depends on
-- it for correctness (the queue alone says what is stale).
CREATE TABLE rollup_state (
    source            text        PRIMARY KEY CHECK (source IN ('api_usage', 'ai_analysis')),
    refreshed_at      timestamptz NOT NULL,
    last_units        integer     NOT NULL,
    last_rows         bigint      NOT NULL,
    last_duration_ms  integer     NOT NULL
);

COMMENT ON TABLE rollup_state IS
    'Per source: when the rollup job last refreshed it, how many hours/days it recomputed, '
    'how many rollup rows it wrote and how long it took.';

-- Statement-level triggers with transition tables: one INSERT per writing statement, of
-- the distinct hours it touched (old and new versions, so an UPDATE that moves a row to
-- another hour marks both). They fire for statements on the partitioned parents, which is
-- where the workers write; writing into a partition directly bypasses them.
CREATE FUNCTION rollup_queue_api_usage() RETURNS trigger
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

CREATE FUNCTION rollup_queue_ai_analysis() RETURNS trigger
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

CREATE TRIGGER api_usage_rollup_insert AFTER INSERT ON api_usage
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_queue_api_usage();
CREATE TRIGGER api_usage_rollup_update AFTER UPDATE ON api_usage
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_queue_api_usage();
CREATE TRIGGER api_usage_rollup_delete AFTER DELETE ON api_usage
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_queue_api_usage();

CREATE TRIGGER ai_analysis_rollup_insert AFTER INSERT ON ai_analysis
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_queue_ai_analysis();
CREATE TRIGGER ai_analysis_rollup_update AFTER UPDATE ON ai_analysis
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_queue_ai_analysis();
CREATE TRIGGER ai_analysis_rollup_delete AFTER DELETE ON ai_analysis
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_queue_ai_analysis();

-- Queue every hour of [p_from, p_to) of a source for recomputation: after a TRUNCATE, a
-- write straight into a partition, or to rebuild a range by hand. Returns the hours queued.
CREATE FUNCTION rollup_requeue(p_source text, p_from timestamptz, p_to timestamptz)
RETURNS bigint
LANGUAGE sql
AS $$
    WITH queued AS (
        INSERT INTO rollup_pending (source, unit_start)
        SELECT p_source, h
        FROM generate_series(date_trunc('hour', p_from, 'UTC'), p_to - interval '1 microsecond',
                             interval '1 hour') AS h
        RETURNING 1
    )
    SELECT count(*) FROM queued
$$;

COMMENT ON FUNCTION rollup_requeue(text, timestamptz, timestamptz) IS
    'Queues every UTC hour of [p_from, p_to) of a source (api_usage or ai_analysis) so the '
    'next refresh recomputes its rollups.';

-- Rows that exist before this migration: queue their hours so the first refresh builds
-- the rollups from them.
INSERT INTO rollup_pending (source, unit_start)
SELECT DISTINCT 'api_usage', time_window FROM api_usage;
INSERT INTO rollup_pending (source, unit_start)
SELECT DISTINCT 'ai_analysis', date_trunc('hour', created_at, 'UTC') FROM ai_analysis;

-- Daily rollups with their derived measures (see api_usage_hourly_stats).
CREATE VIEW api_usage_daily_stats WITH (security_invoker = true) AS
SELECT d.*,
       d.response_time_ms_sum / nullif(d.request_count, 0)          AS avg_response_time_ms,
       d.error_count::double precision / nullif(d.request_count, 0) AS error_rate,
       latency_quantile(0.50, h.counts, d.response_time_ms_max)    AS p50_response_time_ms,
       latency_quantile(0.95, h.counts, d.response_time_ms_max)    AS p95_response_time_ms,
       latency_quantile(0.99, h.counts, d.response_time_ms_max)    AS p99_response_time_ms
FROM api_usage_daily d
CROSS JOIN LATERAL (SELECT ARRAY[d.latency_le_50, d.latency_le_100, d.latency_le_250,
                                 d.latency_le_500, d.latency_le_1000, d.latency_le_2500,
                                 d.latency_le_5000, d.latency_gt_5000] AS counts) h;

COMMENT ON VIEW api_usage_daily_stats IS
    'api_usage_daily rows with average response time, error rate and estimated p50/p95/p99.';

CREATE VIEW ai_analysis_daily_stats WITH (security_invoker = true) AS
SELECT d.*,
       d.cost / nullif(d.analyses, 0)                                   AS avg_cost,
       d.failed_count::double precision / nullif(d.analyses, 0)         AS failure_rate,
       d.fallback_count::double precision / nullif(d.analyses, 0)       AS fallback_rate,
       d.cache_hit_count::double precision / nullif(d.analyses, 0)      AS cache_hit_rate,
       d.processing_time_ms_sum / nullif(d.processing_time_ms_count, 0) AS avg_processing_time_ms,
       d.queue_wait_time_ms_sum / nullif(d.queue_wait_time_ms_count, 0) AS avg_queue_wait_time_ms
FROM ai_analysis_daily d;

COMMENT ON VIEW ai_analysis_daily_stats IS
    'ai_analysis_daily rows with average cost, failure, fallback and cache hit rates and '
    'average processing and queue wait times.';
