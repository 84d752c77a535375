-- Undoes 0001 core exactly.
DROP VIEW partition_ranges;
DROP FUNCTION ensure_partitions(timestamptz);
DROP FUNCTION ensure_partition(text, timestamptz, timestamptz);
DROP FUNCTION partition_table_name(text, text, timestamptz);
DROP FUNCTION partition_bounds(text, timestamptz);
DROP TABLE ingest_offsets;
DROP TABLE partition_policies;
