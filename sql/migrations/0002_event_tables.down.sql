-- Undoes 0002 event tables exactly (dropping a partitioned table drops its partitions).
DELETE FROM partition_policies WHERE parent_table IN ('ai_analysis', 'api_usage', 'system_logs');
DROP TABLE system_logs;
DROP TABLE ai_analysis;
DROP TABLE api_usage;
