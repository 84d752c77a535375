-- 0009 monitoring tables: service metrics, an audit trail, and the lifecycle of each AI
-- analysis.
--
--   performance_metrics   hourly aggregate per metric series (sums, min/max, histogram)
--   performance_samples   the raw samples, kept a week
--   audit_trail           who did what: audit events produced by the services, and the
--                         pipeline's own changes (source 'pipeline', written by
--                         pipeline_audit: migrations, partitions created/detached/dropped,
--                         edits of partition_policies and analyst_scopes). Append-only.
--   analysis_lifecycle    the current state of each analysis (ai_analysis keeps one row per
--                         state change), with its whole modification history
--
-- Everything is created as pipeline_migrator, which owns every object of the schema since
-- 0006 (the login running migrations is a member of it, or a superuser): the SECURITY
-- DEFINER functions below then run as the owner of the tables they write, and `partitions
-- prune` can detach and drop the new tables' partitions.
SET LOCAL ROLE pipeline_migrator;

-- ---------------------------------------------------------------------------------------
-- Metric histograms
-- ---------------------------------------------------------------------------------------
-- A metric's values are counted in 123 fixed buckets (1-based), so that histograms of any
-- set of hours, instances or tags add up bucket by bucket:
--   bucket 1          value <= 0
--   bucket 2          0 < value <= 1e-3
--   bucket k, 3..122  10^(-3 + (k-3)/10) < value <= 10^(-3 + (k-2)/10)   (ten per decade)
--   bucket 123        value > 1e9
-- The workers fill them (pipeline/worker/metrics_aggregate.py); the functions here add and
-- read them.

-- Element-wise sum of two histograms. NULL is the empty histogram (so it also serves as the
-- state function of histogram_sum); histograms of different lengths are a bug, refused.
CREATE FUNCTION histogram_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF a IS NULL THEN
        RETURN b;
    ELSIF b IS NULL THEN
        RETURN a;
    ELSIF cardinality(a) <> cardinality(b) THEN
        RAISE EXCEPTION 'histogram_add: histograms of % and % buckets cannot be added',
                        cardinality(a), cardinality(b)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0)
                 FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
                 ORDER BY i);
END
$$;

COMMENT ON FUNCTION histogram_add(bigint[], bigint[]) IS
    'Element-wise sum of two metric histograms (NULL = empty). The workers'' upsert of '
    'performance_metrics and histogram_sum use it.';

-- sum() for histograms: "a day = the sum of its 24 hourly histograms".
CREATE AGGREGATE histogram_sum(bigint[]) (
    SFUNC = histogram_add,
    STYPE = bigint[],
    COMBINEFUNC = histogram_add,
    PARALLEL = SAFE
);

COMMENT ON AGGREGATE histogram_sum(bigint[]) IS
    'Bucket-by-bucket sum of metric histograms (performance_metrics.histogram) over rows.';

-- Number of samples a histogram counts: the check constraint of performance_metrics
-- compares it with sample_count.
CREATE FUNCTION histogram_total(p_counts bigint[]) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT coalesce(sum(c), 0) FROM unnest(p_counts) AS c
$$;

COMMENT ON FUNCTION histogram_total(bigint[]) IS 'Sum of the bucket counts of a histogram.';

-- Estimate the q-quantile (0 <= q <= 1) of the values counted by a metric histogram:
-- counts holds the 123 bucket counts, vmin and vmax the smallest and largest value seen
-- (value_min, value_max, or their min/max over the rows summed), NULL when unknown.
--
-- Method (the same as latency_quantile, 0003): the rank r = q * n falls in the first
-- bucket whose cumulative count reaches r; the estimate interpolates linearly between
-- that bucket's lower and upper bounds, both clamped to [vmin, vmax]. vmin closes the
-- open bucket 1 from below and vmax bucket 123 from above (without them, bucket 1 answers
-- min(0, vmax) and bucket 123 answers 1e9).
--
-- Error bound: the true quantile (the ceil(q * n)-th smallest value) lies in the same
-- bucket as the estimate, so |estimate - true| <= the width of that bucket after clamping.
-- In buckets 3..122 the width is lower * (10^0.1 - 1) < 0.259 * lower <= 0.259 * true: the
-- estimate is within 26 % of the true value. In bucket 2 the error is at most 0.001, in
-- bucket 1 at most min(0, vmax) - vmin, in bucket 123 at most vmax - 1e9. q = 0 returns
-- vmin and q = 1 returns vmax exactly when they are given. Returns NULL for an empty
-- histogram.
CREATE FUNCTION metric_quantile(q double precision, counts bigint[], vmin double precision,
                                vmax double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    total numeric := 0;
    seen  numeric := 0;
    rank  numeric;
    lo    double precision;
    hi    double precision;
    c     bigint;
BEGIN
    IF q IS NULL OR counts IS NULL THEN
        RETURN NULL;
    END IF;
    IF q < 0 OR q > 1 THEN
        RAISE EXCEPTION 'metric_quantile: q must be between 0 and 1, got %', q
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(counts) <> 123 THEN
        RAISE EXCEPTION 'metric_quantile: expected 123 bucket counts, got %', cardinality(counts)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. 123 LOOP
        total := total + coalesce(counts[i], 0);
    END LOOP;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    rank := q::numeric * total;
    FOR i IN 1 .. 123 LOOP
        c := coalesce(counts[i], 0);
        IF c > 0 AND seen + c >= rank THEN
            -- Bucket i holds (lo, hi]: 10^((i - 33) / 10) < v <= 10^((i - 32) / 10).
            lo := CASE i WHEN 1 THEN '-Infinity' WHEN 2 THEN 0
                         ELSE power(10::double precision, (i - 33) / 10.0::double precision) END;
            hi := CASE i WHEN 1 THEN 0 WHEN 123 THEN 'Infinity'
                         ELSE power(10::double precision, (i - 32) / 10.0::double precision) END;
            lo := greatest(lo, vmin);
            hi := least(hi, vmax);
            IF lo = '-Infinity' THEN
                lo := hi;
            END IF;
            IF hi = 'Infinity' THEN
                hi := lo;
            END IF;
            hi := greatest(hi, lo);  -- vmin/vmax outside the bucket are inconsistent
            IF rank - seen >= c THEN
                RETURN hi;  -- exactly, not lo + (hi - lo) rounded: q = 1 gives vmax
            END IF;
            RETURN lo + (hi - lo) * ((rank - seen) / c)::double precision;
        END IF;
        seen := seen + c;
    END LOOP;
    RETURN NULL;  -- not reached: the last non-empty bucket always reaches the rank
END
$$;

COMMENT ON FUNCTION metric_quantile(double precision, bigint[], double precision,
                                    double precision) IS
    'Estimated q-quantile of a metric histogram (123 buckets), linear within the bucket '
    'clamped to [vmin, vmax]; within 26 % of the true value for values in (0.001, 1e9] '
    '(see docs/analysts.md).';

-- ---------------------------------------------------------------------------------------
-- performance_metrics, performance_samples
-- ---------------------------------------------------------------------------------------
-- Metrics describe the services, not tenants' data: no organization column and no
-- row-level security; both analyst roles read every row (producers must not put tenant
-- identifiers in tags).

-- One row per metric series and UTC hour. Every measure is additive (count, sum, histogram
-- counts) or a min/max, so a worker flush merges its partial aggregate with ON CONFLICT DO
-- UPDATE (sample_count + excluded.sample_count, histogram_add(...), least/greatest) and
-- any longer period or coarser series is an exact merge of rows. Averages and percentiles
-- are derived (metric_series), never stored.
CREATE TABLE performance_metrics (
    time_window  timestamptz      NOT NULL,
    name         text             NOT NULL,
    service      text             NOT NULL,
    -- '' when the sample named no instance or unit: key columns cannot be NULL.
    instance     text             NOT NULL DEFAULT '',
    unit         text             NOT NULL DEFAULT '',
    -- Canonical tag set (string -> string); jsonb equality makes equal sets one series.
    tags         jsonb            NOT NULL DEFAULT '{}',
    sample_count bigint           NOT NULL,
    value_sum    double precision NOT NULL,
    value_min    double precision NOT NULL,
    value_max    double precision NOT NULL,
    histogram    bigint[]         NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (time_window, name, service, instance, unit, tags),
    -- A bucket is an hour: a worker bug that wrote a minute would split series silently.
    CONSTRAINT performance_metrics_hour
        CHECK (time_window = date_trunc('hour', time_window, 'UTC')),
    CONSTRAINT performance_metrics_tags CHECK (jsonb_typeof(tags) = 'object'),
    CONSTRAINT performance_metrics_range CHECK (sample_count > 0 AND value_min <= value_max),
    -- The histogram must stay consistent with the count through every upsert, or every
    -- percentile read from it is wrong.
    CONSTRAINT performance_metrics_histogram
        CHECK (cardinality(histogram) = 123 AND histogram_total(histogram) = sample_count)
) PARTITION BY RANGE (time_window);

COMMENT ON TABLE performance_metrics IS
    'Hourly aggregate per metric series (name, service, instance, unit, tags): count, sum, '
    'min, max and a 123-bucket histogram of the samples. Additive; monthly partitions.';
COMMENT ON COLUMN performance_metrics.histogram IS
    'Sample counts per bucket (see metric_quantile for the bounds); sums to sample_count.';

-- "Series of metric N (of service S) over a period": metric_series and every chart. The
-- primary key leads with the hour, which serves the worker's upsert but would scan every
-- series of every hour in the range.
CREATE INDEX performance_metrics_name_service_time
    ON performance_metrics (name, service, time_window);

-- The raw samples, for re-aggregation and for looking at what a series was made of. One
-- row per sample event; event_id makes a producer's retry idempotent (ON CONFLICT DO
-- NOTHING). No secondary index: the table is written at the full sample rate, and reads
-- are "the last minutes or hours", which the primary key (leading with recorded_at) and
-- the daily partitions serve.
CREATE TABLE performance_samples (
    recorded_at timestamptz      NOT NULL,
    event_id    uuid             NOT NULL,
    name        text             NOT NULL,
    service     text             NOT NULL,
    instance    text             NOT NULL DEFAULT '',
    unit        text             NOT NULL DEFAULT '',
    tags        jsonb            NOT NULL DEFAULT '{}',
    value       double precision NOT NULL,
    PRIMARY KEY (recorded_at, event_id)
) PARTITION BY RANGE (recorded_at);

COMMENT ON TABLE performance_samples IS
    'Raw metric samples (recorded_at = the event''s occurred_at). Daily partitions, kept 7 '
    'days; performance_metrics holds the hourly aggregates.';

-- ---------------------------------------------------------------------------------------
-- audit_trail
-- ---------------------------------------------------------------------------------------
-- Who did what to which entity, when. Rows come from audit events (source 'event', written
-- by the workers) and from the pipeline itself (source 'pipeline', pipeline_audit below).
-- Append-only: no role may change or delete a row, retention drops whole partitions.
CREATE TABLE audit_trail (
    occurred_at     timestamptz NOT NULL,
    event_id        uuid        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    actor           text        NOT NULL,
    actor_type      text        NOT NULL CHECK (actor_type IN ('user', 'service', 'system')),
    action          text        NOT NULL,
    entity_type     text        NOT NULL,
    entity_id       text        NOT NULL,
    organization_id text,
    request_id      text,
    before          jsonb,
    after           jsonb,
    source          text        NOT NULL DEFAULT 'event' CHECK (source IN ('event', 'pipeline')),
    PRIMARY KEY (occurred_at, event_id)
) PARTITION BY RANGE (occurred_at);

COMMENT ON TABLE audit_trail IS
    'Append-only audit trail: audit events of the services (source ''event'') and the '
    'pipeline''s own changes (source ''pipeline''). Monthly partitions kept 400 days.';
COMMENT ON COLUMN audit_trail.recorded_at IS 'When the row was written (occurred_at: the event).';
COMMENT ON COLUMN audit_trail.source IS
    '''event'': an audit event from the audit topic; ''pipeline'': written by pipeline_audit.';

-- "History of entity E" (what happened to analysis X, to partition P, to migration M).
CREATE INDEX audit_trail_entity_time ON audit_trail (entity_type, entity_id, occurred_at);
-- "What did actor A do over a period".
CREATE INDEX audit_trail_actor_time ON audit_trail (actor, occurred_at);
-- "Organization O's audit trail over a period" and row-level-security-filtered reads.
CREATE INDEX audit_trail_org_time ON audit_trail (organization_id, occurred_at);

-- Refuses the statement: the trail is append-only for every role, the owner and superusers
-- included (triggers apply to them; only disabling the trigger, which is itself a schema
-- change, gets around it). Retention detaches and drops whole partitions (DDL, audited by
-- `partitions prune`), which row and TRUNCATE triggers do not see.
CREATE FUNCTION audit_trail_refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'audit_trail is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'rows leave the audit trail only with their partition (retention)';
END
$$;

COMMENT ON FUNCTION audit_trail_refuse_change() IS
    'Trigger function: refuses UPDATE, DELETE and TRUNCATE of audit_trail (append-only).';

-- Row triggers are cloned onto every partition, so a statement aimed at a partition
-- directly is refused too; the TRUNCATE trigger is copied onto each new partition by
-- ensure_partition (PostgreSQL does not clone statement-level triggers).
CREATE TRIGGER audit_trail_append_only BEFORE UPDATE OR DELETE ON audit_trail
    FOR EACH ROW EXECUTE FUNCTION audit_trail_refuse_change();
CREATE TRIGGER audit_trail_no_truncate BEFORE TRUNCATE ON audit_trail
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse_change();

-- ---------------------------------------------------------------------------------------
-- Partition policies of the new tables
-- ---------------------------------------------------------------------------------------
-- performance_metrics like api_usage (hourly rows rewritten by every flush: fillfactor 70
-- lets those updates be HOT); raw samples a week; the audit trail 400 days (a year and a
-- month of margin for yearly reviews), never updated, so full pages.
INSERT INTO partition_policies
    (parent_table, partition_column, granularity, premake, lookback, retention,
     storage_parameters)
VALUES
    ('performance_metrics', 'time_window', 'month', 2, 1, interval '25 months', 'fillfactor=70'),
    ('performance_samples', 'recorded_at', 'day',   7, 3, interval '7 days',    NULL),
    ('audit_trail',         'occurred_at', 'month', 2, 1, interval '400 days',  NULL);

-- ---------------------------------------------------------------------------------------
-- Self-audit
-- ---------------------------------------------------------------------------------------
-- Record a change made by the pipeline itself (source 'pipeline', actor = the login,
-- actor_type 'system'): migrations applied and rolled back (the runner), partitions
-- created (ensure_partition), detached and dropped (`partitions prune`), edits of
-- partition_policies and analyst_scopes (triggers below). SECURITY DEFINER so that the
-- writer and the migration login can record without being able to create audit_trail's
-- partitions themselves; it inserts exactly one row and returns nothing.
--
-- The row's instant is now(), the transaction's start, not clock_timestamp(): the partition
-- ensured and the row inserted then share an instant fixed for the transaction, which is
-- what ends the recursion ensure_partition('audit_trail', ...) -> pipeline_audit
-- ('partition.created') -> ensure_partition('audit_trail', now()): the second call finds
-- the partition (or creates it, and its own pipeline_audit finds it), at most three deep.
CREATE FUNCTION pipeline_audit(p_action text, p_entity_type text, p_entity_id text,
                               p_before jsonb DEFAULT NULL, p_after jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
AS $$
BEGIN
    PERFORM ensure_partition('audit_trail', now(), now());
    INSERT INTO audit_trail (occurred_at, event_id, actor, actor_type, action, entity_type,
                             entity_id, before, after, source)
    VALUES (now(), gen_random_uuid(), session_user, 'system', p_action, p_entity_type,
            p_entity_id, p_before, p_after, 'pipeline');
END
$$;

COMMENT ON FUNCTION pipeline_audit(text, text, text, jsonb, jsonb) IS
    'Records a change made by the pipeline in audit_trail (source ''pipeline'', actor = '
    'session_user, actor_type ''system'').';

-- ensure_partition as 0001 made it, plus two things once it has created a partition:
-- it copies the parent's TRUNCATE-only statement triggers onto it (PostgreSQL clones row
-- triggers onto new partitions but not these, and audit_trail relies on one), and it
-- records 'partition.created'. Same signature, same results. CREATE OR REPLACE keeps the
-- owner and grants but resets SECURITY DEFINER and search_path: both are set again
-- (0006).
CREATE OR REPLACE FUNCTION ensure_partition(
    p_parent text, p_ts timestamptz, p_now timestamptz DEFAULT now(),
    OUT partition_name text, OUT created boolean
) LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    pol partition_policies%ROWTYPE;
    b   record;
    trg record;
BEGIN
    created := false;
    SELECT * INTO pol FROM partition_policies WHERE parent_table = p_parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no partition policy for table %', p_parent
            USING ERRCODE = 'undefined_object',
                  HINT = 'add a row to partition_policies in a migration';
    END IF;
    b := partition_bounds(pol.granularity, p_ts);
    IF b.range_end <= p_now - pol.retention THEN
        partition_name := NULL;
        RETURN;
    END IF;
    partition_name := partition_table_name(p_parent, pol.granularity, b.range_start);
    IF to_regclass(partition_name) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pipeline.partition'), hashtext(p_parent));
    IF to_regclass(partition_name) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)%s',
                           partition_name, p_parent, b.range_start, b.range_end,
                           coalesce(' WITH (' || pol.storage_parameters || ')', ''));
            created := true;
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL;  -- another transaction created it between our check and our CREATE
        END;
    END IF;
    IF created THEN
        -- Statement-level triggers on TRUNCATE alone (tgtype: no ROW, INSERT, DELETE or
        -- UPDATE bit; the TRUNCATE bit; BEFORE or AFTER), without arguments.
        FOR trg IN
            SELECT t.tgname, t.tgfoid::regproc AS fn,
                   CASE WHEN t.tgtype & 2 <> 0 THEN 'BEFORE' ELSE 'AFTER' END AS timing
            FROM pg_trigger t
            WHERE t.tgrelid = to_regclass(p_parent) AND NOT t.tgisinternal
              AND t.tgtype & (1 | 4 | 8 | 16) = 0 AND t.tgtype & 32 <> 0
            ORDER BY t.tgname
        LOOP
            EXECUTE format('CREATE TRIGGER %I %s TRUNCATE ON %I FOR EACH STATEMENT '
                           'EXECUTE FUNCTION %s()', trg.tgname, trg.timing, partition_name,
                           trg.fn);
        END LOOP;
        PERFORM pipeline_audit('partition.created', 'partition', partition_name, NULL,
                               jsonb_build_object('parent_table', p_parent,
                                                  'range_start', b.range_start,
                                                  'range_end', b.range_end));
    END IF;
END
$$;

-- Search paths of SECURITY DEFINER functions are pinned to this schema (as in 0006).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION pipeline_audit(text, text, text, jsonb, jsonb) '
                   'SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION ensure_partition(text, timestamptz, timestamptz) '
                   'SET search_path = %I, pg_temp', current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION pipeline_audit(text, text, text, jsonb, jsonb) FROM PUBLIC;

-- Row trigger recording edits of a bookkeeping table: action '<TG_ARGV[0]>.inserted/
-- updated/deleted', entity_type TG_ARGV[0], entity_id the values of the key columns named
-- by the other arguments joined with '/', before/after the old/new row. An UPDATE that
-- changes nothing is not a change and is not recorded. Runs as the editor (the owner or a
-- superuser: nobody else may edit these tables), who may call pipeline_audit.
CREATE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END;
    entity  text;
BEGIN
    IF TG_OP = 'UPDATE' AND old_row = new_row THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(coalesce(new_row, old_row) ->> k.col, '/' ORDER BY k.i) INTO entity
    FROM unnest(TG_ARGV[1:]) WITH ORDINALITY AS k(col, i);
    PERFORM pipeline_audit(TG_ARGV[0] || CASE TG_OP WHEN 'INSERT' THEN '.inserted'
                                                    WHEN 'UPDATE' THEN '.updated'
                                                    ELSE '.deleted' END,
                           TG_ARGV[0], entity, old_row, new_row);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION audit_row_change() IS
    'Trigger function: records edits of partition_policies and analyst_scopes in '
    'audit_trail through pipeline_audit.';

-- Retention and who may read which organization: the two tables whose edits change what
-- the pipeline keeps and shows. Created after the policy rows above, which the migration
-- record ('migration.applied') covers.
CREATE TRIGGER partition_policies_audit AFTER INSERT OR UPDATE OR DELETE ON partition_policies
    FOR EACH ROW EXECUTE FUNCTION audit_row_change('partition_policy', 'parent_table');
CREATE TRIGGER analyst_scopes_audit AFTER INSERT OR UPDATE OR DELETE ON analyst_scopes
    FOR EACH ROW EXECUTE FUNCTION audit_row_change('analyst_scope', 'role_name',
                                                   'organization_id');

-- ---------------------------------------------------------------------------------------
-- Metric series for analysts
-- ---------------------------------------------------------------------------------------
-- "Metric N over [p_from, p_to), per hour or per UTC day (optionally of one service)":
-- one row per window and series (service, instance, unit, tags); series are never merged
-- with each other, only hours within a window: counts and sums add, min/max take the
-- extremes, histograms add bucket by bucket (a day = the sum of its 24 hourly histograms),
-- and the percentiles are estimated from the merged histogram (metric_quantile). Hours are
-- those whose start lies in the range, so a day at the edge of the range covers only its
-- hours inside it. PL/pgSQL only to refuse an unknown resolution; it reads through
-- performance_metrics_name_service_time.
CREATE FUNCTION metric_series(p_name text, p_from timestamptz, p_to timestamptz,
                              p_resolution text DEFAULT 'hour', p_service text DEFAULT NULL)
RETURNS TABLE (time_window timestamptz, service text, instance text, unit text, tags jsonb,
               sample_count bigint, value_avg double precision, value_min double precision,
               value_max double precision, p50 double precision, p95 double precision,
               p99 double precision)
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
#variable_conflict use_column
BEGIN
    IF p_resolution IS NULL OR p_resolution NOT IN ('hour', 'day') THEN
        RAISE EXCEPTION 'metric_series: resolution must be ''hour'' or ''day'', got %',
                        coalesce(p_resolution, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT s.w, s.service, s.instance, s.unit, s.tags, s.n,
           s.total / nullif(s.n, 0), s.lo, s.hi,
           metric_quantile(0.50, s.h, s.lo, s.hi), metric_quantile(0.95, s.h, s.lo, s.hi),
           metric_quantile(0.99, s.h, s.lo, s.hi)
    FROM (SELECT date_trunc(p_resolution, m.time_window, 'UTC') AS w, m.service, m.instance,
                 m.unit, m.tags, sum(m.sample_count)::bigint AS n, sum(m.value_sum) AS total,
                 min(m.value_min) AS lo, max(m.value_max) AS hi,
                 histogram_sum(m.histogram) AS h
          FROM performance_metrics m
          WHERE m.name = p_name AND m.time_window >= p_from AND m.time_window < p_to
            AND (p_service IS NULL OR m.service = p_service)
          GROUP BY 1, m.service, m.instance, m.unit, m.tags) s
    ORDER BY s.service, s.instance, s.unit, s.tags, s.w;
END
$$;

COMMENT ON FUNCTION metric_series(text, timestamptz, timestamptz, text, text) IS
    'Metric p_name over [p_from, p_to) per UTC hour or day and series (service, instance, '
    'unit, tags): samples, average, min, max and estimated p50/p95/p99.';

-- ---------------------------------------------------------------------------------------
-- Analysis lifecycle
-- ---------------------------------------------------------------------------------------
-- An analysis (analysis_id) goes through several states, each an analysis event and a row
-- of ai_analysis. Rows from before 0009 have none: their analysis is their event_id.
ALTER TABLE ai_analysis ADD COLUMN analysis_id text;

COMMENT ON COLUMN ai_analysis.analysis_id IS
    'The analysis this state change belongs to (analysis_lifecycle.analysis_id); NULL on '
    'rows written before migration 0009, whose analysis is their event_id.';

-- Order of states at the same instant: queued < processing < fallback < failed <
-- completed (the order an analysis goes through them). NULL for an unknown status.
CREATE FUNCTION analysis_status_rank(p_status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT array_position(ARRAY['queued', 'processing', 'fallback', 'failed', 'completed'],
                          p_status)
$$;

COMMENT ON FUNCTION analysis_status_rank(text) IS
    'Rank of an analysis status among simultaneous changes (queued 1 .. completed 5).';

-- Merge two modification histories (jsonb arrays of entries {"event_id", "at_ms",
-- "status", "actor", "model_type"}): the union of their entries, one per event_id, sorted
-- by (at_ms, status rank, event_id). A set union is commutative, associative and
-- idempotent, so the merged history, and the state derived from it, is the same whatever
-- order and however often the state changes arrive. Two entries with one event_id (a bug
-- upstream) keep the first by the same order, then by jsonb order. event_id compares as
-- "C" text, the order the workers use, whatever the database's collation.
CREATE FUNCTION analysis_history_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(jsonb_agg(d.e ORDER BY (d.e ->> 'at_ms')::bigint,
                                           analysis_status_rank(d.e ->> 'status'),
                                           d.e ->> 'event_id' COLLATE "C"),
                    '[]'::jsonb)
    FROM (SELECT DISTINCT ON (u.e ->> 'event_id' COLLATE "C") u.e
          FROM (SELECT jsonb_array_elements(coalesce(a, '[]'::jsonb))
                UNION ALL
                SELECT jsonb_array_elements(coalesce(b, '[]'::jsonb))) AS u(e)
          ORDER BY u.e ->> 'event_id' COLLATE "C", (u.e ->> 'at_ms')::bigint,
                   analysis_status_rank(u.e ->> 'status'), u.e) d
$$;

COMMENT ON FUNCTION analysis_history_merge(jsonb, jsonb) IS
    'Union of two analysis modification histories, one entry per event_id, sorted by '
    '(at_ms, status rank, event_id).';

-- The current state of each analysis. Not partitioned: one row per analysis, updated in
-- place at each state change, looked up by analysis_id; rows whose last change is older
-- than ai_analysis's retention are deleted by `partitions prune`
-- (prune_analysis_lifecycle). Every column but the key, organization_id, user_id and
-- updated_at is derived from modification_history by the trigger below, so a writer
-- only merges histories.
CREATE TABLE analysis_lifecycle (
    analysis_id          text        PRIMARY KEY,
    organization_id      text,
    user_id              text,
    model_type           text,
    status               text        NOT NULL
        CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'fallback')),
    status_at            timestamptz NOT NULL,
    first_seen_at        timestamptz NOT NULL,
    created_by           text,
    modified_by          text,
    -- At most 1,000 changes per analysis: the history is one jsonb value rewritten at each
    -- change, so an analysis_id reused without end would grow it without end. Changes that
    -- would take it past the bound are refused: the worker dead-letters them as
    -- rejected_by_database (their ai_analysis rows are not written either).
    change_count         integer     NOT NULL CHECK (change_count BETWEEN 1 AND 1000),
    modification_history jsonb       NOT NULL
        CHECK (jsonb_typeof(modification_history) = 'array'),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE analysis_lifecycle IS
    'Current state of each AI analysis, derived from its modification history (every state '
    'change, merged whatever their arrival order). Rows go when their last change is older '
    'than ai_analysis''s retention.';
COMMENT ON COLUMN analysis_lifecycle.status IS 'Status of the last change in the history.';
COMMENT ON COLUMN analysis_lifecycle.status_at IS 'When the last change happened.';
COMMENT ON COLUMN analysis_lifecycle.first_seen_at IS 'When the first change happened.';
COMMENT ON COLUMN analysis_lifecycle.created_by IS 'Actor of the first change.';
COMMENT ON COLUMN analysis_lifecycle.modified_by IS 'Actor of the last change.';
COMMENT ON COLUMN analysis_lifecycle.modification_history IS
    'Every state change: [{"event_id", "at_ms", "status", "actor", "model_type"}], sorted by '
    '(at_ms, status rank, event_id); event_id and at_ms are the ai_analysis row''s key.';

-- "Analyses first seen in a period" (analysis_status_counts, analysis_time_in_status,
-- analysis_model_changes) and the retention delete (prune_analysis_lifecycle: a row whose
-- last change is old was first seen even earlier).
CREATE INDEX analysis_lifecycle_first_seen ON analysis_lifecycle (first_seen_at);
-- "Organization O's analyses first seen in a period" and row-level-security-filtered reads.
CREATE INDEX analysis_lifecycle_org_first_seen
    ON analysis_lifecycle (organization_id, first_seen_at);
-- "What is waiting or running now, and since when" (analyses_in_progress): only the few
-- analyses in flight, whatever the size of the table.
CREATE INDEX analysis_lifecycle_in_progress ON analysis_lifecycle (status, status_at)
    WHERE status IN ('queued', 'processing');

-- Derive the state from the history, on every insert and update: status, model_type,
-- status_at and modified_by come from its last entry, first_seen_at and created_by from
-- its first, change_count is its length. The history must be normalised (deduplicated and
-- sorted, as analysis_history_merge returns it; the workers' insert builds it so): the
-- trigger reads its ends and does not sort it again, which halved the cost of a lifecycle
-- row (docs/performance.md). An empty history is refused.
CREATE FUNCTION analysis_lifecycle_derive() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    h       jsonb := NEW.modification_history;
    n       integer := jsonb_array_length(h);
    e_first jsonb;
    e_last  jsonb;
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION 'analysis_lifecycle %: the modification history is empty',
                        NEW.analysis_id
            USING ERRCODE = 'check_violation';
    END IF;
    e_first := h -> 0;
    e_last := h -> (n - 1);
    NEW.status := e_last ->> 'status';
    NEW.model_type := e_last ->> 'model_type';
    NEW.status_at := timestamptz 'epoch'
                     + (e_last ->> 'at_ms')::bigint * interval '1 millisecond';
    NEW.first_seen_at := timestamptz 'epoch'
                         + (e_first ->> 'at_ms')::bigint * interval '1 millisecond';
    NEW.created_by := e_first ->> 'actor';
    NEW.modified_by := e_last ->> 'actor';
    NEW.change_count := n;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION analysis_lifecycle_derive() IS
    'Trigger function: derives an analysis_lifecycle row''s state from its modification '
    'history.';

CREATE TRIGGER analysis_lifecycle_derive BEFORE INSERT OR UPDATE ON analysis_lifecycle
    FOR EACH ROW EXECUTE FUNCTION analysis_lifecycle_derive();

-- The start of the oldest partition of p_parent that ensure_partition still keeps at
-- p_now (it keeps a range while the range ends after p_now - retention): rows before it
-- are beyond retention. One definition for every "still kept?" question: the raw metric
-- samples the workers insert, the lifecycles prune deletes, the rows a backfill copies.
-- NULL when p_parent has no policy.
CREATE FUNCTION partition_keep_from(p_parent text, p_now timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE
AS $$
    SELECT (partition_bounds(p.granularity, p_now - p.retention)).range_start
    FROM partition_policies p
    WHERE p.parent_table = p_parent
$$;

COMMENT ON FUNCTION partition_keep_from(text, timestamptz) IS
    'Start of the oldest partition of p_parent kept at p_now (earlier rows are beyond '
    'retention); NULL without a policy.';

-- Retention of lifecycles: ai_analysis's. A lifecycle whose last change is before
-- partition_keep_from('ai_analysis') has no state change left in ai_analysis, and none can
-- arrive any more (ai_analysis refuses it as beyond_retention), so deleting it loses
-- nothing a late change could still complete. NULL when ai_analysis has no policy.
CREATE FUNCTION analysis_lifecycle_cutoff(p_now timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE
AS $$
    SELECT partition_keep_from('ai_analysis', p_now)
$$;

COMMENT ON FUNCTION analysis_lifecycle_cutoff(timestamptz) IS
    'Lifecycles whose last change is before this instant are expired (the start of the '
    'oldest ai_analysis partition kept at p_now).';

-- Delete the expired lifecycles; returns how many. Called by `partitions prune`, which
-- runs as the owner (the dry run counts with analysis_lifecycle_cutoff). The first_seen_at
-- bound is implied by the status_at one and lets the delete read only the old end of
-- analysis_lifecycle_first_seen. No row is deleted if ai_analysis has no policy.
CREATE FUNCTION prune_analysis_lifecycle(p_now timestamptz) RETURNS bigint
LANGUAGE sql
AS $$
    WITH gone AS (
        DELETE FROM analysis_lifecycle l
        WHERE l.first_seen_at < analysis_lifecycle_cutoff(p_now)
          AND l.status_at < analysis_lifecycle_cutoff(p_now)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

COMMENT ON FUNCTION prune_analysis_lifecycle(timestamptz) IS
    'Deletes analysis_lifecycle rows whose last change is older than ai_analysis''s '
    'retention at p_now; returns how many. Run by `pipeline partitions prune`.';
REVOKE EXECUTE ON FUNCTION prune_analysis_lifecycle(timestamptz) FROM PUBLIC;

-- Every state change of a history as an interval of time spent in a status: entered at
-- the change, left at the next one (NULL for the last change: the analysis is still in
-- that status, or ended in it). duration_ms is left - entered in ms, NULL when open. A
-- building block of analysis_time_in_status, and for analysts' own questions.
CREATE FUNCTION analysis_status_intervals(p_history jsonb)
RETURNS TABLE (status text, model_type text, actor text, entered_at timestamptz,
               left_at timestamptz, duration_ms bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT h.e ->> 'status', h.e ->> 'model_type', h.e ->> 'actor',
           timestamptz 'epoch' + h.at_ms * interval '1 millisecond',
           timestamptz 'epoch' + lead(h.at_ms) OVER w * interval '1 millisecond',
           lead(h.at_ms) OVER w - h.at_ms
    FROM (SELECT x.e, (x.e ->> 'at_ms')::bigint AS at_ms, x.i
          FROM jsonb_array_elements(p_history) WITH ORDINALITY AS x(e, i)) h
    WINDOW w AS (ORDER BY h.i)
    ORDER BY h.i
$$;

COMMENT ON FUNCTION analysis_status_intervals(jsonb) IS
    'The intervals of a modification history: status, model, actor, entered_at, left_at and '
    'duration_ms (NULL for the last, open one).';

-- The analyst functions below count analyses, not state changes, and select analyses by
-- when they were first seen: [p_from, p_to) holds first_seen_at. LANGUAGE sql, STABLE,
-- SECURITY INVOKER like those of 0005: row-level security applies to them.

-- "How many analyses started in the range, by where they are now?"
CREATE FUNCTION analysis_status_counts(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (status text, analyses bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT l.status, count(*)
    FROM analysis_lifecycle l
    WHERE l.first_seen_at >= p_from AND l.first_seen_at < p_to
    GROUP BY l.status
    ORDER BY analysis_status_rank(l.status)
$$;

COMMENT ON FUNCTION analysis_status_counts(timestamptz, timestamptz) IS
    'Analyses first seen in [p_from, p_to), per current status.';

-- "What is waiting or running now, and since when?" Always two rows (queued, processing),
-- with the analysis in that status the longest.
CREATE FUNCTION analyses_in_progress()
RETURNS TABLE (status text, analyses bigint, oldest_since timestamptz,
               oldest_analysis_id text, longest_wait interval)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT s.status, count(l.analysis_id), min(l.status_at),
           (array_agg(l.analysis_id ORDER BY l.status_at, l.analysis_id)
               FILTER (WHERE l.analysis_id IS NOT NULL))[1],
           now() - min(l.status_at)
    FROM (VALUES ('queued', 1), ('processing', 2)) AS s(status, ord)
    LEFT JOIN analysis_lifecycle l
      ON l.status = s.status AND l.status IN ('queued', 'processing')
    GROUP BY s.status, s.ord
    ORDER BY s.ord
$$;

COMMENT ON FUNCTION analyses_in_progress() IS
    'Analyses whose current status is queued or processing: how many, since when the '
    'oldest, which one, and for how long.';

-- "How long do analyses (first seen in the range) spend in each status?" An analysis's
-- time in a status is the sum of its closed intervals in it (an analysis queued again on
-- retry counts once, with both waits); its current status's open interval is not counted.
-- analyses: analyses with time in that status; total_ms, and the exact median and 95th
-- percentile over those analyses.
CREATE FUNCTION analysis_time_in_status(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (status text, analyses bigint, total_ms bigint, p50_ms double precision,
               p95_ms double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT t.status, count(*), sum(t.ms)::bigint,
           percentile_cont(0.50) WITHIN GROUP (ORDER BY t.ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY t.ms)
    FROM (SELECT l.analysis_id, i.status, sum(i.duration_ms) AS ms
          FROM analysis_lifecycle l
          CROSS JOIN LATERAL analysis_status_intervals(l.modification_history) i
          WHERE l.first_seen_at >= p_from AND l.first_seen_at < p_to
            AND i.duration_ms IS NOT NULL
          GROUP BY l.analysis_id, i.status) t
    GROUP BY t.status
    ORDER BY analysis_status_rank(t.status)
$$;

COMMENT ON FUNCTION analysis_time_in_status(timestamptz, timestamptz) IS
    'Per status, for the analyses first seen in [p_from, p_to): how many spent time in it, '
    'total ms, median and p95 ms per analysis (closed intervals only).';

-- "Which analyses (first seen in the range) changed model, e.g. on a retry?" Analyses
-- whose history names more than one model: the models in order of first use and how many
-- times consecutive changes switched model.
CREATE FUNCTION analysis_model_changes(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (analysis_id text, organization_id text, user_id text, status text,
               first_seen_at timestamptz, models text[], model_switches integer,
               change_count integer)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT l.analysis_id, l.organization_id, l.user_id, l.status, l.first_seen_at,
           m.models, m.switches, l.change_count
    FROM analysis_lifecycle l
    CROSS JOIN LATERAL (
        SELECT array_agg(h.model ORDER BY h.i) FILTER (WHERE h.first_use) AS models,
               (count(*) FILTER (WHERE h.i > 1 AND h.model IS DISTINCT FROM h.prev))::integer
                   AS switches
        FROM (SELECT x.e ->> 'model_type' AS model, x.i,
                     lag(x.e ->> 'model_type') OVER (ORDER BY x.i) AS prev,
                     row_number() OVER (PARTITION BY x.e ->> 'model_type' ORDER BY x.i) = 1
                         AS first_use
              FROM jsonb_array_elements(l.modification_history) WITH ORDINALITY AS x(e, i)) h
    ) m
    WHERE l.first_seen_at >= p_from AND l.first_seen_at < p_to
      AND cardinality(m.models) > 1
    ORDER BY l.first_seen_at, l.analysis_id
$$;

COMMENT ON FUNCTION analysis_model_changes(timestamptz, timestamptz) IS
    'Analyses first seen in [p_from, p_to) whose history names more than one model_type: '
    'the models in order of first use and the number of switches.';

-- ---------------------------------------------------------------------------------------
-- Privileges and row-level security (the conventions of 0006)
-- ---------------------------------------------------------------------------------------
-- The workers: upsert hourly metrics (SELECT is needed by INSERT ... ON CONFLICT DO
-- UPDATE), insert samples (SELECT for ON CONFLICT DO NOTHING on their key), append audit
-- events, upsert lifecycles; pipeline_audit for what they create. No DELETE anywhere:
-- retention is `partitions prune`, which runs as the owner.
GRANT SELECT, INSERT, UPDATE ON performance_metrics TO pipeline_writer;
GRANT SELECT, INSERT ON performance_samples TO pipeline_writer;
GRANT SELECT, INSERT ON audit_trail TO pipeline_writer;
GRANT SELECT, INSERT, UPDATE ON analysis_lifecycle TO pipeline_writer;
GRANT EXECUTE ON FUNCTION pipeline_audit(text, text, text, jsonb, jsonb) TO pipeline_writer;

-- Analysts read all four; row-level security below limits audit_trail and
-- analysis_lifecycle (tenant rows) for pipeline_analyst; the metric tables are not tenant
-- data and are read whole by both roles.
GRANT SELECT ON performance_metrics, performance_samples, audit_trail, analysis_lifecycle
    TO pipeline_analyst, pipeline_analyst_all;

-- As in 0006: the writer and pipeline_analyst_all see every row, an analyst the rows of
-- the organization its session is bound to (rows without an organization, such as the
-- pipeline's own audit rows, only pipeline_analyst_all), any other role nothing.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_trail', 'analysis_lifecycle'] LOOP
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

RESET ROLE;
