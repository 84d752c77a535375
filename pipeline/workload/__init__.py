"""The standard workload (``/work/shared/workloads.md``): deterministic events for every
benchmark and end-to-end test, with the exact totals they must produce.

Public surface:

- :class:`WorkloadSpec`: the size of a run, its ratios of each kind, its seed and optional
  defects (poison, late events, duplicates); :class:`Item`: one generated event or poison
  record.
- :func:`generate`: the item stream of a spec (byte-identical for the same spec);
  :class:`EventFactory` builds single valid events; :func:`poison_items` poison ones.
- :class:`ExpectedTotals` (with :class:`ApiBucket` and :class:`MetricBucket`): the figures
  PostgreSQL must end up holding, JSON round-trip and :meth:`ExpectedTotals.compare`.
- :func:`pack` / :func:`pack_stream`: items into Kafka record values, ``batched`` (JSON
  arrays of up to 500 events) or ``single``; :class:`PackedRecord`.

Modules: :mod:`~pipeline.workload.spec` (the spec, the fixed distributions, :class:`Item`),
:mod:`~pipeline.workload.generate` (:func:`generate`, :class:`EventFactory` and its API-call
maker), :mod:`~pipeline.workload.makers` (the makers of the other kinds),
:mod:`~pipeline.workload.poison`, :mod:`~pipeline.workload.records` (packing),
:mod:`~pipeline.workload.totals` (:class:`ExpectedTotals`), :mod:`~pipeline.workload.buckets`
(its buckets and exact units) and :mod:`~pipeline.workload.totals_json` (its JSON form).

``python -m pipeline.workload`` prints the generation speed. Importing does no I/O.
"""

from pipeline.workload.generate import EventFactory, format_uuid, generate
from pipeline.workload.poison import poison_items, reasons_for
from pipeline.workload.records import PackedRecord, Shape, pack, pack_stream
from pipeline.workload.spec import Item, WorkloadSpec, iso_timestamp, organization_of, user_name
from pipeline.workload.totals import (
    ApiBucket,
    ExpectedTotals,
    MetricBucket,
    format_usd,
    occurred_ms,
    usd_e8,
)

__all__ = [
    "ApiBucket",
    "EventFactory",
    "ExpectedTotals",
    "Item",
    "MetricBucket",
    "PackedRecord",
    "Shape",
    "WorkloadSpec",
    "format_usd",
    "format_uuid",
    "generate",
    "iso_timestamp",
    "occurred_ms",
    "organization_of",
    "pack",
    "pack_stream",
    "poison_items",
    "reasons_for",
    "usd_e8",
    "user_name",
]
