"""One flush: a batch of one topic applied exactly once, retried until it is (stage: write).

:meth:`Flusher.flush` is the contract the ingest stage relies on:

- **Returning** means the batch's effect is committed together with the watermark of every
  partition in it (records below the watermark were skipped as replays), and every rejected
  record of the batch has been acknowledged by the dead-letter topic. Only then may the
  caller report progress (commit Kafka offsets as hints).
- **Blocking**: while PostgreSQL (or the dead-letter topic) is unavailable, ``flush``
  retries the whole attempt forever with capped exponential backoff and jitter
  (:mod:`pipeline.worker.retry`); :attr:`Flusher.healthy` is False meanwhile and the
  metrics show the retries.
- **Raising**: ``asyncio.CancelledError`` (a rebalance or shutdown abandoned the flush:
  nothing was committed unless the commit already happened, in which case the watermark
  makes a redelivery a no-op), or an exception that is a bug in this program.

**Parallel sub-flushes**: with ``connections`` > 1 a batch is split by Kafka partition into
up to that many sub-batches of similar size, each applied in its own transaction on its
own connection, advancing only its own partitions' watermarks: exactly once holds per
partition, whatever commits and whatever does not. ``flush`` returns when all have
committed. Bucket rows are still locked in key order in every statement, so sub-flushes
sharing buckets wait for each other but cannot deadlock.

One attempt, in order: skip records below this worker's cached watermark; make sure the
PostgreSQL partitions of the batch's time ranges exist and turn events beyond the table's
retention into ``beyond_retention`` dead letters (:mod:`pipeline.worker.partitions`);
publish the batch's dead letters and wait for the broker; prepare the rows (aggregation,
columns) before the transaction; then the transaction (:mod:`pipeline.worker.transaction`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contract import EventKind, Reason
from pipeline.errors import NoPartitionError, PipelineError
from pipeline.kinds import spec_of
from pipeline.metrics import Metrics
from pipeline.worker.aggregate import HOUR_MS
from pipeline.worker.batch import Batch, Record, Rejected
from pipeline.worker.deadletter import DeadLetterSink
from pipeline.worker.partitions import PartitionGuard
from pipeline.worker.retry import RetryPolicy, retry_until_done
from pipeline.worker.transaction import Applied, apply_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlushResult:
    records: int
    events_applied: int
    records_skipped: int
    rejected: int
    rows_written: int
    attempts: int
    watermarks: dict[int, int]  # partition -> next offset to apply, committed


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
        connections: int = 1,
    ) -> None:
        self._pool = pool
        self._connections = connections
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
        self._writer = spec_of(kind).writer
        # One guard per table the writer fills; the first decides what is beyond retention.
        self._guards = [PartitionGuard(table) for table in self._writer.tables]
        self._guard = self._guards[0]
        self._watermarks: dict[int, int] = {}  # never above the committed truth
        self.healthy = True
        self.last_success: float | None = None

    def watermark(self, partition: int) -> int | None:
        """The next offset this worker knows to be committed for ``partition``."""
        return self._watermarks.get(partition)

    def forget(self, partitions: Collection[int]) -> None:
        """Stop trusting the cached watermarks of ``partitions`` (revoked: the cache is only
        kept for partitions this worker owns)."""
        for partition in partitions:
            self._watermarks.pop(partition, None)

    def seed(self, partition: int, offset: int) -> None:
        """Remember the watermark just read from PostgreSQL where ``partition`` starts
        (it replaces the cached one: the cache never claims more than is stored)."""
        self._watermarks[partition] = offset

    async def flush(self, batch: Batch) -> FlushResult:
        """Apply ``batch`` exactly once (see the module docstring for the contract)."""
        started = time.perf_counter()
        batch, skipped = batch.split_replayed(self._watermarks)
        if not batch.records:
            self._metrics.records_skipped.labels(self.topic).inc(skipped)
            return FlushResult(skipped, 0, skipped, 0, 0, 0, {})
        parts = batch.split_by_partition(self._connections)
        if len(parts) == 1:
            outcomes = [await self._apply(batch)]
        else:
            async with asyncio.TaskGroup() as group:  # one failing (a bug) cancels the rest
                tasks = [group.create_task(self._apply(part)) for part in parts]
            outcomes = [task.result() for task in tasks]
        applied = Applied(
            events=sum(a.events for a, _ in outcomes),
            rows=sum(a.rows for a, _ in outcomes),
            dropped=sum(a.dropped for a, _ in outcomes),
            rejected=[r for a, _ in outcomes for r in a.rejected],
            watermarks={p: o for a, _ in outcomes for p, o in a.watermarks.items()},
        )
        self.healthy = True
        self.last_success = self._clock()
        self._watermarks.update(applied.watermarks)
        self._observe(batch, applied, skipped, time.perf_counter() - started)
        return FlushResult(
            records=len(batch) + skipped,
            events_applied=applied.events,
            records_skipped=skipped + applied.dropped,
            rejected=sum(len(r.rejected) for r in batch.records),
            rows_written=applied.rows,
            attempts=max(n for _, n in outcomes),
            watermarks=applied.watermarks,
        )

    async def _apply(self, batch: Batch) -> tuple[Applied, int]:
        """One transaction for ``batch``, retried until it commits; (outcome, attempts)."""
        published: set[tuple[int, int, int | None]] = set()
        return await retry_until_done(
            lambda: self._attempt(batch, published),
            policy=self._retry,
            on_retry=lambda error, n, delay: self._on_retry(batch, error, n, delay),
            sleep=self._sleep,
            rng=self._rng,
        )

    def _on_retry(self, batch: Batch, error: PipelineError, attempt: int, delay: float) -> None:
        if isinstance(error, NoPartitionError):
            for guard in self._guards:
                guard.forget()
        self.healthy = False
        self._metrics.database_available.set(0)
        self._metrics.flush_retries.labels(self.topic, type(error).__name__).inc()
        log.warning(
            "flush of %s (%d records) failed, attempt %d, retrying in %.2fs: %s",
            self.topic,
            len(batch),
            attempt,
            delay,
            error,
        )

    async def _attempt(self, batch: Batch, published: set[tuple[int, int, int | None]]) -> Applied:
        hours = {e.occurred_at_ms - e.occurred_at_ms % HOUR_MS for e in batch.events()}
        async with self._pool.acquire() as conn:
            created = self._metrics.partitions_created
            expired = await self._guard.prepare(
                conn, hours, on_created=lambda t: created.labels(t).inc()
            )
            for guard in self._guards[1:]:  # their expired ranges are left out by the SQL
                await guard.prepare(conn, hours, on_created=lambda t: created.labels(t).inc())
            if expired:
                reject_expired(batch, self._guard.range_start, expired, self._writer.table)
            await self._publish(list(batch.rejected()), published)
            # CPU work before the transaction opens: rows stay locked for less time.
            prepared = self._writer.prepare(list(batch.events()))
            return await apply_batch(
                conn,
                batch,
                group=self.group,
                worker_id=self.worker_id,
                writer=self._writer,
                prepared=prepared,
                publish=lambda items: self._publish(items, published),
            )

    async def _publish(
        self,
        items: Sequence[tuple[Record, Rejected]],
        published: set[tuple[int, int, int | None]],
    ) -> None:
        """Publish dead letters not published yet by an earlier attempt of this flush."""
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

    def _observe(self, batch: Batch, applied: Applied, skipped: int, seconds: float) -> None:
        m = self._metrics
        now = self._clock()
        table = self._writer.table
        m.flush_duration.labels(self.topic).observe(seconds)
        m.flush_batch_events.labels(self.topic).observe(applied.events)
        m.rows_written.labels(table).inc(applied.rows)
        if not self._writer.aggregated and applied.events > applied.rows:
            m.duplicates_ignored.labels(table).inc(applied.events - applied.rows)
        m.records_skipped.labels(self.topic).inc(skipped + applied.dropped)
        m.last_flush.labels(self.topic).set(now)
        m.database_available.set(1)
        latency = m.end_to_end_latency.labels(self.topic)
        for record in batch.records[:1000]:
            if record.events:
                latency.observe(max(0.0, now - record.events[0].occurred_at_ms / 1000))


def reject_expired(
    batch: Batch, range_start: Callable[[int], int], expired: set[int], table: str
) -> int:
    """Move events whose time range is in ``expired`` (beyond the table's retention) out
    of their records into ``beyond_retention`` rejections; return how many moved."""
    moved = 0
    for record in batch.records:
        if not any(range_start(e.occurred_at_ms) in expired for e in record.events):
            continue
        keep = []
        for event, position in zip(record.events, record.positions(), strict=True):
            if range_start(event.occurred_at_ms) in expired:
                record.rejected.append(
                    Rejected(
                        Reason.BEYOND_RETENTION,
                        f"occurred_at is older than the retention of {table}",
                        position,
                        orjson.dumps(event.to_wire()),
                    )
                )
                moved += 1
            else:
                keep.append(event)
        record.events[:] = keep
    return moved


__all__ = ["FlushResult", "Flusher", "reject_expired"]
