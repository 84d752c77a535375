-- 0011 rollups for rankings across every organization: per user (top_users_by_ai_cost)
-- and per organization only (organization_usage_summary).
--
-- top_users_by_ai_cost ranks every user of the range. On the detail rollups
-- (ai_analysis_daily/hourly: per organization, user, model, version and region) a month of
-- every organization is ~1,000,000 rows to aggregate, which took 841 ms at the analyst
-- benchmark's size (10M analyses, 90 days). Ranking users needs none of the model,
-- version and region dimensions, so these two rollups keep only (organization, user) and
-- the three measures the ranking returns:
--
--     ai_analysis_user_hourly   per UTC hour, organization and user   (90 days)
--     ai_analysis_user_daily    per UTC day, organization and user    (25 months)
--     ai_analysis_user_monthly  per UTC month, organization and user  (25 months)
--
-- They are exact sums of ai_analysis_hourly, maintained by the same rollup job from the
-- same queue (pipeline/maintenance/rollup_plan.py: hourly from ai_analysis_hourly, daily
-- from ai_analysis_user_hourly, monthly from ai_analysis_user_daily), and read by
-- ai_user_facts with the same exactness rule as
-- ai_usage_facts: whole days from the daily rollup, other whole hours from the hourly
-- one, partial hours and every hour still queued in rollup_pending (and the days holding
-- them) from one level down, so an answer is exact before the job has run.
--
-- Why not prefix (cumulative) sums: they would make any range two lookups per user, but a
-- late event would rewrite every later cumulative row of its user (up to 25 months), the
-- refresh would no longer recompute a unit from the level below alone, and the queued
-- hours would still need per-user corrections; the plain rollup keeps the job's model
-- (recompute whole units) and removes most of the rows, which is where the time went.

CREATE TABLE ai_analysis_user_hourly (
    time_window     timestamptz    NOT NULL,
    organization_id text,
    user_id         text,
    analyses        bigint         NOT NULL,
    tokens_used     bigint         NOT NULL,
    cost            numeric(20, 8) NOT NULL,  -- sum of api_cost, USD
    CONSTRAINT ai_analysis_user_hourly_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id, user_id),
    CONSTRAINT ai_analysis_user_hourly_hour
        CHECK (time_window = date_trunc('hour', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_user_hourly IS
    'ai_analysis summed per UTC hour, organization and user (analyses, tokens, cost). '
    'Monthly partitions kept 90 days like the raw rows; refreshed by the rollup job.';

-- "Organization O's users" and row-level-security-filtered reads. Ranges over every
-- organization use the grain's unique index (time_window first).
CREATE INDEX ai_analysis_user_hourly_org_time
    ON ai_analysis_user_hourly (organization_id, time_window);

CREATE TABLE ai_analysis_user_daily (
    LIKE ai_analysis_user_hourly INCLUDING DEFAULTS,
    CONSTRAINT ai_analysis_user_daily_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id, user_id),
    CONSTRAINT ai_analysis_user_daily_day
        CHECK (time_window = date_trunc('day', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_user_daily IS
    'ai_analysis summed per UTC day, organization and user (analyses, tokens, cost). '
    'Monthly partitions kept 25 months; refreshed by the rollup job.';

CREATE INDEX ai_analysis_user_daily_org_time
    ON ai_analysis_user_daily (organization_id, time_window);

-- "User U over a period": top_users_by_ai_cost's exact sums of its few candidates.
CREATE INDEX ai_analysis_user_hourly_user_time
    ON ai_analysis_user_hourly (user_id, time_window);
CREATE INDEX ai_analysis_user_daily_user_time
    ON ai_analysis_user_daily (user_id, time_window);

-- Per UTC month: one row per user and month, so that an upper bound of every user's cost
-- over any range of up to a month or two is two or three rows per user (see
-- top_users_by_ai_cost). Recomputed whole from ai_analysis_user_daily for every month the
-- job touches.
CREATE TABLE ai_analysis_user_monthly (
    LIKE ai_analysis_user_hourly INCLUDING DEFAULTS,
    CONSTRAINT ai_analysis_user_monthly_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id, user_id),
    CONSTRAINT ai_analysis_user_monthly_month
        CHECK (time_window = date_trunc('month', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_user_monthly IS
    'ai_analysis summed per UTC month, organization and user (analyses, tokens, cost). '
    'Monthly partitions kept 25 months; refreshed by the rollup job.';

CREATE INDEX ai_analysis_user_monthly_org_time
    ON ai_analysis_user_monthly (organization_id, time_window);

INSERT INTO partition_policies
    (parent_table, partition_column, granularity, premake, lookback, retention)
VALUES
    ('ai_analysis_user_hourly', 'time_window', 'month', 1, 1, interval '90 days'),
    ('ai_analysis_user_daily',  'time_window', 'month', 2, 1, interval '25 months'),
    ('ai_analysis_user_monthly', 'time_window', 'month', 2, 1, interval '25 months');

-- Existing data: build both from ai_analysis_hourly (hours still queued are rebuilt by the
-- next refresh like every other rollup, and read from the raw rows until then). Every
-- backfill below leaves out rows older than its target's retention: a source partition
-- past retention that prune has not dropped yet has no target partition
-- (ensure_partition refuses expired ranges), and its rows would fail the insert.
-- Owned by the migrator like every table (0006), before partitions are made: the
-- partitions are created by ensure_partition, which runs as the migrator and must own
-- the parent.
ALTER TABLE ai_analysis_user_hourly OWNER TO pipeline_migrator;
ALTER TABLE ai_analysis_user_daily OWNER TO pipeline_migrator;
ALTER TABLE ai_analysis_user_monthly OWNER TO pipeline_migrator;

-- Partitions for the months ai_analysis_hourly covers (the rollup job creates the others
-- as it needs them, like for every rollup).
SELECT ensure_partition(t.name, m.month)
FROM (VALUES ('ai_analysis_user_hourly'), ('ai_analysis_user_daily'),
             ('ai_analysis_user_monthly')) AS t(name)
CROSS JOIN (SELECT DISTINCT date_trunc('month', h.time_window, 'UTC') AS month
            FROM ai_analysis_hourly h) m;

INSERT INTO ai_analysis_user_hourly
    (time_window, organization_id, user_id, analyses, tokens_used, cost)
SELECT h.time_window, h.organization_id, h.user_id, sum(h.analyses), sum(h.tokens_used),
       sum(h.cost)
FROM ai_analysis_hourly h
WHERE h.time_window >= partition_keep_from('ai_analysis_user_hourly', now())
GROUP BY h.time_window, h.organization_id, h.user_id;

INSERT INTO ai_analysis_user_daily
    (time_window, organization_id, user_id, analyses, tokens_used, cost)
SELECT date_trunc('day', h.time_window, 'UTC'), h.organization_id, h.user_id,
       sum(h.analyses), sum(h.tokens_used), sum(h.cost)
FROM ai_analysis_user_hourly h
WHERE h.time_window >= partition_keep_from('ai_analysis_user_daily', now())
GROUP BY 1, h.organization_id, h.user_id;

INSERT INTO ai_analysis_user_monthly
    (time_window, organization_id, user_id, analyses, tokens_used, cost)
SELECT date_trunc('month', d.time_window, 'UTC'), d.organization_id, d.user_id,
       sum(d.analyses), sum(d.tokens_used), sum(d.cost)
FROM ai_analysis_user_daily d
WHERE d.time_window >= partition_keep_from('ai_analysis_user_monthly', now())
GROUP BY 1, d.organization_id, d.user_id;

-- AI analyses, tokens and cost of [p_from, p_to) per organization and user: exactly what
-- aggregating ai_analysis over the range gives, from ai_analysis_user_daily for whole UTC
-- days none of whose hours is queued, ai_analysis_user_hourly for the other whole hours
-- not queued, and the raw rows for partial hours and queued hours (same split and
-- exactness rule as ai_usage_facts in 0005).
CREATE FUNCTION ai_user_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (time_window timestamptz, granularity text, organization_id text,
               user_id text, analyses bigint, tokens_used bigint, cost numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Whole days none of whose hours is queued: the daily rollup.
    SELECT d.time_window, 'day', d.organization_id, d.user_id, d.analyses, d.tokens_used,
           d.cost
    FROM ai_analysis_user_daily d
    WHERE d.time_window >= rollup_day_lo(p_from, p_to)
      AND d.time_window < rollup_day_hi(p_from, p_to)
      AND d.time_window NOT IN (SELECT date_trunc('day', q.unit_start, 'UTC')
                                FROM rollup_pending q WHERE q.source = 'ai_analysis')
    UNION ALL
    -- Whole hours before the first whole day, not queued: the hourly rollup.
    SELECT h.time_window, 'hour', h.organization_id, h.user_id, h.analyses, h.tokens_used,
           h.cost
    FROM ai_analysis_user_hourly h
    WHERE h.time_window >= rollup_hour_lo(p_from, p_to)
      AND h.time_window < rollup_day_lo(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- Whole hours after the last whole day, not queued: the hourly rollup.
    SELECT h.time_window, 'hour', h.organization_id, h.user_id, h.analyses, h.tokens_used,
           h.cost
    FROM ai_analysis_user_hourly h
    WHERE h.time_window >= rollup_day_hi(p_from, p_to)
      AND h.time_window < rollup_hour_hi(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    -- The hours, not queued themselves, of whole days that have a queued hour.
    SELECT h.time_window, 'hour', h.organization_id, h.user_id, h.analyses, h.tokens_used,
           h.cost
    FROM ai_analysis_user_hourly h
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
    -- The partial hours at the start and at the end of the range: raw rows.
    SELECT a.time_window, 'event', a.organization_id, a.user_id, a.analyses, a.tokens_used,
           a.cost
    FROM ai_analysis_as_facts(p_from, rollup_hour_lo(p_from, p_to)) a
    UNION ALL
    SELECT a.time_window, 'event', a.organization_id, a.user_id, a.analyses, a.tokens_used,
           a.cost
    FROM ai_analysis_as_facts(rollup_hour_hi(p_from, p_to), p_to) a
    UNION ALL
    -- Queued whole hours: raw rows, one index range scan per hour.
    SELECT a.time_window, 'event', a.organization_id, a.user_id, a.analyses, a.tokens_used,
           a.cost
    FROM (SELECT DISTINCT q.unit_start AS hour FROM rollup_pending q
          WHERE q.source = 'ai_analysis'
            AND q.unit_start >= rollup_hour_lo(p_from, p_to)
            AND q.unit_start < rollup_hour_hi(p_from, p_to)) s
    CROSS JOIN LATERAL ai_analysis_as_facts(s.hour, s.hour + interval '1 hour') a
    WHERE a.time_window >= rollup_hour_lo(p_from, p_to)
      AND a.time_window < rollup_hour_hi(p_from, p_to)
$$;

COMMENT ON FUNCTION ai_user_facts(timestamptz, timestamptz) IS
    'AI analyses, tokens and cost of [p_from, p_to) per organization and user, from the '
    'cheapest exact source (daily, hourly user rollup or raw rows).';

-- Same signature, result and order as in 0005, computed without summing every user.
--
-- Summing every user's rows of the range is what cost 0.1-0.8 s; exact top-k ranking does
-- not need it. Costs are never negative (ai_analysis.api_cost >= 0), so a user's cost over
-- the whole UTC months the range touches is an upper bound of its cost over the range:
--   bound(u) = its ai_analysis_user_monthly rows of those months (2-3 rows per user)
--            + its raw analyses in the range's hours still queued in rollup_pending
-- (a rollup row is exact for every hour that is not queued and, costs being >= 0, never
-- counts less than it should for the hours that are: only inserted rows can be missing,
-- and they are in queued hours, counted raw). Then:
--   1. t = the p_limit-th best exact cost among the p_limit users with the highest bounds
--      (0 when there are fewer users): at least p_limit users cost t or more;
--   2. any user whose bound is below t costs less than p_limit others, so the top p_limit
--      are among the users with bound >= t, whose exact costs (ai_user_facts, per user by
--      index) are summed and ranked as before.
-- The result is exactly the plain SQL's (tested, with ties). How many users step 2 sums
-- depends on the data: with this workload's skewed users a few dozen for 24 hours to 30
-- days; in the worst case (uniform users, a range of a few hours at the start of a month)
-- all of them, which is the old cost.
CREATE OR REPLACE FUNCTION top_users_by_ai_cost(p_from timestamptz, p_to timestamptz,
                                                p_limit integer DEFAULT 10,
                                                p_organization_id text DEFAULT NULL)
RETURNS TABLE (user_id text, organization_id text, analyses bigint, tokens_used bigint,
               cost_usd numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH bound AS MATERIALIZED (
        SELECT b.organization_id, b.user_id, sum(b.cost) AS cost
        FROM (
            SELECT m.organization_id, m.user_id, m.cost
            FROM ai_analysis_user_monthly m
            WHERE m.time_window >= date_trunc('month', p_from, 'UTC')
              AND m.time_window < p_to
            UNION ALL
            SELECT a.organization_id, a.user_id, a.api_cost
            FROM (SELECT DISTINCT q.unit_start AS hour FROM rollup_pending q
                  WHERE q.source = 'ai_analysis'
                    AND q.unit_start >= date_trunc('hour', p_from, 'UTC')
                    AND q.unit_start < p_to) s
            CROSS JOIN LATERAL (
                SELECT r.organization_id, r.user_id, r.api_cost FROM ai_analysis r
                WHERE r.created_at >= s.hour AND r.created_at < s.hour + interval '1 hour'
                  AND r.created_at >= p_from AND r.created_at < p_to) a
        ) b
        WHERE b.user_id IS NOT NULL
          AND (p_organization_id IS NULL OR b.organization_id = p_organization_id)
        GROUP BY b.organization_id, b.user_id
    ), probe AS MATERIALIZED (
        SELECT coalesce(e.cost, 0) AS cost
        FROM (SELECT * FROM bound ORDER BY bound.cost DESC, bound.user_id LIMIT p_limit) b
        CROSS JOIN LATERAL (
            SELECT sum(f.cost) AS cost FROM ai_user_facts(p_from, p_to) f
            WHERE f.user_id = b.user_id
              AND f.organization_id IS NOT DISTINCT FROM b.organization_id) e
    ), threshold AS (
        SELECT CASE WHEN count(*) < p_limit THEN 0 ELSE min(probe.cost) END AS t FROM probe
    )
    SELECT b.user_id, b.organization_id, e.analyses, e.tokens_used, e.cost
    FROM bound b
    CROSS JOIN LATERAL (
        SELECT sum(f.analyses)::bigint AS analyses, sum(f.tokens_used)::bigint AS tokens_used,
               sum(f.cost) AS cost
        FROM ai_user_facts(p_from, p_to) f
        WHERE f.user_id = b.user_id
          AND f.organization_id IS NOT DISTINCT FROM b.organization_id) e
    WHERE b.cost >= (SELECT threshold.t FROM threshold)
      AND e.analyses IS NOT NULL
    ORDER BY e.cost DESC, b.user_id
    LIMIT p_limit
$$;

-- organization_usage_summary over every organization read the summary rollups, one row
-- per organization and service (API) or model (AI) and hour or day: ~170,000 rows for a
-- range of 30 days ending now, most of them the ~47 whole hours at the two edges (96 ms).
-- It needs neither services nor models, so these rollups keep one row per organization
-- and hour or day (200 organizations: ~15,000 rows per source for 30 days), with the
-- measures it returns:
--     api_usage_org_hourly / api_usage_org_daily        from api_usage_summary_hourly/daily
--     ai_analysis_org_hourly / ai_analysis_org_daily    from ai_analysis_summary_hourly/daily
-- (retention like their sources), read by api_org_facts and ai_org_facts with the same
-- exactness rule as the summary facts functions (0005).
CREATE TABLE api_usage_org_hourly (
    time_window     timestamptz    NOT NULL,
    organization_id text           NOT NULL,
    request_count   bigint         NOT NULL,
    error_count     bigint         NOT NULL,
    cost            numeric(20, 8) NOT NULL,
    PRIMARY KEY (time_window, organization_id),
    CONSTRAINT api_usage_org_hourly_hour
        CHECK (time_window = date_trunc('hour', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE api_usage_org_hourly IS
    'api_usage summed per UTC hour and organization (requests, errors, cost). Monthly '
    'partitions kept 25 months; refreshed by the rollup job.';

CREATE TABLE api_usage_org_daily (
    LIKE api_usage_org_hourly INCLUDING DEFAULTS,
    PRIMARY KEY (time_window, organization_id),
    CONSTRAINT api_usage_org_daily_day
        CHECK (time_window = date_trunc('day', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE api_usage_org_daily IS
    'api_usage summed per UTC day and organization (requests, errors, cost). Monthly '
    'partitions kept 25 months; refreshed by the rollup job.';

CREATE TABLE ai_analysis_org_hourly (
    time_window     timestamptz    NOT NULL,
    organization_id text,
    analyses        bigint         NOT NULL,
    failed_count    bigint         NOT NULL,
    cost            numeric(20, 8) NOT NULL,
    CONSTRAINT ai_analysis_org_hourly_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id),
    CONSTRAINT ai_analysis_org_hourly_hour
        CHECK (time_window = date_trunc('hour', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_org_hourly IS
    'ai_analysis summed per UTC hour and organization (analyses, failures, cost). Monthly '
    'partitions kept 90 days; refreshed by the rollup job.';

CREATE TABLE ai_analysis_org_daily (
    LIKE ai_analysis_org_hourly INCLUDING DEFAULTS,
    CONSTRAINT ai_analysis_org_daily_grain UNIQUE NULLS NOT DISTINCT
        (time_window, organization_id),
    CONSTRAINT ai_analysis_org_daily_day
        CHECK (time_window = date_trunc('day', time_window, 'UTC'))
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE ai_analysis_org_daily IS
    'ai_analysis summed per UTC day and organization (analyses, failures, cost). Monthly '
    'partitions kept 25 months; refreshed by the rollup job.';

-- Row-level-security-filtered reads (an analyst's own organization).
CREATE INDEX api_usage_org_hourly_org_time ON api_usage_org_hourly (organization_id, time_window);
CREATE INDEX api_usage_org_daily_org_time ON api_usage_org_daily (organization_id, time_window);
CREATE INDEX ai_analysis_org_hourly_org_time
    ON ai_analysis_org_hourly (organization_id, time_window);
CREATE INDEX ai_analysis_org_daily_org_time
    ON ai_analysis_org_daily (organization_id, time_window);

INSERT INTO partition_policies
    (parent_table, partition_column, granularity, premake, lookback, retention)
VALUES
    ('api_usage_org_hourly',   'time_window', 'month', 2, 1, interval '25 months'),
    ('api_usage_org_daily',    'time_window', 'month', 2, 1, interval '25 months'),
    ('ai_analysis_org_hourly', 'time_window', 'month', 1, 1, interval '90 days'),
    ('ai_analysis_org_daily',  'time_window', 'month', 2, 1, interval '25 months');

ALTER TABLE api_usage_org_hourly OWNER TO pipeline_migrator;
ALTER TABLE api_usage_org_daily OWNER TO pipeline_migrator;
ALTER TABLE ai_analysis_org_hourly OWNER TO pipeline_migrator;
ALTER TABLE ai_analysis_org_daily OWNER TO pipeline_migrator;

-- Partitions for the months their sources cover (the job makes the others as needed).
SELECT ensure_partition('api_usage_org_hourly', m.month)
FROM (SELECT DISTINCT date_trunc('month', time_window, 'UTC') AS month
      FROM api_usage_summary_hourly) m;
SELECT ensure_partition('api_usage_org_daily', m.month)
FROM (SELECT DISTINCT date_trunc('month', time_window, 'UTC') AS month
      FROM api_usage_summary_daily) m;
SELECT ensure_partition('ai_analysis_org_hourly', m.month)
FROM (SELECT DISTINCT date_trunc('month', time_window, 'UTC') AS month
      FROM ai_analysis_summary_hourly) m;
SELECT ensure_partition('ai_analysis_org_daily', m.month)
FROM (SELECT DISTINCT date_trunc('month', time_window, 'UTC') AS month
      FROM ai_analysis_summary_daily) m;

INSERT INTO api_usage_org_hourly (time_window, organization_id, request_count, error_count, cost)
SELECT time_window, organization_id, sum(request_count), sum(error_count), sum(cost)
FROM api_usage_summary_hourly
WHERE time_window >= partition_keep_from('api_usage_org_hourly', now())
GROUP BY time_window, organization_id;
INSERT INTO api_usage_org_daily (time_window, organization_id, request_count, error_count, cost)
SELECT time_window, organization_id, sum(request_count), sum(error_count), sum(cost)
FROM api_usage_summary_daily
WHERE time_window >= partition_keep_from('api_usage_org_daily', now())
GROUP BY time_window, organization_id;
INSERT INTO ai_analysis_org_hourly (time_window, organization_id, analyses, failed_count, cost)
SELECT time_window, organization_id, sum(analyses), sum(failed_count), sum(cost)
FROM ai_analysis_summary_hourly
WHERE time_window >= partition_keep_from('ai_analysis_org_hourly', now())
GROUP BY time_window, organization_id;
INSERT INTO ai_analysis_org_daily (time_window, organization_id, analyses, failed_count, cost)
SELECT time_window, organization_id, sum(analyses), sum(failed_count), sum(cost)
FROM ai_analysis_summary_daily
WHERE time_window >= partition_keep_from('ai_analysis_org_daily', now())
GROUP BY time_window, organization_id;

-- API requests, errors and cost per organization of [p_from, p_to) (buckets whose hour
-- starts in the range), split like api_usage_summary_facts (0005).
CREATE FUNCTION api_org_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (time_window timestamptz, granularity text, organization_id text,
               request_count bigint, error_count bigint, cost numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Whole days none of whose hours is queued: the daily rollup.
    SELECT d.time_window, 'day', d.organization_id, d.request_count, d.error_count, d.cost
    FROM api_usage_org_daily d
    WHERE d.time_window >= rollup_day_lo(p_from, p_to)
      AND d.time_window < rollup_day_hi(p_from, p_to)
      AND d.time_window NOT IN (SELECT date_trunc('day', q.unit_start, 'UTC')
                                FROM rollup_pending q WHERE q.source = 'api_usage')
    UNION ALL
    -- Hours before the first whole day and after the last one, not queued: hourly.
    SELECT h.time_window, 'hour', h.organization_id, h.request_count, h.error_count, h.cost
    FROM api_usage_org_hourly h
    WHERE h.time_window >= p_from AND h.time_window < rollup_day_lo(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'api_usage')
    UNION ALL
    SELECT h.time_window, 'hour', h.organization_id, h.request_count, h.error_count, h.cost
    FROM api_usage_org_hourly h
    WHERE h.time_window >= rollup_day_hi(p_from, p_to) AND h.time_window < p_to
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'api_usage')
    UNION ALL
    -- The hours, not queued themselves, of whole days that have a queued hour.
    SELECT h.time_window, 'hour', h.organization_id, h.request_count, h.error_count, h.cost
    FROM api_usage_org_hourly h
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
    SELECT u.time_window, 'hour', u.organization_id, u.request_count, u.error_count, u.cost
    FROM api_usage u
    WHERE u.time_window = ANY (ARRAY(
            SELECT DISTINCT q.unit_start FROM rollup_pending q
            WHERE q.source = 'api_usage' AND q.unit_start >= p_from AND q.unit_start < p_to))
      AND u.time_window >= p_from AND u.time_window < p_to
$$;

COMMENT ON FUNCTION api_org_facts(timestamptz, timestamptz) IS
    'API requests, errors and cost per organization of [p_from, p_to) from the cheapest '
    'exact source (daily or hourly organization rollup, api_usage for queued hours).';

-- AI analyses, failures and cost per organization of [p_from, p_to), split like
-- ai_usage_summary_facts (0005).
CREATE FUNCTION ai_org_facts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (time_window timestamptz, granularity text, organization_id text,
               analyses bigint, failed_count bigint, cost numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT d.time_window, 'day', d.organization_id, d.analyses, d.failed_count, d.cost
    FROM ai_analysis_org_daily d
    WHERE d.time_window >= rollup_day_lo(p_from, p_to)
      AND d.time_window < rollup_day_hi(p_from, p_to)
      AND d.time_window NOT IN (SELECT date_trunc('day', q.unit_start, 'UTC')
                                FROM rollup_pending q WHERE q.source = 'ai_analysis')
    UNION ALL
    SELECT h.time_window, 'hour', h.organization_id, h.analyses, h.failed_count, h.cost
    FROM ai_analysis_org_hourly h
    WHERE h.time_window >= rollup_hour_lo(p_from, p_to)
      AND h.time_window < rollup_day_lo(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    SELECT h.time_window, 'hour', h.organization_id, h.analyses, h.failed_count, h.cost
    FROM ai_analysis_org_hourly h
    WHERE h.time_window >= rollup_day_hi(p_from, p_to)
      AND h.time_window < rollup_hour_hi(p_from, p_to)
      AND h.time_window NOT IN (SELECT q.unit_start FROM rollup_pending q
                                WHERE q.source = 'ai_analysis')
    UNION ALL
    SELECT h.time_window, 'hour', h.organization_id, h.analyses, h.failed_count, h.cost
    FROM ai_analysis_org_hourly h
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
    SELECT a.time_window, 'event', a.organization_id, a.analyses, a.failed_count, a.cost
    FROM ai_analysis_as_facts(p_from, rollup_hour_lo(p_from, p_to)) a
    UNION ALL
    SELECT a.time_window, 'event', a.organization_id, a.analyses, a.failed_count, a.cost
    FROM ai_analysis_as_facts(rollup_hour_hi(p_from, p_to), p_to) a
    UNION ALL
    SELECT a.time_window, 'event', a.organization_id, a.analyses, a.failed_count, a.cost
    FROM (SELECT DISTINCT q.unit_start AS hour FROM rollup_pending q
          WHERE q.source = 'ai_analysis'
            AND q.unit_start >= rollup_hour_lo(p_from, p_to)
            AND q.unit_start < rollup_hour_hi(p_from, p_to)) s
    CROSS JOIN LATERAL ai_analysis_as_facts(s.hour, s.hour + interval '1 hour') a
    WHERE a.time_window >= rollup_hour_lo(p_from, p_to)
      AND a.time_window < rollup_hour_hi(p_from, p_to)
$$;

COMMENT ON FUNCTION ai_org_facts(timestamptz, timestamptz) IS
    'AI analyses, failures and cost per organization of [p_from, p_to) from the cheapest '
    'exact source (daily or hourly organization rollup, raw rows).';

-- Same signature, result and order as in 0005; only the sources change.
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
          FROM api_org_facts(p_from, p_to) f
          WHERE f.organization_id <> ''
          GROUP BY f.organization_id) a
    FULL JOIN (SELECT f.organization_id, sum(f.analyses)::bigint AS analyses,
                      sum(f.failed_count)::bigint AS failed, sum(f.cost) AS cost
               FROM ai_org_facts(p_from, p_to) f
               WHERE f.organization_id IS NOT NULL
               GROUP BY f.organization_id) i
      ON i.organization_id = a.organization_id
    ORDER BY coalesce(a.cost, 0) + coalesce(i.cost, 0) DESC, 1
$$;

-- Ownership, grants and row-level security like the other rollups (0006).
ALTER FUNCTION ai_user_facts(timestamptz, timestamptz) OWNER TO pipeline_migrator;
ALTER FUNCTION api_org_facts(timestamptz, timestamptz) OWNER TO pipeline_migrator;
ALTER FUNCTION ai_org_facts(timestamptz, timestamptz) OWNER TO pipeline_migrator;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON ai_analysis_user_hourly, ai_analysis_user_daily, ai_analysis_user_monthly,
       api_usage_org_hourly, api_usage_org_daily, ai_analysis_org_hourly, ai_analysis_org_daily
    TO pipeline_writer;
GRANT SELECT
    ON ai_analysis_user_hourly, ai_analysis_user_daily, ai_analysis_user_monthly,
       api_usage_org_hourly, api_usage_org_daily, ai_analysis_org_hourly, ai_analysis_org_daily
    TO pipeline_analyst, pipeline_analyst_all;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ai_analysis_user_hourly', 'ai_analysis_user_daily',
                             'ai_analysis_user_monthly', 'api_usage_org_hourly',
                             'api_usage_org_daily', 'ai_analysis_org_hourly',
                             'ai_analysis_org_daily'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY writer_all ON %I FOR ALL TO pipeline_writer '
                       'USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY analyst_all_organizations ON %I FOR SELECT '
                       'TO pipeline_analyst_all USING (true)', t);
        EXECUTE format('CREATE POLICY analyst_own_organization ON %I FOR SELECT '
                       'TO pipeline_analyst '
                       'USING (organization_id = (SELECT analyst_organization()))', t);
    END LOOP;
END
$$;
