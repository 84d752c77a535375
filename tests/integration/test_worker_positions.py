"""Where a worker starts, and what a rebalance does to a flush in flight.

PostgreSQL's watermark is the starting position: Kafka's committed offsets can be anywhere
(faust issue #606, an operator's reset, offset translation after a failover) and the
totals stay exact. A rebalance that catches a flush in the middle of its transaction
abandons it within the revoke timeout; the next owner starts from the watermark.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from pipeline.kafka import client_options
from pipeline.launch import WorkerProcess
from pipeline.workload import ExpectedTotals, WorkloadSpec, generate
from tests.integration.harness import Pipeline
from tests.integration.test_worker_delivery import assert_same
from tests.integration.test_worker_failures import wait_for_open_transaction

NOW_MS = int(time.time() * 1000)


async def commit_group_offsets(stack: Pipeline, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for the test's consumer group, as a tool or a bug would: as a
    member of the group (the broker refuses commits from outside a group)."""
    tps = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
    consumer = AIOKafkaConsumer(
        *sorted({tp.topic for tp in tps}),
        **client_options(stack.kafka),
        group_id=stack.group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not set(tps) <= consumer.assignment() and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=1)
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in tps.items()})
        for tp, offset in tps.items():
            assert await consumer.committed(tp) == offset
    finally:
        await consumer.stop()


async def until_logged(worker: WorkerProcess, text: str, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in worker.log_tail(400):
            return True
        await asyncio.sleep(0.2)
    return False


@pytest.mark.asyncio
async def test_kafka_offsets_committed_past_unapplied_records_lose_nothing(
    stack: Pipeline,
) -> None:
    spec = WorkloadSpec(api_calls=8_000, start_ms=NOW_MS, analyses_per_api_call=0.1)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    half = len(items) // 2
    worker = stack.start_worker()
    await stack.produce(items[:half], max_events=50)
    await stack.wait_applied()
    assert worker.stop() == 0

    # While no worker runs: the second half is produced, then the group's Kafka offsets
    # are committed to the end of every partition, past records nobody applied.
    await stack.produce(items[half:], max_events=50)
    await commit_group_offsets(stack, stack.acked)

    stack.start_worker("w2")
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)


@pytest.mark.asyncio
async def test_a_rebalance_during_a_flush_abandons_it_and_totals_stay_exact(
    stack: Pipeline,
) -> None:
    spec = WorkloadSpec(api_calls=6_000, start_ms=NOW_MS)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    first = stack.start_worker("first", revoke_timeout_ms=1000)
    assert first.wait_ready(), stack.logs()
    blocker = await stack.connect()
    try:
        # Every bucket upsert waits behind this lock: the first worker's flush stays in
        # the middle of its transaction (watermark rows locked) until the lock goes.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE api_usage IN EXCLUSIVE MODE")
        await stack.produce(items, max_events=100)
        assert await wait_for_open_transaction(stack), stack.logs()
        stack.start_worker("second", revoke_timeout_ms=1000)  # joins: a rebalance
        assert await until_logged(first, "abandoned", timeout_s=60), stack.logs()
        await tx.rollback()
    finally:
        await blocker.close()
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)
    assert all(w.running for w in stack.workers), stack.logs()
