"""Performance metrics and audit events through the worker, beyond the standard workload."""

from __future__ import annotations

import time
import uuid

import pytest

from pipeline.contract import EventKind
from pipeline.workload import Item
from tests.integration.harness import Pipeline

NOW_MS = int(time.time() * 1000)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def sample(at_ms: int, value: float, **extra: object) -> dict[str, object]:
    return {
        "type": "performance_metric", "event_id": str(uuid.uuid4()), "occurred_at": at_ms,
        "name": "queue.depth", "value": value, "unit": "1", "service": "billing", **extra,
    }  # fmt: skip


def audit(actor: str | None, **extra: object) -> dict[str, object]:
    event: dict[str, object] = {
        "type": "audit", "event_id": str(uuid.uuid4()), "occurred_at": NOW_MS - 1000,
        "actor": actor, "actor_type": "user", "action": "settings.updated",
        "entity_type": "settings", "entity_id": "org-1/billing", "organization_id": "org-1",
        "before": {"plan": "free"}, "after": {"plan": "pro"},
    }  # fmt: skip
    return {**event, **extra}


@pytest.mark.asyncio
async def test_metric_samples_older_than_their_retention_still_count_in_their_hour(
    stack: Pipeline,
) -> None:
    """A sample 8 days old: in its hourly series, not in performance_samples (7 days), and
    no dead letter. A duplicated sample counts twice in the series, once in the samples."""
    hour = NOW_MS - NOW_MS % HOUR_MS
    old = sample(NOW_MS - 8 * DAY_MS, 5.0)
    fresh = [sample(hour + i, float(i), instance="i-1", tags={"region": "eu"}) for i in range(1, 5)]
    stack.start_worker()
    await stack.produce([Item(EventKind.PERFORMANCE_METRIC, e) for e in [old, *fresh, fresh[0]]])
    await stack.wait_applied()
    conn = await stack.connect()
    try:
        series = await conn.fetch(
            "SELECT time_window, instance, tags, sample_count, value_sum, value_min, value_max, "
            "histogram_total(histogram) AS counted FROM performance_metrics ORDER BY 1"
        )
        samples = await conn.fetchval("SELECT count(*) FROM performance_samples")
    finally:
        await conn.close()
    assert [
        (r["sample_count"], r["value_sum"], r["value_min"], r["value_max"]) for r in series
    ] == [
        (1, 5.0, 5.0, 5.0),
        (5, 11.0, 1.0, 4.0),  # 1 + 1 (the duplicate) + 2 + 3 + 4
    ]
    assert series[1]["instance"] == "i-1" and series[1]["tags"] == '{"region": "eu"}'
    assert all(r["counted"] == r["sample_count"] for r in series)
    assert samples == 4  # the old one is beyond the samples' retention; the duplicate is one
    assert await stack.dead_letters(idle_s=1.0) == []


@pytest.mark.asyncio
async def test_audit_events_are_stored_once_and_one_without_actor_is_a_dead_letter(
    stack: Pipeline,
) -> None:
    good = [audit("alice"), audit("bob", actor_type="service", request_id="req-1")]
    items = [Item(EventKind.AUDIT, e) for e in [*good, good[0], audit(None)]]
    stack.start_worker()
    await stack.produce(items, shape="single")
    await stack.wait_applied()
    conn = await stack.connect()
    try:
        rows = await conn.fetch(
            "SELECT actor, actor_type, before, after, source FROM audit_trail "
            "WHERE source = 'event' ORDER BY actor"
        )
    finally:
        await conn.close()
    assert [(r["actor"], r["actor_type"], r["source"]) for r in rows] == [
        ("alice", "user", "event"), ("bob", "service", "event"),
    ]  # fmt: skip
    assert rows[0]["before"] == '{"plan": "free"}' and rows[0]["after"] == '{"plan": "pro"}'
    letters = await stack.dead_letters(idle_s=1.0)
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert headers["x-reason"] == "missing_field" and "actor" in headers["x-detail"]
    assert headers["x-source-topic"] == stack.topics.topic(EventKind.AUDIT)
