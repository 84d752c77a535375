"""From file lines to validated events, and from events to deterministic Kafka records.

:func:`classify` decides one line: a validated event of a kind, or a :class:`Reject`
(reason and detail, as the reject file reports them). The kind is ``--kind`` when given,
otherwise the line's ``type`` field. CSV rows are typed first
(:mod:`pipeline.importer.csv_cells`); then the contract's own :func:`validate_event` runs
with a fixed clock (``now_ms``, recorded when the import started, so a resumed run decides
every line as the first one did); finally an event older than its table's retention
(``cutoffs``: the first ``occurred_at`` the table keeps, read at the start) is rejected as
``beyond_retention``, since the workers would dead-letter it.

:func:`chunks` cuts a file into **chunks** of ``chunk_lines`` consecutive data lines
(ordinals ``[i * n, (i + 1) * n)``) and turns each into its records: the chunk's valid
events grouped by kind (in :class:`EventKind` order), each encoded as the SDK encodes it
(``orjson.dumps(event.to_wire())``), packed into JSON arrays of at most
``max_record_bytes``. A record's key is ``<file SHA-256>:<first line of the chunk>:<part>``.
The same file and options always give the same records with the same keys: that is how
a resumed import recognises records it already sent (:mod:`pipeline.importer.tail`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import orjson

from pipeline.contract import ContractError, Event, EventKind, kind_named, validate_event
from pipeline.importer.csv_cells import CellError, typed_row
from pipeline.importer.sources import Line, Source
from pipeline.producer import pack_arrays

__all__ = ["Chunk", "OutRecord", "Reject", "chunks", "classify", "record_key"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ORDER: Final = {kind: n for n, kind in enumerate(EventKind)}


@dataclass(frozen=True, slots=True)
class Reject:
    """Why a line is not imported: a contract reason code (``missing_field``...) or one of
    the importer's (``malformed_csv``, ``beyond_retention``), and a detail."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One Kafka record of an import: its kind (the topic), key, value and event count."""

    kind: EventKind
    key: str
    value: bytes
    events: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """The records of data lines ``[first_ordinal, end_ordinal)`` (physical lines
    ``first_line``..``last_line``) of one file."""

    first_ordinal: int
    end_ordinal: int
    first_line: int
    last_line: int
    records: list[OutRecord]

    @property
    def events(self) -> int:
        return sum(r.events for r in self.records)


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def classify(
    line: Line,
    kind: EventKind | None,
    *,
    cells: bool,
    now_ms: int,
    cutoffs: Mapping[EventKind, int],
    tables: Callable[[EventKind], str],
) -> Event | Reject:
    """The event of ``line``, or why it is rejected (see the module docstring).

    ``cells``: the line is a CSV row (cells to type); ``tables(kind)`` names the table
    whose retention ``cutoffs[kind]`` is, for the message.
    """
    if line.error is not None:
        return Reject(*line.error)
    value = line.value
    if not isinstance(value, dict):
        return Reject("not_an_object", "a line must be one JSON object")
    line_kind = kind
    if line_kind is None:
        name = value.get("type")
        if name is None or name == "":
            return Reject("unknown_event_type", "no type field, and no --kind given")
        line_kind = kind_named(name)
        if line_kind is None:
            return Reject(
                "unknown_event_type",
                f"type: {name!r} is not an event kind (one of {', '.join(EventKind)})",
            )
    try:
        obj = typed_row(line_kind, value) if cells else value
        event = validate_event(line_kind, obj, now_ms=now_ms)
    except CellError as exc:
        return Reject(exc.reason, exc.detail)
    except ContractError as exc:
        return Reject(exc.reason.value, exc.detail)
    cutoff = cutoffs.get(line_kind)
    if cutoff is not None and event.occurred_at_ms < cutoff:
        return Reject(
            "beyond_retention",
            f"occurred_at {_iso(event.occurred_at_ms)} is older than what {tables(line_kind)} "
            f"keeps (from {_iso(cutoff)}): the workers would dead-letter it",
        )
    return event


def record_key(sha256: str, first_line: int, part: int) -> str:
    """The key of part ``part`` of the chunk starting at line ``first_line``."""
    return f"{sha256}:{first_line}:{part}"


def _records(sha256: str, first_line: int, events: list[Event], max_bytes: int) -> list[OutRecord]:
    by_kind: dict[EventKind, list[bytes]] = {}
    dumps = orjson.dumps
    for event in events:
        by_kind.setdefault(event.kind, []).append(dumps(event.to_wire()))
    out: list[OutRecord] = []
    for kind in sorted(by_kind, key=_ORDER.__getitem__):
        for value, members in pack_arrays(((None, d) for d in by_kind[kind]), max_bytes):
            key = record_key(sha256, first_line, len(out))
            out.append(OutRecord(kind, key, value, len(members)))
    return out


def chunks(
    source: Source,
    sha256: str,
    *,
    start: int,
    chunk_lines: int,
    max_record_bytes: int,
    classify_line: Callable[[Line], Event | Reject],
) -> Iterator[Chunk]:
    """The chunks of ``source`` from data line ``start`` (a chunk boundary) to the end.

    Lines before ``start`` are read but not decoded. ``classify_line`` is :func:`classify`
    with the import's options bound.
    """
    if start % chunk_lines:
        raise ValueError(f"start {start} is not a multiple of {chunk_lines}")
    events: list[Event] = []
    first_ordinal = first_line = last_line = -1
    for line in source.lines(skip=start):
        if line.ordinal < start:
            continue
        if line.ordinal % chunk_lines == 0 and first_ordinal >= 0:
            yield Chunk(
                first_ordinal,
                line.ordinal,
                first_line,
                last_line,
                _records(sha256, first_line, events, max_record_bytes),
            )
            events = []
            first_ordinal = -1
        if first_ordinal < 0:
            first_ordinal, first_line = line.ordinal, line.number
        last_line = line.number
        decided = classify_line(line)
        if not isinstance(decided, Reject):
            events.append(decided)
    if first_ordinal >= 0:
        end = first_ordinal + chunk_lines  # the last chunk may be short; its end is aligned
        records = _records(sha256, first_line, events, max_record_bytes)
        yield Chunk(first_ordinal, end, first_line, last_line, records)
