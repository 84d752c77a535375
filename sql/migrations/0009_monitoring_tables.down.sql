-- Undoes 0009 monitoring tables exactly (dropping a partitioned table drops its
-- partitions, and with them every audit row and metric).

-- The self-audit triggers first: the policy rows deleted below must not be recorded (their
-- audit_trail is about to go).
DROP TRIGGER analyst_scopes_audit ON analyst_scopes;
DROP TRIGGER partition_policies_audit ON partition_policies;
DROP FUNCTION audit_row_change();

-- ensure_partition exactly as 0001 wrote it, SECURITY DEFINER with its search path pinned
-- as 0006 made it (CREATE OR REPLACE keeps the owner and the grants).
CREATE OR REPLACE FUNCTION ensure_partition(
    p_parent text, p_ts timestamptz, p_now timestamptz DEFAULT now(),
    OUT partition_name text, OUT created boolean
) LANGUAGE plpgsql SECURITY DEFINER
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

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ensure_partition(text, timestamptz, timestamptz) '
                   'SET search_path = %I, pg_temp', current_schema());
END
$$;

DROP FUNCTION analysis_model_changes(timestamptz, timestamptz);
DROP FUNCTION analysis_time_in_status(timestamptz, timestamptz);
DROP FUNCTION analyses_in_progress();
DROP FUNCTION analysis_status_counts(timestamptz, timestamptz);
DROP FUNCTION analysis_status_intervals(jsonb);
DROP FUNCTION prune_analysis_lifecycle(timestamptz);
DROP FUNCTION analysis_lifecycle_cutoff(timestamptz);
DROP FUNCTION partition_keep_from(text, timestamptz);
DROP TABLE analysis_lifecycle;
DROP FUNCTION analysis_lifecycle_derive();
DROP FUNCTION analysis_history_merge(jsonb, jsonb);
DROP FUNCTION analysis_status_rank(text);
ALTER TABLE ai_analysis DROP COLUMN analysis_id;

DROP FUNCTION metric_series(text, timestamptz, timestamptz, text, text);

DELETE FROM partition_policies
WHERE parent_table IN ('performance_metrics', 'performance_samples', 'audit_trail');
DROP FUNCTION pipeline_audit(text, text, text, jsonb, jsonb);
DROP TABLE audit_trail;
DROP FUNCTION audit_trail_refuse_change();
DROP TABLE performance_samples;
DROP TABLE performance_metrics;
DROP FUNCTION metric_quantile(double precision, bigint[], double precision, double precision);
DROP FUNCTION histogram_total(bigint[]);
DROP AGGREGATE histogram_sum(bigint[]);
DROP FUNCTION histogram_add(bigint[], bigint[]);
