"""Publishing a request's events (pipeline.http.publish): records packed per kind, and the
Publisher over a fake aiokafka producer whose acknowledgements the tests control: what
is acknowledged, what a failure or a timeout does to availability, and the retired client
that must never send what it still holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnrecognizedBrokerVersion,
)

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import EventKind
from pipeline.errors import BrokerUnreachableError, ConfigError
from pipeline.http import publish as publish_module
from pipeline.http.publish import Outcome, Publisher
from pipeline.producer import pack_arrays as pack
from tests.unit.worker_fakes import FakeClock as Clock

KAFKA = KafkaConfig(bootstrap_servers=("127.0.0.1:9",), idempotent_producer=False)
TOPICS = TopicsConfig()


def event(n: int, size: int = 20) -> bytes:
    """An encoded event of exactly ``size`` bytes (a JSON object)."""
    head = b'{"n":%d,"p":"' % n
    return head + b"x" * (size - len(head) - 2) + b'"}'


# --- pack -----------------------------------------------------------------------------------


def test_nothing_packs_into_nothing() -> None:
    assert list(pack([], 100)) == []


def test_events_that_fit_make_one_record() -> None:
    events = [(i, event(i)) for i in range(3)]
    [(record, positions)] = list(pack(events, 1000))
    assert record == b"[" + b",".join(e for _, e in events) + b"]"
    assert positions == [0, 1, 2]
    assert orjson.loads(record) == [orjson.loads(e) for _, e in events]


def test_records_are_at_most_max_bytes_and_keep_the_order() -> None:
    events = [(i * 2 + 1, event(i, 20 + i % 7)) for i in range(50)]
    max_bytes = 100
    records = list(pack(events, max_bytes))
    assert len(records) > 1
    for record, positions in records:
        assert len(record) <= max_bytes
        assert len(orjson.loads(record)) == len(positions)
    assert [p for _, positions in records for p in positions] == [p for p, _ in events]
    decoded = [e for record, _ in records for e in orjson.loads(record)]
    assert decoded == [orjson.loads(e) for _, e in events]


def test_a_record_is_filled_exactly_to_max_bytes() -> None:
    # Three 20-byte events: 2 + 20 * 3 + 2 commas = 64 bytes.
    events = [(i, event(i)) for i in range(4)]
    records = list(pack(events, 64))
    assert [len(r) for r, _ in records] == [64, 22]
    assert [p for _, p in records] == [[0, 1, 2], [3]]
    records = list(pack(events, 63))
    assert [len(r) for r, _ in records] == [43, 43]
    assert [p for _, p in records] == [[0, 1], [2, 3]]


def test_an_event_larger_than_a_record_gets_a_record_of_its_own() -> None:
    big = event(1, 500)
    events = [(0, event(0)), (1, big), (2, event(2))]
    records = list(pack(events, 100))
    assert [p for _, p in records] == [[0], [1], [2]]
    assert records[1][0] == b"[" + big + b"]"


def test_a_single_oversize_event_alone() -> None:
    big = event(7, 500)
    assert list(pack([(7, big)], 100)) == [(b"[" + big + b"]", [7])]


# --- Publisher ------------------------------------------------------------------------------


class FakeKafkaClient:
    def __init__(self) -> None:
        self.answer: bool | None = True  # None: the metadata request never returns
        self.asked = 0

    async def force_metadata_update(self) -> bool:
        self.asked += 1
        if self.answer is None:
            await asyncio.Event().wait()
        return bool(self.answer)


class FakeBatch:
    def __init__(self, accumulator: FakeAccumulator, future: asyncio.Future[Any]) -> None:
        self.accumulator = accumulator
        self.future = future

    def failure(self, exception: BaseException) -> None:
        self.accumulator.failed_with.append(exception)
        if not self.future.done():
            self.future.set_exception(exception)


class FakeAccumulator:
    """The parts of aiokafka's MessageAccumulator a retirement touches: unsent batches by
    partition, and the exception that makes later sends fail."""

    def __init__(self) -> None:
        self._batches: dict[str, list[FakeBatch]] = {}
        self._exception: BaseException | None = None
        self.failed_with: list[BaseException] = []


class FakeTask:
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


class FakeSender:
    def __init__(self) -> None:
        self.sender_task = FakeTask()


class FakeProducer:
    """aiokafka's AIOKafkaProducer surface the Publisher uses. ``respond(topic, value)``
    resolves each sent record's future at once (None: leave it to the test)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, asyncio.Future[Any]]] = []
        self.respond: Callable[[str, bytes], BaseException | None] | None = lambda t, v: None
        self.send_error: BaseException | None = None
        self.start_error: BaseException | None = None
        self.started = 0
        self.stopped = 0
        self.client = FakeKafkaClient()
        self._message_accumulator = FakeAccumulator()
        self._sender = FakeSender()

    async def start(self) -> None:
        self.started += 1
        # Started again (an injected client reused after a retirement): a fresh one.
        self._message_accumulator = FakeAccumulator()
        self._sender = FakeSender()
        if self.start_error is not None:
            raise self.start_error

    async def stop(self) -> None:
        self.stopped += 1

    async def send(self, topic: str, value: bytes) -> asyncio.Future[Any]:
        if self.send_error is not None:
            raise self.send_error
        if self._message_accumulator._exception is not None:
            raise self._message_accumulator._exception
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, value, future))
        if self.respond is None:  # unsent until the test resolves it
            batch = FakeBatch(self._message_accumulator, future)
            self._message_accumulator._batches.setdefault(topic, []).append(batch)
        else:
            error = self.respond(topic, value)
            if error is None:
                future.set_result(("metadata", topic))
            else:
                future.set_exception(error)
        return future


def publisher(
    fake: FakeProducer, *, clock: Clock | None = None, **options: Any
) -> tuple[Publisher, Clock]:
    clock = clock or Clock()
    options.setdefault("publish_timeout_s", 1.0)
    return Publisher(KAFKA, TOPICS, client=fake, clock=clock, **options), clock


def available(p: Publisher) -> bool:
    """``p.available`` read afresh (mypy narrows a property read twice in a row)."""
    return p.available


async def started(fake: FakeProducer, **options: Any) -> tuple[Publisher, Clock]:
    p, clock = publisher(fake, **options)
    await p.start()
    assert p.available
    return p, clock


def encoded(*kinds_and_positions: tuple[EventKind, list[int]]) -> dict[EventKind, Any]:
    return {kind: [(i, event(i)) for i in positions] for kind, positions in kinds_and_positions}


@pytest.mark.asyncio
async def test_all_acknowledged() -> None:
    fake = FakeProducer()
    p, _ = await started(fake, max_record_bytes=64)
    outcome = await p.publish(
        encoded((EventKind.API_CALL, [0, 2, 3, 5, 6]), (EventKind.SYSTEM_LOG, [1, 4]))
    )
    assert outcome == Outcome(acked={0, 1, 2, 3, 4, 5, 6}, failure=None, transient=True)
    topics = [t for t, _, _ in fake.sent]
    assert topics == ["api-calls", "api-calls", "system-logs"]  # 3 + 2 api calls, 2 logs
    assert all(len(v) <= 64 for _, v, _ in fake.sent)
    assert [e["n"] for e in orjson.loads(fake.sent[0][1])] == [0, 2, 3]
    assert available(p)
    await p.close()
    assert fake.stopped == 1


@pytest.mark.asyncio
async def test_every_kind_goes_to_its_topic() -> None:
    fake = FakeProducer()
    p, _ = await started(fake)
    outcome = await p.publish(encoded(*((kind, [i]) for i, kind in enumerate(EventKind))))
    assert outcome.acked == set(range(len(EventKind)))
    assert [t for t, _, _ in fake.sent] == [TOPICS.sources[k] for k in EventKind]


@pytest.mark.asyncio
async def test_nothing_to_publish_sends_nothing() -> None:
    fake = FakeProducer()
    p, _ = await started(fake)
    assert await p.publish({}) == Outcome()
    assert fake.sent == []


@pytest.mark.asyncio
async def test_a_publisher_not_started_fails_at_once() -> None:
    fake = FakeProducer()
    p, _ = publisher(fake)
    assert not available(p)
    outcome = await p.publish(encoded((EventKind.API_CALL, [0])))
    assert outcome.acked == set()
    assert outcome.failure is not None and outcome.transient
    assert fake.sent == []


@pytest.mark.asyncio
async def test_a_transient_failure_makes_the_broker_unavailable() -> None:
    fake = FakeProducer()
    p, _ = await started(fake, max_record_bytes=64)
    fake.respond = lambda topic, value: (
        KafkaConnectionError("broker went away") if topic == "system-logs" else None
    )
    outcome = await p.publish(
        encoded((EventKind.API_CALL, [0, 1, 2]), (EventKind.SYSTEM_LOG, [3, 4]))
    )
    assert outcome.acked == {0, 1, 2}
    assert outcome.failure is not None and "KafkaConnectionError" in outcome.failure
    assert outcome.transient is True
    assert not available(p)
    # Unavailable: the next request fails at once, without sending.
    sent = len(fake.sent)
    fake.respond = lambda topic, value: None
    again = await p.publish(encoded((EventKind.API_CALL, [0])))
    assert again.acked == set() and again.failure is not None and again.transient
    assert len(fake.sent) == sent
    # A probe that reaches the broker makes it available again (same client).
    assert await p.probe()
    assert available(p)
    assert fake.started == 1
    assert (await p.publish(encoded((EventKind.API_CALL, [0])))).acked == {0}


@pytest.mark.asyncio
async def test_a_retriable_broker_error_is_transient() -> None:
    fake = FakeProducer()
    p, _ = await started(fake)
    fake.respond = lambda topic, value: NotLeaderForPartitionError()
    outcome = await p.publish(encoded((EventKind.AUDIT, [0, 1])))
    assert outcome.acked == set()
    assert outcome.transient is True
    assert not available(p)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "error", [TopicAuthorizationFailedError(), RecordTooLargeError("too large")]
)
async def test_a_refusal_is_not_transient(error: BaseException) -> None:
    fake = FakeProducer()
    p, _ = await started(fake, max_record_bytes=64)
    fake.respond = lambda topic, value: error if topic == "system-logs" else None
    outcome = await p.publish(encoded((EventKind.API_CALL, [0]), (EventKind.SYSTEM_LOG, [1])))
    assert outcome.acked == {0}
    assert outcome.failure is not None and type(error).__name__ in outcome.failure
    assert outcome.transient is False
    assert available(p)  # the broker answered: a refusal says nothing about availability


@pytest.mark.asyncio
async def test_one_refusal_among_transient_failures_makes_it_not_transient() -> None:
    fake = FakeProducer()
    p, _ = await started(fake, max_record_bytes=64)
    fake.respond = lambda topic, value: (
        TopicAuthorizationFailedError() if topic == "audit-events" else KafkaConnectionError()
    )
    outcome = await p.publish(encoded((EventKind.API_CALL, [0]), (EventKind.AUDIT, [1])))
    assert outcome.acked == set()
    assert outcome.transient is False


@pytest.mark.asyncio
async def test_send_itself_failing() -> None:
    fake = FakeProducer()
    p, _ = await started(fake)
    fake.send_error = KafkaConnectionError("no metadata")
    outcome = await p.publish(encoded((EventKind.API_CALL, [0])))
    assert outcome.acked == set()
    assert outcome.failure is not None and "no metadata" in outcome.failure
    assert outcome.transient is True
    assert not available(p)
    fake.send_error = UnrecognizedBrokerVersion()
    assert await p.probe()
    outcome = await p.publish(encoded((EventKind.API_CALL, [0])))
    assert outcome.transient is False


@pytest.mark.asyncio
async def test_a_timeout_retires_the_client_and_later_requests_fail_at_once() -> None:
    fake = FakeProducer()
    fake.respond = None  # never acknowledged
    p, _ = await started(fake, publish_timeout_s=0.05)
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    outcome = await p.publish(encoded((EventKind.API_CALL, [0, 1]), (EventKind.AUDIT, [2])))
    assert loop.time() - started_at < 0.5
    assert outcome.acked == set()
    assert outcome.failure is not None and "did not acknowledge within 0.05s" in outcome.failure
    assert outcome.transient is True
    # Retired: whatever it holds is failed (never sent later), and it is stopped.
    failed_with = fake._message_accumulator.failed_with
    assert len(failed_with) == 2  # both unsent records
    assert all(isinstance(e, KafkaTimeoutError) for e in failed_with)
    assert fake._sender.sender_task.cancelled == 1  # nothing more is drained
    assert fake._message_accumulator._batches == {}
    assert all(f.done() for _, _, f in fake.sent)
    assert not available(p)
    await asyncio.sleep(0.01)
    assert fake.stopped == 1
    # The next request fails at once without calling send.
    sent = len(fake.sent)
    started_at = loop.time()
    again = await p.publish(encoded((EventKind.API_CALL, [0])))
    assert loop.time() - started_at < 0.04
    assert again.acked == set() and again.failure is not None and again.transient
    assert len(fake.sent) == sent
    await p.close()


@pytest.mark.asyncio
async def test_a_timeout_keeps_what_was_acknowledged_before_it() -> None:
    fake = FakeProducer()
    fake.respond = None
    p, _ = await started(fake, publish_timeout_s=0.05, max_record_bytes=64)
    task = asyncio.create_task(
        p.publish(encoded((EventKind.API_CALL, [0]), (EventKind.SYSTEM_LOG, [1])))
    )
    await asyncio.sleep(0.01)
    fake.sent[0][2].set_result("metadata")
    outcome = await task
    assert outcome.acked == {0}
    assert outcome.failure is not None and outcome.transient
    assert not available(p)


@pytest.mark.asyncio
async def test_a_probe_after_a_timeout_starts_a_new_client() -> None:
    fake = FakeProducer()
    fake.respond = None
    p, _ = await started(fake, publish_timeout_s=0.05)
    await p.publish(encoded((EventKind.API_CALL, [0])))
    assert not available(p)
    assert fake.started == 1
    fake.respond = lambda topic, value: None
    assert await p.probe()
    assert fake.started == 2  # Publisher(client=fake) starts the injected client again
    assert fake.client.asked == 0  # a start is the probe: no metadata request needed
    assert available(p)
    assert (await p.publish(encoded((EventKind.API_CALL, [0])))).acked == {0}
    await p.close()


@pytest.mark.asyncio
async def test_a_probe_of_an_unreachable_broker_keeps_it_unavailable() -> None:
    fake = FakeProducer()
    fake.respond = None
    p, _ = await started(fake, publish_timeout_s=0.05)
    await p.publish(encoded((EventKind.API_CALL, [0])))
    fake.start_error = KafkaConnectionError("connection refused")
    stopped = fake.stopped
    assert not await p.probe()
    assert not available(p)
    assert fake.stopped > stopped  # a client that failed to start is stopped
    fake.start_error = None
    assert await p.probe()
    assert available(p)


@pytest.mark.asyncio
async def test_a_probe_never_raises_when_a_new_client_is_refused() -> None:
    fake = FakeProducer()
    fake.respond = None
    p, _ = await started(fake, publish_timeout_s=0.05)
    await p.publish(encoded((EventKind.API_CALL, [0])))
    fake.start_error = UnrecognizedBrokerVersion("the broker restarted mid-handshake")
    assert await p.probe() is False
    assert not available(p)


@pytest.mark.asyncio
async def test_probes_keep_an_idle_broker_available() -> None:
    fake = FakeProducer()
    p, clock = await started(fake, silence_s=10.0)
    clock.advance(9.9)
    assert available(p)
    clock.advance(0.1)
    assert not available(p)  # silent for silence_s
    assert await p.probe()
    assert available(p)
    assert fake.client.asked == 1
    clock.advance(9.0)
    fake.client.answer = False
    assert not await p.probe()
    assert available(p)  # still within silence_s of the last answer
    clock.advance(1.0)
    assert not available(p)


@pytest.mark.asyncio
async def test_an_acknowledgement_counts_as_contact() -> None:
    fake = FakeProducer()
    p, clock = await started(fake, silence_s=10.0)
    clock.advance(9.0)
    assert (await p.publish(encoded((EventKind.API_CALL, [0])))).acked == {0}
    clock.advance(9.0)
    assert available(p)


@pytest.mark.asyncio
async def test_a_metadata_request_without_answer_is_a_failed_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publish_module, "_PROBE_TIMEOUT_S", 0.02)
    fake = FakeProducer()
    p, clock = await started(fake)
    fake.client.answer = None
    assert not await p.probe()
    clock.advance(10.0)
    assert not available(p)


@pytest.mark.asyncio
async def test_start_failures_are_classified() -> None:
    fake = FakeProducer()
    p, _ = publisher(fake)
    fake.start_error = KafkaConnectionError("refused")
    with pytest.raises(BrokerUnreachableError):
        await p.start()
    assert fake.stopped == 1
    assert not available(p)
    fake.start_error = UnrecognizedBrokerVersion()
    with pytest.raises(ConfigError):
        await p.start()
    assert fake.stopped == 2


@pytest.mark.asyncio
async def test_close_stops_the_client_once() -> None:
    fake = FakeProducer()
    p, _ = await started(fake)
    await p.close()
    await p.close()
    assert fake.stopped == 1
    assert not available(p)
