"""The analyst functions and views on a small known data set: exact expected answers,
before the rollup job has run (queued hours read from the base tables) and after it
(rollups), and the percentile estimate on known histograms."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from pipeline.config import DatabaseConfig
from pipeline.maintenance.rollup_plan import PLAN
from pipeline.maintenance.rollups import refresh_rollups
from pipeline.migrations.runner import MigrationRunner
from tests.conftest import SQL_DIR
from tests.integration.test_analytics_rollups import (
    DAY,
    NOW,
    analysis,
    assert_exact,
    call,
    prepare,
    write_analyses,
    write_calls,
)

D20 = datetime(2026, 11, 20, tzinfo=NOW.tzinfo)
D21, D22 = D20 + DAY, D20 + 2 * DAY
START, END = D20, D20 + 3 * DAY


def at(day: datetime, hour: int, minute: int) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


async def load_known(conn: Any) -> None:
    """Four API buckets and six analyses over 2026-11-20..22 (see the expectations)."""
    await prepare(conn)
    await write_calls(
        conn,
        [
            call(at(D20, 10, 1), rt=10.0, tokens=100, cost="0.0002"),
            call(at(D20, 10, 2), rt=60.0, tokens=100, cost="0.0002"),
            call(at(D20, 10, 3), rt=200.0, tokens=100, cost="0.0002"),
            call(at(D20, 10, 4), rt=7000.0, tokens=100, cost="0.0002", ok=False),
            call(at(D21, 9, 1), service="search", user="user-2", rt=40.0, tokens=0, cost="0"),
            call(at(D21, 9, 2), service="search", user="user-2", rt=40.0, tokens=0, cost="0"),
            call(at(D21, 15, 1), user="user-3", org="org-b", rt=500.0, tokens=50, cost="0.0001"),
            call(at(D21, 15, 2), user="user-3", org="org-b", rt=900.0, tokens=50, cost="0.0001",
                 ok=False),
            call(at(D22, 8, 1), service="billing", user=None, org=None, rt=30.0, tokens=0,
                 cost="0"),
        ],
    )  # fmt: skip
    await write_analyses(
        conn,
        [
            analysis(at(D20, 10, 10), cost="0.10", cached=True),
            analysis(at(D21, 9, 10), version="v2", status="failed", cost="0.05"),
            analysis(at(D22, 8, 10), model="claude_sonnet", cost="0.20"),
            analysis(at(D21, 9, 20), user="user-2", cost="0.30", cached=True),
            analysis(at(D21, 15, 10), model="gemini_2_5_pro", user="user-3", org="org-b",
                     status="fallback", cost="0.40", processing_ms=None),
            analysis(at(D22, 8, 20), user=None, org="org-b", cost="0.01"),
        ],
    )  # fmt: skip


async def rows(conn: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.fetch(sql, *args)]


def d(text: str) -> Decimal:
    return Decimal(text).quantize(Decimal("0.00000001"))


async def check_known_answers(conn: Any) -> None:
    assert await rows(conn, "SELECT * FROM user_ai_cost('user-1', $1, $2)", START, END) == [
        ("claude_sonnet", 1, 150, d("0.20")),
        ("gpt_4o", 2, 300, d("0.15")),
    ]
    org_a = await conn.fetch("SELECT * FROM organization_ai_usage('org-a', $1, $2)", START, END)
    assert [
        (r["model_type"], r["model_version"], r["analyses"], r["completed"], r["failed"],
         r["cache_hits"], r["cost_usd"], r["failure_rate"], r["cache_hit_rate"])
        for r in org_a
    ] == [
        ("gpt_4o", "v1", 2, 2, 0, 2, d("0.40"), 0.0, 1.0),
        ("claude_sonnet", "v1", 1, 1, 0, 0, d("0.20"), 0.0, 0.0),
        ("gpt_4o", "v2", 1, 0, 1, 0, d("0.05"), 1.0, 0.0),
    ]  # fmt: skip
    assert org_a[0]["avg_cost_usd"] == d("0.20")
    assert org_a[0]["avg_processing_time_ms"] == 900.0

    by_model = await rows(conn, "SELECT * FROM ai_cost_by_model($1, $2)", START, END)
    assert [r[:4] for r in by_model] == [
        ("gpt_4o", 4, 600, d("0.46")),
        ("gemini_2_5_pro", 1, 150, d("0.40")),
        ("claude_sonnet", 1, 150, d("0.20")),
    ]
    assert math.isclose(by_model[0][5], 0.46 / 1.06)
    assert [r[:4] for r in await rows(
        conn, "SELECT * FROM ai_cost_by_model($1, $2, 'org-b')", START, END
    )] == [("gemini_2_5_pro", 1, 150, d("0.40")), ("gpt_4o", 1, 150, d("0.01"))]  # fmt: skip

    assert await rows(conn, "SELECT * FROM top_users_by_ai_cost($1, $2, 2)", START, END) == [
        ("user-3", "org-b", 1, 150, d("0.40")),
        ("user-1", "org-a", 3, 450, d("0.35")),
    ]
    assert await rows(
        conn, "SELECT user_id, cost_usd FROM top_users_by_ai_cost($1, $2, 10, 'org-a')",
        START, END,
    ) == [("user-1", d("0.35")), ("user-2", d("0.30"))]  # fmt: skip

    assert await rows(conn, "SELECT * FROM ai_cache_hit_rate($1, $2)", START, END) == [
        ("claude_sonnet", 1, 0, 0.0),
        ("gemini_2_5_pro", 1, 0, 0.0),
        ("gpt_4o", 4, 2, 0.5),
        (None, 6, 2, 2 / 6),
    ]

    errors = await conn.fetch("SELECT * FROM service_error_rates($1, $2)", START, END)
    assert [(r["service"], r["requests"], r["errors"]) for r in errors] == [
        ("auth", 6, 2), ("billing", 1, 0), ("search", 2, 0),
    ]  # fmt: skip
    auth = errors[0]
    assert math.isclose(auth["error_rate"], 1 / 3)
    assert auth["avg_response_time_ms"] == 8670 / 6
    # Histogram of auth: one call in each of (0,50], (50,100], (100,250], (250,500],
    # (500,1000] and >5000 (max 7000): p50 = rank 3 -> top of (100, 250] = 250;
    # p95 = rank 5.7 -> 5000 + 0.7 * (7000 - 5000); p99 = rank 5.94.
    assert auth["p50_response_time_ms"] == 250.0
    assert math.isclose(auth["p95_response_time_ms"], 6400.0)
    assert math.isclose(auth["p99_response_time_ms"], 6880.0)
    assert auth["max_response_time_ms"] == 7000.0
    assert await rows(
        conn, "SELECT service, requests, errors, error_rate FROM service_error_rates($1, $2, $3)",
        START, END, "org-b",
    ) == [("auth", 2, 1, 0.5)]  # fmt: skip

    assert await rows(
        conn, "SELECT service, requests, errors, tokens, cost_usd "
        "FROM organization_api_usage('org-a', $1, $2)", START, END,
    ) == [("auth", 4, 1, 400, d("0.0008")), ("search", 2, 0, 0, d("0"))]  # fmt: skip

    assert await rows(
        conn, "SELECT time_window, service, requests, errors "
        "FROM api_usage_by_service_hour($1, $2)", START, END,
    ) == [
        (at(D20, 10, 0), "auth", 4, 1), (at(D21, 9, 0), "search", 2, 0),
        (at(D21, 15, 0), "auth", 2, 1), (at(D22, 8, 0), "billing", 1, 0),
    ]  # fmt: skip

    assert await rows(conn, "SELECT * FROM organization_usage_summary($1, $2)", START, END) == [
        ("org-a", 6, 1, 1 / 6, d("0.0008"), 4, 1, d("0.65"), d("0.6508")),
        ("org-b", 2, 1, 0.5, d("0.0002"), 2, 0, d("0.41"), d("0.4102")),
    ]

    # A range with ragged ends: API buckets whose hour starts in it, analyses whose
    # created_at is in it.
    ragged = (at(D21, 9, 15), at(D21, 16, 0))
    assert await rows(
        conn, "SELECT user_id, cost_usd FROM top_users_by_ai_cost($1, $2)", *ragged
    ) == [("user-3", d("0.40")), ("user-2", d("0.30"))]
    assert await rows(
        conn, "SELECT service, requests FROM service_error_rates($1, $2)", *ragged
    ) == [("auth", 2)]


@pytest.mark.asyncio
async def test_functions_answer_the_known_data_set_before_and_after_refresh(
    pg: asyncpg.Connection,
) -> None:
    await load_known(pg)
    assert await pg.fetchval("SELECT count(*) FROM rollup_pending") > 0
    await check_known_answers(pg)  # the queue routes every hour to the base tables
    await refresh_rollups(pg, now=NOW)
    assert await pg.fetchval("SELECT count(*) FROM rollup_pending") == 0
    await check_known_answers(pg)  # now from the rollups
    levels = await rows(
        pg, "SELECT DISTINCT granularity FROM ai_usage_facts($1, $2) ORDER BY 1", START, END
    )
    assert levels == [("day",)]


@pytest.mark.asyncio
async def test_views_derive_rates_and_percentiles(pg: asyncpg.Connection) -> None:
    await load_known(pg)
    await refresh_rollups(pg, now=NOW)
    hourly = await pg.fetchrow(
        "SELECT * FROM api_usage_hourly_stats WHERE time_window = $1", at(D20, 10, 0)
    )
    assert hourly["error_rate"] == 0.25
    assert hourly["avg_response_time_ms"] == (10 + 60 + 200 + 7000) / 4
    assert hourly["p50_response_time_ms"] == 100.0  # rank 2: top of (50, 100]
    daily = await pg.fetchrow(
        "SELECT * FROM api_usage_daily_stats WHERE time_window = $1 AND organization_id = $2",
        D21, "org-b",
    )  # fmt: skip
    assert (daily["request_count"], daily["error_rate"]) == (2, 0.5)
    assert daily["p50_response_time_ms"] == 500.0  # rank 1: top of (250, 500]
    ai = await pg.fetchrow(
        "SELECT sum(analyses) AS n, sum(cache_hit_count) AS hits, max(cache_hit_rate) AS rate "
        "FROM ai_analysis_daily_stats WHERE time_window = $1 AND organization_id = 'org-a'",
        D21,
    )
    assert (ai["n"], ai["hits"], ai["rate"]) == (2, 1, 1.0)


@pytest.mark.asyncio
async def test_latency_quantile_on_known_histograms(pg: asyncpg.Connection) -> None:
    async def q(quantile: float, counts: list[int], max_ms: float | None = None) -> Any:
        return await pg.fetchval(
            "SELECT latency_quantile($1, $2::bigint[], $3)", quantile, counts, max_ms
        )

    assert await q(0.5, [0] * 8) is None
    assert await q(0.5, [10, 10, 0, 0, 0, 0, 0, 0]) == 50.0  # rank 10: top of (0, 50]
    assert await q(0.75, [10, 10, 0, 0, 0, 0, 0, 0]) == 75.0  # halfway into (50, 100]
    assert await q(0.0, [0, 0, 5, 0, 0, 0, 0, 0]) == 100.0  # lower bound of the first
    assert await q(1.0, [1, 0, 5, 0, 0, 0, 0, 0], 200.0) == 200.0  # clipped to the max
    assert await q(0.95, [0, 0, 0, 0, 0, 0, 0, 10], 9000.0) == 8800.0  # up to the max
    assert await q(0.95, [0, 0, 0, 0, 0, 0, 0, 10]) == 5000.0  # open bucket, no max
    with pytest.raises(asyncpg.InvalidParameterValueError):
        await q(1.5, [1] * 8)
    with pytest.raises(asyncpg.InvalidParameterValueError):
        await q(0.5, [1, 2, 3])


@pytest.mark.asyncio
async def test_latency_quantile_error_is_within_the_documented_bound(
    pg: asyncpg.Connection,
) -> None:
    """On random lognormal samples, |estimate - true quantile| <= the width of the bucket
    that holds the true quantile (with the open bucket ending at the max)."""
    bounds = [50, 100, 250, 500, 1000, 2500, 5000]
    rng = random.Random(11)
    for _ in range(30):
        values = sorted(
            round(min(60_000.0, math.exp(rng.gauss(math.log(80), rng.choice([0.5, 1, 2])))), 3)
            for _ in range(rng.randrange(1, 400))
        )
        counts = [0] * 8
        for v in values:
            counts[next((i for i, b in enumerate(bounds) if v <= b), 7)] += 1
        for quantile in (0.5, 0.95, 0.99):
            estimate = await pg.fetchval(
                "SELECT latency_quantile($1, $2::bigint[], $3)", quantile, counts, values[-1]
            )
            true = values[max(math.ceil(quantile * len(values)) - 1, 0)]
            i = next((i for i, b in enumerate(bounds) if true <= b), 7)
            lower = 0 if i == 0 else bounds[i - 1]
            upper = min(bounds[i], values[-1]) if i < 7 else values[-1]
            assert lower <= estimate <= upper
            assert abs(estimate - true) <= upper - lower + 1e-9


# The plain SQL the ranking functions replace (issue 14): straight from the base tables.
PLAIN_TOP_USERS = """
SELECT user_id, organization_id, count(*)::bigint, sum(tokens_used)::bigint, sum(api_cost)
FROM ai_analysis
WHERE created_at >= $1 AND created_at < $2 AND user_id IS NOT NULL
  AND ($4::text IS NULL OR organization_id = $4)
GROUP BY user_id, organization_id
ORDER BY sum(api_cost) DESC, user_id
LIMIT $3
"""
PLAIN_ORGANIZATION_SUMMARY = """
SELECT coalesce(a.organization_id, i.organization_id), coalesce(a.requests, 0),
       coalesce(a.errors, 0), a.errors::double precision / nullif(a.requests, 0),
       coalesce(a.cost, 0), coalesce(i.analyses, 0), coalesce(i.failed, 0),
       coalesce(i.cost, 0), coalesce(a.cost, 0) + coalesce(i.cost, 0)
FROM (SELECT organization_id, sum(request_count)::bigint AS requests,
             sum(error_count)::bigint AS errors, sum(cost) AS cost
      FROM api_usage WHERE time_window >= $1 AND time_window < $2 AND organization_id <> ''
      GROUP BY organization_id) a
FULL JOIN (SELECT organization_id, count(*)::bigint AS analyses,
                  count(*) FILTER (WHERE status = 'failed')::bigint AS failed,
                  sum(api_cost) AS cost
           FROM ai_analysis
           WHERE created_at >= $1 AND created_at < $2 AND organization_id IS NOT NULL
           GROUP BY organization_id) i
  ON i.organization_id = a.organization_id
ORDER BY coalesce(a.cost, 0) + coalesce(i.cost, 0) DESC, 1
"""


def ranking_workload(
    rng: random.Random, count: int, lo: datetime, hi: datetime
) -> tuple[list[Any], list[Any]]:
    """``count`` analyses and calls in [lo, hi): 14 users (each in one organization, one
    in none) and costs from three values, so that many users tie on cost and the ranking
    falls back to user_id; some at exact hour and day boundaries."""
    analyses, calls = [], []
    span = int((hi - lo).total_seconds())
    for i in range(count):
        at = lo + timedelta(seconds=rng.randrange(span))
        if i % 10 == 0:
            at = at.replace(minute=0, second=0)  # on an hour (and sometimes a day) boundary
        n = rng.randrange(15)
        user = None if n == 14 else f"user-{n:02}"
        org = None if n == 13 else ("org-a", "org-b", "org-c")[n % 3]
        analyses.append(
            analysis(at, user=user, org=org, cost=rng.choice(["0.01", "0.02", "0.05"]),
                     tokens=(100, 50 * rng.randrange(1, 3)),
                     status=rng.choice(["completed", "completed", "failed"]))
        )  # fmt: skip
        calls.append(
            call(at, user=user, org=org, ok=rng.random() < 0.9, cost=rng.choice(["0", "0.0001"]))
        )
    return analyses, calls


async def check_rankings_equal_plain_sql(conn: Any) -> None:
    ranges = [
        (NOW - DAY, NOW),
        (NOW - 7 * DAY, NOW),
        (NOW - 30 * DAY, NOW),
        (NOW - 30 * DAY + timedelta(minutes=17), NOW - timedelta(hours=3, minutes=5)),
        (D20 - 9 * DAY, D20),  # whole days only
        (at(D21, 9, 0), at(D21, 9, 40)),  # inside one hour
    ]
    for p_from, p_to in ranges:
        for limit, organization in ((10, None), (5, None), (1000, None), (3, "org-b")):
            expected = await rows(conn, PLAIN_TOP_USERS, p_from, p_to, limit, organization)
            got = await rows(
                conn, "SELECT * FROM top_users_by_ai_cost($1, $2, $3, $4)",
                p_from, p_to, limit, organization,
            )  # fmt: skip
            assert got == expected, (p_from, p_to, limit, organization)
        assert await rows(
            conn, "SELECT * FROM organization_usage_summary($1, $2)", p_from, p_to
        ) == await rows(conn, PLAIN_ORGANIZATION_SUMMARY, p_from, p_to), (p_from, p_to)


FIRST = NOW.replace(hour=0, minute=0) - 32 * DAY


async def load_ranking_data(conn: Any, rng: random.Random) -> None:
    for table in ("ai_analysis", "api_usage"):
        for day in range(34):
            await conn.execute("SELECT ensure_partition($1, $2, $3)", table, FIRST + day * DAY, NOW)
    await prepare(conn)
    analyses, calls = ranking_workload(rng, 1500, FIRST, NOW)
    await write_analyses(conn, analyses)
    await write_calls(conn, calls)


@pytest.mark.asyncio
async def test_migration_0011_builds_its_rollups_from_existing_data(
    fresh_database: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await asyncpg.connect(fresh_database.url, server_settings={"TimeZone": "UTC"})
    try:
        runner = MigrationRunner(conn, SQL_DIR, applied_by="tests")
        await runner.up(to=10)
        await load_ranking_data(conn, random.Random(11))
        # The rollup job as it was before 0011: only the rollups of 0004.
        new = ("_user_", "_org_")
        with monkeypatch.context() as patch:
            for source, steps in PLAN.items():
                patch.setitem(PLAN, source, tuple(s for s in steps if not any(
                    n in s.table for n in new)))  # fmt: skip
            await refresh_rollups(conn, now=NOW)
        await write_analyses(conn, [analysis(NOW - 3 * DAY, user="user-05", cost="0.07")])
        await runner.up()  # fills the new rollups from the old ones; one hour still queued
        await check_rankings_equal_plain_sql(conn)
        await refresh_rollups(conn, now=NOW)
        await assert_exact(conn)
        await check_rankings_equal_plain_sql(conn)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_rankings_equal_the_plain_sql_with_ties_and_queued_hours(
    pg: asyncpg.Connection,
) -> None:
    rng = random.Random(14)
    first = FIRST
    await load_ranking_data(pg, rng)
    # Three big spenders with exactly the same analyses: tied in every range.
    twins = [
        analysis(first + timedelta(hours=5 + 24 * day, minutes=3), user=user, org=org,
                 cost="0.50")
        for day in range(32)
        for user, org in (("user-20", "org-c"), ("user-21", "org-a"), ("user-22", "org-b"))
    ]  # fmt: skip
    await write_analyses(pg, twins)
    ties = await pg.fetchval(
        "SELECT count(*) FROM (SELECT count(*) OVER (PARTITION BY sum(api_cost)) AS n "
        "FROM ai_analysis WHERE user_id IS NOT NULL GROUP BY user_id, organization_id) t "
        "WHERE n > 1"
    )
    assert ties >= 3
    await check_rankings_equal_plain_sql(pg)  # everything queued: base tables

    await refresh_rollups(pg, now=NOW)
    assert await pg.fetchval("SELECT count(*) FROM rollup_pending") == 0
    await check_rankings_equal_plain_sql(pg)  # rollups only
    levels = await rows(
        pg, "SELECT DISTINCT granularity FROM ai_user_facts($1, $2) ORDER BY 1",
        NOW - 30 * DAY + timedelta(minutes=17), NOW,
    )  # fmt: skip
    assert levels == [("day",), ("event",), ("hour",)]

    # Late and current events: their hours (and days) queued, the rest from the rollups.
    for lo in (NOW - 20 * DAY, NOW - 6 * DAY, NOW - timedelta(minutes=40)):
        late, late_calls = ranking_workload(rng, 40, lo, lo + timedelta(minutes=30))
        await write_analyses(pg, late)
        await write_calls(pg, late_calls)
    assert await pg.fetchval("SELECT count(*) FROM rollup_pending") > 0
    await check_rankings_equal_plain_sql(pg)
    await refresh_rollups(pg, now=NOW)
    await check_rankings_equal_plain_sql(pg)
