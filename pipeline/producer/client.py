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
  (``acks=all``), or raises :class:`~pipeline.producer.errors.DeliveryError` (retriable or
  not) for the records lost since the previous flush.
- ``close()`` (also on leaving ``async with``) flushes, then stops the client.
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
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaProducer

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
    ProducerClosedError,
    ProducerError,
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
      record fails with a retriable error (aiokafka's ``request_timeout_ms``).

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
        client = AIOKafkaProducer(
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

    async def close(self) -> None:
        """Flush, then stop the client. Idempotent.

        Raises :class:`~pipeline.producer.errors.DeliveryError` like :meth:`flush`; the
        client is stopped either way.
        """
        if self._buffer.closed:
            return
        # Refuse new sends first (a send waiting for room raises ProducerClosedError: its
        # event was never buffered), then wait for everything buffered.
        self._buffer.close()
        try:
            if self._started:
                await self._wait_released(self._buffer.seal_all())
                self._raise_failures()
        finally:
            if self._sender is not None:
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._sender  # a crash was logged by _report_crash
            if self._client is not None:
                await self._client.stop()
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
        try:  # do not mask the caller's exception with a delivery error
            await self.close()
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
                for record in records:
                    await self._dispatch(record)
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
        try:
            future = await self._client.send(record.topic, record.value)
        except asyncio.CancelledError:
            self._failed(record, ProducerClosedError("the producer was closed while sending"))
            raise
        except Exception as exc:  # refused before it reached the broker
            self._failed(record, exc)
            return
        future.add_done_callback(partial(self._on_done, record))

    def _on_done(self, record: Record, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._failed(record, asyncio.CancelledError())
            return
        exc = future.exception()
        if exc is not None:
            self._failed(record, exc)
            return
        metadata = future.result()
        key = (metadata.topic, metadata.partition)
        end = metadata.offset + 1
        if end > self._acked.get(key, 0):
            self._acked[key] = end
        self.records_acked += 1
        self.events_acked += record.events
        self._buffer.release(record)

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
