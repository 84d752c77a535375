"""The producer SDK and produce_workload against the real (embedded) broker.

Delivery is checked by consuming what arrived: Tansu's ListOffsets under-reports the end of
partitions written in multi-record batches, so end offsets are never used here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import Analysis, ApiCall, ContractError, Event, EventKind, SystemLog
from pipeline.embedded import EmbeddedBroker, free_port
from pipeline.kafka import client_options, ensure_topics
from pipeline.producer import (
    BrokerUnavailableError,
    EventProducer,
    ProducerClosedError,
    TransientDeliveryError,
    produce_workload,
    topic_for,
)
from pipeline.workload import ExpectedTotals, Shape, WorkloadSpec, generate
from tests.conftest import unique_topics

PARTITIONS = 3


async def new_topics(kafka: KafkaConfig) -> TopicsConfig:
    topics = unique_topics()
    names = [*topics.source_topics, topics.dead_letters]
    await ensure_topics(kafka, names, partitions=PARTITIONS)
    return topics


async def consume(
    kafka: KafkaConfig,
    topics: Iterable[str],
    *,
    until: int | None = None,
    until_value: bytes | None = None,
    timeout_s: float = 60.0,
) -> list[Any]:
    """Every record of ``topics`` from the start; stops once ``until`` records (or one whose
    value contains ``until_value``) arrived. ``timeout_s`` only bounds a failing test."""
    consumer = AIOKafkaConsumer(
        *topics,
        **client_options(kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(records)
            if until is not None and len(messages) >= until:
                break
            if until_value is not None and any(until_value in (m.value or b"") for m in messages):
                break
    finally:
        await consumer.stop()
    return messages


def events_in(messages: Iterable[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        value = orjson.loads(m.value)
        out += value if isinstance(value, list) else [value]
    return out


def sample_events(n: int) -> list[Event]:
    events: list[Event] = []
    for i in range(n):
        if i % 10 == 3:
            events.append(Analysis.new(model_type="gpt_4o", status="completed", request_tokens=i))
        elif i % 10 == 7:
            events.append(SystemLog.new(level="info", service="svc", message=f"line {i}"))
        else:
            events.append(
                ApiCall.new(
                    service="billing",
                    endpoint="/v1/invoices/{id}",
                    method="GET",
                    success=i % 50 != 0,
                    response_time_ms=i / 10,
                    tokens=i,
                )
            )
    return events


@pytest.mark.asyncio
async def test_n_events_sent_arrive_exactly_once(kafka: KafkaConfig) -> None:
    topics = await new_topics(kafka)
    events = sample_events(2500)
    async with EventProducer(kafka, topics, max_record_events=100) as producer:
        for event in events[:1000]:
            await producer.send(event)
        assert await producer.send_many(events[1000:]) == 1500
        await producer.flush()
        assert producer.events_acked == 2500
        acked = dict(producer.acked_offsets)
    names = list(topics.source_topics)
    messages = await consume(kafka, names, until=sum(acked.values()))
    arrived = events_in(messages)
    assert Counter(e["event_id"] for e in arrived) == Counter(e.event_id for e in events)
    by_topic = Counter(m.topic for m in messages for _ in orjson.loads(m.value))
    expected = Counter(topic_for(topics, e.kind) for e in events)
    assert by_topic == expected
    # what the broker acknowledged is what a consumer reads, partition by partition
    read: dict[tuple[str, int], int] = {}
    for m in messages:
        read[(m.topic, m.partition)] = max(read.get((m.topic, m.partition), 0), m.offset + 1)
    assert read == acked


@pytest.mark.asyncio
async def test_records_on_the_wire_respect_both_limits(kafka: KafkaConfig) -> None:
    topics = await new_topics(kafka)
    events = [e for e in sample_events(600) if isinstance(e, ApiCall)]
    async with EventProducer(kafka, topics, max_record_events=7, max_record_bytes=1500) as producer:
        await producer.send_many(events)
        sizes = {len(orjson.dumps(e.to_wire())) for e in events}
    assert max(sizes) * 7 > 1500  # so the byte limit bites before the event limit
    records = sum(producer.acked_offsets.values())  # fresh topics: offsets start at 0
    messages = await consume(kafka, [topics.topic(EventKind.API_CALL)], until=records)
    assert len(messages) == records
    for m in messages:
        value = orjson.loads(m.value)
        assert isinstance(value, list)
        assert 1 <= len(value) <= 7
        assert len(m.value) <= 1500
    assert sorted(e["event_id"] for e in events_in(messages)) == sorted(e.event_id for e in events)


@pytest.mark.asyncio
async def test_an_invalid_event_raises_and_nothing_is_sent(kafka: KafkaConfig) -> None:
    topics = await new_topics(kafka)
    good = sample_events(20)
    bad = dataclasses.replace(good[0], event_id="not-a-uuid")
    async with EventProducer(kafka, topics) as producer:
        with pytest.raises(ContractError, match="event_id"):
            await producer.send(bad)
        with pytest.raises(ContractError, match="event_id"):
            await producer.send_many([*good, bad])
        await producer.flush()
        marker = ApiCall.new(
            service="marker", endpoint="/m", method="GET", success=True, response_time_ms=1
        )
        await producer.send(marker)
    messages = await consume(kafka, list(topics.source_topics), until_value=b'"marker"')
    assert [e["event_id"] for e in events_in(messages)] == [marker.event_id]


@pytest.mark.asyncio
async def test_closing_flushes_what_is_buffered(kafka: KafkaConfig) -> None:
    topics = await new_topics(kafka)
    events = sample_events(30)
    # a linger far longer than the test: only close() can send these
    async with EventProducer(kafka, topics, linger_ms=600_000) as producer:
        await producer.send_many(events)
        assert producer.buffered_events == 30
    assert producer.events_acked == 30
    records = sum(producer.acked_offsets.values())
    messages = await consume(kafka, list(topics.source_topics), until=records)
    assert sorted(e["event_id"] for e in events_in(messages)) == sorted(e.event_id for e in events)


@pytest.mark.asyncio
async def test_close_delivers_what_was_sent_and_refuses_sends_still_waiting(
    kafka: KafkaConfig,
) -> None:
    topics = await new_topics(kafka)
    events = [e for e in sample_events(200) if isinstance(e, ApiCall)]
    producer = EventProducer(
        kafka, topics, max_record_events=10, max_buffered_events=20, linger_ms=600_000
    )
    await producer.start()
    sent: list[str] = []

    async def send_all() -> None:
        for event in events:
            await producer.send(event)
            sent.append(event.event_id)

    task = asyncio.create_task(send_all())
    await asyncio.sleep(0)  # it sends until the buffer is full, then waits for room
    await producer.close()
    with pytest.raises(ProducerClosedError):
        await task
    assert 0 < len(sent) < len(events)
    records = sum(producer.acked_offsets.values())
    messages = await consume(kafka, [topics.topic(EventKind.API_CALL)], until=records)
    assert sorted(e["event_id"] for e in events_in(messages)) == sorted(sent)


@pytest.mark.asyncio
async def test_backpressure_bounds_what_is_buffered(kafka: KafkaConfig) -> None:
    topics = await new_topics(kafka)
    events = [e for e in sample_events(3000) if isinstance(e, ApiCall)]
    highest = 0
    async with EventProducer(
        kafka, topics, max_record_events=50, max_buffered_events=200
    ) as producer:
        for event in events:
            await producer.send(event)
            highest = max(highest, producer.buffered_events)
        await producer.flush()
        assert producer.events_acked == len(events)
    assert highest <= 200


@pytest.mark.asyncio
@pytest.mark.parametrize("shape", ["batched", "single"])
async def test_produce_workload_delivers_every_item_as_generated(
    kafka: KafkaConfig, shape: Shape
) -> None:
    topics = await new_topics(kafka)
    spec = WorkloadSpec(
        seed=11,
        api_calls=1500,
        start_ms=1_790_000_000_000,
        invalid_fraction=0.05,
        duplicate_fraction=0.1,
        late_fraction=0.1,
    )
    seen: list[tuple[int, int]] = []
    report = await produce_workload(
        kafka, topics, spec, shape=shape, max_record_events=200, progress=lambda *a: seen.append(a)
    )
    items = list(generate(spec))
    assert report.items == len(items) == spec.total_items
    assert seen[-1] == (len(items), len(items))
    assert report.totals.to_json() == ExpectedTotals.of(items).to_json()

    messages = await consume(kafka, list(topics.source_topics), until=report.record_count)
    assert len(messages) == report.record_count
    read: dict[tuple[str, int], int] = {}
    for m in messages:
        read[(m.topic, m.partition)] = max(read.get((m.topic, m.partition), 0), m.offset + 1)
    assert read == report.acked_offsets

    for kind in EventKind:
        topic = topic_for(topics, kind)
        mine = [i for i in items if i.kind is kind]
        raw = Counter(i.raw or b"" for i in mine if i.event is None)
        expected_events = Counter(orjson.dumps(i.event) for i in mine if i.event is not None)
        arrived_raw: Counter[bytes] = Counter()
        arrived_events: Counter[bytes] = Counter()
        for m in messages:
            if m.topic != topic:
                continue
            value = m.value or b""
            if raw[value] > arrived_raw[value]:  # a poison record, byte for byte
                arrived_raw[value] += 1
                continue
            decoded = orjson.loads(value)
            for element in decoded if isinstance(decoded, list) else [decoded]:
                arrived_events[orjson.dumps(element)] += 1
            if shape == "batched":
                assert isinstance(decoded, list) and len(decoded) <= 200
        assert arrived_raw == raw, kind
        assert arrived_events == expected_events, kind


@pytest.mark.asyncio
async def test_an_unreachable_broker_is_a_retriable_error() -> None:
    kafka = KafkaConfig(bootstrap_servers=(f"127.0.0.1:{free_port()}",), idempotent_producer=False)
    producer = EventProducer(kafka, TopicsConfig())
    with pytest.raises(BrokerUnavailableError) as caught:
        await producer.start()
    assert caught.value.retriable


@pytest.mark.asyncio
async def test_records_the_broker_never_acknowledged_are_reported_by_close_with_a_timeout(
    tmp_path: Any,
) -> None:
    """The broker is gone for good: the producer keeps the records (retrying) instead of
    dropping them, and ``close(timeout_s)`` hands back every one of them."""
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    broker.start()
    try:
        kafka = broker.kafka_config()
        topics = await new_topics(kafka)
        producer = EventProducer(kafka, topics, request_timeout_ms=1500)
        await producer.start()
        await producer.send_many(sample_events(10))
        await producer.flush()
        broker.stop()
        await producer.send_many(sample_events(10))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(producer.flush(), 3)  # waits for the broker: no loss
        with pytest.raises(TransientDeliveryError) as caught:
            await asyncio.wait_for(producer.close(timeout_s=3), 60)
        assert caught.value.retriable and caught.value.events == 10
        assert sum(r.events for r in caught.value.undelivered) == 10
    finally:
        broker.stop()
