"""A batch: the records of one topic that one flush covers, with their positions.

Offsets travel with the data: every decoded event stays attached to the Kafka record
(partition, offset) it came from, so the flush can drop records below the PostgreSQL
watermark and advance the watermark past exactly what it applied.

Nothing here does I/O; building a :class:`Record` is the decode/validate stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from pipeline.contract import Event, EventKind, Invalid, Reason, decode_record


@dataclass(slots=True)
class Rejected:
    """An event (or a whole record) that goes to the dead-letter topic."""

    reason: Reason
    detail: str
    index: int | None
    payload: bytes  # what is published: the event's JSON, or the record's raw value


@dataclass(slots=True)
class Record:
    """One Kafka record after decoding: its valid events and its rejected parts."""

    partition: int
    offset: int
    timestamp_ms: int
    events: list[Event]
    rejected: list[Rejected] = field(default_factory=list)
    is_array: bool = False

    def positions(self) -> list[int | None]:
        """Position in the record's JSON array of each event in :attr:`events`, as decoded
        (None for a single-object record). Call before removing events."""
        if not self.is_array:
            return [None] * len(self.events)
        taken = {r.index for r in self.rejected if r.index is not None}
        free = (i for i in range(len(self.events) + len(taken)) if i not in taken)
        return [next(free) for _ in self.events]

    @classmethod
    def decode(
        cls,
        kind: EventKind,
        partition: int,
        offset: int,
        timestamp_ms: int,
        value: bytes | None,
        *,
        now_ms: int,
    ) -> Record:
        """Decode and validate ``value`` with the contract's validator (never raises)."""
        import orjson

        events, invalid = decode_record(kind, value, now_ms=now_ms)
        rejected = [_rejected(inv, raw, value, orjson.dumps) for inv, raw in invalid]
        is_array = value is not None and value.lstrip()[:1] == b"["
        return cls(partition, offset, timestamp_ms, events, rejected, is_array)


def _rejected(inv: Invalid, raw: object, value: bytes | None, dumps: object) -> Rejected:
    if inv.index is None or isinstance(raw, bytes | bytearray):
        payload = bytes(raw) if isinstance(raw, bytes | bytearray) else (value or b"")
    else:
        try:
            payload = dumps(raw)  # type: ignore[operator]
        except TypeError:
            payload = value or b""
    return Rejected(inv.reason, inv.detail, inv.index, payload)


@dataclass
class Batch:
    """Records of one topic, in arrival order (offsets increase within a partition)."""

    topic: str
    kind: EventKind
    records: list[Record] = field(default_factory=list)

    def add(self, record: Record) -> None:
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def event_count(self) -> int:
        return sum(len(r.events) for r in self.records)

    def events(self) -> Iterator[Event]:
        for record in self.records:
            yield from record.events

    def partitions(self) -> list[int]:
        """The partitions in the batch, sorted (the order in which their rows are locked)."""
        return sorted({r.partition for r in self.records})

    def next_offsets(self) -> dict[int, int]:
        """Per partition, one past the last offset in the batch: the new watermark."""
        nxt: dict[int, int] = {}
        for r in self.records:
            if r.offset + 1 > nxt.get(r.partition, 0):
                nxt[r.partition] = r.offset + 1
        return nxt

    def split_by_partition(self, parts: int) -> list[Batch]:
        """At most ``parts`` batches, each holding whole partitions, of similar event counts
        (the largest partition goes to the lightest batch first); records keep their order.
        """
        sizes: dict[int, int] = {}
        for r in self.records:
            sizes[r.partition] = sizes.get(r.partition, 0) + len(r.events) + len(r.rejected) + 1
        count = max(1, min(parts, len(sizes)))
        if count == 1:
            return [self]
        loads = [0] * count
        owner: dict[int, int] = {}
        for partition in sorted(sizes, key=lambda p: (-sizes[p], p)):
            lightest = loads.index(min(loads))
            owner[partition] = lightest
            loads[lightest] += sizes[partition]
        batches = [Batch(self.topic, self.kind) for _ in range(count)]
        for r in self.records:
            batches[owner[r.partition]].records.append(r)
        return batches

    def split_replayed(self, watermarks: Mapping[int, int]) -> tuple[Batch, int]:
        """Return (records at or above their partition's watermark, count dropped)."""
        kept = [r for r in self.records if r.offset >= watermarks.get(r.partition, 0)]
        return Batch(self.topic, self.kind, kept), len(self.records) - len(kept)

    def rejected(self) -> Iterable[tuple[Record, Rejected]]:
        for record in self.records:
            for rejected in record.rejected:
                yield record, rejected
