"""The Python producer SDK: validated events, batched into JSON-array records, to Kafka.

::

    async with EventProducer(kafka_config, topics_config) as producer:
        await producer.send(ApiCall.new(service="billing", endpoint="/v1/invoices/{id}",
                                        method="GET", success=True, response_time_ms=12.5))
        await producer.flush()  # optional: close() flushes too

What each call means:

- ``send(event)`` validates the event against the wire contract (``validate_event`` with
  the producer's clock), encodes it and buffers it for the topic of its kind. Returning
  means *buffered*, not acknowledged. An invalid event raises
  :class:`~pipeline.contract.ContractError` naming the field and buffers nothing. When the
  buffer is full, ``send`` waits until acknowledgements make room (backpressure).
- ``send_many(events)`` validates every event first: one invalid event raises and buffers
  none of them.
- ``flush()`` returns once everything sent before it is acknowledged by the broker
  (``acks=all``), or raises :class:`~pipeline.producer.errors.DeliveryError` for the
  records the broker refused since the previous flush.
- ``close(timeout_s=None)`` (also on leaving ``async with``) flushes, then stops the
  client. With a timeout, records still unacknowledged then are reported, not dropped:
  :class:`~pipeline.producer.errors.TransientDeliveryError` lists them (``undelivered``:
  topic, value, events, whether in flight) for the caller to keep or send again.

**Broker outages**: a record that fails for a transient reason (no connection, a timeout,
a leader moving) is kept and sent again, with backoff (0.1 s doubling to 5 s), for as long
as the producer runs; meanwhile it counts against the buffer bounds, so ``send`` waits
once ``max_buffered_events`` / ``max_buffered_bytes`` are held (the memory cap), and
``flush`` waits for the broker to come back. Accepted events are never dropped silently:
they are acknowledged, refused (``flush`` / ``close`` raise), or reported by ``close``'s
timeout. One warning line when an outage starts, one info line when records go through
again. The backoff is shared: while one record keeps failing, every topic's records wait
(at most 5 s between attempts). An unknown topic is not transient here: it fails.

Duplicates: a re-send is a new request. aiokafka itself retries a request whose answer
was lost (and with an idempotent producer the broker drops those copies); it hands a
record back as failed only when it gives up: after ``request_timeout_ms`` without an
idempotent producer, or, with one, only when the partition had no leader that long. A
record the broker had written before that is then written twice by the re-send, which
counts ``api_call`` and ``performance_metric`` events twice (``docs/events.md``). With
``KAFKA_IDEMPOTENT_PRODUCER`` (the default, on Apache Kafka) that takes a partition
without a leader for ``request_timeout_ms``.
- ``send_raw(topic, value)`` is for tools and tests (poison records, pre-packed load): it
  sends ``value`` as one record, unvalidated.

Records are JSON arrays of at most ``max_record_events`` events and ``max_record_bytes``
bytes, sent when full, after ``linger_ms``, or on flush. Idempotence follows
``KafkaConfig.idempotent_producer``; acks are always ``all``. Keys are not set (the
pipeline reads none), so records spread over partitions at random.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import Event, EventKind, validate_event
from pipeline.kafka import producer_options
from pipeline.kinds import KINDS
from pipeline.producer.buffer import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_MAX_RECORD_EVENTS,
    Record,
    RecordBuffer,
)
from pipeline.producer.errors import (
    BrokerUnavailableError,
    DeliveryError,
    ProducerClosedError,
    ProducerError,
    TransientDeliveryError,
    Undelivered,
    delivery_error,
    is_transient,
)

__all__ = ["EventProducer", "topic_for"]

log = logging.getLogger(__name__)

# The event class of every declared kind (what ``send`` accepts).
_EVENT_TYPES = tuple(spec.event for spec in KINDS)


def wall_clock_ms() -> int:
    """The current time in epoch milliseconds (the default validation clock)."""
    return time.time_ns() // 1_000_000


def topic_for(topics: TopicsConfig, kind: EventKind) -> str:
    """The topic that carries events of ``kind``."""
    return topics.topic(kind)


# Leaving ``async with`` on an exception (Ctrl-C included) waits this long for what is
# buffered, then reports the rest instead of waiting for a broker that may never return.
_EXIT_TIMEOUT_S = 30.0


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the producer's sender task failed", exc_info=task.exception())


class EventProducer:
    """An async, context-managed producer of contract events; see the module docstring.

    - ``max_record_events`` / ``max_record_bytes``: limits of one record (500, 1 MiB).
      A broker refuses records above its ``max.message.bytes``, which counts about 80
      bytes of batch framing: lower ``max_record_bytes`` to match a strict topic limit.
    - ``linger_ms``: how long a partly filled record waits for more events (50).
    - ``max_buffered_events`` / ``max_buffered_bytes``: the backpressure bound on what is
      buffered or in flight (100,000 events, 64 MiB).
    - ``now_ms``: the clock used to validate ``occurred_at`` (epoch ms).
    - ``request_timeout_ms``: how long the client waits for an acknowledgement before the
      record fails with a retriable error (aiokafka's ``request_timeout_ms``); such a
      record is sent again (see the module docstring).
    - ``client``: an aiokafka-like producer to use instead of creating one (tests).

    One event loop only. Raises ``ValueError`` for inconsistent limits.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topics: TopicsConfig,
        *,
        max_record_events: int = DEFAULT_MAX_RECORD_EVENTS,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        linger_ms: float = 50.0,
        max_buffered_events: int = 100_000,
        max_buffered_bytes: int = 64 * 1_048_576,
        now_ms: Callable[[], int] = wall_clock_ms,
        request_timeout_ms: int = 40_000,
        client: Any = None,
    ) -> None:
        self._kafka = kafka
        self._topics = dict(topics.sources)
        self._now_ms = now_ms
        self._request_timeout_ms = request_timeout_ms
        self._buffer = RecordBuffer(
            max_record_events=max_record_events,
            max_record_bytes=max_record_bytes,
            max_buffered_events=max_buffered_events,
            max_buffered_bytes=max_buffered_bytes,
            linger_s=linger_ms / 1000.0,
        )
        self._client: Any = None
        self._injected = client
        self._in_flight: dict[int, Record] = {}
        self._queued: deque[Record] = deque()  # taken by the sender, not sent yet
        self._retry_at = 0.0  # monotonic: no send before this (backoff during an outage)
        self._backoff_s = 0.0
        self._outage_since: float | None = None
        self._retrying: set[int] = set()  # seqs of records being sent again
        self.records_resent = 0
        """Records sent again after a transient failure."""
        self._sender: asyncio.Task[None] | None = None
        self._started = False
        self._failures: list[tuple[str, int, BaseException]] = []
        self._acked: dict[tuple[str, int], int] = {}
        self.records_acked = 0
        """Records the broker acknowledged so far."""
        self.events_acked = 0
        """Events (raw records count one) in acknowledged records."""

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the cluster; returns when the producer accepts sends.

        Raises :class:`BrokerUnavailableError` (retriable) if the cluster cannot be
        reached, :class:`ProducerError` (not retriable) if it refuses the client (e.g. no
        idempotence support: set ``KAFKA_IDEMPOTENT_PRODUCER=false``), and
        :class:`ProducerClosedError` if already started or closed.
        """
        if self._started or self._buffer.closed:
            raise ProducerClosedError("an EventProducer can be started only once")
        client = self._injected or AIOKafkaProducer(
            **producer_options(
                self._kafka, max_request_size=self._buffer.max_record_bytes + 65_536
            ),
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await client.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            transient = is_transient(exc)
            hint = (
                "; if the broker has no idempotent producers (Tansu), set "
                "KAFKA_IDEMPOTENT_PRODUCER=false"
                if self._kafka.idempotent_producer and not transient
                else ""
            )
            cls = BrokerUnavailableError if transient else ProducerError
            raise cls(
                f"could not connect to Kafka at {self._kafka.bootstrap}: "
                f"{type(exc).__name__}: {exc}{hint}"
            ) from exc
        self._client = client
        self._started = True
        self._sender = asyncio.create_task(self._run(), name="event-producer-sender")
        self._sender.add_done_callback(_report_crash)
        log.info(
            "producer connected to %s (idempotent=%s)",
            self._kafka.bootstrap,
            self._kafka.idempotent_producer,
        )

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush, then stop the client. Idempotent.

        Waits for every buffered record to be acknowledged, at most ``timeout_s`` seconds
        (None: as long as it takes, e.g. the rest of a broker outage). Raises
        :class:`~pipeline.producer.errors.DeliveryError` like :meth:`flush`, and
        :class:`~pipeline.producer.errors.TransientDeliveryError` listing the records
        still unacknowledged when the timeout expired (``undelivered``). The client is
        stopped either way.
        """
        if self._buffer.closed:
            return
        # Refuse new sends first (a send waiting for room raises ProducerClosedError: its
        # event was never buffered), then wait for everything buffered.
        self._buffer.close()
        try:
            if self._started:
                upto = self._buffer.seal_all()
                try:
                    await asyncio.wait_for(self._wait_released(upto), timeout_s)
                except TimeoutError:
                    self._raise_undelivered(timeout_s)
                except asyncio.CancelledError:
                    held = self._buffer.buffered_events
                    if held:
                        log.error(
                            "the producer was cancelled while closing: %d events were not "
                            "acknowledged and are lost to this process",
                            held,
                        )
                    raise
                self._raise_failures()
        finally:
            if self._sender is not None:
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._sender  # a crash was logged by _report_crash
            if self._client is not None:
                try:  # aiokafka's stop waits for what it holds: bounded during an outage
                    bound = 10 if timeout_s is not None else None
                    await asyncio.wait_for(self._client.stop(), bound)
                except TimeoutError:
                    log.warning("the Kafka client did not stop within 10s; abandoned")
            log.info(
                "producer closed: %d records with %d events acknowledged",
                self.records_acked,
                self.events_acked,
            )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            await self.close()
            return
        try:  # do not mask the caller's exception with a delivery error, nor wait forever
            await self.close(timeout_s=_EXIT_TIMEOUT_S)
        except Exception as exc:
            log.error("closing the producer after %s failed: %s", et.__name__, exc)

    # --- sending -----------------------------------------------------------------------

    def _encode(self, event: Event) -> tuple[str, bytes]:
        if not isinstance(event, _EVENT_TYPES):
            accepted = ", ".join(t.__name__ for t in _EVENT_TYPES)
            raise TypeError(f"send() takes one of {accepted}, got {type(event).__name__}")
        wire = event.to_wire()
        validate_event(event.kind, wire, now_ms=self._now_ms())
        data = orjson.dumps(wire)
        self._buffer.check_size(len(data))
        return self._topics[event.kind], data

    def _check_open(self) -> None:
        if not self._started or self._buffer.closed:
            state = "closed" if self._buffer.closed else "not started"
            raise ProducerClosedError(f"the producer is {state}: use `async with EventProducer`")

    async def send(self, event: Event) -> None:
        """Validate ``event`` and buffer it for its kind's topic; see the module docstring.

        Raises ``ContractError`` (invalid), :class:`EventTooLargeError` or
        :class:`ProducerClosedError`, each before anything is buffered; ``TypeError`` for
        an object that is not an event. Waits while the buffer is full.
        """
        topic, data = self._encode(event)
        self._check_open()
        await self._buffer.put(topic, data)

    async def send_many(self, events: Iterable[Event]) -> int:
        """Validate every event, then buffer them in order; return how many.

        All-or-nothing validation: if one event is invalid (or too large), raises like
        :meth:`send` and buffers none. Waits while the buffer is full.
        """
        encoded = [self._encode(event) for event in events]
        self._check_open()
        put = self._buffer.put
        for topic, data in encoded:
            await put(topic, data)
        return len(encoded)

    async def send_raw(self, topic: str, value: bytes) -> None:
        """For tools and tests (poison records, pre-packed load): send ``value`` to
        ``topic`` as one record, **unvalidated**. Same buffering contract as :meth:`send`."""
        self._check_open()
        await self._buffer.put_raw(topic, value)

    async def flush(self) -> None:
        """Return once everything sent before this call is acknowledged by the broker.

        Raises :class:`~pipeline.producer.errors.TransientDeliveryError` (retriable) or
        :class:`~pipeline.producer.errors.DeliveryError` (not retriable) if records failed
        since the previous flush; the error counts them. Raises
        :class:`ProducerClosedError` if the producer is not running.
        """
        self._check_open()
        await self._wait_released(self._buffer.seal_all())
        self._raise_failures()

    async def _wait_released(self, upto: int) -> None:
        """Wait for the records up to ``upto``, unless the sender task dies (a bug)."""
        assert self._sender is not None
        waiter = asyncio.ensure_future(self._buffer.wait_released(upto))
        try:
            await asyncio.wait({waiter, self._sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiter.done():
                waiter.cancel()
        if not waiter.done() or waiter.cancelled():
            raise ProducerError("the producer's sender task stopped; see the error log")

    def _raise_undelivered(self, timeout_s: float | None) -> None:
        in_flight = sorted(self._in_flight.values(), key=lambda r: r.seq)
        waiting = [*self._queued, *self._buffer.waiting()]
        records = [Undelivered(r.topic, r.value, r.events, True) for r in in_flight] + [
            Undelivered(r.topic, r.value, r.events, False) for r in waiting
        ]
        failures, self._failures = self._failures, []
        events = sum(r.events for r in records) + sum(n for _, n, _ in failures)
        topics = sorted({r.topic for r in records} | {t for t, _, _ in failures})
        refused = [exc for _, _, exc in failures if not is_transient(exc)]
        cls = DeliveryError if refused else TransientDeliveryError
        also = f"; {len(failures)} more failed ({failures[0][2]!r})" if failures else ""
        raise cls(
            f"{len(records)} record(s) to {', '.join(topics)} were not acknowledged within "
            f"{timeout_s:g}s of close ({len(in_flight)} in flight: they may have been "
            f"written); they are in this error's `undelivered`{also}",
            records=len(records) + len(failures),
            events=events,
            topics=topics,
            undelivered=records,
        )

    def _raise_failures(self) -> None:
        if not self._failures:
            return
        failures, self._failures = self._failures, []
        raise delivery_error(failures) from failures[0][2]

    @property
    def acked_offsets(self) -> Mapping[tuple[str, int], int]:
        """Per (topic, partition): the highest offset the broker acknowledged to this
        producer, plus one. Wait for a consumer's watermark to reach these."""
        return dict(self._acked)

    @property
    def buffered_events(self) -> int:
        """Events sent but not yet acknowledged (or failed)."""
        return self._buffer.buffered_events

    # --- the sender task ---------------------------------------------------------------

    async def _run(self) -> None:
        """Hand sealed records to aiokafka; seal batches that lingered long enough."""
        buffer = self._buffer
        loop = asyncio.get_running_loop()
        while True:
            records = buffer.take_ready()
            if records:
                queued = self._queued
                queued.extend(records)
                while queued:
                    pause = self._retry_at - time.monotonic()
                    if pause > 0:  # a broker outage: back off before sending again
                        await asyncio.sleep(pause)
                    await self._dispatch(queued.popleft())
                continue
            deadline = buffer.next_deadline()
            buffer.wakeup.clear()
            if deadline is None:
                await buffer.wakeup.wait()
                continue
            delay = deadline - time.monotonic()
            if delay <= 0:
                buffer.seal_expired()
                continue
            timer = loop.call_later(delay, buffer.wakeup.set)
            try:
                await buffer.wakeup.wait()
            finally:
                timer.cancel()

    async def _dispatch(self, record: Record) -> None:
        self._in_flight[record.seq] = record
        try:
            future = await self._client.send(record.topic, record.value)
        except asyncio.CancelledError:
            del self._in_flight[record.seq]
            self._buffer.requeue(record)  # never sent: close() reports it as waiting
            raise
        except Exception as exc:  # refused before it reached the broker (or no room there)
            del self._in_flight[record.seq]
            self._settle_failure(record, exc)
            return
        future.add_done_callback(partial(self._on_done, record))

    def _on_done(self, record: Record, future: asyncio.Future[Any]) -> None:
        self._in_flight.pop(record.seq, None)
        if future.cancelled():
            self._settle_failure(record, asyncio.CancelledError())
            return
        exc = future.exception()
        if exc is not None:
            self._settle_failure(record, exc)
            return
        self._retrying.discard(record.seq)
        if self._outage_since is not None and not self._retrying:
            log.info(
                "the broker acknowledges again after %.1fs; %d records were sent again",
                time.monotonic() - self._outage_since,
                self.records_resent,
            )
            self._outage_since = None
            self._backoff_s = 0.0
        metadata = future.result()
        key = (metadata.topic, metadata.partition)
        end = metadata.offset + 1
        if end > self._acked.get(key, 0):
            self._acked[key] = end
        self.records_acked += 1
        self.events_acked += record.events
        self._buffer.release(record)

    def _settle_failure(self, record: Record, exc: BaseException) -> None:
        """A transient failure: keep the record and send it again after a backoff (see the
        module docstring); anything else: the record failed (reported by flush/close)."""
        if (
            not is_transient(exc)
            or isinstance(exc, UnknownTopicOrPartitionError)  # a misspelt topic never heals
            or self._sender is None
            or self._sender.done()
        ):
            self._retrying.discard(record.seq)
            self._failed(record, exc)
            return
        self._retrying.add(record.seq)
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            log.warning(
                "the broker did not acknowledge a record (%s: %s); records are kept and "
                "sent again until it does (%d events held)",
                type(exc).__name__,
                exc,
                self._buffer.buffered_events,
            )
        self._backoff_s = min(5.0, max(0.1, self._backoff_s * 2))
        self._retry_at = max(self._retry_at, now + self._backoff_s)
        self.records_resent += 1
        self._buffer.requeue(record)

    def _failed(self, record: Record, exc: BaseException) -> None:
        # One warning per failure episode (flush() reports the count), details at DEBUG.
        level = logging.DEBUG if self._failures else logging.WARNING
        log.log(
            level,
            "record of %d events to %s failed (%s): %s",
            record.events,
            record.topic,
            "retriable" if is_transient(exc) else "not retriable",
            exc,
        )
        self._failures.append((record.topic, record.events, exc))
        self._buffer.release(record)
