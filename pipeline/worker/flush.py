"""One flush = one PostgreSQL transaction that applies a batch and advances its watermark.

:meth:`Flusher.flush` is the contract the faust agents rely on:

- **Returning** means the batch's effect is committed together with the watermark of every
  partition in it (records below the stored watermark were skipped as replays), and every
  rejected record of the batch has been acknowledged by the dead-letter topic. The caller
  acks all of the batch's Kafka messages, and only then.
- **Blocking**: while PostgreSQL (or the dead-letter topic) is unavailable, ``flush``
  retries the whole attempt forever with capped exponential backoff and jitter, acking
  nothing; :attr:`Flusher.healthy` is False meanwhile and the metrics show the retries.
- **Raising**: only ``asyncio.CancelledError`` (shutdown: nothing was committed unless the
  commit already happened, in which case a redelivery is skipped by the watermark) or an
  exception that is a bug in this program.

Inside the transaction, in this order: lock the batch's ``ingest_offsets`` rows (sorted),
drop records below the stored watermark, apply the rest (one statement per table, each in a
savepoint so that a row PostgreSQL rejects, e.g. a value out of range, is isolated by
bisection and dead-lettered with reason ``rejected_by_database`` while the rest applies),
advance the watermark, commit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.contract import Analysis, ApiCall, Event, EventKind, Reason, SystemLog
from pipeline.errors import (
    DatabaseError,
    DataRejectedError,
    NoPartitionError,
    PipelineError,
    classify_database_error,
)
from pipeline.metrics import Metrics
from pipeline.worker import offsets, writes
from pipeline.worker.aggregate import HOUR_MS, BucketKey, aggregate
from pipeline.worker.batch import Batch, Record, Rejected
from pipeline.worker.deadletter import DeadLetterSink
from pipeline.worker.partitions import TABLES, PartitionGuard

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter: attempt n waits up to initial * 2**(n-1)."""

    initial_s: float = 0.1
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.initial_s * 2.0 ** max(attempt - 1, 0))
        return ceiling * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class FlushResult:
    records: int
    events_applied: int
    records_skipped: int
    rejected: int
    rows_written: int
    attempts: int


class Flusher:
    """Applies batches of one topic for one consumer group. One flush at a time."""

    def __init__(
        self,
        pool: Any,
        *,
        group: str,
        topic: str,
        kind: EventKind,
        worker_id: str,
        dead_letters: DeadLetterSink,
        metrics: Metrics,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self.group = group
        self.topic = topic
        self.kind = kind
        self.worker_id = worker_id
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._table = TABLES[kind]
        self._guard = PartitionGuard(self._table)
        self._watermarks: dict[int, int] = {}  # never above the committed truth
        self.healthy = True
        self.last_success: float | None = None

    def watermark(self, partition: int) -> int | None:
        """The next offset this worker knows to be committed for ``partition``."""
        return self._watermarks.get(partition)

    async def flush(self, batch: Batch) -> FlushResult:
        """Apply ``batch`` exactly once (see the module docstring for the contract)."""
        started = time.perf_counter()
        batch, skipped = batch.split_replayed(self._watermarks)
        if not batch.records:
            self._metrics.records_skipped.labels(self.topic).inc(skipped)
            return FlushResult(skipped, 0, skipped, 0, 0, 0)
        published: set[tuple[int, int, int | None]] = set()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._attempt(batch, published)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _classify(exc)
                if error is None or not _stalls(error):
                    raise
                if isinstance(error, NoPartitionError):
                    self._guard.forget()
                self.healthy = False
                self._metrics.database_available.set(0)
                self._metrics.flush_retries.labels(self.topic, type(error).__name__).inc()
                delay = self._retry.delay(attempt, self._rng)
                log.warning(
                    "flush of %s (%d records) failed, attempt %d, retrying in %.2fs: %s",
                    self.topic,
                    len(batch),
                    attempt,
                    delay,
                    error,
                )
                await self._sleep(delay)
        self.healthy = True
        self.last_success = self._clock()
        self._observe(batch, result, skipped, time.perf_counter() - started)
        return FlushResult(
            records=len(batch) + skipped,
            events_applied=result[0],
            records_skipped=skipped + result[3],
            rejected=result[1],
            rows_written=result[2],
            attempts=attempt,
        )

    # -- one attempt -----------------------------------------------------------------------
    async def _attempt(
        self, batch: Batch, published: set[tuple[int, int, int | None]]
    ) -> tuple[int, int, int, int]:
        """Returns (events applied, rejected, rows written, records skipped in the txn)."""
        hours = {e.occurred_at_ms - e.occurred_at_ms % HOUR_MS for e in batch.events()}
        async with self._pool.acquire() as conn:
            expired = await self._guard.prepare(
                conn,
                hours,
                on_created=lambda t: self._metrics.partitions_created.labels(t).inc(),
            )
            if expired:
                _reject_expired(batch, self._guard, expired)
            await self._publish(batch_rejections(batch), published)
            # CPU work before the transaction opens: rows stay locked for less time.
            buckets = (
                aggregate(e for e in batch.events() if isinstance(e, ApiCall))
                if self.kind is EventKind.API_CALL
                else None
            )
            async with conn.transaction():
                stored = await offsets.lock(
                    conn, self.group, self.topic, batch.partitions(), self.worker_id
                )
                self._check_gaps(batch, stored)
                work, dropped = batch.split_replayed(stored)
                if dropped:
                    log.info(
                        "%s: %d records already applied by another worker, skipped",
                        self.topic,
                        dropped,
                    )
                applied, rows, db_rejected = await self._apply(
                    conn, work, None if dropped else buckets
                )
                if db_rejected:
                    await self._publish(db_rejected, published)
                new = {p: n for p, n in batch.next_offsets().items() if n > stored.get(p, 0)}
                await offsets.advance(conn, self.group, self.topic, new, self.worker_id)
        self._watermarks.update(stored)
        self._watermarks.update(new)
        rejected = sum(len(r.rejected) for r in work.records) + len(db_rejected)
        return applied, rejected, rows, dropped

    def _check_gaps(self, batch: Batch, stored: dict[int, int]) -> None:
        """Records between the stored watermark and the batch's first offset were never
        applied by any worker of the group. Kafka offsets of our topics are contiguous, so
        this means the consumer started past the watermark (retention deleted the records,
        or an offset commit ran ahead of PostgreSQL). The batch still applies (stopping
        would not bring the records back); operators reset the group's Kafka offsets to the
        watermark to reprocess (docs/operations.md)."""
        for partition, first in batch.first_offsets().items():
            mark = stored.get(partition, 0)
            if 0 < mark < first:
                self._metrics.offset_gaps.labels(self.topic).inc()
                log.error(
                    "%s[%d]: records %d..%d were never applied (watermark %d, batch starts "
                    "at %d); see docs/operations.md, 'Offset gaps'",
                    self.topic,
                    partition,
                    mark,
                    first - 1,
                    mark,
                    first,
                )

    async def _publish(
        self,
        items: Sequence[tuple[Record, Rejected]],
        published: set[tuple[int, int, int | None]],
    ) -> None:
        todo = [
            (rec, rej)
            for rec, rej in items
            if (rec.partition, rec.offset, rej.index) not in published
        ]
        if not todo:
            return
        await self._dead_letters.publish(self.topic, todo)
        for rec, rej in todo:
            published.add((rec.partition, rec.offset, rej.index))
            self._metrics.events_invalid.labels(self.topic, str(rej.reason)).inc()
            self._metrics.dead_letters.labels(self.topic, str(rej.reason)).inc()

    async def _apply(
        self, conn: Any, batch: Batch, buckets: dict[BucketKey, list[float]] | None
    ) -> tuple[int, int, list[tuple[Record, Rejected]]]:
        """Apply the batch's events; return (events applied, rows written, rejected).

        ``buckets`` is the batch already aggregated (API calls), or None to aggregate here.
        """
        pairs = [(record, event) for record in batch.records for event in record.events]
        if not pairs:
            return 0, 0, []
        if buckets is not None:
            try:
                async with conn.transaction():
                    return len(pairs), await writes.upsert_buckets(conn, buckets), []
            except Exception as exc:
                if not isinstance(classify_database_error(exc), DataRejectedError):
                    raise
        if self.kind is EventKind.API_CALL:
            rows, bad = await _isolating(conn, pairs, _upsert_calls)
        elif self.kind is EventKind.ANALYSIS:
            rows, bad = await _isolating(conn, pairs, _insert_analyses)
        else:
            rows, bad = await _isolating(conn, pairs, _insert_logs)
        positions = {id(r): dict(zip(map(id, r.events), r.positions(), strict=True))
                     for r in {id(r): r for (r, _), _ in bad}.values()}  # fmt: skip
        rejected = []
        for (record, event), error in bad:
            item = Rejected(
                Reason.REJECTED_BY_DATABASE,
                f"PostgreSQL refused event {event.event_id}: {error}"[:1000],
                positions[id(record)][id(event)],
                _event_json(event),
            )
            record.events.remove(event)
            record.rejected.append(item)
            rejected.append((record, item))
        return len(pairs) - len(bad), rows, rejected

    def _observe(
        self, batch: Batch, result: tuple[int, int, int, int], skipped: int, seconds: float
    ) -> None:
        m = self._metrics
        now = self._clock()
        applied, _rejected, rows, _dropped = result
        m.flush_duration.labels(self.topic).observe(seconds)
        m.flush_batch_events.labels(self.topic).observe(applied)
        m.rows_written.labels(self._table).inc(rows)
        if self.kind is not EventKind.API_CALL and applied > rows:
            m.duplicates_ignored.labels(self._table).inc(applied - rows)
        m.records_skipped.labels(self.topic).inc(skipped + result[3])
        m.last_flush.labels(self.topic).set(now)
        m.database_available.set(1)
        latency = m.end_to_end_latency.labels(self.topic)
        for record in batch.records[:1000]:
            if record.events:
                latency.observe(max(0.0, now - record.events[0].occurred_at_ms / 1000))


def _classify(exc: Exception) -> PipelineError | None:
    """The pipeline's view of an exception from PostgreSQL, the network or the pipeline;
    None for anything else (a bug, which must crash the worker rather than spin)."""
    if isinstance(exc, PipelineError):
        return exc
    if type(exc).__module__.startswith("asyncpg") or isinstance(exc, OSError | TimeoutError):
        return classify_database_error(exc)
    return None


def _stalls(error: PipelineError) -> bool:
    """Errors that stall the flush (retry forever) rather than crash the worker: anything
    PostgreSQL or the broker said that cannot be pinned on specific records (those are
    isolated instead). A missing table stalls until someone runs the migrations."""
    return error.retriable or (
        isinstance(error, DatabaseError) and not isinstance(error, DataRejectedError)
    )


def batch_rejections(batch: Batch) -> list[tuple[Record, Rejected]]:
    return list(batch.rejected())


def _reject_expired(batch: Batch, guard: PartitionGuard, expired: set[int]) -> None:
    for record in batch.records:
        if not any(guard.range_start(e.occurred_at_ms) in expired for e in record.events):
            continue
        keep = []
        for event, position in zip(record.events, record.positions(), strict=True):
            if guard.range_start(event.occurred_at_ms) in expired:
                record.rejected.append(
                    Rejected(
                        Reason.BEYOND_RETENTION,
                        f"occurred_at is older than the retention of {guard.table}",
                        position,
                        _event_json(event),
                    )
                )
            else:
                keep.append(event)
        record.events[:] = keep


def _event_json(event: Event) -> bytes:
    import orjson

    return orjson.dumps(event.to_wire())


Pair = tuple[Record, Event]


async def _isolating(
    conn: Any, pairs: list[Pair], apply: Callable[[Any, list[Pair]], Awaitable[int]]
) -> tuple[int, list[tuple[Pair, DataRejectedError]]]:
    """Apply ``pairs`` in a savepoint; on a data error, bisect to find the culprits."""
    try:
        async with conn.transaction():
            return await apply(conn, pairs), []
    except Exception as exc:
        error = classify_database_error(exc)
        if not isinstance(error, DataRejectedError):
            raise
        if len(pairs) == 1:
            return 0, [(pairs[0], error)]
        middle = len(pairs) // 2
        rows_a, bad_a = await _isolating(conn, pairs[:middle], apply)
        rows_b, bad_b = await _isolating(conn, pairs[middle:], apply)
        return rows_a + rows_b, bad_a + bad_b


async def _upsert_calls(conn: Any, pairs: list[Pair]) -> int:
    calls = [e for _, e in pairs if isinstance(e, ApiCall)]
    return await writes.upsert_buckets(conn, aggregate(calls))


async def _insert_analyses(conn: Any, pairs: list[Pair]) -> int:
    return await writes.insert_analyses(conn, [e for _, e in pairs if isinstance(e, Analysis)])


async def _insert_logs(conn: Any, pairs: list[Pair]) -> int:
    return await writes.insert_logs(conn, [e for _, e in pairs if isinstance(e, SystemLog)])


__all__ = ["HOUR_MS", "FlushResult", "Flusher", "RetryPolicy"]
