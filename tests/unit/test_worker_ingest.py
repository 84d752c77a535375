"""One topic's pending batch and its flush in flight (pipeline.worker.ingest.TopicIngest):
the size and age triggers, one flush at a time with the next one pipelined, backpressure,
failures, dropping revoked partitions and settling a flush within a bounded time."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest

from pipeline.contract import EventKind
from pipeline.worker.batch import Batch
from pipeline.worker.flush import FlushResult
from pipeline.worker.ingest import TopicIngest
from tests.unit.worker_fakes import (
    TOPIC,
    FakeClock,
    FakeFlusher,
    decoded,
    offsets_of,
    records,
    spin,
)


class Flushed:
    """``on_flushed``: records every (batch, result) it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Batch, FlushResult]] = []

    def __call__(self, batch: Batch, result: FlushResult) -> None:
        self.calls.append((batch, result))


def make_ingest(
    flusher: FakeFlusher,
    *,
    max_events: int = 10,
    interval_s: float = 1.0,
    clock: FakeClock | None = None,
    flushed: Flushed | None = None,
) -> TopicIngest:
    return TopicIngest(
        flusher.flush,
        partial(Batch, TOPIC, EventKind.API_CALL),
        max_events=max_events,
        interval_s=interval_s,
        on_flushed=flushed if flushed is not None else Flushed(),
        monotonic=clock if clock is not None else FakeClock(),
    )


# -- add / due / seconds_until_due ----------------------------------------------------------------
def test_add_counts_valid_events_and_rejected_parts() -> None:
    ingest = make_ingest(FakeFlusher())
    assert ingest.add(records(0, range(2), events=3)) == 6
    assert ingest.add([decoded(0, 2, b"[1, 2]"), decoded(0, 3, b"not json")]) == 3
    assert ingest.pending_events == 9
    assert ingest.topic == TOPIC


def test_nothing_pending_is_never_due_and_has_no_deadline() -> None:
    clock = FakeClock()
    ingest = make_ingest(FakeFlusher(), clock=clock)
    assert ingest.add([]) == 0
    clock.advance(100.0)
    assert not ingest.due()
    assert ingest.seconds_until_due() is None


def test_a_batch_is_due_when_it_holds_max_events() -> None:
    ingest = make_ingest(FakeFlusher(), max_events=5)
    ingest.add(records(0, range(4)))
    assert not ingest.due()
    ingest.add(records(0, [4]))
    assert ingest.due()


def test_a_batch_is_due_when_its_oldest_record_is_interval_s_old() -> None:
    clock = FakeClock()
    ingest = make_ingest(FakeFlusher(), interval_s=1.0, clock=clock)
    ingest.add(records(0, [0]))
    assert ingest.seconds_until_due() == pytest.approx(1.0)
    clock.advance(0.4)
    ingest.add(records(0, [1]))  # a younger record does not move the deadline
    assert ingest.seconds_until_due() == pytest.approx(0.6)
    assert not ingest.due()
    clock.advance(0.6)
    assert ingest.due()
    clock.advance(5.0)
    assert ingest.seconds_until_due() == 0.0


def test_an_empty_record_still_starts_the_age_trigger() -> None:
    """A record with no events (an empty array) must still be flushed: its offset moves the
    watermark."""
    clock = FakeClock()
    ingest = make_ingest(FakeFlusher(), interval_s=1.0, clock=clock)
    assert ingest.add([decoded(0, 0, b"[]")]) == 0
    assert ingest.seconds_until_due() == pytest.approx(1.0)
    clock.advance(1.0)
    assert ingest.due()


# -- maybe_flush / full / on_flushed --------------------------------------------------------------
@pytest.mark.asyncio
async def test_maybe_flush_does_nothing_until_the_batch_is_due() -> None:
    flusher = FakeFlusher()
    ingest = make_ingest(flusher, max_events=5)
    ingest.add(records(0, range(4)))
    ingest.maybe_flush()
    await spin()
    assert flusher.batches == [] and not ingest.flushing
    assert ingest.pending_events == 4


@pytest.mark.asyncio
async def test_a_due_batch_is_flushed_whole_and_a_new_one_starts_empty() -> None:
    flusher = FakeFlusher(gate=asyncio.Event())
    clock = FakeClock()
    ingest = make_ingest(flusher, max_events=3, clock=clock)
    ingest.add(records(0, range(3)))
    ingest.maybe_flush()
    await spin()
    [batch] = flusher.batches
    assert offsets_of(batch) == [(0, 0), (0, 1), (0, 2)]
    assert ingest.flushing
    assert ingest.pending_events == 0
    assert ingest.seconds_until_due() is None and not ingest.due()


@pytest.mark.asyncio
async def test_only_one_flush_runs_at_a_time() -> None:
    flusher = FakeFlusher(gate=asyncio.Event())
    ingest = make_ingest(flusher, max_events=2)
    ingest.add(records(0, range(2)))
    ingest.maybe_flush()
    ingest.add(records(0, range(2, 4)))
    assert ingest.due()
    ingest.maybe_flush()
    await spin()
    assert len(flusher.batches) == 1
    assert ingest.pending_events == 2


@pytest.mark.asyncio
async def test_full_means_a_full_pending_batch_behind_a_running_flush() -> None:
    gate = asyncio.Event()
    ingest = make_ingest(FakeFlusher(gate=gate), max_events=2)

    def full() -> bool:
        return ingest.full

    ingest.add(records(0, range(2)))
    assert not full()  # full but nothing running: it can be flushed now
    ingest.maybe_flush()
    assert ingest.flushing and not full()
    ingest.add(records(0, [2]))
    assert not full()
    ingest.add(records(0, [3]))
    assert full()
    gate.set()
    await spin()
    assert not full()  # the next flush took the pending batch


@pytest.mark.asyncio
async def test_on_flushed_gets_the_batch_and_its_result_after_the_flush_returns() -> None:
    gate = asyncio.Event()
    flushed = Flushed()
    ingest = make_ingest(FakeFlusher(gate=gate), max_events=2, flushed=flushed)
    ingest.add(records(3, [10, 11]))
    ingest.maybe_flush()
    await spin()
    assert flushed.calls == []  # not before the flush returned
    gate.set()
    await spin()
    [(batch, result)] = flushed.calls
    assert offsets_of(batch) == [(3, 10), (3, 11)]
    assert result.watermarks == {3: 12}
    assert not ingest.flushing


@pytest.mark.asyncio
async def test_the_next_flush_starts_when_the_running_one_ends_if_it_is_due() -> None:
    """Pipelining: nobody calls maybe_flush again; the ending flush starts the next one."""
    gate = asyncio.Event()
    flusher = FakeFlusher(gate=gate)
    ingest = make_ingest(flusher, max_events=2)
    ingest.add(records(0, range(2)))
    ingest.maybe_flush()
    ingest.add(records(0, range(2, 4)))  # due while the first flush runs
    await spin()
    assert len(flusher.batches) == 1
    gate.set()
    await spin()
    assert [offsets_of(b) for b in flusher.finished] == [
        [(0, 0), (0, 1)],
        [(0, 2), (0, 3)],
    ]


@pytest.mark.asyncio
async def test_a_batch_not_due_when_the_flush_ends_waits_for_its_trigger() -> None:
    gate = asyncio.Event()
    clock = FakeClock()
    flusher = FakeFlusher(gate=gate)
    ingest = make_ingest(flusher, max_events=2, interval_s=1.0, clock=clock)
    ingest.add(records(0, range(2)))
    ingest.maybe_flush()
    ingest.add(records(0, [2]))
    gate.set()
    await spin()
    assert len(flusher.batches) == 1 and not ingest.flushing
    clock.advance(1.0)
    ingest.maybe_flush()
    await spin()
    assert offsets_of(flusher.batches[1]) == [(0, 2)]


@pytest.mark.asyncio
async def test_a_failed_flush_is_kept_in_failure_and_nothing_more_is_flushed() -> None:
    error = RuntimeError("a bug in the writer")
    flusher = FakeFlusher(error=error)
    flushed = Flushed()
    ingest = make_ingest(flusher, max_events=1, flushed=flushed)
    ingest.add(records(0, [0]))
    ingest.maybe_flush()
    await spin()
    assert ingest.failure is error
    assert flushed.calls == [] and not ingest.flushing
    ingest.add(records(0, [1]))
    ingest.maybe_flush()
    await spin()
    assert len(flusher.batches) == 1


# -- drop -----------------------------------------------------------------------------------------
def test_drop_removes_the_pending_records_of_the_given_partitions_only() -> None:
    clock = FakeClock()
    ingest = make_ingest(FakeFlusher(), clock=clock, max_events=100)
    ingest.add(records(0, range(2), events=2) + records(1, range(3)) + records(2, [5], events=4))
    assert ingest.pending_events == 11
    assert ingest.drop([1, 7]) == 3
    assert ingest.pending_events == 8
    assert ingest.seconds_until_due() is not None  # what is left keeps its age
    assert ingest.drop([9]) == 0
    assert ingest.drop([0, 2]) == 3
    assert ingest.pending_events == 0
    clock.advance(100.0)
    assert not ingest.due() and ingest.seconds_until_due() is None


@pytest.mark.asyncio
async def test_drop_leaves_the_flush_in_flight_alone() -> None:
    gate = asyncio.Event()
    flusher = FakeFlusher(gate=gate)
    ingest = make_ingest(flusher, max_events=2)
    ingest.add(records(0, range(2)))
    ingest.maybe_flush()
    ingest.add(records(0, [2]) + records(1, [0]))
    assert ingest.drop([0]) == 1
    gate.set()
    await spin()
    assert offsets_of(flusher.finished[0]) == [(0, 0), (0, 1)]
    assert ingest.pending_events == 1


# -- settle ---------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_settle_without_a_flush_returns_at_once() -> None:
    ingest = make_ingest(FakeFlusher())
    assert await ingest.settle(0.0)


@pytest.mark.asyncio
async def test_settle_waits_for_a_flush_that_ends_in_time() -> None:
    gate = asyncio.Event()
    flushed = Flushed()
    ingest = make_ingest(FakeFlusher(gate=gate), max_events=1, flushed=flushed)
    ingest.add(records(0, [0]))
    ingest.maybe_flush()
    asyncio.get_running_loop().call_later(0.005, gate.set)
    started = time.monotonic()
    assert await ingest.settle(1.0)
    assert time.monotonic() - started < 0.5
    assert len(flushed.calls) == 1 and not ingest.flushing


@pytest.mark.asyncio
async def test_settle_cancels_a_flush_that_outlasts_the_timeout() -> None:
    flusher = FakeFlusher(gate=asyncio.Event())  # never opened
    flushed = Flushed()
    ingest = make_ingest(flusher, max_events=1, flushed=flushed)
    ingest.add(records(0, [0]))
    ingest.maybe_flush()
    started = time.monotonic()
    assert not await ingest.settle(0.02)
    elapsed = time.monotonic() - started
    assert 0.015 <= elapsed < 0.5
    assert flusher.cancelled == 1
    assert not ingest.flushing
    assert ingest.failure is None  # an abandoned flush is not a failure
    assert flushed.calls == []  # nothing is reported as committed
