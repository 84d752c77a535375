"""Analysis lifecycles through the worker: exact whatever the order and the repetitions."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from pipeline.contract import EventKind
from pipeline.workload import Item
from tests.integration.harness import Pipeline

NOW_MS = int(time.time() * 1000)
RANK = {"queued": 1, "processing": 2, "fallback": 3, "failed": 4, "completed": 5}


def change(analysis_id: str, status: str, at_ms: int, actor: str) -> dict[str, object]:
    return {
        "type": "analysis",
        "event_id": str(uuid.uuid4()),
        "occurred_at": at_ms,
        "analysis_id": analysis_id,
        "actor": actor,
        "model_type": "gpt_4o",
        "status": status,
        "organization_id": "org-1",
        "user_id": "user-1",
    }


def lifecycles(rng: random.Random, n: int) -> list[list[dict[str, object]]]:
    """``n`` analyses of 1-4 state changes; some share a timestamp (ties break by status)."""
    out = []
    for i in range(n):
        aid = f"analysis-{i}"
        at = NOW_MS - 3_600_000 + rng.randrange(3_000_000)
        final = rng.choice(["completed", "failed", "fallback"])
        statuses = rng.choice([["queued", "processing", final], ["queued", final], [final],
                               ["queued", "processing", "processing", final]])  # fmt: skip
        changes = []
        for n_status, status in enumerate(statuses):
            at += 0 if rng.random() < 0.2 else rng.randrange(1, 5_000)
            changes.append(change(aid, status, at, f"actor-{i}-{n_status}"))
        out.append(changes)
    return out


def expected_row(changes: list[dict[str, object]]) -> tuple[object, ...]:
    ordered = sorted(
        changes,
        key=lambda c: (c["occurred_at"], RANK[str(c["status"])], str(c["event_id"])),
    )
    first, last = ordered[0], ordered[-1]
    ids = [str(c["event_id"]) for c in ordered]
    return last["status"], first["actor"], last["actor"], len(ordered), ids


async def stored(stack: Pipeline) -> dict[str, tuple[object, ...]]:
    conn = await stack.connect()
    try:
        rows = await conn.fetch(
            "SELECT analysis_id, status, created_by, modified_by, change_count, "
            "ARRAY(SELECT e->>'event_id' FROM jsonb_array_elements(modification_history) e) "
            "AS ids FROM analysis_lifecycle"
        )
    finally:
        await conn.close()
    return {
        r["analysis_id"]: (r["status"], r["created_by"], r["modified_by"], r["change_count"],
                           list(r["ids"]))
        for r in rows
    }  # fmt: skip


@pytest.mark.asyncio
async def test_shuffled_and_repeated_state_changes_give_the_exact_current_state(
    stack: Pipeline,
) -> None:
    rng = random.Random(13)
    analyses = lifecycles(rng, 300)
    events = [c for changes in analyses for c in changes]
    repeated = events + rng.sample(events, len(events) // 4)  # producer retries
    rng.shuffle(repeated)
    stack.start_worker()
    stack.start_worker()  # two workers: changes of one analysis meet in different flushes
    half = len(repeated) // 2
    await stack.produce([Item(EventKind.ANALYSIS, e) for e in repeated[:half]], max_events=7)
    await stack.produce([Item(EventKind.ANALYSIS, e) for e in repeated[half:]], shape="single")
    await stack.wait_applied()
    actual = await stored(stack)
    expected = {str(changes[0]["analysis_id"]): expected_row(changes) for changes in analyses}
    assert actual == expected
    conn = await stack.connect()
    try:
        rows = await conn.fetchval("SELECT count(*) FROM ai_analysis")
    finally:
        await conn.close()
    assert rows == len(events)  # each state change stored once, duplicates ignored


@pytest.mark.asyncio
async def test_a_state_change_older_than_the_current_state_only_joins_the_history(
    stack: Pipeline,
) -> None:
    done = change("late-1", "completed", NOW_MS - 60_000, "worker-7")
    queued = change("late-1", "queued", NOW_MS - 120_000, "scheduler")
    stack.start_worker()
    await stack.produce([Item(EventKind.ANALYSIS, done)])
    await stack.wait_applied()
    await stack.produce([Item(EventKind.ANALYSIS, queued)])
    await stack.wait_applied()
    actual = await stored(stack)
    assert actual["late-1"] == (
        "completed",
        "scheduler",
        "worker-7",
        2,
        [queued["event_id"], done["event_id"]],
    )
