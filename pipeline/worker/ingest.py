"""Buffering one topic's records between takes and flushing them by size or by age.

:class:`TopicIngest` is what an agent drives. The contract:

- :meth:`add` decodes and validates a take of faust events into the pending batch
  (offsets travel with each record) and flushes when the batch holds ``max_events``
  events or more. It returns once the take is buffered (and, if a flush ran, committed).
- :meth:`run_timer` flushes a pending batch that is ``interval_s`` old even when no new
  record arrives (``noack_take`` yields nothing on an idle stream).
- A flush hands the pending batch to the :class:`~pipeline.worker.flush.Flusher` in a
  background task and, when that returns (effect and watermark committed), acks every
  faust event of the batch through ``ack``. One flush runs at a time while the next batch
  fills: PostgreSQL works on batch N while Python decodes batch N+1. When the next batch
  is full before the running flush ends, ``add`` waits for it: the backpressure on the
  stream. An exception of a flush task is raised by the next ``add``/``flush`` call.
- :meth:`flush` starts a flush of what is pending and waits until everything buffered so
  far is committed and acked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pipeline.contract import EventKind
from pipeline.metrics import Metrics
from pipeline.worker.batch import Batch, Record
from pipeline.worker.flush import Flusher, FlushResult


class TopicIngest:
    """The pending batch of one topic and the two flush triggers."""

    def __init__(
        self,
        flusher: Flusher,
        kind: EventKind,
        *,
        max_events: int,
        interval_s: float,
        ack: Callable[[Any], Awaitable[Any]],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_flushed: Callable[[Batch, FlushResult], None] | None = None,
    ) -> None:
        self.flusher = flusher
        self.kind = kind
        self.max_events = max_events
        self.interval_s = interval_s
        self._ack = ack
        self._clock = clock
        self._monotonic = monotonic
        self._on_flushed = on_flushed
        self._lock = asyncio.Lock()
        self._batch = Batch(flusher.topic, kind)
        self._events: list[Any] = []  # faust events to ack after the flush
        self._pending_events = 0
        self._since: float | None = None
        self._running: asyncio.Future[None] | None = None
        topic = flusher.topic
        self._records_consumed = metrics.records_consumed.labels(topic)
        self._events_consumed = metrics.events_consumed.labels(topic)

    @property
    def pending_events(self) -> int:
        return self._pending_events

    async def add(self, events: Sequence[Any]) -> None:
        """Buffer a take of faust events; start a flush if the batch is big enough."""
        now_ms = int(self._clock() * 1000)
        kind = self.kind
        records = []
        count = 0
        for event in events:
            message = event.message
            record = Record.decode(
                kind,
                message.partition,
                message.offset,
                int(message.timestamp * 1000),
                message.value,
                now_ms=now_ms,
            )
            records.append(record)
            count += len(record.events) + len(record.rejected)
        self._records_consumed.inc(len(events))
        self._events_consumed.inc(count)
        async with self._lock:
            self._batch.records.extend(records)
            self._events.extend(events)
            self._pending_events += count
            if self._since is None:
                self._since = self._monotonic()
            if self._pending_events >= self.max_events:
                await self._start_flush()

    async def flush(self) -> None:
        """Flush whatever is pending and wait until all of it is committed and acked."""
        async with self._lock:
            await self._start_flush()
            await self._wait_running()

    async def run_timer(self, tick_s: float | None = None) -> None:
        """Flush batches that reached ``interval_s`` of age; runs until cancelled."""
        tick = tick_s if tick_s is not None else max(0.01, self.interval_s / 4)
        while True:
            await asyncio.sleep(tick)
            since = self._since
            if since is not None and self._monotonic() - since >= self.interval_s:
                async with self._lock:
                    await self._start_flush()

    async def close(self) -> None:
        """Stop waiting for the running flush (shutdown): its records are not acked."""
        if self._running is not None:
            self._running.cancel()

    async def _wait_running(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running  # raises what the flush raised

    async def _start_flush(self) -> None:
        """Wait for the running flush, then start one for the pending batch (lock held)."""
        await self._wait_running()
        if not self._events:
            return
        batch, events = self._batch, self._events
        self._batch, self._events = Batch(self.flusher.topic, self.kind), []
        self._pending_events, self._since = 0, None
        self._running = asyncio.ensure_future(self._flush(batch, events))

    async def _flush(self, batch: Batch, events: list[Any]) -> None:
        result = await self.flusher.flush(batch)
        for event in events:
            await self._ack(event)
        if self._on_flushed is not None:
            self._on_flushed(batch, result)
