"""Errors of the producer SDK, and the one place aiokafka's errors are classified.

Every class derives from :class:`~pipeline.errors.PipelineError` and says ``retriable``:

- :class:`ProducerClosedError` (not retriable): ``send`` on a producer that is not started
  or already closed. A programming error.
- :class:`EventTooLargeError` (not retriable): one event (or raw record) is larger than
  the producer's ``max_record_bytes`` on its own; nothing was buffered.
- :class:`BrokerUnavailableError` (retriable): the producer could not connect to the
  cluster on start. A cluster that refuses the client (no idempotence support, bad
  credentials) raises :class:`ProducerError` itself, not retriable.
- :class:`DeliveryError` (not retriable): the broker refused records (too large for the
  topic, not authorised, unknown topic...). Sending them again fails the same way.
- :class:`TransientDeliveryError` (retriable): records were not acknowledged before
  ``close(timeout_s=...)`` gave up (the producer itself re-sends records that failed
  transiently for as long as it runs). ``undelivered`` holds them: those that were in
  flight may or may not have been written: resending ``api_call`` events without an
  idempotent producer can count them twice (see ``docs/events.md``).

Invalid events are not producer errors: they raise
:class:`pipeline.contract.ContractError` (a ``ValueError``) before anything is buffered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from pipeline.errors import PipelineError

__all__ = [
    "BrokerUnavailableError",
    "DeliveryError",
    "EventTooLargeError",
    "ProducerClosedError",
    "ProducerError",
    "TransientDeliveryError",
    "Undelivered",
    "delivery_error",
    "is_transient",
]


class ProducerError(PipelineError):
    """Root of the producer SDK's errors."""


class ProducerClosedError(ProducerError):
    """The producer is not started or already closed; nothing was buffered."""


class EventTooLargeError(ProducerError):
    """An event (or raw record) exceeds ``max_record_bytes`` by itself; nothing was buffered.

    Raise the limit (up to what the topic's ``max.message.bytes`` allows) or make the event
    smaller (``metadata`` and ``message`` are the usual culprits).
    """


class BrokerUnavailableError(ProducerError):
    """The cluster could not be reached when the producer started. Retry later."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Undelivered:
    """A record the producer accepted and could not get acknowledged: its ``topic``, its
    ``value`` (a JSON array of ``events`` events, or a raw record) and whether it was
    ``in_flight`` (sent, outcome unknown: it may have been written) or never sent."""

    topic: str
    value: bytes
    events: int
    in_flight: bool


class DeliveryError(ProducerError):
    """Records were not acknowledged by the broker; raised by ``flush()`` and ``close()``.

    ``records`` and ``events`` count what was lost since the previous ``flush()``,
    ``topics`` names their topics and ``__cause__`` is the first underlying error.
    ``undelivered`` lists the records still unacknowledged when ``close(timeout_s=...)``
    gave up (empty otherwise), to be kept and sent again by the caller.
    """

    def __init__(
        self,
        message: str,
        *,
        records: int,
        events: int,
        topics: Sequence[str],
        undelivered: Sequence[Undelivered] = (),
    ) -> None:
        super().__init__(message)
        self.records = records
        self.events = events
        self.topics = tuple(topics)
        self.undelivered = tuple(undelivered)


class TransientDeliveryError(DeliveryError):
    """Records were not acknowledged because the broker was unreachable or too slow.

    Some may have been written anyway (an acknowledgement can be lost): resending is safe
    for ``analysis``, ``system_log`` and ``audit`` events (stored once per ``event_id``)
    but may count ``api_call`` and ``performance_metric`` events twice (added to hourly
    aggregates) unless the producer is idempotent.
    """

    retriable = True


def is_transient(exc: BaseException) -> bool:
    """Whether an aiokafka (or socket) error means "try again later"."""
    if isinstance(exc, KafkaTimeoutError | KafkaConnectionError | OSError | TimeoutError):
        return True
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def delivery_error(failures: Sequence[tuple[str, int, BaseException]]) -> DeliveryError:
    """The error to raise for ``failures``: (topic, events, cause) of each lost record.

    Transient only if every cause is transient: one refusal makes the whole
    failure not retriable. The caller raises it ``from`` the first cause.
    """
    topics = sorted({topic for topic, _, _ in failures})
    events = sum(n for _, n, _ in failures)
    first = failures[0][2]
    transient = all(is_transient(cause) for _, _, cause in failures)
    cls = TransientDeliveryError if transient else DeliveryError
    message = (
        f"{len(failures)} record(s) with {events} event(s) to {', '.join(topics)} were not "
        f"acknowledged by the broker ({'retriable' if transient else 'not retriable'}): "
        f"{type(first).__name__}: {first}"
    )
    return cls(message, records=len(failures), events=events, topics=topics)
