"""The ingest loop (pipeline.worker.engine.IngestEngine) over a scripted source and fake
flushers: decoding into per-topic batches, the generation counter that discards a poll
decoded across a revocation, bounded revocation, commit hints only for positioned
partitions, backpressure, and a flush failure ending run()."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import pytest
from aiokafka import TopicPartition

from pipeline.contract import EventKind
from pipeline.metrics import Metrics
from pipeline.worker.engine import Flush, IngestEngine
from pipeline.worker.flush import Flusher
from tests.unit.worker_fakes import (
    NOW_S,
    TOPIC,
    FakeClock,
    FakeFlusher,
    FakeSource,
    Fetched,
    UntouchablePool,
    UntouchableSink,
    messages,
    offsets_of,
)

TP0 = TopicPartition(TOPIC, 0)
TP1 = TopicPartition(TOPIC, 1)
LOGS = "system-logs"


def make_engine(
    flushers: Mapping[str, Flush] | FakeFlusher,
    *,
    max_events: int = 1_000,
    interval_s: float = 10.0,
    revoke_timeout_s: float = 1.0,
    clock: FakeClock | None = None,
    metrics: Metrics | None = None,
    decode_slice_events: int = 20_000,
) -> IngestEngine:
    if isinstance(flushers, FakeFlusher):
        flushers = {TOPIC: flushers}
    kinds = {TOPIC: EventKind.API_CALL, LOGS: EventKind.SYSTEM_LOG}
    return IngestEngine(
        flushers,
        {topic: kinds[topic] for topic in flushers},
        max_events=max_events,
        interval_s=interval_s,
        revoke_timeout_s=revoke_timeout_s,
        metrics=metrics if metrics is not None else Metrics(),
        clock=lambda: NOW_S,
        monotonic=clock if clock is not None else FakeClock(),
        decode_slice_events=decode_slice_events,
    )


async def run(engine: IngestEngine, source: FakeSource) -> None:
    """Run the engine over ``source`` (which stops it once idle); never hang a test."""
    if source.on_idle is None:
        source.on_idle = engine.stop
    await asyncio.wait_for(engine.run(source), timeout=5.0)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- positioning and decoding ---------------------------------------------------------------------
def test_positioned_seeds_the_flusher_and_counts_the_partition() -> None:
    flusher, metrics = FakeFlusher(), Metrics()
    engine = make_engine(flusher, metrics=metrics)
    engine.positioned(TP1, 42)
    engine.positioned(TP0, 0)
    assert flusher.seeds == [(1, 42), (0, 0)]
    assert engine.positioned_partitions == {TP0, TP1}
    assert sample(metrics, "pipeline_assigned_partitions") == 2


@pytest.mark.asyncio
async def test_records_of_partitions_not_positioned_are_never_batched() -> None:
    metrics = Metrics()
    engine = make_engine(FakeFlusher(), metrics=metrics)
    engine.positioned(TP0, 0)
    source = FakeSource([{TP0: messages(TP0, range(3)), TP1: messages(TP1, range(2))}])
    await run(engine, source)
    assert engine.pending_events() == {TOPIC: 3}
    assert sample(metrics, "pipeline_records_consumed_total", topic=TOPIC) == 3
    assert sample(metrics, "pipeline_events_consumed_total", topic=TOPIC) == 3


@pytest.mark.asyncio
async def test_records_are_flushed_with_their_offsets_then_committed_as_hints() -> None:
    flusher, metrics = FakeFlusher(), Metrics()
    engine = make_engine(flusher, max_events=4, metrics=metrics)
    engine.positioned(TP0, 5)
    source = FakeSource([{TP0: messages(TP0, [5, 6], events=2)}], highwaters={TP0: 10})
    await run(engine, source)
    [batch] = flusher.finished
    assert offsets_of(batch) == [(0, 5), (0, 6)]
    assert batch.event_count == 4
    assert source.commits == [{TP0: 7}]
    assert sample(metrics, "pipeline_consumer_lag", topic=TOPIC, partition="0") == 3
    assert engine.pending_events() == {TOPIC: 0}


@pytest.mark.asyncio
async def test_an_age_due_batch_is_flushed_and_the_poll_timeout_waits_for_it() -> None:
    flusher, clock = FakeFlusher(), FakeClock()
    engine = make_engine(flusher, interval_s=0.05, clock=clock)
    engine.positioned(TP0, 0)

    async def later() -> Fetched:
        clock.advance(0.06)
        return {}

    source = FakeSource([{TP0: messages(TP0, [0])}, later])
    await run(engine, source)
    assert source.timeouts[0] == 0.1  # nothing pending: the longest poll
    assert source.timeouts[1] == pytest.approx(0.05)  # the age trigger's deadline
    assert [offsets_of(b) for b in flusher.finished] == [[(0, 0)]]


def test_healthy_is_false_while_any_flusher_is_stalled() -> None:
    api, logs = FakeFlusher(), FakeFlusher()
    engine = make_engine({TOPIC: api, LOGS: logs})
    assert engine.healthy
    logs.healthy = False
    assert not engine.healthy


# -- revocation -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_poll_decoded_across_a_revocation_adds_nothing_to_the_pending_batch() -> None:
    """The partition is revoked and positioned again while the poll is in progress: what it
    returns belongs to the previous assignment and is discarded by the generation counter."""
    flusher = FakeFlusher()
    engine = make_engine(flusher)
    engine.positioned(TP0, 0)

    async def rebalance_during_poll() -> Fetched:
        await engine.revoked({TP0})
        engine.positioned(TP0, 0)
        return {TP0: messages(TP0, range(3))}

    fresh = {TP0: messages(TP0, range(4))}  # the new generation fetches from the watermark
    await run(engine, FakeSource([rebalance_during_poll, fresh]))
    assert engine.pending_events() == {TOPIC: 4}  # the fresh poll only, not 3 + 4
    assert flusher.batches == []


@pytest.mark.asyncio
async def test_a_revocation_while_a_poll_is_being_decoded_stops_the_decoding() -> None:
    """The engine yields between partitions of a large poll; a rebalance that runs there
    must leave nothing of that poll in the pending batch."""
    flusher = FakeFlusher()
    engine = make_engine(flusher, decode_slice_events=1)
    engine.positioned(TP0, 0)
    engine.positioned(TP1, 0)
    rebalances: list[asyncio.Future[None]] = []

    async def rebalance() -> None:
        await engine.revoked({TP0, TP1})
        engine.positioned(TP0, 0)
        engine.positioned(TP1, 0)

    async def poll_then_rebalance() -> Fetched:
        rebalances.append(asyncio.ensure_future(rebalance()))  # runs at the decoder's yield
        return {TP0: messages(TP0, range(2)), TP1: messages(TP1, range(2))}

    await run(engine, FakeSource([poll_then_rebalance]))
    await asyncio.gather(*rebalances)
    assert engine.positioned_partitions == {TP0, TP1}
    assert engine.pending_events() == {TOPIC: 0}
    assert flusher.batches == []


@pytest.mark.asyncio
async def test_revocation_drops_pending_records_of_the_revoked_partitions_only() -> None:
    metrics = Metrics()
    engine = make_engine(FakeFlusher(), metrics=metrics)
    engine.positioned(TP0, 0)
    engine.positioned(TP1, 0)

    async def revoke_tp0() -> Fetched:
        await engine.revoked({TP0})
        return {}

    fetched = {TP0: messages(TP0, range(3)), TP1: messages(TP1, range(2))}
    await run(engine, FakeSource([fetched, revoke_tp0]))
    assert engine.pending_events() == {TOPIC: 2}
    assert engine.positioned_partitions == {TP1}
    assert sample(metrics, "pipeline_assigned_partitions") == 1


@pytest.mark.asyncio
async def test_revocation_waits_for_the_flush_in_flight_and_no_hint_names_the_revoked() -> None:
    """The flush ends within revoke_timeout_s: revoked() waits for it, and its commit hint
    names only the partitions still positioned (none for the revoked one)."""
    gate = asyncio.Event()
    flusher = FakeFlusher(gate=gate)
    engine = make_engine(flusher, max_events=2, revoke_timeout_s=1.0)
    engine.positioned(TP0, 0)
    engine.positioned(TP1, 0)
    took: list[float] = []

    async def revoke_tp1() -> Fetched:
        assert len(flusher.batches) == 1 and flusher.finished == []
        asyncio.get_running_loop().call_later(0.005, gate.set)
        started = time.monotonic()
        await engine.revoked({TP1})
        took.append(time.monotonic() - started)
        assert len(flusher.finished) == 1  # revoked() returned after the flush ended
        return {}

    source = FakeSource([{TP0: messages(TP0, [0]), TP1: messages(TP1, [0])}, revoke_tp1])
    await run(engine, source)
    assert offsets_of(flusher.finished[0]) == [(0, 0), (1, 0)]
    assert flusher.cancelled == 0
    assert took[0] < 0.5
    assert source.commits == [{TP0: 1}]


@pytest.mark.asyncio
async def test_revocation_cancels_a_flush_that_outlasts_revoke_timeout_s() -> None:
    flusher = FakeFlusher(gate=asyncio.Event())  # never opened
    engine = make_engine(flusher, max_events=1, revoke_timeout_s=0.02)
    engine.positioned(TP0, 0)
    took: list[float] = []

    async def revoke() -> Fetched:
        started = time.monotonic()
        await engine.revoked({TP0})
        took.append(time.monotonic() - started)
        return {}

    source = FakeSource([{TP0: messages(TP0, [0])}, revoke])
    await run(engine, source)  # an abandoned flush is not a failure: run() returns
    assert 0.015 <= took[0] < 0.5
    assert flusher.cancelled == 1 and flusher.finished == []
    assert source.commits == []


# -- failures and stopping ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_run_raises_the_exception_of_a_failed_flush() -> None:
    error = RuntimeError("a bug in the writer")
    flusher = FakeFlusher(error=error)
    engine = make_engine(flusher, max_events=1)
    engine.positioned(TP0, 0)
    source = FakeSource([{TP0: messages(TP0, [0])}], idle_polls=1_000)
    with pytest.raises(RuntimeError, match="a bug in the writer") as raised:
        await run(engine, source)
    assert raised.value is error
    assert source.commits == []
    assert source.idle < 1_000  # it ended because of the failure, not because it stopped


@pytest.mark.asyncio
async def test_run_raises_a_flush_failure_found_after_stop() -> None:
    flusher = FakeFlusher(error=RuntimeError("late bug"))
    engine = make_engine(flusher, max_events=1)
    engine.positioned(TP0, 0)

    async def stop_now() -> Fetched:
        engine.stop()
        return {}

    with pytest.raises(RuntimeError, match="late bug"):
        await run(engine, FakeSource([{TP0: messages(TP0, [0])}, stop_now]))


@pytest.mark.asyncio
async def test_run_returns_after_stop_and_settle_waits_for_flushes_in_flight() -> None:
    gate = asyncio.Event()
    flusher = FakeFlusher(gate=gate)
    engine = make_engine(flusher, max_events=1)
    engine.positioned(TP0, 0)
    await run(engine, FakeSource([{TP0: messages(TP0, [0])}], idle_polls=1))
    assert flusher.finished == []
    asyncio.get_running_loop().call_later(0.005, gate.set)
    await engine.settle(1.0)
    assert len(flusher.finished) == 1


# -- backpressure ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_topic_is_held_while_its_batch_is_full_and_its_flush_runs() -> None:
    gate = asyncio.Event()
    flusher = FakeFlusher(gate=gate)
    engine = make_engine(flusher, max_events=2)
    engine.positioned(TP0, 0)
    seen: list[tuple[set[str], bool]] = []

    async def while_full() -> Fetched:
        seen.append((set(source.held), len(flusher.batches) == 1))
        return {}

    async def flush_ends() -> Fetched:
        gate.set()
        return {}

    source = FakeSource(
        [
            {TP0: messages(TP0, range(2))},  # due: flush 1 starts and blocks
            {TP0: messages(TP0, range(2, 4))},  # the next batch is full behind it
            while_full,
            flush_ends,
        ]
    )
    await run(engine, source)
    assert seen == [({TOPIC}, True)]  # held, with flush 1 still running
    assert source.timeouts[2] == 0.01  # polling goes on (short polls) while held
    assert source.transitions == [("hold", TOPIC), ("release", TOPIC)]
    assert [offsets_of(b) for b in flusher.finished] == [[(0, 0), (0, 1)], [(0, 2), (0, 3)]]
    assert source.commits == [{TP0: 2}, {TP0: 4}]
    assert source.held == set()


# -- with the real Flusher: the cached watermark ----------------------------------------------
@pytest.mark.asyncio
async def test_records_below_the_positioned_watermark_are_skipped_not_applied() -> None:
    metrics = Metrics()
    flusher = Flusher(
        UntouchablePool(),
        group="g",
        topic=TOPIC,
        kind=EventKind.API_CALL,
        worker_id="w-1",
        dead_letters=UntouchableSink(),
        metrics=metrics,
    )
    engine = make_engine({TOPIC: flusher}, max_events=5, metrics=metrics)
    engine.positioned(TP0, 10)  # the watermark read from PostgreSQL
    source = FakeSource([{TP0: messages(TP0, range(5, 10))}])  # a redelivery
    await run(engine, source)
    assert sample(metrics, "pipeline_replayed_records_skipped_total", topic=TOPIC) == 5
    assert source.commits == []  # nothing was applied: no hint
    assert engine.pending_events() == {TOPIC: 0}


# -- found as bugs, now pinned -----------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_partition_positioned_again_never_flushes_an_offset_twice() -> None:
    flusher, clock = FakeFlusher(), FakeClock()
    engine = make_engine(flusher, interval_s=1.0, clock=clock)
    engine.positioned(TP0, 0)

    async def stopped_partition_retried() -> Fetched:
        # Records 0..2 are pending (not flushed yet: the watermark is still 0); the
        # partition stopped at 3 and is positioned again from the watermark.
        engine.positioned(TP0, 0)
        clock.advance(1.0)
        return {TP0: messages(TP0, range(3))}

    async def later() -> Fetched:
        clock.advance(1.0)  # the pending batch is due
        return {}

    source = FakeSource([{TP0: messages(TP0, range(3))}, stopped_partition_retried, later])
    await run(engine, source)
    flushed = [o for batch in flusher.batches for o in offsets_of(batch)]
    assert flushed == [(0, 0), (0, 1), (0, 2)], f"flushed twice or not at all: {flushed}"
