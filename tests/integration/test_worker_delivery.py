"""The worker end to end: what the generator produced is exactly what PostgreSQL holds."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.contract import EventKind, Reason
from pipeline.kafka import client_options
from pipeline.workload import ExpectedTotals, WorkloadSpec, generate, pack
from tests.integration.harness import Pipeline, headers_of

NOW_MS = int(time.time() * 1000)


def assert_same(expected: ExpectedTotals, actual: ExpectedTotals, stack: Pipeline) -> None:
    """PostgreSQL holds ``expected``, plus what the broker holds twice because the test's
    producer retried (:attr:`Pipeline.broker_copies`): the pipeline counts the broker's
    records exactly once, and a non-idempotent producer's retry is a record of its own."""
    differences = stack.expect(expected).compare(actual, include_invalid=False)
    copies = f"broker copies: {len(stack.broker_copies)} items\n"
    assert differences == [], "\n".join(differences[:20]) + "\n" + copies + stack.logs()


@pytest.mark.parametrize("shape", ["batched", "single"])
@pytest.mark.asyncio
async def test_happy_path_counts_every_event_once(stack: Pipeline, shape: str) -> None:
    spec = WorkloadSpec(api_calls=2_000 if shape == "single" else 6_000, start_ms=NOW_MS)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    worker = stack.start_worker()
    await stack.produce(items, shape=shape)
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)
    assert expected.api_requests == spec.api_calls

    status, body = worker.get("/readyz")
    assert status == 200, body
    status, metrics = worker.get("/metrics")
    assert status == 200
    assert (
        f'pipeline_events_consumed_total{{topic="{stack.topics.topic(EventKind.API_CALL)}"}} '
        in metrics
    )
    assert await stack.dead_letters(idle_s=1.0) == []


@pytest.mark.asyncio
async def test_poison_records_reach_the_dead_letter_topic_once_each(stack: Pipeline) -> None:
    spec = WorkloadSpec(api_calls=3_000, start_ms=NOW_MS, invalid_fraction=0.05)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    stack.start_worker()
    await stack.produce(items, shape="batched")
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)

    letters = await stack.dead_letters()
    keys = [m.key for m in letters]
    assert len(keys) == len(set(keys)), "a dead letter was published twice"
    by_reason: dict[Reason, int] = {}
    for message in letters:
        headers = headers_of(message)
        by_reason[Reason(headers["x-reason"])] = by_reason.get(Reason(headers["x-reason"]), 0) + 1
        assert headers["x-source-topic"] in stack.topics.source_topics
        assert int(headers["x-source-offset"]) >= 0
        assert headers["x-worker-id"] == "w1"
        assert headers["x-detail"]
    assert by_reason == expected.invalid_by_reason
    assert set(by_reason) >= set(Reason) - {Reason.BEYOND_RETENTION, Reason.REJECTED_BY_DATABASE}


@pytest.mark.asyncio
async def test_late_events_land_in_their_hour_and_duplicates_are_stored_once(
    stack: Pipeline,
) -> None:
    spec = WorkloadSpec(
        api_calls=3_000, start_ms=NOW_MS, late_fraction=0.3, duplicate_fraction=0.2, seed=7
    )
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    assert spec.duplicates > 0 and spec.late > 0
    stack.start_worker()
    # Late events first in their own records, then the rest: buckets of hours long closed.
    await stack.produce(items, shape="batched", max_events=200)
    await stack.wait_applied()
    actual = await stack.totals()
    assert_same(expected, actual, stack)
    assert min(hour for _, hour in actual.api) < NOW_MS - 7 * 24 * 3_600_000

    # The same records again (a producer retry of whole records): new offsets, same
    # event_ids: analyses and logs are stored once; API calls add up as new calls.
    conn = await stack.connect()
    try:
        rows_before = await conn.fetchval("SELECT count(*) FROM ai_analysis")
    finally:
        await conn.close()
    analyses = [i for i in items if i.kind.value == "analysis"]
    await stack.produce(analyses, shape="batched")
    await stack.wait_applied()
    conn = await stack.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM ai_analysis") == rows_before
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_the_harness_expects_what_its_producer_wrote_twice(stack: Pipeline) -> None:
    """A retried produce request whose acknowledgement was lost leaves a first copy at an
    offset the producer never heard of: the harness reads it back and expects it."""
    items = [i for i in generate(WorkloadSpec(api_calls=30, start_ms=NOW_MS))
             if i.kind is EventKind.API_CALL]  # fmt: skip
    record = next(pack(items, "batched", max_events=10))
    topic = stack.topic_of(EventKind.API_CALL)
    producer = AIOKafkaProducer(**client_options(stack.kafka), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, record.value, partition=0)  # ack "lost"
        retried = await producer.send_and_wait(topic, record.value, partition=0)
    finally:
        await producer.stop()
    copied = items[: record.events]
    await stack._find_copies({(topic, 0): {retried.offset}}, {}, {record.value: copied})
    assert stack.broker_copies == copied
    expected = ExpectedTotals.of(copied)
    assert stack.expect(expected).api_requests == 2 * expected.api_requests
