"""Event kinds, each declared once: topic, contract, table writer, partitioned tables.

A :class:`KindSpec` is everything the pipeline needs to carry one kind of event from a
producer to PostgreSQL. The configuration (topic names and their settings), the producer,
the worker's flush, the partition guard, the dead-letter tools, ``pipeline produce`` and
``pipeline demo`` iterate over :data:`KINDS` and never name a kind (except where a tool
records what it did: ``pipeline dlq replay`` sends an audit event about the replay).
Adding a kind is:

1. its contract in :mod:`pipeline.contract` (event class, validator, JSON Schema);
2. its tables in a migration, with a ``partition_policies`` row per partitioned table;
3. one module here declaring its :class:`KindSpec` (the write SQL lives beside it), and
   one line in :data:`KINDS`.

Importing this package does no I/O.
"""

from __future__ import annotations

from typing import Final

from pipeline.contract import EventKind
from pipeline.kinds.spec import KindSpec

__all__ = ["KINDS", "KindSpec", "spec_of"]


def _declarations() -> tuple[KindSpec, ...]:
    from pipeline.kinds import analysis, api_call, audit, performance_metric, system_log

    return (api_call.SPEC, analysis.SPEC, system_log.SPEC, performance_metric.SPEC, audit.SPEC)


KINDS: Final[tuple[KindSpec, ...]] = _declarations()
"""Every kind, in a stable order (the first kind's topic carries the group's leadership)."""

# A plain dict: tests replace a writer here to inject faults into a worker process.
_BY_KIND: Final[dict[EventKind, KindSpec]] = {s.kind: s for s in KINDS}


def spec_of(kind: EventKind) -> KindSpec:
    """The declaration of ``kind``; ``KeyError`` if it has none (a bug)."""
    return _BY_KIND[kind]
