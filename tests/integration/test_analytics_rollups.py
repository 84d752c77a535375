"""The rollup job against a real PostgreSQL: every rollup equals the aggregate of its base
table after mixed workloads, late events, duplicates, out-of-order commits and re-runs; the
facts functions are exact even before a refresh.

Rows are written with the workers' own statements (``pipeline.worker.writes``), so the
rollup-queue triggers see exactly what they see in production. The helpers here are
shared by the other ``test_analytics_*`` modules.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pipeline.config import DatabaseConfig
from pipeline.contract import Analysis, ApiCall
from pipeline.kinds.analysis import insert_analyses
from pipeline.kinds.api_call import upsert_buckets
from pipeline.maintenance import partitions
from pipeline.maintenance.rollups import LOCK_KEY, refresh_rollups
from pipeline.worker.aggregate import aggregate

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def call(
    at: datetime,
    *,
    service: str = "auth",
    endpoint: str = "/v1/auth/login",
    method: str = "GET",
    user: str | None = "user-1",
    org: str | None = "org-a",
    ok: bool = True,
    rt: float = 80.0,
    tokens: int = 10,
    cost: str = "0.00002",
) -> ApiCall:
    return ApiCall.new(
        service=service, endpoint=endpoint, method=method, success=ok, response_time_ms=rt,
        user_id=user, organization_id=org, status_code=200 if ok else 503, tokens=tokens,
        cost_usd=float(cost), occurred_at=at, now=max(at, NOW) + DAY,
    )  # fmt: skip


def analysis(
    at: datetime,
    *,
    model: str = "gpt_4o",
    version: str | None = "v1",
    user: str | None = "user-1",
    org: str | None = "org-a",
    status: str = "completed",
    cost: str = "0.01",
    tokens: tuple[int, int] = (100, 50),
    processing_ms: float | None = 900.0,
    queue_ms: float | None = 100.0,
    cached: bool = False,
    region: str | None = "eu-west-1",
    event_id: str | None = None,
) -> Analysis:
    return Analysis.new(
        model_type=model, status=status, user_id=user, organization_id=org,
        model_version=version, request_tokens=tokens[0], response_tokens=tokens[1],
        api_cost_usd=float(cost), processing_time_ms=processing_ms,
        queue_wait_time_ms=queue_ms, caching_used=cached, region_processed=region,
        fallback_used=status == "fallback", processing_attempts=1 if status == "completed" else 2,
        error_type="timeout" if status == "failed" else None, event_id=event_id,
        occurred_at=at, now=max(at, NOW) + DAY,
    )  # fmt: skip


async def write_calls(conn: Any, calls: Iterable[ApiCall]) -> None:
    """One worker flush of API calls: the workers' additive upsert."""
    await upsert_buckets(conn, aggregate(calls))


async def write_analyses(conn: Any, events: list[Analysis]) -> None:
    """One worker flush of analyses (duplicates of stored event_ids are ignored)."""
    await insert_analyses(conn, events)


async def prepare(conn: Any) -> None:
    """Partitions around NOW for every table (base and rollups)."""
    await partitions.ensure(conn, now=NOW)


def mixed_workload(seed: int, count: int) -> tuple[list[ApiCall], list[Analysis]]:
    """Calls and analyses spread over the three days before NOW, with anonymous calls,
    failures, null users/organizations/versions/times and several models."""
    rng = random.Random(seed)
    start = NOW.replace(hour=0, minute=0) - 2 * DAY
    span = (NOW - start).total_seconds()
    calls, analyses = [], []
    for _ in range(count):
        at = start + timedelta(seconds=int(rng.random() * span))
        anonymous = rng.random() < 0.1
        calls.append(
            call(
                at, service=rng.choice(["auth", "search", "billing"]),
                endpoint=rng.choice(["/v1/a", "/v1/b"]), method=rng.choice(["GET", "POST"]),
                user=None if anonymous else f"user-{rng.randrange(6)}",
                org=None if anonymous else f"org-{rng.choice('abc')}",
                ok=rng.random() < 0.9, rt=rng.choice([12.5, 75.0, 180.25, 900.0, 7000.0]),
                tokens=rng.randrange(0, 500), cost=f"0.{rng.randrange(10**7):08d}",
            )
        )  # fmt: skip
        if rng.random() < 0.5:
            analyses.append(
                analysis(
                    at, model=rng.choice(["gpt_4o", "claude_sonnet", "gemini_2_5_pro"]),
                    version=rng.choice(["v1", "v2", None]),
                    user=None if rng.random() < 0.05 else f"user-{rng.randrange(6)}",
                    org=None if rng.random() < 0.05 else f"org-{rng.choice('abc')}",
                    status=rng.choice(["completed"] * 8 + ["failed", "fallback"]),
                    cost=f"0.{rng.randrange(10**7):08d}",
                    tokens=(rng.randrange(1, 4000), rng.randrange(1, 2000)),
                    processing_ms=None if rng.random() < 0.1 else rng.choice([250.5, 900.0]),
                    queue_ms=rng.choice([None, 10.0, 200.0]), cached=rng.random() < 0.2,
                    region=rng.choice(["eu-west-1", "us-east-1", None]),
                )
            )  # fmt: skip
    return calls, analyses


_API_SUMS = """sum(request_count), sum(success_count), sum(error_count), sum(token_usage),
    sum(cost), round(sum(response_time_ms_sum)::numeric, 6), max(response_time_ms_max),
    sum(latency_le_50), sum(latency_le_100), sum(latency_le_250), sum(latency_le_500),
    sum(latency_le_1000), sum(latency_le_2500), sum(latency_le_5000), sum(latency_gt_5000)"""

_AI_FROM_RAW = """count(*), count(*) FILTER (WHERE status = 'completed'),
    count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE fallback_used),
    count(*) FILTER (WHERE caching_used), count(*) FILTER (WHERE batch_processed),
    sum(processing_attempts), sum(request_tokens), sum(response_tokens), sum(tokens_used),
    sum(api_cost), round(coalesce(sum(processing_time_ms), 0)::numeric, 6),
    count(processing_time_ms), max(processing_time_ms),
    round(coalesce(sum(queue_wait_time_ms), 0)::numeric, 6), count(queue_wait_time_ms),
    round(coalesce(sum(total_processing_time_ms), 0)::numeric, 6),
    count(total_processing_time_ms)"""

_AI_FROM_ROLLUP = """sum(analyses), sum(completed_count), sum(failed_count),
    sum(fallback_count), sum(cache_hit_count), sum(batch_count), sum(processing_attempts),
    sum(request_tokens), sum(response_tokens), sum(tokens_used), sum(cost),
    round(sum(processing_time_ms_sum)::numeric, 6), sum(processing_time_ms_count),
    max(processing_time_ms_max), round(sum(queue_wait_time_ms_sum)::numeric, 6),
    sum(queue_wait_time_ms_count), round(sum(total_processing_time_ms_sum)::numeric, 6),
    sum(total_processing_time_ms_count)"""

_DAY = "date_trunc('day', {}, 'UTC')"
_HOUR = "date_trunc('hour', {}, 'UTC')"
_API_DETAIL = "service, endpoint, method, user_id, organization_id"
_AI_DETAIL = "organization_id, user_id, model_type, model_version, region_processed"

# Each rollup as it is stored, and as the aggregate of its base table: equal as multisets.
ROLLUPS = {
    "api_usage_daily": (
        f"SELECT time_window, {_API_DETAIL}, {_API_SUMS} FROM api_usage_daily "
        f"GROUP BY time_window, {_API_DETAIL}",
        f"SELECT {_DAY.format('time_window')}, {_API_DETAIL}, {_API_SUMS} FROM api_usage "
        f"GROUP BY 1, {_API_DETAIL}",
    ),
    "api_usage_summary_hourly": (
        f"SELECT time_window, organization_id, service, {_API_SUMS} "
        "FROM api_usage_summary_hourly GROUP BY 1, 2, 3",
        f"SELECT time_window, organization_id, service, {_API_SUMS} FROM api_usage "
        "GROUP BY 1, 2, 3",
    ),
    "api_usage_summary_daily": (
        f"SELECT time_window, organization_id, service, {_API_SUMS} "
        "FROM api_usage_summary_daily GROUP BY 1, 2, 3",
        f"SELECT {_DAY.format('time_window')}, organization_id, service, {_API_SUMS} "
        "FROM api_usage GROUP BY 1, 2, 3",
    ),
    "ai_analysis_hourly": (
        f"SELECT time_window, {_AI_DETAIL}, {_AI_FROM_ROLLUP} FROM ai_analysis_hourly "
        f"GROUP BY time_window, {_AI_DETAIL}",
        f"SELECT {_HOUR.format('created_at')}, {_AI_DETAIL}, {_AI_FROM_RAW} FROM ai_analysis "
        f"GROUP BY 1, {_AI_DETAIL}",
    ),
    "ai_analysis_daily": (
        f"SELECT time_window, {_AI_DETAIL}, {_AI_FROM_ROLLUP} FROM ai_analysis_daily "
        f"GROUP BY time_window, {_AI_DETAIL}",
        f"SELECT {_DAY.format('created_at')}, {_AI_DETAIL}, {_AI_FROM_RAW} FROM ai_analysis "
        f"GROUP BY 1, {_AI_DETAIL}",
    ),
    "ai_analysis_summary_hourly": (
        f"SELECT time_window, organization_id, model_type, {_AI_FROM_ROLLUP} "
        "FROM ai_analysis_summary_hourly GROUP BY 1, 2, 3",
        f"SELECT {_HOUR.format('created_at')}, organization_id, model_type, {_AI_FROM_RAW} "
        "FROM ai_analysis GROUP BY 1, 2, 3",
    ),
    "ai_analysis_summary_daily": (
        f"SELECT time_window, organization_id, model_type, {_AI_FROM_ROLLUP} "
        "FROM ai_analysis_summary_daily GROUP BY 1, 2, 3",
        f"SELECT {_DAY.format('created_at')}, organization_id, model_type, {_AI_FROM_RAW} "
        "FROM ai_analysis GROUP BY 1, 2, 3",
    ),
    "ai_analysis_user_hourly": (
        "SELECT time_window, organization_id, user_id, sum(analyses), sum(tokens_used), "
        "sum(cost) FROM ai_analysis_user_hourly GROUP BY 1, 2, 3",
        f"SELECT {_HOUR.format('created_at')}, organization_id, user_id, count(*), "
        "sum(tokens_used), sum(api_cost) FROM ai_analysis GROUP BY 1, 2, 3",
    ),
    "ai_analysis_user_daily": (
        "SELECT time_window, organization_id, user_id, sum(analyses), sum(tokens_used), "
        "sum(cost) FROM ai_analysis_user_daily GROUP BY 1, 2, 3",
        f"SELECT {_DAY.format('created_at')}, organization_id, user_id, count(*), "
        "sum(tokens_used), sum(api_cost) FROM ai_analysis GROUP BY 1, 2, 3",
    ),
    "ai_analysis_user_monthly": (
        "SELECT time_window, organization_id, user_id, sum(analyses), sum(tokens_used), "
        "sum(cost) FROM ai_analysis_user_monthly GROUP BY 1, 2, 3",
        "SELECT date_trunc('month', created_at, 'UTC'), organization_id, user_id, count(*), "
        "sum(tokens_used), sum(api_cost) FROM ai_analysis GROUP BY 1, 2, 3",
    ),
    "api_usage_org_hourly": (
        "SELECT time_window, organization_id, sum(request_count), sum(error_count), sum(cost) "
        "FROM api_usage_org_hourly GROUP BY 1, 2",
        "SELECT time_window, organization_id, sum(request_count), sum(error_count), sum(cost) "
        "FROM api_usage GROUP BY 1, 2",
    ),
    "api_usage_org_daily": (
        "SELECT time_window, organization_id, sum(request_count), sum(error_count), sum(cost) "
        "FROM api_usage_org_daily GROUP BY 1, 2",
        f"SELECT {_DAY.format('time_window')}, organization_id, sum(request_count), "
        "sum(error_count), sum(cost) FROM api_usage GROUP BY 1, 2",
    ),
    "ai_analysis_org_hourly": (
        "SELECT time_window, organization_id, sum(analyses), sum(failed_count), sum(cost) "
        "FROM ai_analysis_org_hourly GROUP BY 1, 2",
        f"SELECT {_HOUR.format('created_at')}, organization_id, count(*), "
        "count(*) FILTER (WHERE status = 'failed'), sum(api_cost) FROM ai_analysis GROUP BY 1, 2",
    ),
    "ai_analysis_org_daily": (
        "SELECT time_window, organization_id, sum(analyses), sum(failed_count), sum(cost) "
        "FROM ai_analysis_org_daily GROUP BY 1, 2",
        f"SELECT {_DAY.format('created_at')}, organization_id, count(*), "
        "count(*) FILTER (WHERE status = 'failed'), sum(api_cost) FROM ai_analysis GROUP BY 1, 2",
    ),
}


async def rollup_differences(conn: Any) -> dict[str, int]:
    """Per rollup, how many rows differ from the aggregate of its base table (0 = exact).
    Also checks that no rollup holds two rows for the same key (GROUP BY would hide it)."""
    diffs = {}
    for name, (stored, expected) in ROLLUPS.items():
        diffs[name] = await conn.fetchval(
            f"SELECT count(*) FROM (({stored}) EXCEPT ALL ({expected})) a"
        ) + await conn.fetchval(f"SELECT count(*) FROM (({expected}) EXCEPT ALL ({stored})) b")
        grouped = await conn.fetchval(f"SELECT count(*) FROM ({stored}) g")
        assert await conn.fetchval(f"SELECT count(*) FROM {name}") == grouped, name
    return diffs


async def assert_exact(conn: Any) -> None:
    diffs = await rollup_differences(conn)
    assert diffs == dict.fromkeys(ROLLUPS, 0)


async def snapshot(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: sorted((tuple(r) for r in await conn.fetch(f"SELECT * FROM {name}")), key=repr)
        for name in ROLLUPS
    }


async def pending(conn: Any) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM rollup_pending")
    return count


# Aggregates of the base tables over [start, end) and of the facts functions: equal.
_FACT_CHECKS = [
    (
        "SELECT model_type, sum(analyses), sum(cost), sum(failed_count), sum(cache_hit_count), "
        "max(processing_time_ms_max) FROM ai_usage_facts($1, $2) GROUP BY 1 ORDER BY 1",
        "SELECT model_type, count(*), sum(api_cost), count(*) FILTER (WHERE status = 'failed'),"
        " count(*) FILTER (WHERE caching_used), max(processing_time_ms) FROM ai_analysis "
        "WHERE created_at >= $1 AND created_at < $2 GROUP BY 1 ORDER BY 1",
    ),
    (
        "SELECT organization_id, model_type, sum(analyses), sum(cost), sum(tokens_used) "
        "FROM ai_usage_summary_facts($1, $2) GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT organization_id, model_type, count(*), sum(api_cost), sum(tokens_used) "
        "FROM ai_analysis WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2 "
        "ORDER BY 1, 2",
    ),
    (
        "SELECT user_id, service, sum(request_count), sum(error_count), sum(cost), "
        "sum(latency_gt_5000) FROM api_usage_facts($1, $2) GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT user_id, service, sum(request_count), sum(error_count), sum(cost), "
        "sum(latency_gt_5000) FROM api_usage WHERE time_window >= $1 AND time_window < $2 "
        "GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "SELECT organization_id, service, sum(request_count), sum(cost), "
        "max(response_time_ms_max) FROM api_usage_summary_facts($1, $2) GROUP BY 1, 2 "
        "ORDER BY 1, 2",
        "SELECT organization_id, service, sum(request_count), sum(cost), "
        "max(response_time_ms_max) FROM api_usage WHERE time_window >= $1 "
        "AND time_window < $2 GROUP BY 1, 2 ORDER BY 1, 2",
    ),
]

RANGES = [
    (NOW - 3 * DAY, NOW + DAY),  # everything: whole days, partial edges
    (NOW - 2 * DAY - 7 * HOUR, NOW - 20 * HOUR),  # ragged hours at both ends
    (NOW - DAY + timedelta(minutes=7), NOW - DAY + timedelta(minutes=50)),  # within an hour
    (NOW.replace(hour=0, minute=0) - DAY, NOW.replace(hour=0, minute=0)),  # one whole day
]


async def assert_facts_exact(conn: Any) -> None:
    for start, end in RANGES:
        for facts, base in _FACT_CHECKS:
            got = [tuple(r) for r in await conn.fetch(facts, start, end)]
            want = [tuple(r) for r in await conn.fetch(base, start, end)]
            assert got == want, (facts, start, end)


@pytest.mark.asyncio
async def test_rollups_equal_the_base_tables_after_a_mixed_workload(
    pg: asyncpg.Connection,
) -> None:
    await prepare(pg)
    calls, analyses = mixed_workload(seed=1, count=400)
    for i in range(0, len(calls), 100):  # several flushes, a refresh after the second
        await write_calls(pg, calls[i : i + 100])
        await write_analyses(pg, analyses[i // 2 : i // 2 + 50])
        if i == 100:
            await refresh_rollups(pg, now=NOW)
    await write_analyses(pg, analyses[200:])
    assert await pending(pg) > 0
    await assert_facts_exact(pg)  # exact before the refresh: queued hours read from base

    report = await refresh_rollups(pg, now=NOW, days_per_batch=2)
    assert not report.busy and report.rows > 0
    assert [s.batches for s in report.sources] == [2, 2]  # 3 days, 2 per batch
    assert await pending(pg) == 0
    await assert_exact(pg)
    await assert_facts_exact(pg)
    state = await pg.fetch("SELECT source, refreshed_at FROM rollup_state ORDER BY 1")
    assert [(r["source"], r["refreshed_at"]) for r in state] == [
        ("ai_analysis", NOW), ("api_usage", NOW),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_late_events_duplicates_and_a_second_run(pg: asyncpg.Connection) -> None:
    await prepare(pg)
    calls, analyses = mixed_workload(seed=2, count=200)
    await write_calls(pg, calls)
    await write_analyses(pg, analyses)
    await refresh_rollups(pg, now=NOW)
    await assert_exact(pg)
    before = await snapshot(pg)

    # Running again finds nothing to do and changes nothing.
    again = await refresh_rollups(pg, now=NOW)
    assert again.rows == 0 and again.days == 0
    assert await snapshot(pg) == before

    # Duplicates (a producer retry, a redelivery the watermark let through for analyses)
    # are ignored by the base table; the rollups stay identical.
    await write_analyses(pg, analyses[:20])
    await refresh_rollups(pg, now=NOW)
    assert await snapshot(pg) == before

    # Late events: a bucket of a two-day-old hour updated in place, a new bucket in an old
    # hour, and an analysis arriving two days late.
    old = NOW - 2 * DAY
    first = calls[0]
    late = [
        call(first.occurred_at, service=first.service, endpoint=first.endpoint,
             method=first.method, user=first.user_id, org=first.organization_id, ok=False,
             rt=4000.0, tokens=7, cost="0.5"),
        call(old, service="reports", user="user-late", org="org-z", rt=6000.0),
    ]  # fmt: skip
    await write_calls(pg, late)
    await write_analyses(pg, [analysis(old, model="claude_haiku", org="org-z", cost="1.25")])
    await assert_facts_exact(pg)
    report = await refresh_rollups(pg, now=NOW)
    assert {s.source: s.days for s in report.sources} == {
        "api_usage": len({first.occurred_at.date(), old.date()}),
        "ai_analysis": 1,
    }
    await assert_exact(pg)
    await assert_facts_exact(pg)
    assert await snapshot(pg) != before


@pytest.mark.asyncio
async def test_rows_deleted_or_moved_by_hand_leave_the_rollups(pg: asyncpg.Connection) -> None:
    await prepare(pg)
    calls, analyses = mixed_workload(seed=4, count=100)
    await write_calls(pg, calls)
    await write_analyses(pg, analyses)
    await refresh_rollups(pg, now=NOW)
    # An operator removes one user's analyses, moves another's to a different day, and
    # deletes an organization's buckets: keys disappear from units, others appear.
    await pg.execute("DELETE FROM ai_analysis WHERE user_id = 'user-1'")
    await pg.execute(
        "UPDATE ai_analysis SET created_at = created_at - interval '1 day' "
        "WHERE user_id = 'user-2' AND created_at >= $1",
        NOW - DAY,
    )
    await pg.execute("DELETE FROM api_usage WHERE organization_id = 'org-a'")
    await assert_facts_exact(pg)
    await refresh_rollups(pg, now=NOW)
    await assert_exact(pg)
    assert await pg.fetchval("SELECT count(*) FROM ai_analysis_daily WHERE user_id = 'user-1'") == 0
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM api_usage_summary_daily WHERE organization_id = 'org-a'"
        )
        == 0
    )


@pytest.mark.asyncio
async def test_a_writer_committing_after_the_refresh_is_not_lost(
    pg: asyncpg.Connection, migrated_database: DatabaseConfig
) -> None:
    """A flush whose transaction started (now() = its updated_at/ingested_at) before the
    refresh but commits after it: a high-water mark on those columns would skip it."""
    await prepare(pg)
    await write_calls(pg, [call(NOW - 2 * HOUR)])
    await write_analyses(pg, [analysis(NOW - 2 * HOUR)])
    writer = await asyncpg.connect(migrated_database.url)
    try:
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute("SELECT now()")  # the transaction's timestamp is taken
        await write_calls(writer, [call(NOW - 3 * HOUR, user="user-slow", rt=300.0)])
        await write_analyses(writer, [analysis(NOW - 3 * HOUR, user="user-slow", cost="2")])

        await refresh_rollups(pg, now=NOW)  # does not see the open transaction
        await assert_exact(pg)
        await transaction.commit()
    finally:
        await writer.close()

    assert await pending(pg) == 2  # the slow writer's hours, one per table
    assert (await rollup_differences(pg))["ai_analysis_hourly"] > 0  # stale until refreshed
    await assert_facts_exact(pg)  # but answers read the queued hours from the base tables
    await refresh_rollups(pg, now=NOW)
    await assert_exact(pg)
    cost = await pg.fetchval("SELECT sum(cost) FROM ai_analysis_hourly WHERE user_id = 'user-slow'")
    assert str(cost) == "2.00000000"


@pytest.mark.asyncio
async def test_units_without_a_base_partition_are_skipped_not_wiped(
    pg: asyncpg.Connection,
) -> None:
    await prepare(pg)
    day = (NOW - DAY).replace(hour=12, minute=0)
    await write_analyses(pg, [analysis(day, cost="3")])
    await refresh_rollups(pg, now=NOW)
    # The raw day is pruned (as if beyond retention) while its daily rollup is kept; a
    # rebuild queued by hand must not replace the rollup with nothing.
    await pg.execute(f"DROP TABLE ai_analysis_p{day:%Y%m%d}")
    queued = await pg.fetchval(
        "SELECT rollup_requeue('ai_analysis', $1, $2)", day.replace(hour=0), day + DAY
    )
    assert queued == 36  # every hour of [day 00:00, day+1 12:00)
    report = await refresh_rollups(pg, now=NOW)
    assert {s.source: s.skipped for s in report.sources} == {"api_usage": 0, "ai_analysis": 1}
    assert await pending(pg) == 0
    kept = await pg.fetchval(
        "SELECT sum(cost) FROM ai_analysis_daily WHERE time_window = $1", day.replace(hour=0)
    )
    assert str(kept) == "3.00000000"


@pytest.mark.asyncio
async def test_a_concurrent_refresh_returns_busy(
    pg: asyncpg.Connection, migrated_database: DatabaseConfig
) -> None:
    other = await asyncpg.connect(migrated_database.url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        report = await refresh_rollups(pg, now=NOW)
        assert report.busy and report.sources == ()
        await other.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        assert not (await refresh_rollups(pg, now=NOW)).busy
    finally:
        await other.close()


@pytest.mark.asyncio
async def test_the_writer_role_can_write_and_refresh(pg: asyncpg.Connection) -> None:
    """Everything a worker does, as pipeline_writer: upsert buckets, insert analyses,
    create partitions for a new range, refresh the rollups (creating their partitions)."""
    await pg.execute("SET ROLE pipeline_writer")
    await prepare(pg)
    far = NOW + 75 * DAY  # a month with no partition yet, for any table
    row = await pg.fetchrow("SELECT * FROM ensure_partition('api_usage', $1, $2)", far, NOW)
    assert row["created"]
    await pg.fetchrow("SELECT * FROM ensure_partition('ai_analysis', $1, $2)", far, NOW)
    await write_calls(pg, [call(NOW - HOUR), call(far)])
    await write_analyses(pg, [analysis(NOW - HOUR), analysis(far)])
    report = await refresh_rollups(pg, now=NOW)
    assert report.rows > 0 and all(s.skipped == 0 for s in report.sources)
    await assert_exact(pg)
    owner = await pg.fetchval(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = $1",
        f"ai_analysis_daily_p{far:%Y%m}",
    )
    assert owner == "pipeline_migrator"  # created through the SECURITY DEFINER function
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg.fetch("SELECT * FROM analyst_scopes")
