-- Undoes 0010 monitoring grants exactly.
SET LOCAL ROLE pipeline_migrator;

REVOKE SELECT ON partition_policies, partition_ranges FROM pg_monitor;

-- Back to the login running migrations: the runner records this migration as that login.
RESET ROLE;
