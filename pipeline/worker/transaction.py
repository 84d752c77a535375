"""The flush transaction: lock the watermarks, skip what is applied, write, advance (stage: write).

:func:`apply_batch` is one PostgreSQL transaction on a connection the caller holds:

1. lock the batch's ``ingest_offsets`` rows in partition order (:func:`offsets.lock`); a
   zombie flushing the same partitions waits here, then sees what this one applied;
2. drop every record below the stored watermark (another worker, or an earlier life of
   this one, applied it); if any was dropped, the prepared rows are prepared again;
3. write the events with the kind's :class:`~pipeline.worker.writes.Writer`, in a
   savepoint: when PostgreSQL rejects a value (a data error), the statement is bisected
   inside savepoints until the offending events are isolated; they leave the batch as
   ``rejected_by_database`` dead letters, which ``publish`` must get acknowledged before
   the commit, and the rest is written;
4. advance each partition's watermark to one past its last record (never backwards);
5. commit.

Returning means committed. Any exception means rolled back (nothing applied, watermark
unchanged), except that the ``rejected`` events were already moved out of their records.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contract import Event, Reason
from pipeline.errors import DataRejectedError, classify_database_error
from pipeline.worker import offsets
from pipeline.worker.batch import Batch, Record, Rejected
from pipeline.worker.writes import Writer

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[tuple[Record, Rejected]]], Awaitable[None]]


@dataclass(frozen=True)
class Applied:
    """What one committed flush transaction did."""

    events: int  # events written (their effect is stored)
    rows: int  # rows inserted or updated
    dropped: int  # records skipped: already below the stored watermark
    rejected: list[tuple[Record, Rejected]]  # events PostgreSQL refused, now dead letters
    watermarks: dict[int, int]  # partition -> next offset to apply, as committed


async def apply_batch(
    conn: Any,
    batch: Batch,
    *,
    group: str,
    worker_id: str,
    writer: Writer,
    prepared: Any,
    publish: Publish,
) -> Applied:
    """Apply ``batch`` in one transaction on ``conn`` (see the module docstring).

    ``prepared`` is ``writer.prepare`` of the batch's events, computed before the call.
    """
    async with conn.transaction():
        stored = await offsets.lock(conn, group, batch.topic, batch.partitions(), worker_id)
        work, dropped = batch.split_replayed(stored)
        if dropped:
            log.info(
                "%s: %d records already applied by another worker, skipped", batch.topic, dropped
            )
            prepared = writer.prepare(list(work.events()))
        events, rows, rejected = await _write(conn, work, writer, prepared)
        if rejected:
            await publish(rejected)
        new = {p: n for p, n in batch.next_offsets().items() if n > stored.get(p, 0)}
        await offsets.advance(conn, group, batch.topic, new, worker_id)
    return Applied(events, rows, dropped, rejected, {**stored, **new})


Pair = tuple[Record, Event]


async def _write(
    conn: Any, batch: Batch, writer: Writer, prepared: Any
) -> tuple[int, int, list[tuple[Record, Rejected]]]:
    """Write the batch's events; return (events written, rows, rejected by PostgreSQL)."""
    count = batch.event_count
    if not count:
        return 0, 0, []
    try:
        async with conn.transaction():
            return count, await writer.write(conn, prepared), []
    except Exception as exc:
        if not isinstance(classify_database_error(exc), DataRejectedError):
            raise
    pairs = [(record, event) for record in batch.records for event in record.events]
    rows, bad = await _isolate(conn, pairs, writer)
    positions = {id(r): dict(zip(map(id, r.events), r.positions(), strict=True))
                 for r in {id(r): r for (r, _), _ in bad}.values()}  # fmt: skip
    rejected = []
    for (record, event), error in bad:
        item = Rejected(
            Reason.REJECTED_BY_DATABASE,
            f"PostgreSQL refused event {event.event_id}: {error}"[:1000],
            positions[id(record)][id(event)],
            orjson.dumps(event.to_wire()),
        )
        record.events.remove(event)
        record.rejected.append(item)
        rejected.append((record, item))
    return len(pairs) - len(bad), rows, rejected


async def _isolate(
    conn: Any, pairs: list[Pair], writer: Writer
) -> tuple[int, list[tuple[Pair, DataRejectedError]]]:
    """Write ``pairs`` in a savepoint; on a data error, bisect to find the culprits."""
    try:
        async with conn.transaction():
            return await writer.write(conn, writer.prepare([e for _, e in pairs])), []
    except Exception as exc:
        error = classify_database_error(exc)
        if not isinstance(error, DataRejectedError):
            raise
        if len(pairs) == 1:
            return 0, [(pairs[0], error)]
        middle = len(pairs) // 2
        rows_a, bad_a = await _isolate(conn, pairs[:middle], writer)
        rows_b, bad_b = await _isolate(conn, pairs[middle:], writer)
        return rows_a + rows_b, bad_a + bad_b
