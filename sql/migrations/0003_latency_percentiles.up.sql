-- 0003 latency percentiles: derive p50/p95/p99 from the additive latency histogram of
-- api_usage, and a view that puts the derived measures next to every hourly bucket.
-- Nothing here stores data: the histogram columns stay the source of truth, so any slice
-- (hours, users, services summed together) can be re-estimated exactly the same way.

-- Estimate the q-quantile (0 <= q <= 1) of the response times counted by an api_usage
-- histogram: p_counts holds the eight bucket counts in column order (latency_le_50 ..
-- latency_gt_5000), p_max_ms the largest response time seen (response_time_ms_max, or the
-- max of it over the slice), NULL when unknown.
--
-- Method: the rank r = q * n falls in the first bucket whose cumulative count reaches r;
-- the estimate interpolates linearly between that bucket's lower and upper bounds. The
-- upper bound is min(bucket bound, p_max_ms); the open bucket above 5000 ms uses p_max_ms
-- as its upper bound (or returns 5000 when p_max_ms is NULL).
--
-- Error bound: the true quantile (the ceil(q * n)-th smallest response time) lies in the
-- same bucket as the estimate, so |estimate - true| <= upper - lower of that bucket:
-- at most 50 ms below 100 ms, 150 ms in (100, 250], 250 ms in (250, 500], 500 ms in
-- (500, 1000], 1500 ms in (1000, 2500], 2500 ms in (2500, 5000], and p_max_ms - 5000
-- above. Returns NULL for an empty histogram.
CREATE FUNCTION latency_quantile(p_q double precision, p_counts bigint[],
                                 p_max_ms double precision DEFAULT NULL)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    -- (lower, upper] of each bucket, in ms; the last upper bound is open.
    lowers CONSTANT double precision[] := '{0, 50, 100, 250, 500, 1000, 2500, 5000}';
    uppers CONSTANT double precision[] := '{50, 100, 250, 500, 1000, 2500, 5000, NULL}';
    total  numeric := 0;
    seen   numeric := 0;
    rank   numeric;
    lo     double precision;
    hi     double precision;
    c      bigint;
BEGIN
    IF p_q IS NULL OR p_counts IS NULL THEN
        RETURN NULL;
    END IF;
    IF p_q < 0 OR p_q > 1 THEN
        RAISE EXCEPTION 'latency_quantile: q must be between 0 and 1, got %', p_q
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(p_counts) <> 8 THEN
        RAISE EXCEPTION 'latency_quantile: expected 8 bucket counts, got %', cardinality(p_counts)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. 8 LOOP
        total := total + coalesce(p_counts[i], 0);
    END LOOP;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    rank := p_q::numeric * total;
    FOR i IN 1 .. 8 LOOP
        c := coalesce(p_counts[i], 0);
        IF c > 0 AND seen + c >= rank THEN
            lo := lowers[i];
            hi := coalesce(least(uppers[i], p_max_ms), uppers[i], p_max_ms, lo);
            hi := greatest(hi, lo);  -- a max below the bucket's lower bound is inconsistent
            RETURN lo + (hi - lo) * ((rank - seen) / c)::double precision;
        END IF;
        seen := seen + c;
    END LOOP;
    RETURN NULL;  -- not reached: the last non-empty bucket always reaches the rank
END
$$;

COMMENT ON FUNCTION latency_quantile(double precision, bigint[], double precision) IS
    'Estimated q-quantile (ms) of an api_usage latency histogram, linear within the bucket; '
    'error at most the width of the bucket holding the quantile (see docs/analysts.md).';

-- Every hourly bucket with its derived measures. Analysts filter it like api_usage (same
-- columns, same indexes underneath); security_invoker makes row-level security apply to
-- the caller, not to the view's owner.
CREATE VIEW api_usage_hourly_stats WITH (security_invoker = true) AS
SELECT u.*,
       u.response_time_ms_sum / nullif(u.request_count, 0)          AS avg_response_time_ms,
       u.error_count::double precision / nullif(u.request_count, 0) AS error_rate,
       latency_quantile(0.50, h.counts, u.response_time_ms_max)    AS p50_response_time_ms,
       latency_quantile(0.95, h.counts, u.response_time_ms_max)    AS p95_response_time_ms,
       latency_quantile(0.99, h.counts, u.response_time_ms_max)    AS p99_response_time_ms
FROM api_usage u
CROSS JOIN LATERAL (SELECT ARRAY[u.latency_le_50, u.latency_le_100, u.latency_le_250,
                                 u.latency_le_500, u.latency_le_1000, u.latency_le_2500,
                                 u.latency_le_5000, u.latency_gt_5000] AS counts) h;

COMMENT ON VIEW api_usage_hourly_stats IS
    'api_usage buckets with average response time, error rate and estimated p50/p95/p99 (ms).';
