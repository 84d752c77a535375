"""API calls folded into hourly bucket deltas.

A bucket is (hour, service, endpoint, method, user_id, organization_id) with additive
measures, so a flush adds its deltas to whatever PostgreSQL holds and any order of flushes
gives the same totals. Anonymous callers use ``''`` for user and organization (key
columns cannot be NULL). Cost is summed in integer units of 1e-8 USD: exact.

Late events need nothing special: an event belongs to the bucket of its own hour, however
late it arrives.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from pipeline.contract import ApiCall

HOUR_MS = 3_600_000
# Upper bounds (inclusive) of the latency histogram's first seven columns, in ms; the
# eighth column counts everything above the last bound. Must match sql/migrations/0002.
LATENCY_BOUNDS_MS = (50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)

BucketKey = tuple[int, str, str, str, str, str]
# Delta layout: request, success, error, tokens, cost_e8, rt_sum, rt_max, then 8 histogram
# counts. A flat list keeps the hot loop to index arithmetic.
REQUESTS, SUCCESSES, ERRORS, TOKENS, COST_E8, RT_SUM, RT_MAX, HIST = range(8)
DELTA_WIDTH = HIST + len(LATENCY_BOUNDS_MS) + 1


def aggregate(calls: Iterable[ApiCall]) -> dict[BucketKey, list[float]]:
    """Fold API calls into per-bucket deltas (a new dict; the input is not kept)."""
    buckets: dict[BucketKey, list[float]] = {}
    get = buckets.get
    bounds = LATENCY_BOUNDS_MS
    for call in calls:
        key = (
            call.occurred_at_ms - call.occurred_at_ms % HOUR_MS,
            call.service,
            call.endpoint,
            call.method,
            call.user_id or "",
            call.organization_id or "",
        )
        delta = get(key)
        if delta is None:
            delta = buckets[key] = [0] * DELTA_WIDTH
        rt = call.response_time_ms
        delta[REQUESTS] += 1
        if call.success:
            delta[SUCCESSES] += 1
        else:
            delta[ERRORS] += 1
        delta[TOKENS] += call.tokens
        delta[COST_E8] += call.cost_e8
        delta[RT_SUM] += rt
        if rt > delta[RT_MAX]:
            delta[RT_MAX] = rt
        delta[HIST + bisect_left(bounds, rt)] += 1
    return buckets
