"""The worker group's consumer of the source topics (stage: consume).

:class:`SourceConsumer` wraps one ``AIOKafkaConsumer`` in the consumer group
``PIPELINE_GROUP_ID``, subscribed to every source topic, and hands out records in bulk
(``getmany``): no per-record framework machinery sits between Kafka and the decoder.

The contract:

- **PostgreSQL's watermark is the starting position.** Newly assigned partitions stay
  paused until ``watermarks.read(partitions)`` (the ``ingest_offsets`` rows) answers,
  retried with backoff while PostgreSQL cannot. A partition with a row is sought to its
  watermark. A partition the group has never seen (no row) starts at the group's committed
  Kafka offset (a group adopted from another consumer), else at the beginning
  (``start_from="earliest"``) or the end of the partition, and that start is recorded at
  once as its watermark (``watermarks.adopt``; a row another worker recorded first wins).
  So a committed offset is read once per partition and group, never again: from then on
  Kafka's committed offsets cannot move where the group starts, whoever commits them.
  Only then does the partition fetch, and ``listener.positioned(partition, offset)`` says
  where it starts.
- :meth:`poll` returns the records fetched since the last call (about a quarter of
  ``fetch_max_bytes`` of values at most, whatever the record size), per partition and in
  offset order, only for partitions that are assigned, positioned, not held and not
  stopped. A problem of one partition never raises from here; it is handled below and the
  other partitions keep flowing. :meth:`poll` raises only what means this consumer cannot
  work (an authorization error, a listener that failed): the caller exits.
- **Broker silence**: :meth:`broker_silence_s` is how long no fetch response arrived for
  any partition this consumer fetches (an idle partition is answered every
  ``fetch_max_wait_ms``, 500 ms); ``pipeline_broker_available`` is 0 while it exceeds
  ``silence_limit_s``. The worker is not ready then (``/readyz``): the broker is down or
  unreachable. aiokafka reconnects by itself; nothing here restarts the client.
- **Kafka commits are hints** for tools that read lag. :meth:`commit` sends them in the
  background for partitions still assigned; a failure is logged at debug level.
- **Rebalances** (aiokafka's protocol is eager: every partition is revoked, then the new
  set assigned): ``listener.revoked(partitions)`` is awaited before the group rejoins and
  must return within the rebalance timeout; from the moment it is called, :meth:`commit`
  ignores those partitions.
- **Backpressure**: :meth:`hold` keeps a topic's partitions paused (its buffer is full)
  until :meth:`release`; polling goes on, so the group does not evict this member.
- **Undecodable batches** (a corrupt batch, a codec the client cannot read): aiokafka
  raises from the middle of a fetch and drops what it had read, so the consumer seeks every
  partition back to the first offset it has not handed out (nothing is lost or skipped),
  then reads the partitions one record at a time to find the one at fault, and stops that
  partition at the first offset it cannot decode with one ERROR line naming topic,
  partition, offset and cause. The other partitions keep flowing. A stopped partition is
  positioned again (from its watermark, which an operator may have moved) every
  ``stopped_retry_s``.
- **Out of range**: a watermark below the start of the log means records were deleted by
  retention before they were applied: ``pipeline_offset_gaps_total`` counts it, one ERROR
  line names the range, and the partition continues at the start of the log. A watermark
  beyond the end of the log (the topic was deleted and created again?) stops the partition
  with one line saying what to check.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from aiokafka.structs import OffsetAndMetadata

from pipeline.config import KafkaConfig
from pipeline.kafka import client_options
from pipeline.metrics import Metrics
from pipeline.worker.positions import WatermarkStore, starting_positions
from pipeline.worker.retry import RetryPolicy
from pipeline.worker.undecodable import DECODE_ERRORS, describe

log = logging.getLogger(__name__)


class SourceRecord(Protocol):
    """What the worker reads from a fetched record (aiokafka's ``ConsumerRecord``)."""

    partition: int
    offset: int
    timestamp: int  # epoch milliseconds
    value: bytes | None


class SourceListener(Protocol):
    """What the consumer tells the stage that owns the buffers."""

    async def revoked(self, partitions: Collection[TopicPartition]) -> None:
        """These partitions are no longer ours: drop their buffered records, settle their
        in-flight flush. Awaited before the group rejoins; must be bounded."""

    def positioned(self, partition: TopicPartition, offset: int) -> None:
        """``partition`` fetches from ``offset`` on (its watermark or the fallback)."""


Fetched = dict[TopicPartition, list[Any]]


class _State(enum.Enum):
    POSITIONING = "positioning"
    FETCHING = "fetching"
    STOPPED = "stopped"


class SourceConsumer:
    """Bulk consumer of the source topics for one worker; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaConfig,
        *,
        group_id: str,
        topics: Sequence[str],
        watermarks: WatermarkStore,
        listener: SourceListener,
        metrics: Metrics,
        max_records: int = 10_000,
        fetch_max_bytes: int = 8 * 1024 * 1024,
        start_from: str = "earliest",
        retry: RetryPolicy | None = None,
        stopped_retry_s: float = 60.0,
        session_timeout_ms: int = 10_000,
        rebalance_timeout_ms: int = 20_000,
        consumer: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
        silence_limit_s: float = 10.0,
    ) -> None:
        if start_from not in ("earliest", "latest"):
            raise ValueError(f"start_from must be earliest or latest, got {start_from!r}")
        self.topics = tuple(topics)
        self._kafka = None if consumer is not None else kafka
        self._group = group_id
        self._watermarks = watermarks
        self._listener = listener
        self._metrics = metrics
        self._max_records = max_records
        # Bytes handed out per poll, whatever the record size: a poll of 500-event records
        # is decoded into ~150,000 objects per megabyte, so records alone are no bound.
        self._poll_bytes = max(1, fetch_max_bytes // 4)
        self._record_bytes = 1024.0  # running estimate of one record's value size
        self._start_from = start_from
        self._retry = retry or RetryPolicy()
        self._stopped_retry_s = stopped_retry_s
        self._monotonic = monotonic
        self.silence_limit_s = silence_limit_s
        # Silence is measured on the monotonic clock: aiokafka stamps each partition's last
        # fetch response (epoch ms); a stamp that changed means an answer since last look.
        self._stamps: dict[TopicPartition, int] = {}
        self._last_contact = monotonic()
        self._silence_checked_at = float("-inf")
        self._consumer: Any = consumer or AIOKafkaConsumer(
            **client_options(kafka),
            group_id=group_id,
            enable_auto_commit=False,
            # Out-of-range is ours to decide (see _out_of_range); every other start
            # position is sought explicitly, so aiokafka never resets on its own.
            auto_offset_reset="none",
            isolation_level="read_committed",
            fetch_max_bytes=fetch_max_bytes,
            # 1 MiB per partition at the default; more when PIPELINE_FETCH_MAX_BYTES is raised.
            max_partition_fetch_bytes=min(fetch_max_bytes, max(1 << 20, fetch_max_bytes // 8)),
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 10),
            # The group waits this long for members to rejoin; a revocation may take up to
            # the revoke timeout to settle its flushes first.
            rebalance_timeout_ms=rebalance_timeout_ms,
        )
        self._state: dict[TopicPartition, _State] = {}
        self._next: dict[TopicPartition, int] = {}  # first offset not handed out yet
        self._stopped_at: dict[TopicPartition, float] = {}
        self._stop_logged: dict[TopicPartition, tuple[int | None, str]] = {}
        self.stopped: dict[TopicPartition, str] = {}
        """Stopped partitions and why (for /readyz)."""
        self._held: set[str] = set()
        self._paused: set[TopicPartition] = set()
        self._careful = False
        self._careful_rounds = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._positioning: set[asyncio.Future[Any]] = set()
        self._failure: BaseException | None = None
        self._rng = random.Random()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and join the group (the first assignment arrives during :meth:`poll`).

        Raises aiokafka's ``KafkaConnectionError`` if no bootstrap server answers.
        """
        self._consumer.subscribe(list(self.topics), listener=_Listener(self))
        await self._consumer.start()

    async def stop(self) -> None:
        """Leave the group and close. Background positioning and commits are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        await self._consumer.stop()

    # -- what the engine calls -----------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        return set(self._state)

    def hold(self, topic: str) -> None:
        """Pause ``topic``'s partitions (backpressure) until :meth:`release`."""
        if topic not in self._held:
            self._held.add(topic)
            self._sync_pauses()

    def release(self, topic: str) -> None:
        if topic in self._held:
            self._held.discard(topic)
            self._sync_pauses()

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end as of the last fetch (None before the first, or when the
        partition is not assigned)."""
        if partition not in self._state:
            return None
        value = self._consumer.highwater(partition)
        return value if isinstance(value, int) else None

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` to Kafka in the background, for partitions still assigned.

        A hint for lag tools only; PostgreSQL's watermark is the record of progress.
        """
        owned = {
            tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if tp in self._state
        }
        if owned:
            self._spawn(self._commit(owned))

    async def poll(self, timeout_s: float) -> Fetched:
        """Records fetched since the last call (see the module docstring)."""
        if self._failure is not None:
            raise self._failure
        self._retry_stopped()
        if self._careful:
            return await self._poll_one_by_one()
        try:
            fetched: Fetched = await self._consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=self._poll_records()
            )
        except DECODE_ERRORS as exc:
            log.warning(
                "a fetched record batch cannot be decoded (%s: %s); reading partitions one "
                "at a time to find it",
                type(exc).__name__,
                exc,
            )
            self._rewind(self._fetching())
            self._careful, self._careful_rounds = True, 0
            return {}
        except OffsetOutOfRangeError as exc:
            await self._out_of_range(exc)
            return {}
        except NoOffsetForPartitionError as exc:
            self._no_offset(exc)
            return {}
        except RecordTooLargeError as exc:
            self._too_large(exc)
            return {}
        self._note(fetched)
        now = self._monotonic()
        if now >= self._silence_checked_at + 1.0:  # not per poll: it asks every partition
            self._silence_checked_at = now
            available = self.broker_silence_s() < self.silence_limit_s
            self._metrics.broker_available.set(int(available))
        return fetched

    def broker_silence_s(self) -> float:
        """Seconds since the broker last answered a fetch of a partition this consumer
        fetches (0 when it fetches none: paused, held or positioning partitions wait for
        us, not for the broker)."""
        now = self._monotonic()
        fetching = self._fetching()
        if not fetching:
            self._last_contact = now
            return 0.0
        stamps = self._stamps
        for tp in fetching:
            try:
                stamp = self._consumer.last_poll_timestamp(tp)
            except (AssertionError, IllegalStateError):
                continue  # no longer assigned in the client
            if stamp is not None and stamps.get(tp) != stamp:
                stamps[tp] = stamp
                self._last_contact = now
        return max(0.0, now - self._last_contact)

    # -- rebalances ------------------------------------------------------------------------
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        for task in list(self._positioning):
            task.cancel()  # a stale watermark read must not seek the next assignment
        for tp in revoked:
            self._stamps.pop(tp, None)
            self._state.pop(tp, None)
            self._next.pop(tp, None)
            self._stopped_at.pop(tp, None)
            self.stopped.pop(tp, None)
            self._paused.discard(tp)
        self._careful = False
        try:
            await self._listener.revoked(revoked)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._state[tp] = _State.POSITIONING
        self._sync_pauses()
        if assigned:
            self._positioning.add(self._spawn(self._position(set(assigned))))

    async def _position(self, partitions: set[TopicPartition]) -> None:
        """Seek ``partitions`` to where they start (:func:`starting_positions`), then let
        them fetch."""
        marks = await starting_positions(
            partitions,
            watermarks=self._watermarks,
            consumer=self._consumer,
            start_from=self._start_from,
            retry=self._retry,
        )
        for tp in sorted(partitions):
            if self._state.get(tp) is not _State.POSITIONING or tp not in marks:
                continue  # revoked meanwhile
            offset = marks[tp]
            self._consumer.seek(tp, offset)
            self._next[tp] = offset
            self._state[tp] = _State.FETCHING
            self._listener.positioned(tp, offset)
        self._sync_pauses()

    # -- problems of one partition -----------------------------------------------------------
    async def _poll_one_by_one(self) -> Fetched:
        """After a decode error: one record per partition per call, to find the culprit."""
        fetched: Fetched = {}
        for tp in sorted(self._fetching()):
            try:
                got = await self._consumer.getmany(tp, timeout_ms=0, max_records=1)
            except DECODE_ERRORS as exc:
                self._rewind([tp])
                self._careful = False
                offset = self._next.get(tp)
                kafka = self._kafka
                self._stop(tp, await describe(exc, kafka, self._group, tp, offset))
                continue
            except OffsetOutOfRangeError as exc:
                await self._out_of_range(exc)
                continue
            except NoOffsetForPartitionError as exc:
                self._no_offset(exc)
                continue
            except IllegalStateError:
                continue  # revoked since _fetching() was computed
            fetched.update(got)
        self._note(fetched)
        self._careful_rounds += 1
        if self._careful_rounds > 500:  # no error again in 500 rounds (a few s): transient
            log.info("no undecodable batch found again; back to bulk reads")
            self._careful = False
        if not fetched:
            await asyncio.sleep(0.01)
        return fetched

    def _too_large(self, exc: RecordTooLargeError) -> None:
        """A broker too old to return an oversized batch anyway: the partition cannot move
        until the consumer may fetch more per partition. (aiokafka's args: message, the
        partition, the offset, the fetch size.)"""
        args = exc.args
        tp = args[1] if len(args) > 3 and isinstance(args[1], TopicPartition) else None
        if tp is None or tp not in self._state:
            raise exc
        self._rewind([tp])
        self._stop(
            tp,
            f"a record there is larger than the fetch size of {args[3]} bytes per partition; "
            "raise PIPELINE_FETCH_MAX_BYTES above the topic's max.message.bytes",
        )

    def _no_offset(self, exc: NoOffsetForPartitionError) -> None:
        """aiokafka looked for a start position of its own before ours was sought (it does
        so for every newly assigned partition, paused or not). Ours wins: seek again."""
        tp = exc.args[0] if exc.args else None
        if isinstance(tp, TopicPartition) and tp in self._next:
            self._consumer.seek(tp, self._next[tp])

    async def _out_of_range(self, exc: OffsetOutOfRangeError) -> None:
        positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        for tp, offset in positions.items():
            if self._state.get(tp) is not _State.FETCHING:
                continue
            try:
                start = (await self._consumer.beginning_offsets([tp]))[tp]
            except KafkaError as error:
                log.warning("cannot read the start of %s[%d]: %r", tp.topic, tp.partition, error)
                self._rewind([tp])
                continue
            if self._state.get(tp) is not _State.FETCHING:
                continue  # revoked (or stopped) while the start was read
            if offset < start:
                self._metrics.offset_gaps.labels(tp.topic).inc()
                log.error(
                    "%s[%d]: records %d..%d were deleted by retention before they were "
                    "applied; continuing at %d (see docs/operations.md, 'Offset gaps')",
                    tp.topic,
                    tp.partition,
                    offset,
                    start - 1,
                    start,
                )
                self._consumer.seek(tp, start)
                self._next[tp] = start
                self._listener.positioned(tp, start)
            else:
                self._stop(
                    tp,
                    f"the watermark {offset} is beyond the end of the partition: was the "
                    "topic deleted and created again? Then its watermarks must be reset "
                    "(docs/operations.md, 'A partition stopped')",
                )

    def _stop(self, tp: TopicPartition, why: str) -> None:
        if tp not in self._state:
            return  # revoked while the cause was looked into: not ours to stop any more
        offset = self._next.get(tp)
        self._state[tp] = _State.STOPPED
        self._stopped_at[tp] = self._monotonic()
        self.stopped[tp] = f"offset {offset}: {why}"
        self._metrics.partitions_stopped.set(len(self.stopped))
        self._sync_pauses()
        if self._stop_logged.get(tp) == (offset, why):
            log.warning(
                "%s[%d] still stopped at offset %s (same cause); retried again in %.0fs",
                tp.topic,
                tp.partition,
                offset,
                self._stopped_retry_s,
            )
            return
        self._stop_logged[tp] = (offset, why)
        log.error(
            "%s[%d] stopped at offset %s: %s; the other partitions keep flowing, this one is "
            "retried from its watermark every %.0fs (docs/operations.md, 'A partition "
            "stopped')",
            tp.topic,
            tp.partition,
            offset,
            why,
            self._stopped_retry_s,
        )

    def _retry_stopped(self) -> None:
        now = self._monotonic()
        due = {tp for tp, at in self._stopped_at.items() if now - at >= self._stopped_retry_s}
        if not due:
            return
        for tp in due:
            del self._stopped_at[tp]
            self.stopped.pop(tp, None)
            self._state[tp] = _State.POSITIONING
        self._metrics.partitions_stopped.set(len(self.stopped))
        self._sync_pauses()
        self._positioning.add(self._spawn(self._position(due)))

    # -- bookkeeping -------------------------------------------------------------------------
    def _fetching(self) -> set[TopicPartition]:
        return {
            tp
            for tp, state in self._state.items()
            if state is _State.FETCHING and tp.topic not in self._held
        }

    def _poll_records(self) -> int:
        return max(1, min(self._max_records, int(self._poll_bytes / self._record_bytes)))

    def _note(self, fetched: Fetched) -> None:
        count = size = 0
        for tp, records in fetched.items():
            first = self._next.get(tp)
            if records and first is not None and records[0].offset < first:
                records = fetched[tp] = self._drop_handed_out(tp, records, first)
            if records:
                self._next[tp] = records[-1].offset + 1
                count += len(records)
                size += sum(len(r.value or b"") for r in records)
        if count:
            self._record_bytes = 0.8 * self._record_bytes + 0.2 * max(1.0, size / count)

    def _drop_handed_out(self, tp: TopicPartition, records: list[Any], first: int) -> list[Any]:
        """The client returned records below ``first``, which were handed out already
        (a fetch answered across a seek): never hand a record out twice, whatever the
        client does. Two copies in one flush would both be applied (the watermark only
        tells flushes apart)."""
        kept = [r for r in records if r.offset >= first]
        log.warning(
            "%s[%d]: the client returned offsets %d..%d again; %d records dropped, "
            "continuing at %d",
            tp.topic,
            tp.partition,
            records[0].offset,
            first - 1,
            len(records) - len(kept),
            first,
        )
        return kept

    def _rewind(self, partitions: Collection[TopicPartition]) -> None:
        """Seek back to the first offset not handed out: a failed fetch loses nothing."""
        for tp in partitions:
            offset = self._next.get(tp)
            if offset is not None and tp in self._state:
                self._consumer.seek(tp, offset)

    def _sync_pauses(self) -> None:
        assigned = set(self._state)
        want = assigned - self._fetching()
        pause, resume = want - self._paused, (self._paused - want) & assigned
        if pause:
            self._consumer.pause(*pause)
        if resume:
            self._consumer.resume(*resume)
            # Resumed partitions were not fetched while paused: silence counts from now.
            self._last_contact = self._monotonic()
        self._paused = want

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, AssertionError) as exc:
            log.debug("Kafka offset commit (a lag hint) failed: %r", exc)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        self._positioning.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())  # type: ignore[arg-type]

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: SourceConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._consumer._on_assigned(set(assigned))
