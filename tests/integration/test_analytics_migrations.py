"""Migrations 0003-0006: exact downs, repeatable in one database while other databases of
the server use the (cluster-wide) roles, and rollups built for rows older than 0004."""

from __future__ import annotations

import asyncpg
import pytest

from pipeline.config import DatabaseConfig
from pipeline.contract import Analysis
from pipeline.maintenance.partitions import can_prune, prune
from pipeline.maintenance.rollups import refresh_rollups
from pipeline.migrations.runner import MigrationRunner
from tests.conftest import SQL_DIR
from tests.integration.test_analytics_rollups import (
    NOW,
    assert_exact,
    mixed_workload,
    prepare,
    write_calls,
)
from tests.integration.test_migrations import fingerprint

ROLES = ("pipeline_migrator", "pipeline_writer", "pipeline_analyst", "pipeline_analyst_all")

# Everything 0006 leaves in a database's catalogs that mentions the roles.
ROLE_TRACES = """
SELECT 'acl ' || c.relname FROM pg_class c, aclexplode(c.relacl) a
WHERE a.grantee = ANY($1::regrole[]) OR a.grantor = ANY($1::regrole[])
UNION ALL
SELECT 'owner ' || c.relname FROM pg_class c WHERE c.relowner = ANY($1::regrole[])
UNION ALL
SELECT 'function ' || p.proname FROM pg_proc p
WHERE p.proowner = ANY($1::regrole[]) OR p.prosecdef
   OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = ANY($1::regrole[]))
UNION ALL
SELECT 'schema ' || n.nspname FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE a.grantee = ANY($1::regrole[])
UNION ALL
SELECT 'policy ' || polname FROM pg_policy
UNION ALL
SELECT 'rls ' || relname FROM pg_class WHERE relrowsecurity
"""


def runner(conn: asyncpg.Connection) -> MigrationRunner:
    return MigrationRunner(conn, SQL_DIR, applied_by="tests")


async def write_analyses_as_before_0009(conn: asyncpg.Connection, events: list[Analysis]) -> None:
    """Analyses as the workers wrote them before migration 0009 (no analysis_id column, no
    analysis_lifecycle): today's workers need the later schema."""
    await conn.executemany(
        "INSERT INTO ai_analysis (created_at, event_id, user_id, organization_id, entry_id, "
        "status, model_type, model_version, analysis_version, request_tokens, response_tokens, "
        "tokens_used, api_cost, processing_time_ms, queue_wait_time_ms, "
        "total_processing_time_ms, caching_used, batch_processed, region_processed, "
        "processing_attempts, fallback_used, error_type, metadata) "
        "VALUES (timestamptz 'epoch' + $1 * interval '1 millisecond', $2, $3, $4, $5, $6, $7, "
        "$8, $9, $10, $11, $12, $13 * 0.00000001, $14, $15, $16, $17, $18, $19, $20, $21, $22, "
        "$23::jsonb) ON CONFLICT (created_at, event_id) DO NOTHING",
        [
            (
                e.occurred_at_ms, e.event_id, e.user_id, e.organization_id, e.entry_id,
                str(e.status), e.model_type, e.model_version, e.analysis_version,
                e.request_tokens, e.response_tokens, e.tokens_used, e.api_cost_e8,
                e.processing_time_ms, e.queue_wait_time_ms, e.total_processing_time_ms,
                e.caching_used, e.batch_processed, e.region_processed, e.processing_attempts,
                e.fallback_used, e.error_type, e.metadata_json,
            )
            for e in events
        ],
    )  # fmt: skip


@pytest.mark.asyncio
async def test_up_down_up_repeatedly_while_other_databases_use_the_roles(
    fresh_database: DatabaseConfig, pg: asyncpg.Connection
) -> None:
    # `pg` is another migrated database of the same server: it holds grants to the roles
    # and objects owned by pipeline_migrator throughout.
    assert await pg.fetchval("SELECT count(*) FROM pg_policy") > 0
    conn = await asyncpg.connect(fresh_database.url)
    try:
        await runner(conn).up(to=2)
        at_2 = await fingerprint(conn)
        assert await conn.fetch(ROLE_TRACES, list(ROLES)) == []
        await runner(conn).up()
        first = await fingerprint(conn)
        assert len(await conn.fetch(ROLE_TRACES, list(ROLES))) > 20
        for _ in range(2):
            rolled_back = await runner(conn).down(to=2)
            assert [m.version for m in rolled_back][-4:] == [6, 5, 4, 3]
            assert await fingerprint(conn) == at_2
            assert [r[0] for r in await conn.fetch(ROLE_TRACES, list(ROLES))] == []
            await runner(conn).up()
            assert await fingerprint(conn) == first
        # The roles are kept (other databases use them) and still work there.
        existing = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1)", ROLES)
        assert sorted(r[0] for r in existing) == sorted(ROLES)
    finally:
        await conn.close()
    await pg.execute("SET ROLE pipeline_writer")
    await prepare(pg)


@pytest.mark.asyncio
async def test_rows_written_before_the_rollups_existed_are_rolled_up(
    fresh_database: DatabaseConfig,
) -> None:
    conn = await asyncpg.connect(fresh_database.url, server_settings={"TimeZone": "UTC"})
    try:
        await runner(conn).up(to=2)
        await conn.execute("SELECT ensure_partitions($1)", NOW)
        calls, analyses = mixed_workload(seed=3, count=100)
        await write_calls(conn, calls)
        await write_analyses_as_before_0009(conn, analyses)
        await runner(conn).up()
        assert await conn.fetchval("SELECT count(*) FROM rollup_pending") > 0
        await prepare(conn)  # the rollups' partitions
        await refresh_rollups(conn, now=NOW)
        await assert_exact(conn)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_only_owners_of_the_tables_may_prune(pg: asyncpg.Connection) -> None:
    """The leader's maintenance asks first, so a writer-only login skips pruning instead of
    failing every run."""
    assert await can_prune(pg)  # the tests' superuser
    await pg.execute("SET ROLE pipeline_migrator")
    assert await can_prune(pg)
    await pg.execute("SET ROLE pipeline_writer")
    assert not await can_prune(pg)
    await prune(pg, dry_run=True)  # reading what would be pruned is allowed
