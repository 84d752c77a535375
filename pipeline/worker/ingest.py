"""One topic's pending batch and its flush in flight (stage: batch).

:class:`TopicIngest` buffers decoded records of one topic and runs at most one flush at a
time while the next batch fills: PostgreSQL works on batch N while Python decodes batch
N+1. It does no I/O itself and never blocks; the engine drives it. The contract:

- :meth:`add` appends decoded records (offsets travel with them) to the pending batch.
- A flush starts (:meth:`maybe_flush`) when none is running and the pending batch holds
  ``max_events`` events or ``max_records`` records, or its oldest record is ``interval_s``
  old; when a flush ends, the
  next starts at once if it is due.
- :attr:`full` is the backpressure signal: the pending batch is full while a flush runs;
  the engine then stops fetching this topic.
- When a flush returns (effect and watermark committed), ``on_flushed(batch, result)`` is
  called; when it raises, the exception is kept in :attr:`failure` and nothing more is
  flushed: the engine ends the worker.
- :meth:`drop` removes the pending records of revoked partitions; :meth:`settle` waits a
  bounded time for the flush in flight, then cancels it (its transaction rolls back or has
  committed; either way the watermark keeps the outcome exactly once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable

from pipeline.worker.batch import Batch, Record
from pipeline.worker.flush import FlushResult

log = logging.getLogger(__name__)


class TopicIngest:
    """The pending batch of one topic, its flush triggers and its flush in flight."""

    def __init__(
        self,
        flush: Callable[[Batch], Awaitable[FlushResult]],
        batch: Callable[[], Batch],
        *,
        max_events: int,
        max_records: int = 100_000,
        interval_s: float,
        on_flushed: Callable[[Batch, FlushResult], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush = flush
        self._new_batch = batch
        self.max_events = max_events
        self.max_records = max_records
        self.interval_s = interval_s
        self._on_flushed = on_flushed
        self._monotonic = monotonic
        self._pending = batch()
        self.topic = self._pending.topic
        self._pending_events = 0
        self._since: float | None = None
        self._running: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None

    @property
    def pending_events(self) -> int:
        return self._pending_events

    @property
    def flushing(self) -> bool:
        return self._running is not None

    @property
    def full(self) -> bool:
        """The pending batch is full and must wait for the flush in flight."""
        return self._is_big() and self.flushing

    def add(self, records: Iterable[Record]) -> int:
        """Append decoded records to the pending batch; return the events they hold."""
        count = 0
        pending = self._pending.records
        for record in records:
            pending.append(record)
            count += len(record.events) + len(record.rejected)
        if count or pending:
            self._pending_events += count
            if self._since is None:
                self._since = self._monotonic()
        return count

    def due(self) -> bool:
        if not self._pending.records:
            return False
        if self._is_big():
            return True
        return self._since is not None and self._monotonic() - self._since >= self.interval_s

    def _is_big(self) -> bool:
        return (
            self._pending_events >= self.max_events
            or len(self._pending.records) >= self.max_records
        )

    def seconds_until_due(self) -> float | None:
        """How long until the age trigger fires (None: nothing pending)."""
        if self._since is None:
            return None
        return max(0.0, self.interval_s - (self._monotonic() - self._since))

    def maybe_flush(self) -> None:
        """Start a flush of the pending batch if it is due and none is running."""
        if self._running is None and self.failure is None and self.due():
            self._start()

    def drop(self, partitions: Collection[int]) -> int:
        """Remove pending records of ``partitions``; return how many records went."""
        wanted = set(partitions)
        records = self._pending.records
        kept = [r for r in records if r.partition not in wanted]
        dropped = len(records) - len(kept)
        if dropped:
            self._pending = self._new_batch()
            self._pending.records.extend(kept)
            self._pending_events = sum(len(r.events) + len(r.rejected) for r in kept)
            if not kept:
                self._since = None
        return dropped

    async def settle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the flush in flight; cancel it after that.

        Returns True when no flush is running any more because it finished (or none ran),
        False when it had to be cancelled.
        """
        deadline = self._monotonic() + timeout_s
        while (running := self._running) is not None:
            left = deadline - self._monotonic()
            done, _ = await asyncio.wait([running], timeout=max(0.0, left))
            if not done:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(running, timeout=10)
                return False
        return True

    def _start(self) -> None:
        batch = self._pending
        self._pending = self._new_batch()
        self._pending_events, self._since = 0, None
        self._running = asyncio.ensure_future(self._run(batch))
        self._running.add_done_callback(_retrieve)

    async def _run(self, batch: Batch) -> None:
        try:
            result = await self._flush(batch)
        except asyncio.CancelledError:
            log.info("%s: flush of %d records abandoned", self.topic, len(batch))
            raise
        except BaseException as exc:
            self.failure = exc
            raise
        finally:
            self._running = None
        try:
            self._on_flushed(batch, result)
        except BaseException as exc:  # a bug in the caller's callback: surface it
            self.failure = exc
            raise
        self.maybe_flush()


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark the task's exception as seen: it is kept in ``failure`` and raised by the engine."""
    if not task.cancelled():
        task.exception()
