-- 0010 monitoring grants: `pipeline db health` as a pg_monitor login.
--
-- docs/operations.md ("Database health") recommends a monitoring login created
-- `IN ROLE pg_monitor`. pg_monitor reads PostgreSQL's statistics views, but not the
-- pipeline's own tables: the partition-coverage check reads partition_policies and
-- partition_ranges, failed with SQLSTATE 42501 and made every run exit 1. Both hold
-- configuration and catalog facts only (table names, ranges, retention, sizes), no tenant
-- data, so every pg_monitor member may read them.
--
-- Granted as pipeline_migrator, which owns every object of the schema since 0006 (the
-- login running migrations is a member of it, or a superuser; as in 0009): the owner is
-- then the grantor, whichever login runs the migration, and the down revokes exactly this.
SET LOCAL ROLE pipeline_migrator;

GRANT SELECT ON partition_policies, partition_ranges TO pg_monitor;

-- Back to the login running migrations: the runner records this migration as that login.
RESET ROLE;
