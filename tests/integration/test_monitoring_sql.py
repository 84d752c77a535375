"""Migration 0009 in SQL: metric histograms and series, the append-only audit trail and
the pipeline's self-audit, the analysis lifecycle (merge, derived state, retention,
analyst functions), row-level security on the new tenant tables, and an exact down.

The embedded server's user is a superuser: tests SET ROLE to the pipeline roles to check
what those may do (``session_user``, the audit trail's actor, stays the test login).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pipeline.config import DatabaseConfig
from pipeline.kinds.analysis import ANALYSES, LIFECYCLE
from pipeline.maintenance import partitions
from pipeline.migrations.files import discover
from pipeline.migrations.runner import MigrationRunner
from pipeline.worker.metrics_aggregate import bucket_of
from tests.conftest import SQL_DIR
from tests.integration.test_migrations import fingerprint

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MS = timedelta(milliseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ------------------------------------------------------------------------------------------
# Metric histograms
# ------------------------------------------------------------------------------------------


def bucket(value: float) -> int:
    """1-based bucket of a value, as the migration's comment defines them."""
    if value <= 0:
        return 1
    if value <= 1e-3:
        return 2
    if value > 1e9:
        return 123
    return math.ceil(10 * math.log10(value) - 1e-12) + 32


def test_the_workers_buckets_are_the_migrations_buckets() -> None:
    """pipeline.worker.metrics_aggregate.bucket_of (0-based) fills the histograms this file
    checks against SQL (1-based): the same bucket for values across the whole range."""
    values = [-1.0, 0.0, 1e-6, 1e-3, 0.00126, 0.5, 1.0, 1.2589, 3.7, 99.99, 1e5, 9.9e8, 1e9, 2e9]
    values += [10 ** (e / 37) for e in range(-111, 333)]
    for value in values:
        assert bucket_of(value) + 1 == bucket(value), value


def bounds(k: int) -> tuple[float, float]:
    """(lower, upper] of bucket k; infinite ends for the open buckets."""
    lower = -math.inf if k == 1 else 0.0 if k == 2 else 10 ** ((k - 33) / 10)
    upper = 0.0 if k == 1 else math.inf if k == 123 else 10 ** ((k - 32) / 10)
    return lower, upper


def histogram(values: Sequence[float]) -> list[int]:
    counts = [0] * 123
    for v in values:
        counts[bucket(v) - 1] += 1
    return counts


def true_quantile(values: Sequence[float], q: float) -> float:
    """The ceil(q * n)-th smallest value (the smallest for q = 0)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


async def quantile(conn: Any, q: float, values: Sequence[float]) -> float:
    result: float = await conn.fetchval(
        "SELECT metric_quantile($1, $2::bigint[], $3, $4)",
        q,
        histogram(values),
        min(values),
        max(values),
    )
    return result


def distributions() -> dict[str, list[float]]:
    rng = random.Random(13)
    return {
        "uniform": [float(i) for i in range(1, 10_001)],
        "lognormal": [rng.lognormvariate(3, 1.5) for _ in range(5_000)],
        "decades": [10 ** rng.uniform(-2.5, 8.5) for _ in range(5_000)],
        "bimodal": [rng.gauss(20, 2) for _ in range(900)]
        + [rng.gauss(5_000, 300) for _ in range(100)],
        "with_zero_and_negative": [float(v) for v in range(-50, 1_000)],
        "constant": [42.0] * 100,
    }  # fmt: skip


@pytest.mark.asyncio
async def test_metric_quantile_stays_within_the_documented_bound(pg: asyncpg.Connection) -> None:
    for name, values in distributions().items():
        vmin, vmax = min(values), max(values)
        for q in (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0):
            estimate = await quantile(pg, q, values)
            truth = true_quantile(values, q)
            # The estimate lies in the truth's bucket, clamped to [min, max] ...
            lower, upper = bounds(bucket(truth))
            lower, upper = max(lower, vmin), min(upper, vmax)
            tolerance = 1e-9 * max(1.0, abs(truth))  # float power() in SQL and Python
            assert lower - tolerance <= estimate <= upper + tolerance, (name, q, estimate, truth)
            # ... which is within 26 % of the truth for values in (0.001, 1e9].
            if truth > 1e-3:
                assert abs(estimate - truth) <= 0.259 * truth, (name, q, estimate, truth)
            else:
                assert abs(estimate - truth) <= max(1e-3, -vmin), (name, q, estimate, truth)
        assert await quantile(pg, 0.0, values) == vmin
        assert await quantile(pg, 1.0, values) == vmax
    assert await quantile(pg, 0.5, [42.0] * 100) == 42.0


@pytest.mark.asyncio
async def test_metric_quantile_edges(pg: asyncpg.Connection) -> None:
    empty = [0] * 123
    assert await pg.fetchval("SELECT metric_quantile(0.5, $1::bigint[], 0, 1)", empty) is None
    # Without min/max the open buckets answer their finite bound.
    huge = [0] * 122 + [5]
    assert await pg.fetchval("SELECT metric_quantile(0.5, $1, NULL, NULL)", huge) == 1e9
    negative = [5] + [0] * 122
    assert await pg.fetchval("SELECT metric_quantile(0.5, $1, NULL, NULL)", negative) == 0
    assert await pg.fetchval("SELECT metric_quantile(0.5, $1, -10, -2)", negative) == -6
    with pytest.raises(asyncpg.InvalidParameterValueError, match="between 0 and 1"):
        await pg.fetchval("SELECT metric_quantile(1.5, $1, 0, 1)", empty)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="123 bucket counts"):
        await pg.fetchval("SELECT metric_quantile(0.5, '{1,2,3}', 0, 1)")


@pytest.mark.asyncio
async def test_histogram_add_and_sum(pg: asyncpg.Connection) -> None:
    a, b = histogram([1.0, 2.0, 500.0]), histogram([2.0, 1e10, -1.0])
    assert await pg.fetchval("SELECT histogram_add($1, $2)", a, b) == [
        x + y for x, y in zip(a, b, strict=True)
    ]
    assert await pg.fetchval("SELECT histogram_add(NULL, $1)", b) == b
    assert await pg.fetchval("SELECT histogram_add($1, NULL)", a) == a
    assert await pg.fetchval("SELECT histogram_add(NULL, NULL)") is None
    with pytest.raises(asyncpg.InvalidParameterValueError, match="cannot be added"):
        await pg.fetchval("SELECT histogram_add('{1,2}', '{1,2,3}')")
    rows = [histogram([float(i)]) for i in range(1, 200)]
    await pg.execute("CREATE TEMP TABLE hourly (h bigint[])")
    await pg.executemany("INSERT INTO hourly VALUES ($1)", [(r,) for r in rows])
    summed = await pg.fetchval("SELECT histogram_sum(h) FROM hourly")
    assert summed == [sum(col) for col in zip(*rows, strict=True)]
    assert await pg.fetchval("SELECT histogram_total($1)", summed) == 199


# ------------------------------------------------------------------------------------------
# metric_series
# ------------------------------------------------------------------------------------------

D20 = datetime(2026, 11, 20, tzinfo=UTC)
SERIES = {
    # (service, instance, unit, tags) -> base value
    ("api", "i-1", "ms", '{"region": "eu"}'): 100.0,
    ("api", "i-1", "ms", '{"region": "us"}'): 300.0,
    ("api", "i-2", "ms", '{"region": "eu"}'): 50.0,
    ("db", "", "ms", "{}"): 5.0,
}


def hour_values(base: float, hour: int) -> list[float]:
    rng = random.Random(f"{base}-{hour}")
    return [rng.expovariate(1 / (base * (1 + hour % 5))) for _ in range(20 + hour)]


async def load_series(conn: Any) -> dict[tuple[Any, ...], list[float]]:
    """30 hours (D20 00:00 .. D21 06:00) of metric 'request.latency' for four series, and
    one of another metric; returns the raw values per (series, hour)."""
    await conn.execute("SELECT ensure_partition('performance_metrics', $1, $1)", D20)
    raw: dict[tuple[Any, ...], list[float]] = {}
    rows = []
    for key, base in SERIES.items():
        for h in range(30):
            values = hour_values(base, h)
            window = D20 + h * HOUR
            raw[(*key, window)] = values
            rows.append(("request.latency", *key, window, values))
    rows.append(("queue.depth", "api", "i-1", "1", "{}", D20, [3.0, 4.0]))
    await conn.executemany(
        "INSERT INTO performance_metrics (name, service, instance, unit, tags, time_window, "
        "sample_count, value_sum, value_min, value_max, histogram) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)",
        [(n, s, i, u, t, w, len(v), sum(v), min(v), max(v), histogram(v))
         for n, s, i, u, t, w, v in rows],
    )  # fmt: skip
    return raw


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.asyncio
async def test_metric_series_by_hour_and_by_day(pg: asyncpg.Connection) -> None:
    raw = await load_series(pg)
    end = D20 + 30 * HOUR

    hourly = await pg.fetch("SELECT * FROM metric_series('request.latency', $1, $2)", D20, end)
    assert len(hourly) == 4 * 30  # every series and hour, no series merged with another
    for r in hourly:
        values = raw[(r["service"], r["instance"], r["unit"], r["tags"], r["time_window"])]
        assert r["sample_count"] == len(values)
        assert close(r["value_avg"], sum(values) / len(values))
        assert (r["value_min"], r["value_max"]) == (min(values), max(values))
        assert r["p95"] == await quantile(pg, 0.95, values)

    daily = await pg.fetch(
        "SELECT * FROM metric_series('request.latency', $1, $2, 'day')", D20, end
    )
    assert len(daily) == 4 * 2
    assert {r["time_window"] for r in daily} == {D20, D20 + DAY}
    for r in daily:
        hours = 24 if r["time_window"] == D20 else 6  # D21 holds only 00:00..06:00
        values = [
            v
            for h in range(hours)
            for v in raw[(r["service"], r["instance"], r["unit"], r["tags"],
                          r["time_window"] + h * HOUR)]
        ]  # fmt: skip
        assert r["sample_count"] == len(values)
        assert close(r["value_avg"], sum(values) / len(values))
        assert (r["value_min"], r["value_max"]) == (min(values), max(values))
        # The day's histogram is the sum of its hourly histograms: the same estimates as
        # from the day's raw values, within the bound of the true percentiles.
        for q, column in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            assert r[column] == await quantile(pg, q, values)
            assert abs(r[column] - true_quantile(values, q)) <= 0.259 * true_quantile(values, q)

    # One service; a range starting mid-day covers only the day's hours inside it.
    db = await pg.fetch(
        "SELECT * FROM metric_series('request.latency', $1, $2, 'day', 'db')", D20 + 20 * HOUR, end
    )
    assert [(r["time_window"], r["service"], r["sample_count"]) for r in db] == [
        (D20, "db", sum(20 + h for h in range(20, 24))),
        (D20 + DAY, "db", sum(20 + h for h in range(24, 30))),
    ]
    other = await pg.fetch("SELECT * FROM metric_series('queue.depth', $1, $2, 'day')", D20, end)
    assert [(r["sample_count"], r["value_avg"], r["unit"]) for r in other] == [(2, 3.5, "1")]
    with pytest.raises(asyncpg.InvalidParameterValueError, match="resolution"):
        await pg.fetch("SELECT * FROM metric_series('queue.depth', $1, $2, 'week')", D20, end)


@pytest.mark.asyncio
async def test_performance_metrics_refuses_inconsistent_rows(pg: asyncpg.Connection) -> None:
    await pg.execute("SELECT ensure_partition('performance_metrics', $1, $1)", D20)
    insert = (
        "INSERT INTO performance_metrics (time_window, name, service, sample_count, value_sum, "
        "value_min, value_max, histogram) VALUES ($1, 'x', 'api', $2, 1, 1, 1, $3)"
    )
    with pytest.raises(asyncpg.CheckViolationError, match="performance_metrics_histogram"):
        await pg.execute(insert, D20, 2, histogram([1.0]))
    with pytest.raises(asyncpg.CheckViolationError, match="performance_metrics_hour"):
        await pg.execute(insert, D20 + timedelta(minutes=5), 1, histogram([1.0]))
    # The workers' upsert, as the writer: counts, sums, extremes and histograms merge.
    await pg.execute("SET ROLE pipeline_writer")
    upsert = (
        "INSERT INTO performance_metrics AS m (time_window, name, service, sample_count, "
        "value_sum, value_min, value_max, histogram) VALUES ($1, 'x', 'api', $2, $3, $4, $5, $6) "
        "ON CONFLICT (time_window, name, service, instance, unit, tags) DO UPDATE SET "
        "sample_count = m.sample_count + excluded.sample_count, "
        "value_sum = m.value_sum + excluded.value_sum, "
        "value_min = least(m.value_min, excluded.value_min), "
        "value_max = greatest(m.value_max, excluded.value_max), "
        "histogram = histogram_add(m.histogram, excluded.histogram)"
    )
    await pg.execute(upsert, D20, 2, 3.0, 1.0, 2.0, histogram([1.0, 2.0]))
    await pg.execute(upsert, D20, 1, 0.5, 0.5, 0.5, histogram([0.5]))
    row = await pg.fetchrow("SELECT * FROM performance_metrics WHERE name = 'x'")
    assert (row["sample_count"], row["value_sum"], row["value_min"], row["value_max"]) == (
        3, 3.5, 0.5, 2.0,
    )  # fmt: skip
    assert row["histogram"] == histogram([1.0, 2.0, 0.5])
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg.execute("DELETE FROM performance_metrics")


# ------------------------------------------------------------------------------------------
# audit_trail: append-only, self-audit
# ------------------------------------------------------------------------------------------


async def audit_rows(conn: Any, action: str, entity_id: str | None = None) -> list[Any]:
    return list(
        await conn.fetch(
            "SELECT * FROM audit_trail WHERE action = $1 AND ($2::text IS NULL OR entity_id = $2) "
            "ORDER BY recorded_at, event_id",
            action,
            entity_id,
        )
    )


async def insert_audit(conn: Any, organization_id: str | None, at: datetime | None = None) -> None:
    await conn.execute(
        "INSERT INTO audit_trail (occurred_at, event_id, actor, actor_type, action, "
        "entity_type, entity_id, organization_id, after) "
        "VALUES (coalesce($1, now()), $2, 'alice', 'user', 'analysis.deleted', 'analysis', "
        "'an-1', $3, '{\"deleted\": true}')",
        at,
        uuid.uuid4(),
        organization_id,
    )


@pytest.mark.asyncio
async def test_audit_trail_is_append_only_for_every_role(pg: asyncpg.Connection) -> None:
    await insert_audit(pg, "org-a")
    partition = await pg.fetchval("SELECT tableoid::regclass::text FROM audit_trail LIMIT 1")
    # A partition made after the migration gets the TRUNCATE trigger too.
    later = await pg.fetchval(
        "SELECT partition_name FROM ensure_partition('audit_trail', now() + interval '3 months')"
    )
    statements = [
        "UPDATE audit_trail SET actor = 'mallory'",
        "DELETE FROM audit_trail",
        "TRUNCATE audit_trail",
        f"UPDATE {partition} SET actor = 'mallory'",
        f"DELETE FROM {partition}",
        f"TRUNCATE {partition}",
        f"TRUNCATE {later}",
    ]
    for role in ("pipeline_writer", "pipeline_migrator", None):  # None: the superuser
        await pg.execute(f"SET ROLE {role}" if role else "RESET ROLE")
        for sql in statements:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                await pg.execute(sql)
            if role == "pipeline_writer":  # no such privilege
                assert "permission denied" in str(refused.value)
            else:  # the owner's privileges suffice: the trigger refuses
                assert "append-only" in str(refused.value)
    await pg.execute("RESET ROLE")
    assert await pg.fetchval("SELECT count(*) FROM audit_trail WHERE actor = 'alice'") == 1
    # The writer appends (the workers' audit events) and reads back.
    await pg.execute("SET ROLE pipeline_writer")
    await insert_audit(pg, "org-b")
    assert await pg.fetchval("SELECT count(*) FROM audit_trail WHERE actor = 'alice'") == 2


@pytest.mark.asyncio
async def test_partition_policy_and_analyst_scope_edits_are_audited(pg: asyncpg.Connection) -> None:
    login = await pg.fetchval("SELECT session_user")
    await pg.execute(
        "UPDATE partition_policies SET retention = interval '30 days' "
        "WHERE parent_table = 'system_logs'"
    )
    await pg.execute(  # changes nothing: not a change, not recorded
        "UPDATE partition_policies SET retention = interval '30 days' "
        "WHERE parent_table = 'system_logs'"
    )
    [row] = await audit_rows(pg, "partition_policy.updated", "system_logs")
    assert (row["actor"], row["actor_type"], row["source"], row["entity_type"]) == (
        login, "system", "pipeline", "partition_policy",
    )  # fmt: skip
    assert json.loads(row["before"])["retention"] == "14 days"
    assert json.loads(row["after"])["retention"] == "30 days"
    assert row["organization_id"] is None

    await pg.execute("INSERT INTO analyst_scopes VALUES ('pipeline_analyst', 'org-a')")
    await pg.execute("DELETE FROM analyst_scopes WHERE organization_id = 'org-a'")
    [inserted] = await audit_rows(pg, "analyst_scope.inserted", "pipeline_analyst/org-a")
    assert inserted["before"] is None
    assert json.loads(inserted["after"]) == {
        "role_name": "pipeline_analyst",
        "organization_id": "org-a",
    }
    [deleted] = await audit_rows(pg, "analyst_scope.deleted", "pipeline_analyst/org-a")
    assert deleted["after"] is None and json.loads(deleted["before"])["organization_id"] == "org-a"

    await pg.execute("SET ROLE pipeline_migrator")  # the owner edits too: recorded the same
    await pg.execute(
        "INSERT INTO partition_policies (parent_table, partition_column, granularity, "
        "retention) VALUES ('scratch', 'at', 'day', interval '1 day')"
    )
    await pg.execute("DELETE FROM partition_policies WHERE parent_table = 'scratch'")
    assert len(await audit_rows(pg, "partition_policy.inserted", "scratch")) == 1
    assert len(await audit_rows(pg, "partition_policy.deleted", "scratch")) == 1


@pytest.mark.asyncio
async def test_creating_a_partition_is_audited_once(pg: asyncpg.Connection) -> None:
    await pg.execute("SET ROLE pipeline_writer")  # the workers create partitions on demand
    march = datetime(2026, 3, 5, tzinfo=UTC)
    row = await pg.fetchrow("SELECT * FROM ensure_partition('api_usage', $1, $2)", march, NOW)
    assert tuple(row) == ("api_usage_p202603", True)
    row = await pg.fetchrow("SELECT * FROM ensure_partition('api_usage', $1, $2)", march, NOW)
    assert tuple(row) == ("api_usage_p202603", False)
    await pg.execute("RESET ROLE")
    [audit] = await audit_rows(pg, "partition.created", "api_usage_p202603")
    assert audit["entity_type"] == "partition" and audit["source"] == "pipeline"
    after = json.loads(audit["after"])
    assert after["parent_table"] == "api_usage"
    assert datetime.fromisoformat(after["range_start"]) == datetime(2026, 3, 1, tzinfo=UTC)
    assert datetime.fromisoformat(after["range_end"]) == datetime(2026, 4, 1, tzinfo=UTC)

    # Beyond retention: nothing created, nothing recorded.
    row = await pg.fetchrow(
        "SELECT * FROM ensure_partition('system_logs', $1, $2)",
        datetime(2026, 1, 1, tzinfo=UTC),
        NOW,
    )
    assert tuple(row) == (None, False)
    assert await audit_rows(pg, "partition.created", "system_logs_p20260101") == []


@pytest.mark.asyncio
async def test_an_audit_partition_recording_itself_terminates(pg: asyncpg.Connection) -> None:
    """ensure_partition('audit_trail') -> pipeline_audit -> ensure_partition('audit_trail',
    now()) -> pipeline_audit ...: stops once the partition of now() exists."""
    current = await pg.fetchval(
        "SELECT partition_table_name('audit_trail', 'month', "
        "(partition_bounds('month', now())).range_start)"
    )
    await pg.execute(f"DROP TABLE {current}")  # DDL: append-only is about rows
    ahead = await pg.fetchval(
        "SELECT partition_name FROM ensure_partition('audit_trail', now() + interval '2 months')"
    )
    assert await pg.fetchval("SELECT to_regclass($1) IS NOT NULL", current)
    created = {r["entity_id"] for r in await audit_rows(pg, "partition.created")}
    assert created == {ahead, current}
    assert await pg.fetchval("SELECT count(*) FROM audit_trail") == 2


@pytest.mark.asyncio
async def test_migrations_applied_and_rolled_back_are_audited(
    fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(SQL_DIR, directory)
    (directory / "9990_probe.up.sql").write_text("CREATE TABLE probe (id int);\n")
    (directory / "9990_probe.down.sql").write_text("DROP TABLE probe;\n")
    probe = discover(directory)[-1]
    conn = await asyncpg.connect(fresh_database.url)
    try:
        runner = MigrationRunner(conn, directory, applied_by="tests")
        await runner.up()
        applied = [r["entity_id"] for r in await audit_rows(conn, "migration.applied")]
        # Recorded from 0009 on: the earlier ones ran before the audit trail existed.
        assert applied == [
            "0009_monitoring_tables", "0010_monitoring_grants", "0011_ranking_rollups",
            "0012_api_keys", "9990_probe",
        ]  # fmt: skip
        [row] = await audit_rows(conn, "migration.applied", "9990_probe")
        assert row["entity_type"] == "migration" and row["actor_type"] == "system"
        assert json.loads(row["after"]) == {"version": 9990, "checksum": probe.checksum}

        await runner.down()
        [row] = await audit_rows(conn, "migration.rolled_back", "9990_probe")
        assert json.loads(row["after"]) == {"version": 9990, "checksum": probe.checksum}
        # Rolling back 0009 (after the later ones) takes the audit trail with it; the runner copes.
        await runner.down(to=8)
        assert await conn.fetchval("SELECT to_regclass('audit_trail')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 8
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------
# analysis_lifecycle: merge and derived state
# ------------------------------------------------------------------------------------------

RANK = {"queued": 1, "processing": 2, "fallback": 3, "failed": 4, "completed": 5}


def entry(at_ms: int, status: str, actor: str | None, model: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "at_ms": at_ms,
        "status": status,
        "actor": actor,
        "model_type": model,
    }


def ordered(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique = {e["event_id"]: e for e in entries}
    return sorted(unique.values(), key=lambda e: (e["at_ms"], RANK[e["status"]], e["event_id"]))


async def upsert(
    conn: Any, analysis_id: str, entries: list[dict[str, Any]], org: str | None = "org-a"
) -> None:
    """One flush's lifecycle statement (the workers' own SQL) over ``entries``, staged as
    the workers stage analysis rows."""
    rows = [
        (e["at_ms"], uuid.UUID(e["event_id"]), "user-1", org, None, e["status"],
         e["model_type"], None, None, 0, 0, 0, 0, None, None, None, False, False, None, 1,
         False, None, None, analysis_id, e["actor"])
        for e in entries
    ]  # fmt: skip
    async with conn.transaction():
        await conn.execute(ANALYSES._prepare_sql)
        names = [name for name, _ in ANALYSES.columns]
        await conn.copy_records_to_table(ANALYSES.stage, records=rows, columns=names)
        await conn.execute(LIFECYCLE.format(stage=ANALYSES.stage))


def as_ts(at_ms: int) -> datetime:
    return EPOCH + at_ms * MS


BASE_MS = int((NOW - EPOCH) / MS)
CHANGES = [
    entry(BASE_MS, "queued", "alice", "gpt_4o"),
    entry(BASE_MS + 2_000, "processing", "worker-1", "gpt_4o"),
    entry(BASE_MS + 2_000, "processing", "worker-9", "gpt_4o"),  # same instant and status
    entry(BASE_MS + 3_000, "failed", "worker-1", "gpt_4o"),
    entry(BASE_MS + 3_000, "queued", "scheduler", "claude_sonnet"),  # ranks before failed
    entry(BASE_MS + 4_000, "processing", "worker-2", "claude_sonnet"),
    entry(BASE_MS + 9_000, "processing", "worker-3", "claude_sonnet"),  # ranks before completed
    entry(BASE_MS + 9_000, "completed", "worker-2", "claude_sonnet"),
]


@pytest.mark.asyncio
async def test_any_order_and_any_duplicates_give_the_same_lifecycle(pg: asyncpg.Connection) -> None:
    rng = random.Random(2026)
    await pg.execute("SET ROLE pipeline_writer")  # the workers' privileges suffice
    ids = []
    for n in range(40):
        changes = [*CHANGES, *rng.sample(CHANGES, rng.randint(0, len(CHANGES)))]  # duplicates
        rng.shuffle(changes)
        cuts = sorted(rng.sample(range(1, len(changes)), rng.randint(0, 4)))
        ids.append(analysis_id := f"an-{n:02d}")
        for start, end in zip([0, *cuts], [*cuts, len(changes)], strict=True):
            await upsert(pg, analysis_id, changes[start:end])  # one flush each
    await pg.execute("RESET ROLE")

    expected = ordered(CHANGES)
    assert [e["status"] for e in expected] == [
        "queued", "processing", "processing", "queued", "failed", "processing", "processing",
        "completed",
    ]  # fmt: skip
    rows = await pg.fetch("SELECT * FROM analysis_lifecycle ORDER BY analysis_id")
    assert [r["analysis_id"] for r in rows] == ids
    for r in rows:
        assert json.loads(r["modification_history"]) == expected
        assert (r["status"], r["model_type"], r["created_by"], r["modified_by"]) == (
            "completed", "claude_sonnet", "alice", "worker-2",
        )  # fmt: skip
        assert (r["status_at"], r["first_seen_at"], r["change_count"]) == (
            as_ts(BASE_MS + 9_000), as_ts(BASE_MS), len(CHANGES),
        )  # fmt: skip
        assert (r["organization_id"], r["user_id"]) == ("org-a", "user-1")
    # The merge itself: commutative, idempotent, deduplicating.
    a, b = json.dumps(CHANGES[:5]), json.dumps(CHANGES[3:])
    assert await pg.fetchval(
        "SELECT analysis_history_merge($1, $2) = analysis_history_merge($2, $1) "
        "AND analysis_history_merge($1, $2) = analysis_history_merge("
        "analysis_history_merge($1, $2), $2)",
        a,
        b,
    )
    assert json.loads(await pg.fetchval("SELECT analysis_history_merge($1, $2)", a, b)) == expected


@pytest.mark.asyncio
async def test_an_older_state_change_does_not_change_the_current_status(
    pg: asyncpg.Connection,
) -> None:
    done = entry(BASE_MS + 60_000, "completed", "worker-1", "gpt_4o")
    await upsert(pg, "late", [done])
    await upsert(pg, "late", [entry(BASE_MS, "queued", "alice", "gpt_4o")], org=None)
    await upsert(pg, "late", [entry(BASE_MS + 5_000, "processing", "worker-1", "gpt_4o")])
    row = await pg.fetchrow("SELECT * FROM analysis_lifecycle WHERE analysis_id = 'late'")
    assert (row["status"], row["status_at"], row["modified_by"]) == (
        "completed", as_ts(BASE_MS + 60_000), "worker-1",
    )  # fmt: skip
    # ... but it is the analysis's first change now.
    assert (row["first_seen_at"], row["created_by"], row["change_count"]) == (
        as_ts(BASE_MS), "alice", 3,
    )  # fmt: skip
    assert row["organization_id"] == "org-a"  # a change without an organization keeps it
    with pytest.raises(asyncpg.CheckViolationError, match="history is empty"):
        await pg.execute(
            "INSERT INTO analysis_lifecycle (analysis_id, modification_history, status, "
            "status_at, first_seen_at, change_count) VALUES ('x', '[]', 'queued', now(), now(), 1)"
        )


# ------------------------------------------------------------------------------------------
# analysis_lifecycle: analyst functions, retention
# ------------------------------------------------------------------------------------------


def percentile_cont(values: list[float], q: float) -> float:
    ordered_values = sorted(values)
    position = q * (len(ordered_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered_values) - 1)
    return ordered_values[low] + (ordered_values[high] - ordered_values[low]) * (position - low)


async def load_lifecycles(conn: Any) -> None:
    """Five analyses: a0 done, a1 retried on another model then done, a2 still queued, a3
    still processing (all first seen on D20, org-a but a1 of org-b), a4 first seen a day
    earlier."""
    t = int((D20 - EPOCH) / MS)
    histories: dict[str, list[tuple[int, str, str]]] = {  # seconds after D20, status, model
        "a0": [(0, "queued", "m1"), (10, "processing", "m1"), (70, "completed", "m1")],
        "a1": [(0, "queued", "m1"), (30, "processing", "m1"), (40, "failed", "m1"),
               (41, "queued", "m2"), (61, "processing", "m2"), (100, "completed", "m2")],
        "a2": [(5, "queued", "m1")],
        "a3": [(0, "queued", "m1"), (20, "processing", "m1")],
        "a4": [(-86_400, "queued", "m1"), (-86_000, "completed", "m1")],
    }  # fmt: skip
    for analysis_id, changes in histories.items():
        await upsert(
            conn,
            analysis_id,
            [entry(t + seconds * 1_000, status, "w", model) for seconds, status, model in changes],
            org="org-b" if analysis_id == "a1" else "org-a",
        )


@pytest.mark.asyncio
async def test_lifecycle_analyst_functions_count_analyses(pg: asyncpg.Connection) -> None:
    await load_lifecycles(pg)
    day = (D20, D20 + DAY)
    counts = await pg.fetch("SELECT * FROM analysis_status_counts($1, $2)", *day)
    assert [tuple(r) for r in counts] == [("queued", 1), ("processing", 1), ("completed", 2)]

    progress = await pg.fetch("SELECT * FROM analyses_in_progress()")
    assert [(r["status"], r["analyses"], r["oldest_since"], r["oldest_analysis_id"])
            for r in progress] == [
        ("queued", 1, D20 + 5 * timedelta(seconds=1), "a2"),
        ("processing", 1, D20 + 20 * timedelta(seconds=1), "a3"),
    ]  # fmt: skip
    assert all(r["longest_wait"] > timedelta(0) for r in progress)

    times = {
        r["status"]: r
        for r in await pg.fetch("SELECT * FROM analysis_time_in_status($1, $2)", *day)
    }
    # Closed intervals only, summed per analysis: a1 waited twice (30 s + 20 s).
    expected = {
        "queued": [10_000, 50_000, 20_000],  # a0, a1, a3 (a2 is still waiting)
        "processing": [60_000, 49_000],  # a0, a1 (a3 is still running)
        "failed": [1_000],  # a1
    }
    assert list(times) == ["queued", "processing", "failed"]
    for status, values in expected.items():
        r = times[status]
        assert (r["analyses"], r["total_ms"]) == (len(values), sum(values))
        assert r["p50_ms"] == pytest.approx(percentile_cont([float(v) for v in values], 0.5))
        assert r["p95_ms"] == pytest.approx(percentile_cont([float(v) for v in values], 0.95))
    assert times["queued"]["p95_ms"] == pytest.approx(47_000)

    changes = await pg.fetch("SELECT * FROM analysis_model_changes($1, $2)", *day)
    summary = [
        (r["analysis_id"], r["models"], r["model_switches"], r["change_count"]) for r in changes
    ]
    assert summary == [("a1", ["m1", "m2"], 1, 6)]

    intervals = await pg.fetch(
        "SELECT i.* FROM analysis_lifecycle l, analysis_status_intervals(l.modification_history) i "
        "WHERE l.analysis_id = 'a0'"
    )
    assert [(r["status"], r["duration_ms"]) for r in intervals] == [
        ("queued", 10_000), ("processing", 60_000), ("completed", None),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_prune_deletes_lifecycles_older_than_the_analyses(pg: asyncpg.Connection) -> None:
    old = int((datetime(2026, 7, 1, tzinfo=UTC) - EPOCH) / MS)
    await upsert(pg, "old", [entry(old, "queued", "u", "m"), entry(old + 1, "completed", "w", "m")])
    # First seen long ago, but changed recently: its latest change is still kept.
    await upsert(pg, "long", [entry(old, "queued", "u", "m"), entry(BASE_MS, "failed", "w", "m")])
    await upsert(pg, "new", [entry(BASE_MS, "queued", "u", "m")])

    # ai_analysis keeps 90 days: at NOW the cut-off is 2026-08-24 10:30.
    would = await partitions.prune(pg, now=NOW, dry_run=True)
    assert would.lifecycle_rows == 1
    assert await pg.fetchval("SELECT count(*) FROM analysis_lifecycle") == 3
    await pg.execute("SET ROLE pipeline_writer")  # the workers may look, not delete
    assert (await partitions.prune(pg, now=NOW, dry_run=True)).lifecycle_rows == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg.fetchval("SELECT prune_analysis_lifecycle($1)", NOW)
    await pg.execute("RESET ROLE")

    done = await partitions.prune(pg, now=NOW)
    assert done.lifecycle_rows == 1
    left = await pg.fetch("SELECT analysis_id FROM analysis_lifecycle ORDER BY 1")
    assert [r[0] for r in left] == ["long", "new"]
    assert await pg.fetchval("SELECT prune_analysis_lifecycle($1)", NOW) == 0
    assert (await partitions.prune(pg, now=NOW)).lifecycle_rows == 0


@pytest.mark.asyncio
async def test_prune_records_each_detach_and_drop(pg: asyncpg.Connection) -> None:
    await partitions.ensure(pg, now=datetime(2026, 6, 1, tzinfo=UTC))
    dropped = await partitions.prune(pg, now=NOW)
    assert len(dropped) > 10
    for action in ("partition.detached", "partition.dropped"):
        rows = {r["entity_id"]: r for r in await audit_rows(pg, action)}
        assert sorted(rows) == sorted(p.partition_name for p in dropped)
        for part in dropped:
            row = rows[part.partition_name]
            after = json.loads(row["after"])
            assert after["parent_table"] == part.parent_table
            assert datetime.fromisoformat(after["range_start"]) == part.range_start
            assert datetime.fromisoformat(after["range_end"]) == part.range_end
            assert (row["entity_type"], row["source"]) == ("partition", "pipeline")


# ------------------------------------------------------------------------------------------
# Row-level security and privileges
# ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_analysts_see_their_organization_of_audit_trail_and_lifecycles(
    pg: asyncpg.Connection,
) -> None:
    for org in ("org-a", "org-b", None):
        await insert_audit(pg, org)
    await load_lifecycles(pg)
    await upsert(pg, "no-org", [entry(int((D20 - EPOCH) / MS), "queued", "u", "m1")], org=None)
    await pg.execute("INSERT INTO analyst_scopes VALUES ('pipeline_analyst', 'org-a')")
    await load_series(pg)

    async def seen() -> dict[str, set[str | None]]:
        return {
            "audit": {r[0] for r in await pg.fetch("SELECT organization_id FROM audit_trail")},
            "lifecycle": {
                r[0] for r in await pg.fetch("SELECT organization_id FROM analysis_lifecycle")
            },
            "counts": {
                r[0]
                for r in await pg.fetch(
                    "SELECT l.organization_id FROM analysis_model_changes($1, $2) l",
                    D20 - DAY,
                    D20 + DAY,
                )
            },
        }

    everything = await seen()
    assert everything["audit"] == {"org-a", "org-b", None}
    assert everything["lifecycle"] == {"org-a", "org-b", None}

    await pg.execute("SET ROLE pipeline_analyst")
    assert await pg.fetchval("SELECT set_analyst_organization('org-a')") == "org-a"
    assert await seen() == {"audit": {"org-a"}, "lifecycle": {"org-a"}, "counts": set()}
    counts = await pg.fetch("SELECT * FROM analysis_status_counts($1, $2)", D20, D20 + DAY)
    assert sum(r["analyses"] for r in counts) == 3  # a0, a2, a3 (a1 is org-b's)
    assert await pg.fetchval("SELECT set_analyst_organization('org-b')") is None  # not allowed
    assert await seen() == {"audit": set(), "lifecycle": set(), "counts": set()}
    # Metrics are not tenant data: every series, whatever the binding.
    assert await pg.fetchval("SELECT count(*) FROM performance_metrics") == 4 * 30 + 1
    for sql in (
        "INSERT INTO audit_trail (occurred_at, event_id, actor, actor_type, action, "
        "entity_type, entity_id) VALUES (now(), gen_random_uuid(), 'x', 'user', 'a', 'b', 'c')",
        "SELECT pipeline_audit('x', 'y', 'z')",
        "SELECT prune_analysis_lifecycle(now())",
        "DELETE FROM analysis_lifecycle",
        "INSERT INTO performance_samples (recorded_at, event_id, name, service, value) "
        "VALUES (now(), gen_random_uuid(), 'n', 's', 1)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pg.execute(sql)
    await pg.execute("RESET ROLE")

    await pg.execute("SET ROLE pipeline_analyst_all")
    assert await seen() == everything
    assert await pg.fetchval("SELECT count(*) FROM performance_samples") == 0
    await pg.execute("RESET ROLE")


# ------------------------------------------------------------------------------------------
# The down migration
# ------------------------------------------------------------------------------------------

# What fingerprint() leaves out: ownership, grants, SECURITY DEFINER and search paths,
# triggers, policies, row-level security, storage parameters.
CATALOG = """
SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_userbyid(p.proowner) || ' '
       || p.prosecdef || ' ' || coalesce(p.proconfig::text, '') || ' '
       || coalesce(p.proacl::text, '') || ' ' || md5(p.prosrc)
FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace
UNION ALL
SELECT 'relation ' || c.relname || ' ' || pg_get_userbyid(c.relowner) || ' '
       || coalesce(c.relacl::text, '') || ' ' || c.relrowsecurity || ' '
       || coalesce(c.reloptions::text, '')
FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.polrelid::regclass || ' ' || p.polname || ' '
       || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
FROM pg_policy p
"""


async def snapshot(conn: Any) -> list[str]:
    return sorted([*await fingerprint(conn), *(r[0] for r in await conn.fetch(CATALOG))])


@pytest.mark.asyncio
async def test_up_down_up_restores_0008_exactly(fresh_database: DatabaseConfig) -> None:
    conn = await asyncpg.connect(fresh_database.url)
    try:
        runner = MigrationRunner(conn, SQL_DIR, applied_by="tests")
        await runner.up(to=8)
        at_8 = await snapshot(conn)
        await runner.up()
        first = await snapshot(conn)
        assert any("audit_trail" in line for line in first)
        for _ in range(2):
            assert [m.version for m in await runner.down(to=8)] == [12, 11, 10, 9]
            assert await snapshot(conn) == at_8
            await runner.up()
            assert await snapshot(conn) == first
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_a_repeated_event_id_keeps_the_same_copy_whatever_the_flushes(
    pg: asyncpg.Connection,
) -> None:
    """Two copies of one event_id that differ (a producer bug): the first flush's insert
    and a later merge keep the same copy, so the row does not depend on arrival."""
    first = entry(BASE_MS, "queued", "zed", "gpt_4o")
    other = {**first, "actor": "amy"}
    later = entry(BASE_MS + 1_000, "completed", "worker-1", "gpt_4o")
    await upsert(pg, "together", [first, other, later])
    await upsert(pg, "apart-1", [first])
    await upsert(pg, "apart-1", [other, later])
    await upsert(pg, "apart-2", [other])
    await upsert(pg, "apart-2", [later, first])
    rows = await pg.fetch(
        "SELECT analysis_id, modification_history, created_by FROM analysis_lifecycle "
        "WHERE analysis_id IN ('together', 'apart-1', 'apart-2')"
    )
    assert len(rows) == 3
    assert len({r["modification_history"] for r in rows}) == 1, rows
    assert {r["created_by"] for r in rows} == {"amy"}  # the smaller entry (jsonb order) wins
