"""EventProducer during a broker outage, over a fake aiokafka client: records that fail
transiently are kept and sent again, ``send`` waits at the memory cap, nothing accepted
is dropped silently, and ``close(timeout_s=...)`` reports what it could not deliver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)

from pipeline.producer import (
    DeliveryError,
    EventProducer,
    Record,
    RecordBuffer,
    TransientDeliveryError,
)
from tests.unit.test_producer_client import KAFKA, TOPICS, api_call, producer


@dataclass
class Metadata:
    topic: str
    partition: int
    offset: int


class FakeClient:
    """aiokafka's producer surface: ``up`` decides each send's outcome when it is sent."""

    def __init__(self) -> None:
        self.up = True
        self.refuse: Callable[[bytes], bool] = lambda value: False
        self.written: list[bytes] = []
        self.attempts = 0
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes) -> asyncio.Future[Any]:
        self.attempts += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refuse(value):
            future.set_exception(MessageSizeTooLargeError())
        elif self.up:
            self.written.append(value)
            future.set_result(Metadata(topic, 0, len(self.written) - 1))
        else:
            future.set_exception(KafkaConnectionError("broker down"))
        return future


def started_producer(client: FakeClient, **options: Any) -> EventProducer:
    return producer(client=client, linger_ms=0, **options)


@pytest.mark.asyncio
async def test_records_are_kept_through_an_outage_and_delivered_once_it_ends() -> None:
    client = FakeClient()
    p = started_producer(client)
    await p.start()
    client.up = False
    for _ in range(5):
        await p.send(api_call())
    await asyncio.sleep(0.35)  # several failed attempts, with backoff
    assert client.written == []
    assert p.buffered_events == 5
    client.up = True
    await asyncio.wait_for(p.flush(), 10)
    assert p.events_acked == 5
    assert p.records_resent >= 1
    await p.close()


@pytest.mark.asyncio
async def test_send_waits_at_the_memory_cap_during_an_outage() -> None:
    client = FakeClient()
    p = started_producer(client, max_record_events=1, max_buffered_events=3)
    await p.start()
    client.up = False
    for _ in range(3):
        await p.send(api_call())
    blocked = asyncio.ensure_future(p.send(api_call()))
    await asyncio.sleep(0.3)
    assert not blocked.done()  # backpressure: nothing is dropped to make room
    client.up = True
    await asyncio.wait_for(blocked, 10)
    await p.close()
    assert p.events_acked == 4


@pytest.mark.asyncio
async def test_close_with_a_timeout_reports_every_undelivered_record() -> None:
    client = FakeClient()
    p = started_producer(client, max_record_events=2)
    await p.start()
    client.up = False
    for _ in range(5):
        await p.send(api_call())
    with pytest.raises(TransientDeliveryError) as caught:
        await p.close(timeout_s=0.3)
    error = caught.value
    assert error.retriable
    assert error.events == 5
    assert sum(r.events for r in error.undelivered) == 5
    assert {r.topic for r in error.undelivered} == {TOPICS.sources[next(iter(TOPICS.sources))]}
    assert all(r.value.startswith(b"[") for r in error.undelivered)
    assert client.stopped


@pytest.mark.asyncio
async def test_a_refused_record_is_not_retried_and_flush_reports_it() -> None:
    client = FakeClient()
    client.refuse = lambda value: True
    p = started_producer(client)
    await p.start()
    await p.send(api_call())
    with pytest.raises(DeliveryError) as caught:
        await asyncio.wait_for(p.flush(), 5)
    assert not caught.value.retriable
    assert client.attempts == 1
    await p.close()


def test_the_fake_matches_the_module_constants() -> None:
    assert KAFKA.idempotent_producer is False


@pytest.mark.asyncio
async def test_one_topic_failing_while_others_flow_backs_off_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient()
    calls_topic = TOPICS.sources[next(iter(TOPICS.sources))]
    failing = {"on": True}
    failed_attempts = [0]
    original = client.send

    async def send(topic: str, value: bytes) -> asyncio.Future[Any]:
        if topic == calls_topic and failing["on"]:
            failed_attempts[0] += 1
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(KafkaConnectionError("partition leader away"))
            return future
        return await original(topic, value)

    client.send = send  # type: ignore[method-assign]
    p = started_producer(client)
    await p.start()
    with caplog.at_level("INFO", logger="pipeline.producer.client"):
        await p.send(api_call())
        for _ in range(20):
            await p.send_raw("logs", b'{"x":1}')
            await asyncio.sleep(0.05)
        attempts = failed_attempts[0]
        failing["on"] = False
        await asyncio.wait_for(p.flush(), 10)
    assert attempts <= 6  # backoff grows although other records succeed meanwhile
    warnings = [r for r in caplog.records if "did not acknowledge" in r.getMessage()]
    assert len(warnings) == 1
    await p.close()


@pytest.mark.asyncio
async def test_an_unknown_topic_fails_instead_of_waiting_forever() -> None:
    client = FakeClient()

    async def send(topic: str, value: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(UnknownTopicOrPartitionError())
        return future

    client.send = send  # type: ignore[method-assign]
    p = started_producer(client)
    await p.start()
    await p.send(api_call())
    with pytest.raises(DeliveryError):
        await asyncio.wait_for(p.flush(), 5)
    await p.close()


def test_records_sent_again_keep_their_sealing_order() -> None:
    buffer = RecordBuffer(max_record_events=1, linger_s=0)

    async def fill() -> list[Record]:
        for n in range(4):
            await buffer.put_raw("t", b"%d" % n)
        return buffer.take_ready()

    taken = asyncio.run(fill())
    for record in taken:  # failures arrive in order; each goes back to the queue
        buffer.requeue(record)
    assert [r.value for r in buffer.take_ready()] == [b"0", b"1", b"2", b"3"]
