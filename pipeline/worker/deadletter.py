"""Publishing rejected records to the dead-letter topic.

A dead letter's value is the rejected event's JSON (or the whole record's raw value when
the record itself is unreadable); its headers say why and where it came from:

=====================  ============================================================
``x-reason``           stable reason code (``pipeline.contract.Reason``)
``x-detail``           human-readable detail naming the field
``x-source-topic``     topic of the source record
``x-source-partition`` partition of the source record
``x-source-offset``    offset of the source record
``x-event-index``      position in the source record's JSON array (absent: whole record)
``x-worker-id``        the worker that rejected it
=====================  ============================================================

The key is ``<topic>/<partition>/<offset>[/<index>]``, so dead letters of one source
position share a key: a consumer of the dead-letter topic can drop the duplicates that a
crash between publishing and committing may produce (publishing happens before the flush
commits; delivery to the dead-letter topic is at-least-once).

:meth:`DeadLetterPublisher.publish` returns once the broker acknowledged every message
(acks=all); it raises :class:`DeadLetterError` (retriable) if the broker cannot be reached,
and the next call starts on a new client: an aiokafka producer whose sends timed out
during a broker outage was seen to stay stuck for minutes after the broker came back,
while a new one worked at once.
Nothing blocks a partition: a value larger than ``PIPELINE_DEAD_LETTER_MAX_BYTES`` (default
900,000, below Kafka's default 1 MiB per message) is truncated to it, and a letter the broker
refuses anyway is sent with an empty value, its headers intact:

=====================  ============================================================
``x-truncated``        bytes of the value kept (0: none)
``x-original-size``    size of the whole value
``x-original-sha256``  hash of the whole value (the record is still in its source topic)
=====================  ============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from pipeline.config import KafkaConfig
from pipeline.errors import ConfigError, PipelineError
from pipeline.kafka import producer_options
from pipeline.producer.errors import is_transient
from pipeline.worker.batch import Record, Rejected

log = logging.getLogger(__name__)


class DeadLetterError(PipelineError):
    """The dead-letter topic could not be written; the flush retries and acks nothing."""

    retriable = True


class DeadLetterSink(Protocol):
    async def publish(self, source_topic: str, items: Sequence[tuple[Record, Rejected]]) -> None:
        """Publish every item; return when all are acknowledged by the broker."""


def dead_letter_key(topic: str, record: Record, rejected: Rejected) -> bytes:
    index = "" if rejected.index is None else f"/{rejected.index}"
    return f"{topic}/{record.partition}/{record.offset}{index}".encode()


def dead_letter_headers(
    topic: str, record: Record, rejected: Rejected, worker_id: str
) -> list[tuple[str, bytes]]:
    headers = [
        ("x-reason", str(rejected.reason).encode()),
        ("x-detail", rejected.detail.encode()[:1024]),
        ("x-source-topic", topic.encode()),
        ("x-source-partition", str(record.partition).encode()),
        ("x-source-offset", str(record.offset).encode()),
        ("x-worker-id", worker_id.encode()),
    ]
    if rejected.index is not None:
        headers.append(("x-event-index", str(rejected.index).encode()))
    return headers


class DeadLetterPublisher:
    """An idempotent aiokafka producer writing to the dead-letter topic."""

    def __init__(
        self, config: KafkaConfig, topic: str, worker_id: str, *, max_bytes: int = 900_000
    ) -> None:
        self.topic = topic
        self.worker_id = worker_id
        self.max_bytes = max_bytes
        self._idempotent = config.idempotent_producer
        self._config = config
        self._producer: Any = self._new_client()
        self._stale = False  # a transient failure happened: use a new client next time
        self.reconnects = 0
        # Flushes of different topics publish concurrently; one at a time, so that a
        # renewal never stops the client under another flush's sends.
        self._lock = asyncio.Lock()

    def _new_client(self) -> Any:
        # Headers (the detail is capped at 1 KiB) and framing fit in the 64 KiB margin.
        return AIOKafkaProducer(
            **producer_options(self._config, max_request_size=self.max_bytes + 65_536)
        )

    async def _renew(self) -> None:
        """Replace the client after a transient failure (see the module docstring)."""
        old, self._producer = self._producer, self._new_client()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.stop(), timeout=5)
        await self.start()
        self._stale = False
        self.reconnects += 1
        log.info("dead-letter producer reconnected to %s", self.topic)

    async def start(self) -> None:
        """Connect. Raises :class:`DeadLetterError` (retriable) when the broker cannot be
        reached, :class:`~pipeline.errors.PipelineError` naming the setting to change when
        it refuses this producer (e.g. no idempotent producers)."""
        try:
            await self._producer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            cause = f"{type(exc).__name__}: {exc}"
            if is_transient(exc):
                raise DeadLetterError(f"the dead-letter producer cannot connect ({cause})") from exc
            hint = (
                "; if the broker has no idempotent producers (e.g. the embedded Tansu), set "
                "KAFKA_IDEMPOTENT_PRODUCER=false"
                if self._idempotent
                else ""
            )
            raise ConfigError(
                f"the broker refused the dead-letter producer for {self.topic} ({cause}){hint}"
            ) from exc

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, source_topic: str, items: Sequence[tuple[Record, Rejected]]) -> None:
        """Publish every item; return when the broker acknowledged all of them.

        A value larger than ``max_bytes`` is truncated to it, with headers saying so
        (``x-truncated``, ``x-original-size``, ``x-original-sha256``). A letter the broker
        refuses as it is (too large for the topic, invalid) is sent once more with an
        empty value and the same headers. Raises :class:`DeadLetterError` (retriable) for
        transient broker errors, and :class:`~pipeline.errors.ConfigError` when even an
        empty letter is refused: nothing can be dead-lettered, and nothing may be skipped.
        """
        if not items:
            return
        async with self._lock:
            await self._publish(source_topic, items)

    async def _publish(self, source_topic: str, items: Sequence[tuple[Record, Rejected]]) -> None:
        if self._stale:
            await self._renew()
        letters = [self._letter(source_topic, record, rejected) for record, rejected in items]
        failed = await self._send(letters)
        if not failed:
            return
        if any(is_transient(exc) for _, exc in failed):
            first = next(exc for _, exc in failed if is_transient(exc))
            self._stale = True
            raise DeadLetterError(f"could not publish to {self.topic}: {first!r}") from first
        emptied = [
            (key, b"", [*headers, *_truncated(value, 0)]) for (key, value, headers), _ in failed
        ]
        log.warning(
            "%s refused %d dead letter(s) as they were (%r); sending them without their value",
            self.topic,
            len(emptied),
            failed[0][1],
        )
        refused = await self._send(emptied)
        if refused:
            exc = refused[0][1]
            if is_transient(exc):
                self._stale = True
                raise DeadLetterError(f"could not publish to {self.topic}: {exc!r}") from exc
            raise ConfigError(
                f"{self.topic} refuses even an empty dead letter ({exc!r}); check the topic "
                "(max.message.bytes, permissions) and PIPELINE_TOPIC_DEAD_LETTERS"
            ) from exc

    def _letter(self, source_topic: str, record: Record, rejected: Rejected) -> _Letter:
        headers = dead_letter_headers(source_topic, record, rejected, self.worker_id)
        value = rejected.payload
        if len(value) > self.max_bytes:
            headers.extend(_truncated(value, self.max_bytes))
            value = value[: self.max_bytes]
        return dead_letter_key(source_topic, record, rejected), value, headers

    async def _send(self, letters: Sequence[_Letter]) -> list[tuple[_Letter, BaseException]]:
        """Send ``letters``; return those that failed, with why."""
        futures: list[Any] = []
        failed: list[tuple[_Letter, BaseException]] = []
        for letter in letters:
            key, value, headers = letter
            try:
                futures.append(
                    (
                        letter,
                        await self._producer.send(
                            self.topic, value=value, key=key, headers=headers
                        ),
                    )
                )
            except Exception as exc:  # refused before sending (too large for the client)
                failed.append((letter, exc))
        outcomes = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
        for (letter, _), outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                failed.append((letter, outcome))
        return failed


_Letter = tuple[bytes, bytes, list[tuple[str, bytes]]]


def _truncated(value: bytes, kept: int) -> list[tuple[str, bytes]]:
    return [
        ("x-truncated", str(kept).encode()),
        ("x-original-size", str(len(value)).encode()),
        ("x-original-sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
