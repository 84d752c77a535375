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

from pipeline.maintenance.rollups import refresh_rollups
from tests.integration.test_analytics_rollups import (
    DAY,
    NOW,
    analysis,
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
