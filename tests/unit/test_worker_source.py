"""The consume stage (pipeline.worker.source.SourceConsumer) over a fake aiokafka consumer:
positioning at PostgreSQL's watermark (with its fallbacks), backpressure pauses, commit
hints for assigned partitions only, undecodable batches isolated to one stopped partition,
offsets out of range, and rebalances."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    IllegalStateError,
    KafkaConnectionError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)
from aiokafka.structs import OffsetAndMetadata

from pipeline.errors import DatabaseUnavailableError
from pipeline.metrics import Metrics
from pipeline.worker.retry import RetryPolicy
from pipeline.worker.source import SourceConsumer
from tests.unit.worker_fakes import (
    KAFKA,
    TOPIC,
    FakeClock,
    FakeConsumer,
    Fetched,
    RecordingListener,
    spin,
    until,
)

LOGS = "system-logs"
P0, P1, P2, P3 = (TopicPartition(TOPIC, p) for p in range(4))
L0 = TopicPartition(LOGS, 0)


def log(count: int) -> list[bytes | None]:
    """Record values: the consume stage hands them out as they are, undecoded."""
    return [b"v%d" % i for i in range(count)]


class Watermarks:
    """The watermark reader: answers from ``marks``; may wait for ``gate`` or fail first."""

    def __init__(
        self,
        marks: Mapping[TopicPartition, int],
        *,
        gate: asyncio.Event | None = None,
        errors: Iterable[BaseException] = (),
    ) -> None:
        self.marks = dict(marks)
        self.gate = gate
        self.errors = list(errors)
        self.calls: list[set[TopicPartition]] = []
        self.adopted: list[dict[TopicPartition, int]] = []

    async def read(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        self.calls.append(set(partitions))
        if self.gate is not None:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return {tp: self.marks[tp] for tp in partitions if tp in self.marks}

    async def adopt(self, starts: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        self.adopted.append(dict(starts))
        for tp, offset in starts.items():
            self.marks.setdefault(tp, offset)
        return {tp: self.marks[tp] for tp in starts}


async def started(
    consumer: FakeConsumer,
    watermarks: Watermarks,
    *,
    listener: RecordingListener | None = None,
    metrics: Metrics | None = None,
    clock: FakeClock | None = None,
    start_from: str = "earliest",
    topics: Iterable[str] = (TOPIC,),
    max_records: int = 500,
) -> SourceConsumer:
    source = SourceConsumer(
        KAFKA,
        group_id="g",
        topics=list(topics),
        watermarks=watermarks,
        listener=listener if listener is not None else RecordingListener(),
        metrics=metrics if metrics is not None else Metrics(),
        max_records=max_records,
        start_from=start_from,
        retry=RetryPolicy(initial_s=0.001, max_s=0.002),
        stopped_retry_s=60.0,
        consumer=consumer,
        monotonic=clock if clock is not None else FakeClock(),
    )
    await source.start()
    return source


async def assigned(
    consumer: FakeConsumer, listener: RecordingListener, partitions: Iterable[TopicPartition]
) -> None:
    """Assign ``partitions`` and wait until every one of them is positioned."""
    wanted = set(partitions)
    await consumer.assign(wanted)
    await until(lambda: wanted <= {tp for tp, _ in listener.positions})


def handed_out(fetched: Fetched) -> dict[TopicPartition, list[int]]:
    return {tp: [m.offset for m in msgs] for tp, msgs in fetched.items() if msgs}


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- positioning ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_assigned_partitions_stay_paused_until_their_watermarks_are_read() -> None:
    gate = asyncio.Event()
    consumer = FakeConsumer({P0: log(3), P1: log(3)})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({P0: 1, P1: 2}, gate=gate), listener=listener)
    await consumer.assign({P0, P1})
    await spin()
    assert consumer.paused == {P0, P1}
    assert consumer.seeks == [] and listener.positions == []
    assert await source.poll(0) == {}
    gate.set()
    await until(lambda: len(listener.positions) == 2)
    assert consumer.paused == set()
    assert handed_out(await source.poll(0)) == {P0: [1, 2], P1: [2]}


@pytest.mark.asyncio
async def test_each_partition_starts_at_its_watermark_else_the_committed_offset_else_earliest() -> (
    None
):
    consumer = FakeConsumer(
        {P0: log(10), P1: log(10), P2: log(10), P3: log(8)},
        committed={P0: 3, P1: 9, P2: 4},
        beginning={P3: 2},
    )
    listener = RecordingListener()
    marks = Watermarks({P0: 7, P1: 0})  # P1's row says 0: that is a watermark, not "none"
    source = await started(consumer, marks, listener=listener)
    await assigned(consumer, listener, [P0, P1, P2, P3])
    assert marks.calls == [{P0, P1, P2, P3}]
    assert listener.positions == [(P0, 7), (P1, 0), (P2, 4), (P3, 2)]
    assert consumer.positions == {P0: 7, P1: 0, P2: 4, P3: 2}
    fetched = handed_out(await source.poll(0))
    assert fetched == {
        P0: [7, 8, 9],
        P1: list(range(10)),
        P2: list(range(4, 10)),
        P3: list(range(2, 10)),
    }


@pytest.mark.asyncio
async def test_a_new_partitions_start_is_recorded_and_later_commits_cannot_move_it() -> None:
    """The committed offset is read once, when the group first sees the partition; after
    that the recorded watermark decides, wherever Kafka's committed offset goes."""
    consumer = FakeConsumer({P0: log(10), P1: log(10)}, committed={P0: 3})
    listener = RecordingListener()
    marks = Watermarks({})
    source = await started(consumer, marks, listener=listener)
    await assigned(consumer, listener, [P0, P1])
    assert marks.adopted == [{P0: 3, P1: 0}]
    consumer.committed_offsets = {P0: 9, P1: 9}  # someone commits past what was applied
    await consumer.assign(set())
    listener.positions.clear()
    await assigned(consumer, listener, [P0, P1])
    assert sorted(listener.positions) == [(P0, 3), (P1, 0)]
    assert marks.adopted == [{P0: 3, P1: 0}]  # nothing new to record
    assert handed_out(await source.poll(0))[P1] == list(range(10))


@pytest.mark.asyncio
async def test_a_start_recorded_by_another_worker_first_wins() -> None:
    consumer = FakeConsumer({P0: log(10)}, committed={P0: 8})
    listener = RecordingListener()

    class Raced(Watermarks):
        async def adopt(self, starts: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
            self.marks[P0] = 2  # another worker recorded 2 in between
            return await super().adopt(starts)

    await started(consumer, Raced({}), listener=listener)
    await assigned(consumer, listener, [P0])
    assert listener.positions == [(P0, 2)]


@pytest.mark.asyncio
async def test_start_from_latest_falls_back_to_the_end_of_the_partition() -> None:
    consumer = FakeConsumer({P0: log(5), P1: log(5)})
    listener = RecordingListener()
    await started(consumer, Watermarks({P1: 2}), listener=listener, start_from="latest")
    await assigned(consumer, listener, [P0, P1])
    assert listener.positions == [(P0, 5), (P1, 2)]


def test_an_unknown_start_from_is_refused() -> None:
    with pytest.raises(ValueError, match="start_from"):
        SourceConsumer(
            KAFKA,
            group_id="g",
            topics=[TOPIC],
            watermarks=Watermarks({}),
            listener=RecordingListener(),
            metrics=Metrics(),
            start_from="middle",
            consumer=FakeConsumer({}),
        )


@pytest.mark.asyncio
async def test_watermark_read_failures_are_retried_while_the_partitions_stay_paused() -> None:
    gate = asyncio.Event()
    consumer = FakeConsumer({P0: log(4)})
    listener = RecordingListener()
    down = DatabaseUnavailableError("PostgreSQL restarting")
    marks = Watermarks({P0: 2}, errors=[down, down])
    source = await started(consumer, marks, listener=listener)
    marks.gate = gate
    await consumer.assign({P0})
    await until(lambda: len(marks.calls) == 1)
    assert consumer.paused == {P0}
    marks.gate = None
    gate.set()
    await until(lambda: bool(listener.positions))
    assert len(marks.calls) == 3
    assert listener.positions == [(P0, 2)]
    assert handed_out(await source.poll(0)) == {P0: [2, 3]}


@pytest.mark.asyncio
async def test_a_watermark_reader_that_fails_with_a_bug_ends_the_consumer() -> None:
    consumer = FakeConsumer({P0: log(4)})
    source = await started(consumer, Watermarks({}, errors=[KeyError("a bug")]))
    await consumer.assign({P0})
    await spin()
    with pytest.raises(KeyError, match="a bug"):
        await source.poll(0)


# -- backpressure ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_held_topic_is_paused_until_released_while_other_topics_flow() -> None:
    consumer = FakeConsumer({P0: log(4), L0: log(3)})
    listener = RecordingListener()
    source = await started(
        consumer, Watermarks({}), listener=listener, topics=[TOPIC, LOGS], max_records=2
    )
    await assigned(consumer, listener, [P0, L0])
    assert handed_out(await source.poll(0)) == {P0: [0, 1]}
    source.hold(TOPIC)
    assert consumer.paused == {P0}
    assert handed_out(await source.poll(0)) == {L0: [0, 1]}
    assert handed_out(await source.poll(0)) == {L0: [2]}
    source.release(TOPIC)
    assert consumer.paused == set()
    assert handed_out(await source.poll(0)) == {P0: [2, 3]}


@pytest.mark.asyncio
async def test_partitions_of_a_held_topic_stay_paused_when_they_are_positioned() -> None:
    consumer = FakeConsumer({P0: log(4)})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener)
    source.hold(TOPIC)
    await assigned(consumer, listener, [P0])
    assert consumer.paused == {P0}
    assert await source.poll(0) == {}
    source.release(TOPIC)
    assert handed_out(await source.poll(0)) == {P0: [0, 1, 2, 3]}


# -- commits (hints) ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_commit_sends_the_offsets_of_assigned_partitions_only() -> None:
    consumer = FakeConsumer({P0: log(4), P1: log(4)})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener)
    await assigned(consumer, listener, [P0])
    source.commit({P0: 4, P1: 2})
    await spin()
    assert consumer.commits == [{P0: OffsetAndMetadata(4, "")}]
    source.commit({P1: 3})  # nothing of ours: no request at all
    await spin()
    assert len(consumer.commits) == 1


@pytest.mark.asyncio
async def test_no_commit_for_partitions_revoked_from_the_moment_of_revocation() -> None:
    consumer = FakeConsumer({P0: log(4)})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener)
    await assigned(consumer, listener, [P0])
    commits_seen: list[int] = []

    async def flush_ends_meanwhile() -> None:
        source.commit({P0: 4})  # a flush ending while the listener settles it
        await spin()
        commits_seen.append(len(consumer.commits))

    listener.during_revocation = flush_ends_meanwhile
    await consumer.revoke()
    assert commits_seen == [0]
    assert consumer.commits == []


@pytest.mark.asyncio
async def test_a_failed_commit_is_not_an_error() -> None:
    consumer = FakeConsumer({P0: log(2)})
    consumer.commit_error = KafkaConnectionError("broker gone")
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener)
    await assigned(consumer, listener, [P0])
    source.commit({P0: 1})
    await spin()
    assert len(consumer.commits) == 1
    assert handed_out(await source.poll(0)) == {P0: [0, 1]}


def test_highwater_is_unknown_when_the_client_has_no_state_for_the_partition() -> None:
    class NoState(FakeConsumer):
        def highwater(self, partition: TopicPartition) -> int | None:
            raise IllegalStateError("no state")

    source = SourceConsumer(
        KAFKA,
        group_id="g",
        topics=[TOPIC],
        watermarks=Watermarks({}),
        listener=RecordingListener(),
        metrics=Metrics(),
        consumer=NoState({P0: log(1)}),
    )
    assert source.highwater(P0) is None


# -- undecodable batches --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_decode_error_rewinds_finds_and_stops_only_the_culprit_partition() -> None:
    metrics = Metrics()
    consumer = FakeConsumer({P0: log(10), P1: log(10), P2: log(10)})
    consumer.corrupt[P1] = {3}
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener, metrics=metrics)
    await assigned(consumer, listener, [P0, P1, P2])

    # The bulk read drained P0 (its position moved), then failed in P1: nothing handed out,
    # every fetching partition goes back to the first offset not handed out.
    assert await source.poll(0) == {}
    assert consumer.positions == {P0: 0, P1: 0, P2: 0}

    got: dict[TopicPartition, list[int]] = {P0: [], P1: [], P2: []}
    for _ in range(10):
        for tp, offsets in handed_out(await source.poll(0)).items():
            got[tp] += offsets
        if source.stopped:
            break
    assert list(source.stopped) == [P1]
    assert source.stopped[P1].startswith("offset 3: ")
    assert "CorruptRecordException" in source.stopped[P1]
    assert gauge(metrics, "pipeline_partitions_stopped") == 1
    assert P1 in consumer.paused
    assert got[P1] == [0, 1, 2]  # everything before the culprit, nothing lost or repeated

    # Back to bulk reads; the other partitions keep flowing.
    calls_before = len(consumer.getmany_calls)
    for tp, offsets in handed_out(await source.poll(0)).items():
        got[tp] += offsets
    assert consumer.getmany_calls[calls_before:] == [()]
    assert got == {P0: list(range(10)), P1: [0, 1, 2], P2: list(range(10))}


@pytest.mark.asyncio
async def test_a_stopped_partition_is_positioned_again_from_its_watermark_later() -> None:
    metrics, clock = Metrics(), FakeClock()
    consumer = FakeConsumer({P0: log(5), P1: log(5)})
    consumer.corrupt[P0] = {0}
    listener = RecordingListener()
    marks = Watermarks({P0: 0})
    source = await started(consumer, marks, listener=listener, metrics=metrics, clock=clock)
    await assigned(consumer, listener, [P0, P1])
    for _ in range(3):
        await source.poll(0)
    assert list(source.stopped) == [P0]

    clock.advance(59.0)
    await source.poll(0)
    await spin()
    assert list(source.stopped) == [P0]  # not before stopped_retry_s

    consumer.corrupt.clear()  # an operator fixed it (or moved the watermark past it)
    clock.advance(1.0)
    got = handed_out(await source.poll(0))
    await until(lambda: listener.positions.count((P0, 0)) == 2)
    assert source.stopped == {}
    assert gauge(metrics, "pipeline_partitions_stopped") == 0
    got.update(handed_out(await source.poll(0)))
    assert got == {P0: [0, 1, 2, 3, 4]}


@pytest.mark.asyncio
async def test_bulk_reads_resume_after_a_transient_decode_error_under_load() -> None:
    consumer = FakeConsumer({P0: log(2_000), P1: log(2_000)})
    consumer.raise_next = [CorruptRecordException("a garbled fetch response")]
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener)
    await assigned(consumer, listener, [P0, P1])
    assert await source.poll(0) == {}
    for _ in range(600):  # more than the 500 careful rounds allowed for a transient error
        await source.poll(0)
    assert source.stopped == {}
    assert () in consumer.getmany_calls[-10:], "still reading one record per partition"


# -- offsets out of range -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_an_offset_below_the_start_of_the_log_counts_a_gap_and_continues_at_the_start() -> (
    None
):
    metrics = Metrics()
    consumer = FakeConsumer({P0: log(5)}, beginning={P0: 20})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({P0: 7}), listener=listener, metrics=metrics)
    await assigned(consumer, listener, [P0])
    consumer.raise_next = [OffsetOutOfRangeError({P0: 7})]
    assert await source.poll(0) == {}
    assert gauge(metrics, "pipeline_offset_gaps_total", topic=TOPIC) == 1
    assert consumer.seeks[-1] == (P0, 20)
    assert listener.positions == [(P0, 7), (P0, 20)]
    assert source.stopped == {}
    assert handed_out(await source.poll(0)) == {P0: list(range(20, 25))}


@pytest.mark.asyncio
async def test_an_offset_beyond_the_end_of_the_log_stops_the_partition() -> None:
    metrics = Metrics()
    consumer = FakeConsumer({P0: log(5), P1: log(2)})
    listener = RecordingListener()
    marks = Watermarks({P0: 50})
    source = await started(consumer, marks, listener=listener, metrics=metrics)
    await assigned(consumer, listener, [P0, P1])
    consumer.raise_next = [OffsetOutOfRangeError({P0: 50})]
    assert await source.poll(0) == {}
    assert list(source.stopped) == [P0]
    assert "beyond the end" in source.stopped[P0]
    assert gauge(metrics, "pipeline_offset_gaps_total", topic=TOPIC) is None
    assert gauge(metrics, "pipeline_partitions_stopped") == 1
    assert handed_out(await source.poll(0)) == {P1: [0, 1]}


@pytest.mark.asyncio
async def test_a_client_reset_attempt_is_answered_by_seeking_our_position_again() -> None:
    consumer = FakeConsumer({P0: log(6)})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({P0: 2}), listener=listener)
    await assigned(consumer, listener, [P0])
    assert handed_out(await source.poll(0)) == {P0: [2, 3, 4, 5]}
    consumer.positions[P0] = 0  # the client lost its position
    consumer.raise_next = [NoOffsetForPartitionError(P0)]
    assert await source.poll(0) == {}
    assert consumer.seeks[-1] == (P0, 6)


@pytest.mark.asyncio
async def test_records_the_client_returns_twice_are_handed_out_once() -> None:
    """Two copies of a record in one flush would both be applied: the consumer hands out
    each offset of a partition once, whatever the client returns."""
    consumer = FakeConsumer({P0: log(6)})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener, max_records=4)
    await assigned(consumer, listener, [P0])
    assert handed_out(await source.poll(0)) == {P0: [0, 1, 2, 3]}
    consumer.positions[P0] = 2  # the client answers from an older position
    assert handed_out(await source.poll(0)) == {P0: [4, 5]}
    consumer.positions[P0] = 1
    assert handed_out(await source.poll(0)) == {}


@pytest.mark.asyncio
async def test_broker_silence_counts_from_the_last_fetch_response_of_a_fetching_partition() -> None:
    consumer = FakeConsumer({P0: log(3), P1: log(3)})
    wall = FakeClock(1_000.0)
    consumer.wall = wall
    listener, metrics = RecordingListener(), Metrics()
    source = SourceConsumer(
        KAFKA,
        group_id="g",
        topics=[TOPIC],
        watermarks=Watermarks({}),
        listener=listener,
        metrics=metrics,
        consumer=consumer,
        monotonic=wall,
        silence_limit_s=10.0,
    )
    await source.start()
    assert source.broker_silence_s() == 0.0  # nothing to fetch yet: not the broker's fault
    await assigned(consumer, listener, [P0, P1])
    await source.poll(0)
    assert source.broker_silence_s() == 0.0
    assert gauge(metrics, "pipeline_broker_available") == 1
    consumer.broker_up = False  # the outage: fetches get no answer
    wall.advance(4)
    await source.poll(0)
    assert source.broker_silence_s() == 4.0
    assert gauge(metrics, "pipeline_broker_available") == 1
    wall.advance(7)
    await source.poll(0)
    assert source.broker_silence_s() == 11.0
    assert gauge(metrics, "pipeline_broker_available") == 0
    source.hold(TOPIC)  # nothing fetched on purpose: silence is not the broker's
    assert source.broker_silence_s() == 0.0
    source.release(TOPIC)
    wall.advance(1)
    assert source.broker_silence_s() == 1.0
    consumer.broker_up = True  # back
    await source.poll(0)
    assert source.broker_silence_s() == 0.0
    assert gauge(metrics, "pipeline_broker_available") == 1


# -- rebalances -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_revocation_is_told_to_the_listener_and_cancels_positioning_in_progress() -> None:
    gate = asyncio.Event()
    consumer = FakeConsumer({P0: log(3)})
    listener = RecordingListener()
    marks = Watermarks({P0: 1}, gate=gate)
    source = await started(consumer, marks, listener=listener)
    await consumer.assign({P0})
    await until(lambda: bool(marks.calls))
    await consumer.revoke()
    assert listener.revocations == [{P0}]
    gate.set()  # the stale watermark read answers after the revocation
    await spin()
    assert consumer.seeks == [] and listener.positions == []
    assert source.assignment() == set()
    assert await source.poll(0) == {}


@pytest.mark.asyncio
async def test_a_failing_revocation_listener_ends_the_consumer() -> None:
    consumer = FakeConsumer({P0: log(3)})
    listener = RecordingListener()
    source = await started(consumer, Watermarks({}), listener=listener)
    await assigned(consumer, listener, [P0])
    listener.error = RuntimeError("revocation bug")
    with pytest.raises(RuntimeError, match="revocation bug"):
        await consumer.revoke()
    with pytest.raises(RuntimeError, match="revocation bug"):
        await source.poll(0)


@pytest.mark.asyncio
async def test_start_subscribes_every_topic_and_stop_closes_the_client() -> None:
    consumer = FakeConsumer({})
    source = await started(consumer, Watermarks({}), topics=[TOPIC, LOGS])
    assert consumer.topics == [TOPIC, LOGS] and consumer.started
    listener: Any = consumer.listener
    assert hasattr(listener, "on_partitions_assigned")
    await source.stop()
    assert consumer.stopped
