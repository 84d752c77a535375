"""The worker under failure: crashes mid-flush, rebalances, a PostgreSQL outage, bad rows.

Every test ends by comparing PostgreSQL with the generator's exact totals: nothing lost,
nothing counted twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.contract import EventKind, Reason
from pipeline.workload import ExpectedTotals, Item, WorkloadSpec, generate
from tests.conftest import PgAdmin
from tests.integration.harness import Pipeline, headers_of
from tests.integration.test_worker_delivery import assert_same

NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000
SMALL_FLUSHES: dict[str, Any] = {
    "flush_max_events": 1000,
    "flush_max_records": 40,
    "flush_interval_ms": 100,
}


# A worker backend inside a flush: it holds the watermark rows of its batch locked
# (offsets.lock) and its transaction is on to another statement (the write or the
# advance). Start-up transactions (partitions, adopting a start) do not qualify.
IN_FLUSH = """
SELECT count(*) FROM pg_stat_activity AS a
WHERE a.datname = current_database() AND a.application_name = 'pipeline-worker'
  AND a.backend_xid IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_locks AS l
              WHERE l.pid = a.pid AND l.relation = 'ingest_offsets'::regclass
                AND l.mode = 'RowShareLock')
"""

WORKER_BACKENDS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'pipeline-worker'
"""


async def wait_for_open_transaction(stack: Pipeline, timeout_s: float = 60) -> bool:
    """Wait until a worker of this test's database is inside a flush transaction."""
    conn = await stack.connect()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await conn.fetchval(IN_FLUSH):
                return True
            await asyncio.sleep(0.005)
        return False
    finally:
        await conn.close()


async def wait_for_no_worker_backends(stack: Pipeline, timeout_s: float = 30) -> None:
    """Wait until PostgreSQL has ended the sessions of killed workers (a backend outlives
    its client until it notices), so that the next kill is aimed at the next worker."""
    conn = await stack.connect()
    try:
        deadline = time.monotonic() + timeout_s
        while await conn.fetchval(WORKER_BACKENDS):
            assert time.monotonic() < deadline, "killed workers' sessions did not end"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.asyncio
async def test_sigkill_in_the_middle_of_flushes_loses_and_doubles_nothing(
    stack: Pipeline, connections: int
) -> None:
    """With several connections per flush, a kill lands while some sub-flushes have
    committed and others have not: each partition's watermark says which."""
    spec = WorkloadSpec(api_calls=12_000, start_ms=NOW_MS, invalid_fraction=0.01)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    await stack.produce(items, shape="batched", max_events=25)
    kills_mid_transaction = 0
    for _ in range(3):
        await wait_for_no_worker_backends(stack)
        worker = stack.start_worker(**SMALL_FLUSHES, flush_connections=connections)
        if await wait_for_open_transaction(stack):
            worker.signal(signal.SIGKILL)
            kills_mid_transaction += 1
        worker.wait(30)
    assert kills_mid_transaction >= 2, stack.logs()
    stack.start_worker(**SMALL_FLUSHES, flush_connections=connections)
    await stack.wait_applied(timeout_s=180)
    assert_same(expected, await stack.totals(), stack)


@pytest.mark.parametrize("connections", [1, 2])
@pytest.mark.asyncio
async def test_workers_joining_and_leaving_mid_stream(stack: Pipeline, connections: int) -> None:
    spec = WorkloadSpec(api_calls=15_000, start_ms=NOW_MS)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    third = len(items) // 3
    first = stack.start_worker("first", **SMALL_FLUSHES, flush_connections=connections)
    stack.start_worker("second", **SMALL_FLUSHES, flush_connections=connections)
    await stack.produce(items[:third], shape="batched", max_events=20)
    await wait_for_open_transaction(stack)
    stack.start_worker(
        "third", **SMALL_FLUSHES, flush_connections=connections
    )  # joins: a rebalance
    await stack.produce(items[third : 2 * third], shape="batched", max_events=20)
    await asyncio.sleep(2)
    first.signal(signal.SIGTERM)  # leaves gracefully: another rebalance
    await stack.produce(items[2 * third :], shape="batched", max_events=20)
    await stack.wait_applied(timeout_s=180)
    assert first.wait(60) == 0, first.log_tail()
    assert_same(expected, await stack.totals(), stack)
    conn = await stack.connect()
    try:
        writers = await conn.fetch(
            "SELECT DISTINCT updated_by FROM ingest_offsets WHERE consumer_group = $1",
            stack.group,
        )
    finally:
        await conn.close()
    assert {r["updated_by"] for r in writers} <= {"first", "second", "third"}


@pytest.mark.asyncio
async def test_postgresql_outage_stalls_the_worker_and_loses_nothing(
    stack: Pipeline, pg_admin: PgAdmin
) -> None:
    if pg_admin.embedded is None:
        pytest.skip("needs the embedded PostgreSQL, which the test can stop and start")
    spec = WorkloadSpec(api_calls=6_000, start_ms=NOW_MS)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    half = len(items) // 2
    worker = stack.start_worker()
    await stack.produce(items[:half])
    await stack.wait_applied()

    pg_admin.embedded.stop_server()
    try:
        await stack.produce(items[half:])
        deadline = time.monotonic() + 30
        status, ready = worker.get("/readyz")
        while status == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status, ready = worker.get("/readyz")
        assert status == 503, ready
        await asyncio.sleep(3)  # several seconds of outage, with retries
        _, metrics = worker.get("/metrics")
        assert "pipeline_database_available 0.0" in metrics
        retries = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("pipeline_flush_retries_total{")
        ]
        assert sum(retries) >= 2
    finally:
        pg_admin.embedded.start_server()
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)
    status, _ = worker.get("/readyz")
    assert status == 200
    assert worker.running  # stalled, never crashed


def event(kind: EventKind, **fields: object) -> Item:
    base: dict[str, object] = {"event_id": fields.pop("event_id"), "type": kind.value}
    base.update(fields)
    return Item(kind, base)


@pytest.mark.asyncio
async def test_retention_on_demand_partitions_and_rows_postgresql_rejects(
    stack: Pipeline,
) -> None:
    ids = iter(f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 100))
    analysis = {"model_type": "gpt_4o", "status": "completed", "request_tokens": 10}
    items = [
        # 10 days old: older than the pre-created window, so its partition is made on demand.
        event(EventKind.ANALYSIS, event_id=next(ids), occurred_at=NOW_MS - 10 * DAY_MS,
              **analysis),
        # 100 days old: beyond ai_analysis' 90-day retention.
        event(EventKind.ANALYSIS, event_id=next(ids), occurred_at=NOW_MS - 100 * DAY_MS,
              **analysis),
        # PostgreSQL cannot store a NUL character: rejected by the database, alone.
        event(EventKind.ANALYSIS, event_id=next(ids), occurred_at=NOW_MS, error_type="a\x00b",
              **analysis),
        event(EventKind.ANALYSIS, event_id=next(ids), occurred_at=NOW_MS, **analysis),
        # 20 days old: beyond system_logs' 14-day retention.
        event(EventKind.SYSTEM_LOG, event_id=next(ids), occurred_at=NOW_MS - 20 * DAY_MS,
              level="info", service="auth", message="old"),
        # Three years old: beyond api_usage's 25 months.
        event(EventKind.API_CALL, event_id=next(ids), occurred_at=NOW_MS - 3 * 365 * DAY_MS,
              service="auth", endpoint="/v1/x", method="GET", success=True, response_time_ms=5),
    ]  # fmt: skip
    stack.start_worker()
    await stack.produce(items, shape="batched")
    await stack.wait_applied()

    conn = await stack.connect()
    try:
        stored = await conn.fetch("SELECT event_id::text FROM ai_analysis ORDER BY 1")
        partition = await conn.fetchval(
            "SELECT partition_name FROM partition_ranges "
            "WHERE parent_table = 'ai_analysis' AND range_start <= $1 AND range_end > $1",
            datetime.fromtimestamp((NOW_MS - 10 * DAY_MS) / 1000, tz=UTC),
        )
    finally:
        await conn.close()
    assert [r["event_id"] for r in stored] == [
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000004",
    ]
    assert partition is not None

    letters = {orjson.loads(m.value)["event_id"]: headers_of(m) for m in await stack.dead_letters()}
    reasons = {eid[-2:]: h["x-reason"] for eid, h in letters.items()}
    assert reasons == {
        "02": Reason.BEYOND_RETENTION,
        "03": Reason.REJECTED_BY_DATABASE,
        "05": Reason.BEYOND_RETENTION,
        "06": Reason.BEYOND_RETENTION,
    }
    assert "PostgreSQL refused" in letters["00000000-0000-4000-8000-000000000003"]["x-detail"]
