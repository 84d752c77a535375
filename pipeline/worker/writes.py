"""The SQL that applies a batch's effect, one statement per table.

Each function runs one statement on a connection that is already inside the flush's
transaction; none commits. Arrays go through ``unnest`` so a statement carries thousands
of rows in one round trip, and times travel as epoch milliseconds converted in SQL
(``'epoch' + ms * 1 ms``), which is exact and avoids building datetimes in Python.

- :func:`upsert_buckets` adds bucket deltas (``ON CONFLICT DO UPDATE`` with additive SET
  clauses). Keys are sorted so that two workers sharing buckets lock rows in the same
  order and cannot deadlock; a statement never holds the same key twice.
- :func:`insert_analyses` / :func:`insert_logs` insert rows with ``ON CONFLICT DO NOTHING``
  on the primary key, so a producer's duplicate event_id is stored once.

Errors propagate as asyncpg raised them; the flush classifies them.

:data:`WRITERS` declares, per event kind, its table and the two steps of writing it:
``prepare`` (CPU work done before the transaction opens: aggregation, building columns) and
``write`` (one statement inside it). The flush serves every kind through it without
naming one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.contract import Analysis, ApiCall, Event, EventKind, SystemLog
from pipeline.worker.aggregate import BucketKey, aggregate

_EPOCH = "(timestamptz 'epoch' + {} * interval '1 millisecond')"

BUCKET_SUMS = (
    "request_count", "success_count", "error_count", "token_usage", "cost",
    "response_time_ms_sum", "latency_le_50", "latency_le_100", "latency_le_250",
    "latency_le_500", "latency_le_1000", "latency_le_2500", "latency_le_5000",
    "latency_gt_5000",
)  # fmt: skip


def additive_set(target: str) -> str:
    """The SET list of a bucket upsert into ``target`` (the table or its alias): every sum
    adds the new delta, the maximum keeps the larger value, ``updated_at`` moves."""
    sums = [f"{c} = {target}.{c} + excluded.{c}" for c in BUCKET_SUMS]
    largest = "response_time_ms_max = "
    largest += f"greatest({target}.response_time_ms_max, excluded.response_time_ms_max)"
    return ",\n    ".join([*sums, largest, "updated_at = excluded.updated_at"])


UPSERT_BUCKETS = f"""
INSERT INTO api_usage AS u (
    time_window, service, endpoint, method, user_id, organization_id,
    request_count, success_count, error_count, token_usage, cost,
    response_time_ms_sum, response_time_ms_max,
    latency_le_50, latency_le_100, latency_le_250, latency_le_500,
    latency_le_1000, latency_le_2500, latency_le_5000, latency_gt_5000, updated_at)
SELECT {_EPOCH.format("t.hour_ms")}, t.service, t.endpoint, t.method, t.user_id, t.org_id,
       t.requests, t.successes, t.errors, t.tokens, t.cost_e8 * 0.00000001,
       t.rt_sum, t.rt_max, t.h0, t.h1, t.h2, t.h3, t.h4, t.h5, t.h6, t.h7, now()
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
            $12::float8[], $13::float8[], $14::bigint[], $15::bigint[], $16::bigint[],
            $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[])
     AS t(hour_ms, service, endpoint, method, user_id, org_id, requests, successes, errors,
          tokens, cost_e8, rt_sum, rt_max, h0, h1, h2, h3, h4, h5, h6, h7)
ON CONFLICT (time_window, service, endpoint, method, user_id, organization_id) DO UPDATE SET
    {additive_set("u")}
"""

INSERT_ANALYSES = f"""
INSERT INTO ai_analysis (
    created_at, event_id, user_id, organization_id, entry_id, status, model_type,
    model_version, analysis_version, request_tokens, response_tokens, tokens_used, api_cost,
    processing_time_ms, queue_wait_time_ms, total_processing_time_ms, caching_used,
    batch_processed, region_processed, processing_attempts, fallback_used, error_type,
    metadata)
SELECT {_EPOCH.format("t.ms")}, t.event_id::uuid, t.user_id, t.org_id, t.entry_id, t.status,
       t.model_type, t.model_version, t.analysis_version, t.request_tokens,
       t.response_tokens, t.tokens_used, t.cost_e8 * 0.00000001, t.processing_ms,
       t.queue_ms, t.total_ms, t.caching, t.batch, t.region, t.attempts, t.fallback,
       t.error_type, t.metadata::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::int[], $11::int[], $12::bigint[],
            $13::bigint[], $14::float8[], $15::float8[], $16::float8[], $17::bool[],
            $18::bool[], $19::text[], $20::int[], $21::bool[], $22::text[], $23::text[])
     AS t(ms, event_id, user_id, org_id, entry_id, status, model_type, model_version,
          analysis_version, request_tokens, response_tokens, tokens_used, cost_e8,
          processing_ms, queue_ms, total_ms, caching, batch, region, attempts, fallback,
          error_type, metadata)
ON CONFLICT (created_at, event_id) DO NOTHING
"""

INSERT_LOGS = f"""
INSERT INTO system_logs (
    logged_at, event_id, level, service, message, metadata, user_id, session_id)
SELECT {_EPOCH.format("t.ms")}, t.event_id::uuid, t.level, t.service, t.message,
       t.metadata::jsonb, t.user_id, t.session_id
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[])
     AS t(ms, event_id, level, service, message, metadata, user_id, session_id)
ON CONFLICT (logged_at, event_id) DO NOTHING
"""


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 42``."""
    return int(status.rsplit(" ", 1)[-1])


async def upsert_buckets(conn: Any, buckets: dict[BucketKey, list[float]]) -> int:
    """Add ``buckets`` to api_usage; return the number of buckets written."""
    if not buckets:
        return 0
    keys = sorted(buckets)
    rows = [(*key, *buckets[key]) for key in keys]
    columns = [list(column) for column in zip(*rows, strict=True)]
    status: str = await conn.execute(UPSERT_BUCKETS, *columns)
    return _count(status)


async def insert_analyses(conn: Any, events: Sequence[Analysis]) -> int:
    """Insert analysis rows; return how many were new (duplicates are ignored)."""
    return await insert_rows(conn, INSERT_ANALYSES, analysis_columns(events))


async def insert_rows(conn: Any, statement: str, columns: list[list[Any]]) -> int:
    """Run an ``INSERT ... SELECT FROM unnest(...)`` with ``columns``; return rows inserted."""
    if not columns or not columns[0]:
        return 0
    return _count(await conn.execute(statement, *columns))


def analysis_columns(events: Sequence[Analysis]) -> list[list[Any]]:
    """The 23 parameter arrays of :data:`INSERT_ANALYSES`."""
    columns: list[list[Any]] = [[] for _ in range(23)]
    (ms, eid, user, org, entry, status, model, version, aversion, rq, rs, used, cost,
     proc, queue, total, caching, batch, region, attempts, fallback, err, meta) = [
        c.append for c in columns
    ]  # fmt: skip
    for e in events:
        ms(e.occurred_at_ms)
        eid(e.event_id)
        user(e.user_id)
        org(e.organization_id)
        entry(e.entry_id)
        status(e.status)
        model(e.model_type)
        version(e.model_version)
        aversion(e.analysis_version)
        rq(e.request_tokens)
        rs(e.response_tokens)
        used(e.tokens_used)
        cost(e.api_cost_e8)
        proc(e.processing_time_ms)
        queue(e.queue_wait_time_ms)
        total(e.total_processing_time_ms)
        caching(e.caching_used)
        batch(e.batch_processed)
        region(e.region_processed)
        attempts(e.processing_attempts)
        fallback(e.fallback_used)
        err(e.error_type)
        meta(e.metadata_json)
    return columns


async def insert_logs(conn: Any, events: Sequence[SystemLog]) -> int:
    """Insert log rows; return how many were new (duplicates are ignored)."""
    return await insert_rows(conn, INSERT_LOGS, log_columns(events))


def log_columns(events: Sequence[SystemLog]) -> list[list[Any]]:
    """The 8 parameter arrays of :data:`INSERT_LOGS`."""
    columns: list[list[Any]] = [[] for _ in range(8)]
    ms, eid, level, service, message, meta, user, session = [c.append for c in columns]
    for e in events:
        ms(e.occurred_at_ms)
        eid(e.event_id)
        level(e.level)
        service(e.service)
        message(e.message)
        meta(e.metadata_json)
        user(e.user_id)
        session(e.session_id)
    return columns


@dataclass(frozen=True)
class Writer:
    """How events of one kind reach their table.

    ``prepare(events)`` runs before the flush transaction opens (pure CPU, no I/O);
    ``write(conn, prepared)`` runs one statement inside it and returns the rows written.
    ``aggregated``: rows are buckets (an upsert adds events up), not one row per event.
    """

    table: str
    prepare: Callable[[Sequence[Event]], Any]
    write: Callable[[Any, Any], Awaitable[int]]
    aggregated: bool = False


def _calls(events: Sequence[Event]) -> dict[BucketKey, list[float]]:
    return aggregate(e for e in events if isinstance(e, ApiCall))


def _analyses(events: Sequence[Event]) -> list[list[Any]]:
    return analysis_columns([e for e in events if isinstance(e, Analysis)])


def _logs(events: Sequence[Event]) -> list[list[Any]]:
    return log_columns([e for e in events if isinstance(e, SystemLog)])


async def _write_analyses(conn: Any, columns: list[list[Any]]) -> int:
    return await insert_rows(conn, INSERT_ANALYSES, columns)


async def _write_logs(conn: Any, columns: list[list[Any]]) -> int:
    return await insert_rows(conn, INSERT_LOGS, columns)


WRITERS: dict[EventKind, Writer] = {
    EventKind.API_CALL: Writer("api_usage", _calls, upsert_buckets, aggregated=True),
    EventKind.ANALYSIS: Writer("ai_analysis", _analyses, _write_analyses),
    EventKind.SYSTEM_LOG: Writer("system_logs", _logs, _write_logs),
}
