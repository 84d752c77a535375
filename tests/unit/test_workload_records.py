"""Packing items into Kafka record values: limits, order, both shapes."""

from __future__ import annotations

import orjson
import pytest

from pipeline.contract import EventKind
from pipeline.workload import (
    Item,
    PackedRecord,
    Shape,
    WorkloadSpec,
    generate,
    pack,
    pack_stream,
)

START = 1_767_225_600_000


def items_of(kind: EventKind, api_calls: int = 3000, invalid: float = 0.05) -> list[Item]:
    spec = WorkloadSpec(api_calls=api_calls, start_ms=START, invalid_fraction=invalid)
    return [i for i in generate(spec) if i.kind is kind]


def unpack(records: list[PackedRecord], shape: str) -> list[bytes]:
    """Each item's bytes as packed: raw records as-is, events re-serialised."""
    out: list[bytes] = []
    for record in records:
        try:
            data = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            out.append(record.value)
            continue
        if shape == "batched" and isinstance(data, list):
            assert len(data) == record.events
            out += [orjson.dumps(e) for e in data]
        elif isinstance(data, dict):
            out.append(orjson.dumps(data))
        else:
            out.append(record.value)
    return out


def expected_bytes(items: list[Item]) -> list[bytes]:
    return [i.raw if i.raw is not None else orjson.dumps(i.event) for i in items]


@pytest.mark.parametrize("kind", list(EventKind))
def test_batched_limits_and_order(kind: EventKind) -> None:
    items = items_of(kind)
    records = list(pack(items, "batched", max_events=50))
    assert unpack(records, "batched") == expected_bytes(items)
    assert sum(r.events for r in records) == len(items)
    assert sum(r.poison for r in records) == sum(i.poison is not None for i in items)
    for record in records:
        assert record.kind is kind
        assert record.events <= 50
        if record.value.startswith(b"[") and record.events > 1:
            assert len(orjson.loads(record.value)) == record.events
    raws = [i.raw for i in items if i.raw is not None]
    assert raws
    assert [r.value for r in records if r.value in raws] == raws  # raw poison goes alone


def test_batched_respects_max_bytes() -> None:
    items = items_of(EventKind.ANALYSIS, invalid=0.2)
    sizes = [len(orjson.dumps(i.event)) for i in items if i.event is not None]
    limit = 2500
    assert max(sizes) > limit  # the too_large poison events
    records = list(pack(items, "batched", max_bytes=limit))
    assert unpack(records, "batched") == expected_bytes(items)
    for record in records:
        if len(record.value) > limit:
            assert record.events == 1  # an oversized event goes alone
            assert len(orjson.loads(record.value)) == 1
    # Every batch is full: adding the next event would have broken a limit.
    arrays = [r for r in records if r.value.startswith(b"[") and r.events > 1]
    assert arrays
    assert all(len(r.value) > limit - max(sizes) for r in arrays)


def test_default_batches_hold_500() -> None:
    items = items_of(EventKind.API_CALL, api_calls=2000, invalid=0.0)
    records = list(pack(items))
    assert [r.events for r in records] == [500, 500, 500, 500]
    assert all(len(r.value) <= 1_048_576 for r in records)


@pytest.mark.parametrize("kind", list(EventKind))
def test_single_shape(kind: EventKind) -> None:
    items = items_of(kind)
    records = list(pack(items, "single"))
    assert len(records) == len(items)
    assert [r.value for r in records] == expected_bytes(items)
    assert all(r.events == 1 for r in records)
    assert [r.poison for r in records] == [int(i.poison is not None) for i in items]


def test_pack_rejects_mixed_kinds_and_bad_arguments() -> None:
    items = list(generate(WorkloadSpec(api_calls=200, start_ms=START)))
    shapes: tuple[Shape, ...] = ("batched", "single")
    for shape in shapes:
        with pytest.raises(ValueError, match="one kind"):
            list(pack(items, shape))
    with pytest.raises(ValueError, match="shape"):
        list(pack(items, "arrays"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_events"):
        list(pack(items, "batched", max_events=0))
    assert list(pack([], "batched")) == []


@pytest.mark.parametrize("shape", ["batched", "single"])
def test_pack_stream_keeps_order_within_each_kind(shape: Shape) -> None:
    spec = WorkloadSpec(api_calls=3000, start_ms=START, invalid_fraction=0.05)
    items = list(generate(spec))
    records = list(pack_stream(items, shape, max_events=100))
    for kind in EventKind:
        mine = [r for r in records if r.kind is kind]
        assert unpack(mine, shape) == expected_bytes([i for i in items if i.kind is kind])
