"""Partition maintenance against a real PostgreSQL: ensure, prune, stats, the 23514 error."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from pipeline.config import DatabaseConfig
from pipeline.errors import NoPartitionError, classify_database_error
from pipeline.maintenance import partitions

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def names(results: list[partitions.EnsureResult], created: bool | None = None) -> list[str]:
    return sorted(r.partition_name for r in results if created is None or r.created == created)


@pytest.mark.asyncio
async def test_ensure_creates_the_window_once(pg: asyncpg.Connection) -> None:
    # Migration 0009 recorded itself in audit_trail, which made the audit partition of the
    # (real) current month.
    existing = {p.partition_name for p in await partitions.stats(pg)}
    first = await partitions.ensure(pg, now=NOW)
    assert names(first, created=True) == sorted(set(names(first)) - existing)
    created = names(first)
    # lookback 3 / premake 7 days; lookback 1 / premake 2 months (the policy defaults).
    assert "ai_analysis_p20261119" in created and "ai_analysis_p20261129" in created
    assert "ai_analysis_p20261118" not in created and "ai_analysis_p20261130" not in created
    assert [n for n in created if n.startswith("api_usage_p")] == [
        "api_usage_p202610", "api_usage_p202611", "api_usage_p202612", "api_usage_p202701",
    ]  # fmt: skip
    assert len([n for n in created if n.startswith("system_logs_p")]) == 11

    second = await partitions.ensure(pg, now=NOW)
    assert names(second, created=True) == []
    assert names(second) == created


@pytest.mark.asyncio
async def test_partition_bounds_are_utc_whatever_the_session_time_zone(
    migrated_database: DatabaseConfig,
) -> None:
    conn = await asyncpg.connect(
        migrated_database.url, server_settings={"TimeZone": "Asia/Kolkata"}
    )
    try:
        await partitions.ensure(conn, now=NOW)
        infos = {p.partition_name: p for p in await partitions.stats(conn)}
        month = infos["api_usage_p202611"]
        assert month.range_start == datetime(2026, 11, 1, tzinfo=UTC)
        assert month.range_end == datetime(2026, 12, 1, tzinfo=UTC)
        day = infos["ai_analysis_p20261122"]
        assert (day.range_start, day.range_end) == (
            datetime(2026, 11, 22, tzinfo=UTC),
            datetime(2026, 11, 23, tzinfo=UTC),
        )
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_concurrent_ensure_runners_do_not_collide(
    migrated_database: DatabaseConfig,
) -> None:
    conns = [await asyncpg.connect(migrated_database.url) for _ in range(4)]
    try:
        existing = {p.partition_name for p in await partitions.stats(conns[0])}
        results = await asyncio.gather(*(partitions.ensure(c, now=NOW) for c in conns))
        created = [n for r in results for n in names(r, created=True)]
        # Each partition created exactly once.
        assert sorted(created) == sorted(set(names(results[0])) - existing)
    finally:
        for c in conns:
            await c.close()


@pytest.mark.asyncio
async def test_insert_without_partition_fails_with_23514(pg: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as raised:
        await pg.execute(
            "INSERT INTO ai_analysis (created_at, event_id, status, model_type) "
            "VALUES ($1, $2, 'completed', 'gpt_4o')",
            NOW,
            uuid.uuid4(),
        )
    assert raised.value.sqlstate == "23514"
    assert "no partition of relation" in str(raised.value)
    classified = classify_database_error(raised.value)
    assert isinstance(classified, NoPartitionError) and classified.retriable

    row = await pg.fetchrow("SELECT * FROM ensure_partition('ai_analysis', $1, $2)", NOW, NOW)
    assert (row["partition_name"], row["created"]) == ("ai_analysis_p20261122", True)
    await pg.execute(
        "INSERT INTO ai_analysis (created_at, event_id, status, model_type) "
        "VALUES ($1, $2, 'completed', 'gpt_4o')",
        NOW,
        uuid.uuid4(),
    )


@pytest.mark.asyncio
async def test_ensure_partition_refuses_ranges_beyond_retention(pg: asyncpg.Connection) -> None:
    old = datetime(2026, 8, 1, tzinfo=UTC)  # more than 90 days before NOW
    row = await pg.fetchrow("SELECT * FROM ensure_partition('ai_analysis', $1, $2)", old, NOW)
    assert row["partition_name"] is None and row["created"] is False
    # api_usage keeps 25 months, so the same instant is fine there.
    row = await pg.fetchrow("SELECT * FROM ensure_partition('api_usage', $1, $2)", old, NOW)
    assert row["partition_name"] == "api_usage_p202608"
    with pytest.raises(asyncpg.UndefinedObjectError, match="no partition policy"):
        await pg.fetchrow("SELECT * FROM ensure_partition('nope', $1, $2)", old, NOW)


@pytest.mark.asyncio
async def test_prune_keeps_what_retention_keeps_and_drops_the_rest(
    pg: asyncpg.Connection,
) -> None:
    created_at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    await partitions.ensure(pg, now=created_at)  # partitions around Nov 1st
    await pg.execute(
        "INSERT INTO system_logs (logged_at, event_id, level, service, message) "
        "VALUES ($1, $2, 'info', 'api', 'hello')",
        created_at,
        uuid.uuid4(),
    )
    later = datetime(2026, 11, 17, 0, 0, tzinfo=UTC)  # system_logs keep 14 days: cut-off Nov 3
    existing = len(await partitions.stats(pg))
    would = await partitions.prune(pg, now=later, dry_run=True)
    assert [p.partition_name for p in would if p.parent_table == "system_logs"] == [
        "system_logs_p20261029", "system_logs_p20261030", "system_logs_p20261031",
        "system_logs_p20261101", "system_logs_p20261102",
    ]  # fmt: skip
    # Raw metric samples keep 7 days (cut-off Nov 10): every partition made around Nov 1st.
    assert {p.parent_table for p in would} == {"system_logs", "performance_samples"}
    assert [p.partition_name for p in would if p.parent_table == "performance_samples"][-1] == (
        "performance_samples_p20261108"
    )
    assert len(await partitions.stats(pg)) == existing  # dry run dropped nothing

    dropped = await partitions.prune(pg, now=later)
    assert [p.partition_name for p in dropped] == [p.partition_name for p in would]
    left = {p.partition_name for p in await partitions.stats(pg)}
    assert "system_logs_p20261103" in left and "system_logs_p20261102" not in left
    assert "ai_analysis_p20261029" in left  # 90 days retention keeps it
    assert "api_usage_p202610" in left
    assert await pg.fetchval("SELECT count(*) FROM system_logs") == 0
    assert await pg.fetchval("SELECT to_regclass('system_logs_p20261101')") is None
    assert await partitions.prune(pg, now=later) == []


@pytest.mark.asyncio
async def test_prune_finishes_an_interrupted_concurrent_detach(pg: asyncpg.Connection) -> None:
    await partitions.ensure(pg, now=NOW)
    stuck = await pg.fetchrow(
        "SELECT partition_name FROM partition_ranges WHERE parent_table = 'system_logs' "
        "ORDER BY range_start LIMIT 1"
    )
    # Simulate a DETACH ... CONCURRENTLY cancelled after its first transaction.
    await pg.execute(
        f"UPDATE pg_inherits SET inhdetachpending = true "
        f"WHERE inhrelid = '{stuck['partition_name']}'::regclass"
    )
    infos = {p.partition_name: p for p in await partitions.stats(pg)}
    assert infos[stuck["partition_name"]].detach_pending
    dropped = await partitions.prune(pg, now=datetime(2027, 1, 1, tzinfo=UTC))
    assert stuck["partition_name"] in {p.partition_name for p in dropped}
    assert await pg.fetchval(f"SELECT to_regclass('{stuck['partition_name']}')") is None


@pytest.mark.asyncio
async def test_stats_reports_rows_and_sizes(pg: asyncpg.Connection) -> None:
    await partitions.ensure(pg, now=NOW)
    await pg.executemany(
        "INSERT INTO system_logs (logged_at, event_id, level, service, message) "
        "VALUES ($1, $2, 'info', 'api', 'hello')",
        [(NOW, uuid.uuid4()) for _ in range(500)],
    )
    await pg.execute("ANALYZE system_logs")
    infos = {p.partition_name: p for p in await partitions.stats(pg)}
    today = infos["system_logs_p20261122"]
    assert today.estimated_rows == 500
    assert today.total_bytes > 0
    assert infos["system_logs_p20261123"].estimated_rows == 0
