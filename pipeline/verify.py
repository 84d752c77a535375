"""Reading back what PostgreSQL holds, in the shape of the load generator's totals.

:func:`totals_from_database` builds an :class:`~pipeline.workload.ExpectedTotals` from the
tables (API buckets per service and hour, analysis rows and sums, analyses per current
status, log rows, metric buckets per name, service and hour, raw metric samples, audit rows
per action) so that the demo, the tests and the benchmark can compare it with what the
generator says it produced (``expected.compare(actual, include_invalid=False)``: invalid
events are not in PostgreSQL).

:func:`wait_for_watermarks` blocks until the ``ingest_offsets`` watermarks of a consumer
group reach given offsets: the way to know that everything produced has been applied,
since Tansu under-reports end offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.workload import ExpectedTotals


async def totals_from_database(conn: Any) -> ExpectedTotals:
    """What the event tables hold, as totals comparable with the generator's."""
    totals = ExpectedTotals()
    for row in await conn.fetch(
        "SELECT service, time_window, sum(request_count) AS requests, "
        "sum(success_count) AS successes, sum(error_count) AS errors, "
        "sum(token_usage) AS tokens, sum(cost) AS cost, "
        "sum(response_time_ms_sum) AS rt FROM api_usage GROUP BY service, time_window"
    ):
        totals.add_api_bucket(
            row["service"],
            row["time_window"],
            requests=int(row["requests"]),
            successes=int(row["successes"]),
            errors=int(row["errors"]),
            tokens=int(row["tokens"]),
            cost_usd=row["cost"],
            response_time_ms_sum=float(row["rt"]),
        )
    analysis = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(tokens_used), 0) AS tokens, "
        "coalesce(sum(api_cost), 0) AS cost FROM ai_analysis"
    )
    totals.analysis_rows = int(analysis["n"])
    totals.analysis_tokens_used = int(analysis["tokens"])
    totals.analysis_cost_e8 = int(analysis["cost"] * 100_000_000)
    for row in await conn.fetch(
        "SELECT model_type, count(*) AS n FROM ai_analysis GROUP BY model_type"
    ):
        totals.analysis_by_model[row["model_type"]] = int(row["n"])
    for row in await conn.fetch(
        "SELECT status, count(*) AS n FROM analysis_lifecycle GROUP BY status"
    ):
        totals.analysis_by_status[row["status"]] = int(row["n"])
    totals.analyses = sum(totals.analysis_by_status.values())
    totals.system_log_rows = int(await conn.fetchval("SELECT count(*) FROM system_logs"))
    # One bucket per (name, service, hour), over every instance, unit and tag set.
    for row in await conn.fetch(
        "SELECT name, service, time_window, sum(sample_count) AS samples, "
        "sum(value_sum) AS value_sum, min(value_min) AS value_min, "
        "max(value_max) AS value_max FROM performance_metrics "
        "GROUP BY name, service, time_window"
    ):
        totals.add_metric_bucket(
            row["name"],
            row["service"],
            row["time_window"],
            samples=int(row["samples"]),
            value_sum=float(row["value_sum"]),
            value_min=float(row["value_min"]),
            value_max=float(row["value_max"]),
        )
    totals.metric_sample_rows = int(await conn.fetchval("SELECT count(*) FROM performance_samples"))
    # The pipeline's own audit rows (source 'pipeline': migrations, partitions) are not events.
    for row in await conn.fetch(
        "SELECT action, count(*) AS n FROM audit_trail WHERE source = 'event' GROUP BY action"
    ):
        totals.audit_by_action[row["action"]] = int(row["n"])
    totals.audit_rows = sum(totals.audit_by_action.values())
    return totals


async def watermarks(conn: Any, group: str) -> dict[tuple[str, int], int]:
    """Every (topic, partition) -> next_offset of ``group``."""
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset FROM ingest_offsets WHERE consumer_group = $1",
        group,
    )
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def wait_for_watermarks(
    conn: Any,
    group: str,
    targets: Mapping[tuple[str, int], int],
    *,
    timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
    poll_s: float = 0.2,
) -> bool:
    """Wait until every target (topic, partition) -> offset is reached; False on timeout.

    ``progress(done, total)`` is called after each poll with the records applied so far.
    """
    deadline = time.monotonic() + timeout_s
    total = sum(targets.values())
    while True:
        marks = await watermarks(conn, group)
        done = sum(min(marks.get(tp, 0), end) for tp, end in targets.items())
        if progress is not None:
            progress(done, total)
        if done >= total:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
