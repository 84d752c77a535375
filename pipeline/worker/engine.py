"""The ingest loop of one worker: consume, decode, batch, flush, commit hints.

:class:`IngestEngine` ties the stages together for every source topic:

1. **consume**: ``source.poll`` (:class:`~pipeline.worker.source.SourceConsumer`) returns
   records in bulk, per partition, starting at PostgreSQL's watermark;
2. **decode/validate**: each record becomes a :class:`~pipeline.worker.batch.Record`
   (valid events plus rejected parts), its (partition, offset) attached;
3. **batch**: records go to their topic's :class:`~pipeline.worker.ingest.TopicIngest`,
   which flushes by size or age, one flush in flight per topic;
4. **write**: the flush (:class:`~pipeline.worker.flush.Flusher`) commits effect and
   watermark in one PostgreSQL transaction;
5. **commit**: only then are the new watermarks sent to Kafka, as hints for lag tools.

Contract of :meth:`IngestEngine.run`: it returns when :meth:`stop` was called; it raises
when a flush raised (a bug) or the source cannot work; the caller ends the process.

Memory is bounded by configuration, not by the backlog: the consumer's fetch buffers and
one poll (``fetch_max_bytes``), one pending batch per topic (``max_events`` or
``max_records``, overshot by at most one poll) and one flush in flight per topic. A topic
whose pending batch is full while its flush runs is held (its partitions paused) until the
flush ends.

Rebalances (as :class:`~pipeline.worker.source.SourceListener`): on revocation the
engine forgets the partitions at once (no Kafka commit for them from then on), drops their
pending records and waits up to ``revoke_timeout_s`` for the flushes in flight, then
cancels them. A poll that was in progress when the assignment changed is discarded (a
generation counter), so records of a previous assignment never mix with the records that
the new one fetches again from the watermark.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any, Protocol

from aiokafka import TopicPartition

from pipeline.contract import EventKind
from pipeline.metrics import Metrics
from pipeline.worker.batch import Batch, Record
from pipeline.worker.flush import FlushResult
from pipeline.worker.ingest import TopicIngest

log = logging.getLogger(__name__)


class Source(Protocol):
    """What the engine needs from the consume stage (see SourceConsumer)."""

    async def poll(self, timeout_s: float) -> dict[TopicPartition, list[Any]]: ...
    def hold(self, topic: str) -> None: ...
    def release(self, topic: str) -> None: ...
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...


class Flush(Protocol):
    """What the engine needs from the write stage (see Flusher)."""

    healthy: bool

    async def flush(self, batch: Batch) -> FlushResult: ...
    def seed(self, partition: int, offset: int) -> None: ...
    def forget(self, partitions: Collection[int]) -> None: ...


class IngestEngine:
    """Consume, decode, batch, flush and commit for the source topics of one worker."""

    def __init__(
        self,
        flushers: Mapping[str, Flush],
        kinds: Mapping[str, EventKind],
        *,
        max_events: int,
        max_records: int = 100_000,
        interval_s: float,
        revoke_timeout_s: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        decode_slice_events: int = 20_000,
    ) -> None:
        self.source: Source | None = None
        self._flushers = dict(flushers)
        self._kinds = dict(kinds)
        self._metrics = metrics
        self._clock = clock
        self._revoke_timeout_s = revoke_timeout_s
        self._slice = decode_slice_events
        self._ingests = {
            topic: TopicIngest(
                flusher.flush,
                partial(Batch, topic, self._kinds[topic]),
                max_events=max_events,
                max_records=max_records,
                interval_s=interval_s,
                on_flushed=partial(self._flushed, topic),
                monotonic=monotonic,
            )
            for topic, flusher in self._flushers.items()
        }
        self.positioned_partitions: set[TopicPartition] = set()
        self._generation = 0
        self._stopping = False
        counters = metrics.records_consumed, metrics.events_consumed
        self._counted = {t: (counters[0].labels(t), counters[1].labels(t)) for t in flushers}

    @property
    def healthy(self) -> bool:
        """No flush is stalled on errors."""
        return all(f.healthy for f in self._flushers.values())

    def pending_events(self) -> dict[str, int]:
        return {topic: ingest.pending_events for topic, ingest in self._ingests.items()}

    async def run(self, source: Source) -> None:
        """Run until :meth:`stop`; raises if a flush failed or the source cannot work."""
        self.source = source
        while not self._stopping:
            self._raise_failure()
            generation = self._generation
            fetched = await source.poll(self._poll_timeout())
            if fetched:
                await self._decode(fetched, generation)
            for ingest in self._ingests.values():
                ingest.maybe_flush()
            self._backpressure(source)
        self._raise_failure()

    def stop(self) -> None:
        """Make :meth:`run` return after the current poll."""
        self._stopping = True

    async def settle(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the flushes in flight (shutdown); pending records
        are not flushed: they were never committed, so the next owner reads them again."""
        await asyncio.gather(*(i.settle(timeout_s) for i in self._ingests.values()))

    # -- SourceListener ------------------------------------------------------------------
    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        self._generation += 1
        self.positioned_partitions -= set(partitions)
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        dropped = sum(self._ingests[t].drop(p) for t, p in by_topic.items() if t in self._ingests)
        started = time.monotonic()
        settled = await asyncio.gather(
            *(
                self._ingests[t].settle(self._revoke_timeout_s)
                for t in by_topic
                if t in self._ingests
            )
        )
        self._metrics.assigned_partitions.set(len(self.positioned_partitions))
        log.info(
            "%d partitions revoked: %d pending records dropped, flushes %s in %.1fs",
            len(partitions),
            dropped,
            "finished" if all(settled) else "abandoned",
            time.monotonic() - started,
        )

    def positioned(self, partition: TopicPartition, offset: int) -> None:
        """``partition`` fetches from ``offset`` on. It may have been positioned before (a
        stopped partition retried, an out-of-range reset): whatever it had pending is
        dropped, since it is either below ``offset`` (skipped anyway) or fetched again."""
        flusher = self._flushers.get(partition.topic)
        if flusher is not None:
            flusher.seed(partition.partition, offset)
            self._ingests[partition.topic].drop([partition.partition])
        self.positioned_partitions.add(partition)
        self._metrics.assigned_partitions.set(len(self.positioned_partitions))

    # -- the loop's steps ------------------------------------------------------------------
    async def _decode(self, fetched: dict[TopicPartition, list[Any]], generation: int) -> None:
        now_ms = int(self._clock() * 1000)
        since_yield = 0
        for tp, messages in fetched.items():
            if self._generation != generation:
                return  # the assignment changed while this poll was decoded
            if tp not in self.positioned_partitions or not messages:
                continue
            kind = self._kinds[tp.topic]
            records = [
                Record.decode(kind, m.partition, m.offset, m.timestamp, m.value, now_ms=now_ms)
                for m in messages
            ]
            events = self._ingests[tp.topic].add(records)
            counted_records, counted_events = self._counted[tp.topic]
            counted_records.inc(len(records))
            counted_events.inc(events)
            since_yield += events + len(records)
            if since_yield >= self._slice:
                since_yield = 0
                await asyncio.sleep(0)  # let heartbeats, flush completions and the web run

    def _poll_timeout(self) -> float:
        if any(i.full for i in self._ingests.values()):
            return 0.01
        # A topic whose flush is running starts its next flush when that one ends.
        waits = [
            w
            for i in self._ingests.values()
            if not i.flushing and (w := i.seconds_until_due()) is not None
        ]
        return max(0.005, min([0.1, *waits]))

    def _backpressure(self, source: Source) -> None:
        for topic, ingest in self._ingests.items():
            if ingest.full:
                source.hold(topic)
            else:
                source.release(topic)

    def _raise_failure(self) -> None:
        for ingest in self._ingests.values():
            if ingest.failure is not None:
                raise ingest.failure

    def _flushed(self, topic: str, batch: Batch, result: FlushResult) -> None:
        source = self.source
        if source is None or not result.watermarks:
            return
        hints = {
            TopicPartition(topic, p): offset
            for p, offset in result.watermarks.items()
            if TopicPartition(topic, p) in self.positioned_partitions
        }
        source.commit(hints)
        for tp, offset in hints.items():
            high = source.highwater(tp)
            if high is not None:
                self._metrics.consumer_lag.labels(topic, str(tp.partition)).set(
                    max(0, high - offset)
                )
