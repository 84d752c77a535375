"""Packing items into Kafka record values, in the two shapes of the standard workload.

- ``batched``: each record value is a JSON array of up to ``max_events`` events and never
  more than ``max_bytes`` bytes (an event that alone exceeds ``max_bytes`` becomes a
  one-element array of its own). What the project's producer sends.
- ``single``: each record value is one JSON event object. What a service written in
  another language may send.

In both shapes a poison record (:attr:`Item.raw`) is a record of its own, exactly its
bytes; poison events travel like valid ones (inside arrays in the batched shape: the
worker dead-letters just that element). Items keep their order: concatenating the events
of the records gives back the input sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import orjson

from pipeline.contract import EventKind
from pipeline.workload.spec import Item

__all__ = ["PackedRecord", "Shape", "pack", "pack_stream"]

Shape = Literal["batched", "single"]


@dataclass(frozen=True, slots=True)
class PackedRecord:
    """One Kafka record value for the topic of ``kind``.

    ``events`` is how many items it carries (a raw poison record counts as one), and
    ``poison`` how many of those are poison.
    """

    kind: EventKind
    value: bytes
    events: int
    poison: int


class _Batcher:
    """Accumulates one kind's events into arrays; appends finished records to ``out``."""

    __slots__ = ("kind", "max_bytes", "max_events", "out", "parts", "poison", "size")

    def __init__(
        self, kind: EventKind, max_events: int, max_bytes: int, out: list[PackedRecord]
    ) -> None:
        self.kind = kind
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.out = out
        self.parts: list[bytes] = []
        self.size = 1  # "[", then each element adds its length plus "," or "]"
        self.poison = 0

    def add(self, item: Item) -> None:
        raw = item.raw
        if raw is not None:
            self.flush()
            self.out.append(PackedRecord(self.kind, raw, 1, 1))
            return
        data = orjson.dumps(item.event)
        n = len(data) + 1
        parts = self.parts
        if parts and (self.size + n > self.max_bytes or len(parts) >= self.max_events):
            self.flush()
        parts.append(data)
        self.size += n
        if item.poison is not None:
            self.poison += 1

    def flush(self) -> None:
        parts = self.parts
        if parts:
            value = b"[" + b",".join(parts) + b"]"
            self.out.append(PackedRecord(self.kind, value, len(parts), self.poison))
            parts.clear()  # in place: add() holds a reference to this list
            self.size = 1
            self.poison = 0


def _check(shape: str, max_events: int, max_bytes: int) -> None:
    if shape not in ("batched", "single"):
        raise ValueError(f"shape must be 'batched' or 'single', got {shape!r}")
    if max_events < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    if max_bytes < 2:
        raise ValueError(f"max_bytes must be >= 2, got {max_bytes}")


def _single(item: Item) -> PackedRecord:
    raw = item.raw
    value = raw if raw is not None else orjson.dumps(item.event)
    return PackedRecord(item.kind, value, 1, 0 if item.poison is None else 1)


def pack(
    items: Iterable[Item],
    shape: Shape = "batched",
    max_events: int = 500,
    max_bytes: int = 1_048_576,
) -> Iterator[PackedRecord]:
    """Pack items that are all of one kind into record values (see the module docstring).

    Raises ``ValueError`` for a bad shape or limit, or when an item's kind differs from
    the first item's (use :func:`pack_stream` for a mixed stream).
    """
    _check(shape, max_events, max_bytes)
    iterator = iter(items)
    first = next(iterator, None)
    if first is None:
        return
    kind = first.kind
    if shape == "single":
        yield _single(first)
        for item in iterator:
            if item.kind is not kind:
                raise ValueError(f"pack() needs items of one kind: {item.kind} after {kind}")
            yield _single(item)
        return
    out: list[PackedRecord] = []
    batcher = _Batcher(kind, max_events, max_bytes, out)
    batcher.add(first)
    add = batcher.add
    for item in iterator:
        if item.kind is not kind:
            raise ValueError(f"pack() needs items of one kind: {item.kind} after {kind}")
        add(item)
        if out:
            yield from out
            out.clear()
    batcher.flush()
    yield from out


def pack_stream(
    items: Iterable[Item],
    shape: Shape = "batched",
    max_events: int = 500,
    max_bytes: int = 1_048_576,
) -> Iterator[PackedRecord]:
    """Pack a stream of mixed kinds: like :func:`pack` applied to each kind's sub-sequence.

    Records are yielded as soon as they are complete (batches of the rarer kinds fill up
    later), so the order across kinds differs from the input; within a kind, it is kept.
    """
    _check(shape, max_events, max_bytes)
    if shape == "single":
        for item in items:
            yield _single(item)
        return
    out: list[PackedRecord] = []
    batchers = {kind: _Batcher(kind, max_events, max_bytes, out) for kind in EventKind}
    for item in items:
        batchers[item.kind].add(item)
        if out:
            yield from out
            out.clear()
    for batcher in batchers.values():
        batcher.flush()
    yield from out
