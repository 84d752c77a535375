"""Records and batches (pipeline.worker.batch) and the flush stage's replay rules that rest on
them (pipeline.worker.flush): records below a partition's watermark are never applied again,
events beyond retention become dead letters that keep their array position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from pipeline.contract import EventKind, Reason
from pipeline.metrics import Metrics
from pipeline.worker.batch import Batch, Record
from pipeline.worker.flush import Flusher, FlushResult, reject_expired
from pipeline.worker.partitions import DAY_MS
from tests.unit.worker_fakes import (
    NOW_S,
    START_MS,
    TOPIC,
    FakeClock,
    UntouchablePool,
    UntouchableSink,
    api_call_values,
    decoded,
    offsets_of,
    records,
)


def wire_events(count: int) -> list[dict[str, Any]]:
    """``count`` valid API-call wire objects of the standard workload."""
    return [orjson.loads(v) for v in api_call_values(count, shape="single")]


def batch_of(recs: Sequence[Record]) -> Batch:
    return Batch(TOPIC, EventKind.API_CALL, list(recs))


# -- Record ---------------------------------------------------------------------------------------
def test_an_array_record_keeps_valid_events_and_rejects_bad_elements_with_their_index() -> None:
    good = wire_events(3)
    value = orjson.dumps([good[0], 5, good[1], {"type": "api_call"}, good[2]])
    record = decoded(2, 17, value)
    assert (record.partition, record.offset, record.is_array) == (2, 17, True)
    assert [e.event_id for e in record.events] == [g["event_id"] for g in good]
    assert record.rejected[0].reason is Reason.NOT_AN_OBJECT
    assert [r.index for r in record.rejected] == [1, 3]
    assert record.rejected[0].payload == b"5"  # the element itself is dead-lettered
    assert orjson.loads(record.rejected[1].payload) == {"type": "api_call"}
    assert record.positions() == [0, 2, 4]


def test_a_single_object_record_has_no_array_positions() -> None:
    [value] = api_call_values(1, shape="single")
    record = decoded(0, 3, value)
    assert not record.is_array
    assert len(record.events) == 1 and record.rejected == []
    assert record.positions() == [None]


@pytest.mark.parametrize("value", [b"{not json", None])
def test_an_unreadable_record_is_rejected_whole_with_its_raw_value(value: bytes | None) -> None:
    record = decoded(1, 8, value)
    assert record.events == []
    [rejected] = record.rejected
    assert rejected.reason is Reason.MALFORMED_JSON
    assert rejected.index is None
    assert rejected.payload == (value or b"")


# -- Batch ----------------------------------------------------------------------------------------
def test_next_offsets_is_one_past_the_highest_offset_of_each_partition() -> None:
    batch = batch_of(records(0, [5, 3, 9]) + records(2, [0]) + records(0, [7]))
    assert batch.next_offsets() == {0: 10, 2: 1}
    assert batch.partitions() == [0, 2]


def test_an_empty_batch_moves_no_watermark() -> None:
    batch = Batch(TOPIC, EventKind.API_CALL)
    assert batch.next_offsets() == {}
    assert len(batch) == 0 and batch.event_count == 0


def test_a_batch_counts_records_events_and_rejected_parts() -> None:
    bad = decoded(1, 4, b"[1, 2]")
    batch = batch_of([*records(0, [0, 1], events=3), bad])
    assert len(batch) == 3
    assert batch.event_count == 6
    assert len(list(batch.events())) == 6
    assert [(rec.offset, rej.index) for rec, rej in batch.rejected()] == [(4, 0), (4, 1)]


def test_split_replayed_keeps_records_at_or_above_their_partitions_watermark() -> None:
    batch = batch_of(records(0, range(3, 8)) + records(1, range(3)) + records(2, [4, 5]))
    kept, dropped = batch.split_replayed({0: 5, 1: 10})
    assert offsets_of(kept) == [(0, 5), (0, 6), (0, 7), (2, 4), (2, 5)]
    assert dropped == 5
    assert (kept.topic, kept.kind) == (TOPIC, EventKind.API_CALL)
    assert len(batch) == 10  # the input batch is left as it was


def test_split_replayed_keeps_everything_without_watermarks() -> None:
    batch = batch_of(records(0, range(4)))
    kept, dropped = batch.split_replayed({})
    assert (offsets_of(kept), dropped) == (offsets_of(batch), 0)


# -- flush: events beyond retention -------------------------------------------------------------
def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def test_reject_expired_moves_expired_events_out_with_their_array_position() -> None:
    old, new = START_MS - 3 * DAY_MS, START_MS - 3_600_000
    good = wire_events(5)
    stamps = [new, old, new]
    array = [dict(good[0], occurred_at=stamps[0]), "x", dict(good[1], occurred_at=stamps[1])]
    array.append(dict(good[2], occurred_at=stamps[2]))
    mixed = decoded(0, 1, orjson.dumps(array))  # events at array positions 0, 2, 3
    single = decoded(0, 2, orjson.dumps(dict(good[3], occurred_at=old)))
    fresh = decoded(1, 0, orjson.dumps(dict(good[4], occurred_at=new)))
    expired_event = mixed.events[1]
    batch = batch_of([mixed, single, fresh])

    moved = reject_expired(batch, day_start, {day_start(old)}, "api_usage")

    assert moved == 2
    assert [e.event_id for e in mixed.events] == [good[0]["event_id"], good[2]["event_id"]]
    assert [(r.reason, r.index) for r in mixed.rejected] == [
        (Reason.NOT_AN_OBJECT, 1),
        (Reason.BEYOND_RETENTION, 2),
    ]
    assert mixed.rejected[1].payload == orjson.dumps(expired_event.to_wire())
    assert "api_usage" in mixed.rejected[1].detail
    assert single.events == []
    assert [(r.reason, r.index) for r in single.rejected] == [(Reason.BEYOND_RETENTION, None)]
    assert len(fresh.events) == 1 and fresh.rejected == []


def test_reject_expired_again_in_a_retried_attempt_keeps_positions_right() -> None:
    """A flush attempt that is retried calls reject_expired on records it already changed."""
    day1, day2 = START_MS - 5 * DAY_MS, START_MS - 4 * DAY_MS
    good = wire_events(4)
    stamps = [day2, day1, day2, day1]
    array = [dict(g, occurred_at=t) for g, t in zip(good, stamps, strict=True)]
    record = decoded(0, 9, orjson.dumps(array))
    batch = batch_of([record])
    assert reject_expired(batch, day_start, {day_start(day1)}, "api_usage") == 2
    assert reject_expired(batch, day_start, {day_start(day1), day_start(day2)}, "api_usage") == 2
    assert record.events == []
    assert sorted(r.index for r in record.rejected if r.index is not None) == [0, 1, 2, 3]
    by_index = {r.index: orjson.loads(r.payload)["event_id"] for r in record.rejected}
    assert by_index == {i: g["event_id"] for i, g in enumerate(good)}


def test_reject_expired_with_nothing_expired_changes_nothing() -> None:
    batch = batch_of(records(0, range(3), events=2))
    assert reject_expired(batch, day_start, set(), "api_usage") == 0
    assert batch.event_count == 6 and list(batch.rejected()) == []


# -- flush: the cached watermark ------------------------------------------------------------------
def make_flusher(metrics: Metrics) -> Flusher:
    async def no_sleep(delay: float) -> None:
        raise AssertionError("the flush must not retry")

    return Flusher(
        UntouchablePool(),
        group="g",
        topic=TOPIC,
        kind=EventKind.API_CALL,
        worker_id="w-1",
        dead_letters=UntouchableSink(),
        metrics=metrics,
        clock=FakeClock(NOW_S),
        sleep=no_sleep,
    )


def skipped_metric(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(
        "pipeline_replayed_records_skipped_total", {"topic": TOPIC}
    )


def test_seed_and_forget_set_and_drop_the_cached_watermark() -> None:
    flusher = make_flusher(Metrics())
    assert flusher.watermark(0) is None
    flusher.seed(0, 10)
    flusher.seed(0, 12)
    assert flusher.watermark(0) == 12
    flusher.forget([0, 5])
    assert flusher.watermark(0) is None


@pytest.mark.asyncio
async def test_a_batch_wholly_below_the_cached_watermark_is_skipped_without_postgresql() -> None:
    metrics = Metrics()
    flusher = make_flusher(metrics)
    flusher.seed(0, 10)
    flusher.seed(1, 3)
    batch = batch_of(records(0, range(7, 10), events=2) + records(1, range(3)))

    result = await flusher.flush(batch)

    assert result == FlushResult(
        records=6,
        events_applied=0,
        records_skipped=6,
        rejected=0,
        rows_written=0,
        attempts=0,
        watermarks={},
    )
    assert skipped_metric(metrics) == 6
    assert flusher.healthy and flusher.last_success is None
    assert flusher.watermark(0) == 10 and flusher.watermark(1) == 3


@pytest.mark.asyncio
async def test_a_record_at_the_cached_watermark_is_not_skipped() -> None:
    """Only offsets strictly below the watermark are replays: offset == watermark is new."""
    flusher = make_flusher(Metrics())
    flusher.seed(0, 10)
    with pytest.raises(AssertionError, match="must not touch PostgreSQL"):
        await flusher.flush(batch_of(records(0, range(8, 11))))


@pytest.mark.asyncio
async def test_a_partition_without_a_cached_watermark_is_not_skipped() -> None:
    flusher = make_flusher(Metrics())
    flusher.seed(0, 100)
    with pytest.raises(AssertionError, match="must not touch PostgreSQL"):
        await flusher.flush(batch_of(records(1, [0])))


def test_split_by_partition_keeps_partitions_whole_and_balances_events() -> None:
    batch = Batch("t", EventKind.API_CALL)
    sizes = {0: 9, 1: 5, 2: 4, 3: 1}
    offset = 0
    for partition, events in sizes.items():
        for _ in range(events):
            batch.records.append(Record(partition, offset, 0, []))
            offset += 1
    parts = batch.split_by_partition(2)
    assert len(parts) == 2
    owners = [{r.partition for r in part.records} for part in parts]
    assert owners[0].isdisjoint(owners[1]) and owners[0] | owners[1] == set(sizes)
    assert sorted(len(part) for part in parts) == [9, 10]  # {0} and {1, 2, 3}
    for part in parts:  # arrival order kept
        assert [r.offset for r in part.records] == sorted(r.offset for r in part.records)
    assert batch.split_by_partition(1) == [batch]
    assert len(batch.split_by_partition(10)) == 4  # never more parts than partitions
