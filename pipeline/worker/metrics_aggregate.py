"""Performance-metric samples folded into hourly series deltas (stage: aggregate).

A series is (hour, name, service, instance, unit, tags) with additive measures: sample
count, value sum, minimum, maximum and a fixed 123-bucket histogram, so a flush adds its
deltas to whatever PostgreSQL holds and any order of flushes gives the same totals (min
and max merge with least/greatest). The histogram's bounds are log-spaced, ten per decade
from 1e-3 to 1e9, and must match ``metric_quantile`` in sql/migrations/0009:

- bucket 0: value <= 0; bucket 1: 0 < value <= 1e-3;
- bucket k (2..121): 10^(-3 + (k-2)/10) < value <= 10^(-3 + (k-1)/10);
- bucket 122: value > 1e9.

(SQL arrays are 1-based: Python bucket k is SQL element k + 1.) A percentile read from it
is off by at most one bucket's width, a factor of 10^0.1 (about 26 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from pipeline.contract import PerformanceMetric
from pipeline.worker.aggregate import HOUR_MS

__all__ = ["BUCKETS", "MetricKey", "aggregate_metrics", "bucket_of"]

BUCKETS: Final = 123
_LOW: Final = 1e-3
_HIGH: Final = 1e9

MetricKey = tuple[int, str, str, str, str, str]
"""(hour start in epoch ms, name, service, instance, unit, tags as canonical JSON)."""

# Delta layout: count, sum, min, max, then the histogram.
COUNT, SUM, MIN, MAX, HIST = range(5)


def bucket_of(value: float) -> int:
    """The histogram bucket (0-based) that counts ``value``."""
    if value <= 0.0:
        return 0
    if value <= _LOW:
        return 1
    if value > _HIGH:
        return BUCKETS - 1
    k = math.ceil((math.log10(value) + 3.0) * 10.0 - 1e-9) + 1
    # log10 rounding can put a value one bucket off at a bound: check against the bounds.
    while k > 2 and value <= 10.0 ** (-3.0 + (k - 2) / 10.0):
        k -= 1
    while k < BUCKETS - 2 and value > 10.0 ** (-3.0 + (k - 1) / 10.0):
        k += 1
    return k


def aggregate_metrics(samples: Iterable[PerformanceMetric]) -> dict[MetricKey, list[float]]:
    """Fold samples into per-series deltas (a new dict; the input is not kept)."""
    series: dict[MetricKey, list[float]] = {}
    get = series.get
    for m in samples:
        ms = m.occurred_at_ms
        key = (ms - ms % HOUR_MS, m.name, m.service, m.instance, m.unit, m.tags_json)
        value = m.value
        delta = get(key)
        if delta is None:
            delta = series[key] = [0, 0.0, value, value] + [0] * BUCKETS
        else:
            if value < delta[MIN]:
                delta[MIN] = value
            if value > delta[MAX]:
                delta[MAX] = value
        delta[COUNT] += 1
        delta[SUM] += value
        delta[HIST + bucket_of(value)] += 1
    return series
