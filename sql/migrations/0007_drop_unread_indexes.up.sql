-- Secondary indexes no read path of the project uses, dropped because every index costs
-- every insert: on ai_analysis the five secondary indexes took ~77 % of the time to insert
-- a batch (primary key only: 77 ms per 25,000 rows; all five: 330-385 ms).
--
-- Evidence (EXPLAIN ANALYZE of every analyst function and view of 0003-0006, every canned
-- report of `pipeline query`, every rollup-refresh statement and the verification queries,
-- as superuser and as an organization-bound analyst, on 10 days of data; each index
-- dropped in turn): since the analysts read rollups, the base tables are read only for
-- the partial hours at a range's edges and for hours still queued in rollup_pending. Those
-- reads filter by organization (the reports, and the row-level-security policy of
-- pipeline_analyst) or by user (user_ai_cost), and use ai_analysis_org_time,
-- ai_analysis_user_time and api_usage_org_time, which stay. The planner never chose:
--
-- - ai_analysis_user_model_time: nothing filters by user and model; where a user filter
--   exists, ai_analysis_user_time serves it.
-- - ai_analysis_status_time: status appears only inside aggregates.
-- - ai_analysis_model_time: only `pipeline demo`'s verification (a GROUP BY model_type
--   over the whole table, 63 -> 103 ms without it); no analyst path filters raw rows by
--   model (the model reports read the rollups).
-- - api_usage_user_service_time: per-user API reads go to api_usage_daily's own index.
-- - api_usage_service_time: only an ad-hoc example of docs/analysts.md (1.4 -> 3.2 ms);
--   the dashboard's per-service figures come from the summary rollups.
--
-- On a partitioned table, dropping the parent's index drops it on every partition.
DROP INDEX ai_analysis_user_model_time;
DROP INDEX ai_analysis_status_time;
DROP INDEX ai_analysis_model_time;
DROP INDEX api_usage_user_service_time;
DROP INDEX api_usage_service_time;
