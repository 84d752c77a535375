-- 0001 core: the bookkeeping every other table relies on.
--   partition_policies  how each time-partitioned table is cut, pre-created and retained
--   ingest_offsets      the workers' exactly-once watermark per (group, topic, partition)
--   partition functions used by `pipeline partitions ensure`, the worker's on-demand
--                       partition creation, and the leader's maintenance timer
-- Partition bounds are computed in UTC whatever the session's TimeZone: the hour buckets
-- and the daily/monthly partitions are UTC by contract.

CREATE TABLE partition_policies (
    parent_table     text     PRIMARY KEY,
    partition_column text     NOT NULL,
    granularity      text     NOT NULL CHECK (granularity IN ('day', 'month')),
    -- How many partitions after the current one `ensure` keeps ready, so that inserts
    -- never race the clock at midnight or at the turn of a month.
    premake          integer  NOT NULL DEFAULT 7 CHECK (premake BETWEEN 0 AND 366),
    -- How many partitions before the current one `ensure` creates, for late events
    -- arriving right after a deploy on an empty database.
    lookback         integer  NOT NULL DEFAULT 3 CHECK (lookback BETWEEN 0 AND 366),
    -- Partitions wholly older than now() - retention are detached and dropped by `prune`,
    -- and events older than that are dead-lettered instead of recreating a dropped range.
    retention        interval NOT NULL CHECK (retention > interval '0'),
    -- Storage parameters of new partitions (a partitioned parent cannot carry them), e.g.
    -- 'fillfactor=70' for tables whose rows are updated in place, so that updates can be
    -- HOT and skip index maintenance.
    storage_parameters text
);

COMMENT ON TABLE partition_policies IS
    'How each time-partitioned table is partitioned, pre-created and retained. Edit rows to '
    'change retention or premake; `pipeline partitions ensure/prune` and the workers read them.';

-- The exactly-once watermark. A worker's flush locks the rows of the partitions in its
-- batch (SELECT ... FOR UPDATE), skips records with offset < next_offset (replays, zombie
-- workers after a rebalance), applies the rest and advances next_offset in the same
-- transaction. Kafka's committed offsets are only a hint for where to start fetching.
CREATE TABLE ingest_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL CHECK (partition >= 0),
    next_offset    bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Which worker advanced the watermark last: the first thing to look at when two
    -- workers disagree about who owns a partition.
    updated_by     text        NOT NULL DEFAULT '',
    PRIMARY KEY (consumer_group, topic, partition)
);

COMMENT ON TABLE ingest_offsets IS
    'Exactly-once watermark: next Kafka offset to apply per (consumer group, topic, partition). '
    'Advanced in the same transaction as the rows it covers.';

-- The [range_start, range_end) partition that holds p_ts. Arithmetic on timestamp without
-- time zone keeps a month a calendar month in UTC regardless of the session TimeZone.
CREATE FUNCTION partition_bounds(
    p_granularity text, p_ts timestamptz, OUT range_start timestamptz, OUT range_end timestamptz
) LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT date_trunc(p_granularity, p_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           (date_trunc(p_granularity, p_ts AT TIME ZONE 'UTC')
             + ('1 ' || p_granularity)::interval) AT TIME ZONE 'UTC'
$$;

-- Partition names sort by time and say their range: api_usage_p202611, ai_analysis_p20261122.
CREATE FUNCTION partition_table_name(p_parent text, p_granularity text, p_range_start timestamptz)
RETURNS text LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT p_parent || '_p' || to_char(p_range_start AT TIME ZONE 'UTC',
                                      CASE p_granularity WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END)
$$;

-- Make sure the partition of p_parent that holds p_ts exists. Returns its name and whether
-- this call created it; partition_name is NULL when p_ts lies wholly beyond the table's
-- retention (relative to p_now), in which case nothing is created and the caller
-- dead-letters the event. Safe under concurrency: creators of the same table serialise on a
-- transaction-scoped advisory lock, and a lost race on the catalog is treated as success.
CREATE FUNCTION ensure_partition(
    p_parent text, p_ts timestamptz, p_now timestamptz DEFAULT now(),
    OUT partition_name text, OUT created boolean
) LANGUAGE plpgsql
AS $$
DECLARE
    pol partition_policies%ROWTYPE;
    b   record;
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
END
$$;

-- Every policy's window: from `lookback` partitions before p_now to `premake` after.
-- One row per partition in the window, saying whether this call created it.
CREATE FUNCTION ensure_partitions(p_now timestamptz DEFAULT now())
RETURNS TABLE (parent_table text, partition_name text, created boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    pol  partition_policies%ROWTYPE;
    step interval;
    r    record;
BEGIN
    FOR pol IN SELECT * FROM partition_policies ORDER BY 1 LOOP
        step := ('1 ' || pol.granularity)::interval;
        FOR i IN -pol.lookback .. pol.premake LOOP
            r := ensure_partition(
                pol.parent_table,
                ((p_now AT TIME ZONE 'UTC') + i * step) AT TIME ZONE 'UTC',
                p_now);
            IF r.partition_name IS NOT NULL THEN
                parent_table := pol.parent_table;
                partition_name := r.partition_name;
                created := r.created;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- Each partition of each policy table with its range, read back from the catalog: used by
-- `pipeline partitions stats` and `prune`, and by analysts wondering what exists.
-- detach_pending is true when a DETACH ... CONCURRENTLY was interrupted (prune finishes it).
CREATE VIEW partition_ranges AS
SELECT p.parent_table,
       c.relname::text                   AS partition_name,
       bounds[1]::timestamptz            AS range_start,
       bounds[2]::timestamptz            AS range_end,
       i.inhdetachpending                AS detach_pending,
       greatest(c.reltuples, 0)::bigint  AS estimated_rows,
       pg_total_relation_size(c.oid)     AS total_bytes
FROM partition_policies p
JOIN pg_inherits i ON i.inhparent = to_regclass(p.parent_table)
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                'FROM \(''([^'']*)''\) TO \(''([^'']*)''\)') AS bounds;
