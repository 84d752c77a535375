"""The producer SDK for Python services, and the workload load generator's core.

Public surface (how-to in ``docs/producing.md``):

- :class:`EventProducer`: ``async with EventProducer(kafka, topics) as p: await p.send(e)``;
  validated events batched per topic into JSON-array records, backpressure, ``flush()``.
- :func:`topic_for`: the topic of an event kind.
- :class:`RecordBuffer` and :class:`Record`: the batching and backpressure underneath.
- :func:`produce_workload` and :class:`ProduceReport`: send the standard workload (the
  core of ``pipeline produce``), get its exact totals and acknowledged offsets.
- Errors: :class:`ProducerError` and its subclasses, each saying ``retriable``.

Importing this package does no I/O.
"""

from pipeline.producer.buffer import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_MAX_RECORD_EVENTS,
    Record,
    RecordBuffer,
    pack_arrays,
)
from pipeline.producer.client import EventProducer, topic_for
from pipeline.producer.errors import (
    BrokerUnavailableError,
    DeliveryError,
    EventTooLargeError,
    ProducerClosedError,
    ProducerError,
    TransientDeliveryError,
    Undelivered,
)
from pipeline.producer.load import ProduceReport, ProgressCallback, produce_workload

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_MAX_RECORD_EVENTS",
    "BrokerUnavailableError",
    "DeliveryError",
    "EventProducer",
    "EventTooLargeError",
    "ProduceReport",
    "ProducerClosedError",
    "ProducerError",
    "ProgressCallback",
    "Record",
    "RecordBuffer",
    "TransientDeliveryError",
    "Undelivered",
    "pack_arrays",
    "produce_workload",
    "topic_for",
]
