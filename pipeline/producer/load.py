"""Producing the standard workload: the core of ``pipeline produce``, callable from Python.

:func:`produce_workload` generates the items of a :class:`~pipeline.workload.WorkloadSpec`
(deterministic for its seed), packs them into record values in the chosen shape
(:func:`~pipeline.workload.pack_stream`) and sends them through
:meth:`EventProducer.send_raw <pipeline.producer.client.EventProducer.send_raw>`: poison
records must reach the broker unvalidated, and pre-packed records skip the SDK's
per-event work. It returns a :class:`ProduceReport` with the exact
:class:`~pipeline.workload.ExpectedTotals` and, per partition, the offset up to which the
broker acknowledged records (what a caller waits for the PostgreSQL watermark to reach).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import EventKind, Reason
from pipeline.producer.buffer import DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_RECORD_EVENTS
from pipeline.producer.client import EventProducer, topic_for
from pipeline.workload import ExpectedTotals, Item, Shape, WorkloadSpec, generate, pack_stream

__all__ = ["ProduceReport", "ProgressCallback", "produce_workload"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(items_sent, items_total)`` after each record is buffered."""


@dataclass(slots=True)
class ProduceReport:
    """What :func:`produce_workload` sent; every figure is exact.

    - ``events``: valid events sent per kind (re-emitted duplicates included);
    - ``poison``: poison items sent per reason (events inside arrays and whole records);
    - ``records`` / ``record_bytes``: records sent per kind and their value bytes;
    - ``acked_offsets``: per (topic, partition), the highest acknowledged offset + 1;
    - ``totals``: what PostgreSQL must hold once everything is applied;
    - ``elapsed_s``: from the start of sending (generation included) to the last
      acknowledgement.
    """

    shape: Shape
    totals: ExpectedTotals
    events: dict[EventKind, int] = field(default_factory=dict)
    poison: dict[Reason, int] = field(default_factory=dict)
    records: dict[EventKind, int] = field(default_factory=dict)
    record_bytes: int = 0
    acked_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def items(self) -> int:
        """Everything sent: valid events and poison items."""
        return sum(self.events.values()) + sum(self.poison.values())

    @property
    def record_count(self) -> int:
        return sum(self.records.values())

    @property
    def items_per_s(self) -> float:
        return self.items / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _counted(spec: WorkloadSpec, report: ProduceReport) -> Iterator[Item]:
    """The spec's items, folded into the report's totals and counts on the way."""
    add = report.totals.add
    events, poison = report.events, report.poison
    for item in generate(spec):
        add(item)
        if item.poison is None and item.raw is None:
            events[item.kind] = events.get(item.kind, 0) + 1
        else:
            reason = item.poison or Reason.MALFORMED_JSON
            poison[reason] = poison.get(reason, 0) + 1
        yield item


async def produce_workload(
    kafka: KafkaConfig,
    topics: TopicsConfig,
    spec: WorkloadSpec,
    *,
    shape: Shape = "batched",
    rate: float | None = None,
    progress: ProgressCallback | None = None,
    max_record_events: int = DEFAULT_MAX_RECORD_EVENTS,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_buffered_bytes: int = 64 * 1_048_576,
) -> ProduceReport:
    """Send the workload of ``spec`` to the topics; return once all of it is acknowledged.

    ``rate`` (events/s, poison included) paces sending record by record; None sends as
    fast as the broker acknowledges (bounded by the producer's backpressure:
    ``max_buffered_bytes`` held, at least one record). During a broker outage, sending
    waits and records are sent again (see :class:`EventProducer`). The topics
    must exist (see :func:`pipeline.kafka.ensure_topics`). Raises
    :class:`~pipeline.producer.errors.BrokerUnavailableError` if the cluster cannot be
    reached and :class:`~pipeline.producer.errors.DeliveryError` if records were lost;
    ``ValueError`` for a bad shape, limit or rate.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    report = ProduceReport(shape=shape, totals=ExpectedTotals())
    total = spec.total_items
    topic_of = {kind: topic_for(topics, kind) for kind in EventKind}
    records = pack_stream(_counted(spec, report), shape, max_record_events, max_record_bytes)
    async with EventProducer(
        kafka,
        topics,
        max_record_events=max_record_events,
        max_record_bytes=max_record_bytes,
        max_buffered_events=max(100_000, max_record_events),
        max_buffered_bytes=max(max_buffered_bytes, max_record_bytes),
    ) as producer:
        log.info("producing %d items (%s records) of seed %d", total, shape, spec.seed)
        started = time.monotonic()
        sent = 0
        counts = report.records
        for record in records:
            if rate is not None:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await producer.send_raw(topic_of[record.kind], record.value)
            sent += record.events
            counts[record.kind] = counts.get(record.kind, 0) + 1
            report.record_bytes += len(record.value)
            if progress is not None:
                progress(sent, total)
        await producer.flush()
        report.elapsed_s = time.monotonic() - started
        report.acked_offsets = dict(producer.acked_offsets)
    log.info(
        "produced %d items in %d records in %.2fs",
        report.items,
        report.record_count,
        report.elapsed_s,
    )
    return report
