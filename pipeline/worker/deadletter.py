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
(acks=all); it raises :class:`DeadLetterError` (retriable) if the broker cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from pipeline.config import KafkaConfig
from pipeline.errors import PipelineError
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

    def __init__(self, config: KafkaConfig, topic: str, worker_id: str) -> None:
        self.topic = topic
        self.worker_id = worker_id
        self._idempotent = config.idempotent_producer
        self._producer: Any = AIOKafkaProducer(
            **producer_options(config, max_request_size=4 * 1024 * 1024)
        )

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
            raise PipelineError(
                f"the dead-letter producer for {self.topic} could not start ({cause}){hint}"
            ) from exc

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, source_topic: str, items: Sequence[tuple[Record, Rejected]]) -> None:
        if not items:
            return
        try:
            futures = [
                await self._producer.send(
                    self.topic,
                    value=rejected.payload,
                    key=dead_letter_key(source_topic, record, rejected),
                    headers=dead_letter_headers(source_topic, record, rejected, self.worker_id),
                )
                for record, rejected in items
            ]
            await asyncio.gather(*futures)
        except Exception as exc:
            raise DeadLetterError(f"could not publish to {self.topic}: {exc}") from exc
