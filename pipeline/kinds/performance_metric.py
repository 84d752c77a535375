"""Performance metrics: hourly series in ``performance_metrics``, raw samples beside them.

A flush folds its samples into per-series deltas (:mod:`pipeline.worker.metrics_aggregate`)
before the transaction and adds them to the stored series with one upsert, reading the
staged rows in key order (no deadlocks between flushes sharing series). The same flush
inserts each sample into ``performance_samples`` (``ON CONFLICT DO NOTHING`` on
``event_id``), a table with a short retention of its own: samples older than it are left
out there, while the hourly series (kept as long as ``performance_metrics``' retention)
still count them. Like API calls, the series do not deduplicate by ``event_id``: the
watermark makes redelivery harmless, but a producer sending one sample twice counts it
twice in the series (once in the raw samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pipeline.contract import Event, EventKind, PerformanceMetric
from pipeline.kinds.spec import KindSpec
from pipeline.worker.metrics_aggregate import MetricKey, aggregate_metrics
from pipeline.worker.writes import EPOCH_MS, Staged, Writer

__all__ = ["SAMPLES", "SERIES", "SPEC", "write_metrics"]

SERIES = Staged(
    "pipeline_stage_performance_metrics",
    (
        ("hour_ms", "bigint"), ("name", "text"), ("service", "text"), ("instance", "text"),
        ("unit", "text"), ("tags", "jsonb"), ("n", "bigint"), ("vsum", "float8"),
        ("vmin", "float8"), ("vmax", "float8"), ("hist", "bigint[]"),
    ),
    f"""
INSERT INTO performance_metrics AS m (
    time_window, name, service, instance, unit, tags, sample_count, value_sum, value_min,
    value_max, histogram, updated_at)
SELECT {EPOCH_MS.format("t.hour_ms")}, t.name, t.service, t.instance, t.unit, t.tags, t.n,
       t.vsum, t.vmin, t.vmax, t.hist, now()
FROM {{stage}} AS t
ORDER BY t.hour_ms, t.name, t.service, t.instance, t.unit, t.tags
ON CONFLICT (time_window, name, service, instance, unit, tags) DO UPDATE SET
    sample_count = m.sample_count + excluded.sample_count,
    value_sum = m.value_sum + excluded.value_sum,
    value_min = least(m.value_min, excluded.value_min),
    value_max = greatest(m.value_max, excluded.value_max),
    histogram = histogram_add(m.histogram, excluded.histogram),
    updated_at = excluded.updated_at
""",
)  # fmt: skip

# Samples older than the first partition performance_samples still keeps (its policy's
# retention) are left out: the partition guard does not create expired ranges for them.
SAMPLES = Staged(
    "pipeline_stage_performance_samples",
    (
        ("ms", "bigint"), ("event_id", "uuid"), ("name", "text"), ("service", "text"),
        ("instance", "text"), ("unit", "text"), ("tags", "jsonb"), ("value", "float8"),
    ),
    f"""
INSERT INTO performance_samples (
    recorded_at, event_id, name, service, instance, unit, tags, value)
SELECT {EPOCH_MS.format("t.ms")}, t.event_id, t.name, t.service, t.instance, t.unit, t.tags,
       t.value
FROM {{stage}} AS t
WHERE {EPOCH_MS.format("t.ms")} >= partition_keep_from('performance_samples', now())
ON CONFLICT (recorded_at, event_id) DO NOTHING
""",
)  # fmt: skip

Prepared = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def series_rows(series: dict[MetricKey, list[float]]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`SERIES` (unsorted: the upsert orders them in SQL)."""
    return [(*key, int(d[0]), d[1], d[2], d[3], d[4:]) for key, d in series.items()]


def sample_rows(samples: Sequence[PerformanceMetric]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`SAMPLES`."""
    return [
        (m.occurred_at_ms, m.event_id, m.name, m.service, m.instance, m.unit, m.tags_json,
         m.value)
        for m in samples
    ]  # fmt: skip


def _prepare(events: Sequence[Event]) -> Prepared:
    samples = [e for e in events if isinstance(e, PerformanceMetric)]
    return series_rows(aggregate_metrics(samples)), sample_rows(samples)


async def write_metrics(conn: Any, prepared: Prepared) -> int:
    """Add the series deltas and insert the samples; return the series rows written."""
    series, samples = prepared
    written = await SERIES.write(conn, series)
    await SAMPLES.write(conn, samples)
    return written


SPEC: Final = KindSpec(
    kind=EventKind.PERFORMANCE_METRIC,
    event=PerformanceMetric,
    topic="performance-metrics",
    topic_setting="PIPELINE_TOPIC_PERFORMANCE_METRICS",
    writer=Writer(
        "performance_metrics",
        _prepare,
        write_metrics,
        aggregated=True,
        also=("performance_samples",),
    ),
)
