"""Fakes for the worker's stage tests: no network, no Kafka, no PostgreSQL.

- :class:`FakeClock`: an injectable ``monotonic``/``clock`` that moves only when told.
- :func:`api_call_values` / :func:`decoded`: record values and decoded records of the
  standard workload (``generate`` + ``pack``), so the events are the real contract's.
- :class:`FakeFlusher`: the engine's write stage (``Flush``), optionally gated or failing.
- :class:`FakeSource`: the engine's consume stage (``Source``), scripted poll by poll.
- :class:`FakeConsumer`: the part of ``AIOKafkaConsumer`` that ``SourceConsumer`` uses, over
  in-memory partition logs, with aiokafka's behaviours that matter here: a paused partition
  returns nothing, and a record batch that cannot be decoded raises from the middle of
  ``getmany`` after the positions of the partitions drained before it moved (their records
  are lost with the exception, as in aiokafka's fetcher).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException

from pipeline.config import KafkaConfig
from pipeline.contract import EventKind
from pipeline.worker.batch import Batch, Record, Rejected
from pipeline.worker.flush import FlushResult
from pipeline.workload import Item, Shape, WorkloadSpec, generate, pack

START_MS = 1_767_225_600_000
"""The workload's run start: every generated event occurred in the 6 hours before it."""
NOW_S = START_MS / 1000
TOPIC = "api-calls"
KAFKA = KafkaConfig(bootstrap_servers=("localhost:9092",))

Fetched = dict[Any, list[Any]]  # TopicPartition -> records, as Source.poll returns


class FakeClock:
    """A clock that stands still until :meth:`advance` (for ``monotonic=`` / ``clock=``)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def spin(rounds: int = 10) -> None:
    """Let ready tasks run (flush completions, background positioning) without waiting."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], timeout_s: float = 1.0) -> None:
    """Wait (in 1 ms steps) until ``condition()``; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


# -- events and records -----------------------------------------------------------------------
@functools.cache
def _api_call_items() -> tuple[Item, ...]:
    spec = WorkloadSpec(
        api_calls=400, start_ms=START_MS, analyses_per_api_call=0.0, logs_per_api_call=0.0
    )
    return tuple(i for i in generate(spec) if i.kind is EventKind.API_CALL)


def api_call_values(count: int, events: int = 1, shape: Shape = "batched") -> list[bytes]:
    """``count`` record values of valid API calls, ``events`` per record (batched arrays)."""
    needed = count * (events if shape == "batched" else 1)
    items = _api_call_items()
    assert needed <= len(items)
    values = [r.value for r in pack(items[:needed], shape, max_events=events)]
    assert len(values) == count
    return values


def decoded(partition: int, offset: int, value: bytes | None) -> Record:
    """The worker's decode stage for one API-call record."""
    return Record.decode(EventKind.API_CALL, partition, offset, START_MS, value, now_ms=START_MS)


def records(partition: int, offsets: Iterable[int], events: int = 1) -> list[Record]:
    """Decoded records of valid API calls at ``offsets`` of ``partition``."""
    wanted = list(offsets)
    values = api_call_values(len(wanted), events)
    return [decoded(partition, o, v) for o, v in zip(wanted, values, strict=True)]


@dataclass(frozen=True)
class Message:
    """A fetched Kafka record (what ``SourceRecord`` describes)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int = START_MS


def messages(tp: TopicPartition, offsets: Iterable[int], events: int = 1) -> list[Message]:
    wanted = list(offsets)
    values = api_call_values(len(wanted), events)
    return [Message(tp.topic, tp.partition, o, v) for o, v in zip(wanted, values, strict=True)]


def offsets_of(batch: Batch) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in batch.records]


# -- the engine's write stage -----------------------------------------------------------------
class FakeFlusher:
    """``Flush`` for the engine: records batches and seeds; waits for ``gate`` when set."""

    healthy: bool

    def __init__(
        self, *, gate: asyncio.Event | None = None, error: BaseException | None = None
    ) -> None:
        self.healthy = True
        self.gate = gate
        self.error = error
        self.batches: list[Batch] = []
        self.finished: list[Batch] = []
        self.seeds: list[tuple[int, int]] = []
        self.forgotten: list[int] = []
        self.cancelled = 0

    async def flush(self, batch: Batch) -> FlushResult:
        self.batches.append(batch)
        try:
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        self.finished.append(batch)
        return flush_result(batch)

    def seed(self, partition: int, offset: int) -> None:
        self.seeds.append((partition, offset))

    def forget(self, partitions: Collection[int]) -> None:
        self.forgotten.extend(partitions)


def flush_result(batch: Batch) -> FlushResult:
    """What a successful flush of ``batch`` returns: every partition's next offset."""
    events = batch.event_count
    return FlushResult(len(batch), events, 0, 0, events, 1, batch.next_offsets())


class UntouchablePool:
    """A PostgreSQL pool the flush must not use (every record is below the watermark)."""

    def acquire(self) -> Any:
        raise AssertionError("the flush must not touch PostgreSQL")


class UntouchableSink:
    """A dead-letter sink the flush must not use."""

    async def publish(self, source_topic: str, items: Sequence[tuple[Record, Rejected]]) -> None:
        raise AssertionError("the flush must not publish dead letters")


# -- the engine's consume stage ---------------------------------------------------------------
Step = Fetched | Callable[[], Awaitable[Fetched]]


class FakeSource:
    """``Source`` for the engine, scripted: each poll takes the next step (a fetched dict, or
    an async callable run inside the poll, e.g. a rebalance). Once the steps are used up it
    returns nothing, and after ``idle_polls`` such polls calls ``on_idle`` (e.g. stop)."""

    def __init__(
        self,
        steps: Iterable[Step] = (),
        *,
        on_idle: Callable[[], None] | None = None,
        idle_polls: int = 20,
        highwaters: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self.steps = list(steps)
        self.on_idle = on_idle
        self.idle_polls = idle_polls
        self.idle = 0
        self.highwaters = dict(highwaters or {})
        self.held: set[str] = set()
        self.transitions: list[tuple[str, str]] = []  # ("hold" | "release", topic) changes
        self.commits: list[dict[TopicPartition, int]] = []
        self.timeouts: list[float] = []
        self.held_at_poll: list[set[str]] = []

    async def poll(self, timeout_s: float) -> Fetched:
        self.timeouts.append(timeout_s)
        self.held_at_poll.append(set(self.held))
        await asyncio.sleep(0)  # a real poll yields: flush tasks progress meanwhile
        if self.steps:
            step = self.steps.pop(0)
            return dict(step) if isinstance(step, dict) else await step()
        self.idle += 1
        if self.on_idle is not None and self.idle >= self.idle_polls:
            self.on_idle()
        return {}

    def hold(self, topic: str) -> None:
        if topic not in self.held:
            self.held.add(topic)
            self.transitions.append(("hold", topic))

    def release(self, topic: str) -> None:
        if topic in self.held:
            self.held.discard(topic)
            self.transitions.append(("release", topic))

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters.get(partition)

    def committed_partitions(self) -> set[TopicPartition]:
        return {tp for commit in self.commits for tp in commit}


# -- SourceConsumer's aiokafka consumer and listener ------------------------------------------
class RecordingListener:
    """``SourceListener`` that records what the consumer tells it."""

    def __init__(
        self,
        error: BaseException | None = None,
        during_revocation: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.positions: list[tuple[TopicPartition, int]] = []
        self.revocations: list[set[TopicPartition]] = []
        self.error = error
        self.during_revocation = during_revocation

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        self.revocations.append(set(partitions))
        if self.during_revocation is not None:
            await self.during_revocation()
        if self.error is not None:
            raise self.error

    def positioned(self, partition: TopicPartition, offset: int) -> None:
        self.positions.append((partition, offset))


class FakeConsumer:
    """In-memory ``AIOKafkaConsumer`` (the methods ``SourceConsumer`` calls).

    ``logs[tp]`` are the partition's record values from offset ``beginning[tp]`` (default
    0) on; offsets in ``corrupt[tp]`` cannot be decoded. ``raise_next`` are exceptions the
    next ``getmany`` calls raise, in order. Rebalances are driven by :meth:`assign` and
    :meth:`revoke`, which call the listener ``SourceConsumer`` subscribed with.
    """

    def __init__(
        self,
        logs: Mapping[TopicPartition, list[bytes | None]],
        *,
        committed: Mapping[TopicPartition, int] | None = None,
        beginning: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self.logs = {tp: list(values) for tp, values in logs.items()}
        self.beginning: dict[TopicPartition, int] = dict(beginning or {})
        self.committed_offsets: dict[TopicPartition, int] = dict(committed or {})
        self.corrupt: dict[TopicPartition, set[int]] = {}
        self.raise_next: list[BaseException] = []
        self.commit_error: BaseException | None = None
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, Any]] = []
        self.getmany_calls: list[tuple[TopicPartition, ...]] = []
        self.listener: Any = None
        self.topics: list[str] = []
        self.started = False
        self.stopped = False
        self.broker_up = True
        """While True, every getmany stamps the partitions it could fetch (a fetch
        response); set it to False to simulate a broker outage."""
        self.wall: Callable[[], float] = time.time
        self.fetch_stamps: dict[TopicPartition, int] = {}

    # -- rebalances, driven by the test
    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        wanted = set(partitions)
        self.assigned = wanted
        await self.listener.on_partitions_assigned(wanted)

    async def revoke(self) -> None:
        revoked = set(self.assigned)
        await self.listener.on_partitions_revoked(revoked)
        self.assigned = set()
        for tp in revoked:
            self.positions.pop(tp, None)
            self.paused.discard(tp)

    def end(self, tp: TopicPartition) -> int:
        return self.beginning.get(tp, 0) + len(self.logs.get(tp, []))

    # -- AIOKafkaConsumer's surface
    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.topics = topics
        self.listener = listener

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset
        self.seeks.append((partition, offset))

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets.get(partition)

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
        return {tp: self.beginning.get(tp, 0) for tp in partitions}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
        return {tp: self.end(tp) for tp in partitions}

    async def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        self.commits.append(dict(offsets))
        if self.commit_error is not None:
            raise self.commit_error

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.end(partition)

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        assert partition in self.assigned, "Partition is not assigned"
        return self.fetch_stamps.get(partition)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Fetched:
        self.getmany_calls.append(partitions)
        await asyncio.sleep(0)
        if self.raise_next:
            raise self.raise_next.pop(0)
        budget = max_records or 500
        out: Fetched = {}
        if not self.broker_up:
            return out
        for tp in partitions or sorted(self.assigned):
            if tp not in self.assigned or tp in self.paused or tp not in self.positions:
                continue
            self.fetch_stamps[tp] = int(self.wall() * 1000)
            position, taken = self.positions[tp], []
            while budget and position < self.end(tp):
                if position in self.corrupt.get(tp, ()):
                    # Positions of partitions drained before moved; their records are lost.
                    raise CorruptRecordException(f"{tp.topic}[{tp.partition}] at {position}")
                value = self.logs[tp][position - self.beginning.get(tp, 0)]
                taken.append(Message(tp.topic, tp.partition, position, value))
                position, budget = position + 1, budget - 1
            if taken:
                self.positions[tp] = position
                out[tp] = taken
            if not budget:
                break
        return out
