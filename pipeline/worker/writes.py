"""The SQL that applies a batch's effect, one staged statement per table (stage: write).

Rows reach each table through a **staging table**: a temporary table of the session
(``ON COMMIT DELETE ROWS``) filled with binary ``COPY`` (asyncpg's
``copy_records_to_table``), then moved by one ``INSERT ... SELECT`` into the partitioned
table. Measured on this project's machine, that is 30-45 % cheaper than the same
``INSERT ... SELECT FROM unnest($1::text[], ...)`` for bucket upserts and ~15 % for row
inserts (docs/performance.md, "Write path"), because binary COPY encodes rows without
asyncpg's per-element array checks and PostgreSQL parses no array literals. Each function
runs on a connection that is already inside the flush's transaction; none commits.

- :func:`upsert_buckets` adds bucket deltas (``ON CONFLICT DO UPDATE`` with additive SET
  clauses). The ``INSERT ... SELECT`` reads the staged rows ``ORDER BY`` their key, so two
  flushes sharing buckets lock rows in the same order and cannot deadlock; a statement
  never holds the same key twice (aggregation merged them).
- :func:`insert_analyses` / :func:`insert_logs` insert rows with ``ON CONFLICT DO
  NOTHING`` on the primary key: the contract stores an event once per ``event_id``, and a
  producer may send one twice in different records, so conflicts are possible and must be
  handled; a plain ``COPY`` into the table would fail on the first duplicate.
- A staging table is emptied before each use (``DELETE``, a no-op when empty), because a
  transaction may write the same table more than once (isolating rows PostgreSQL rejects).
  Times travel as epoch milliseconds converted in SQL (``'epoch' + ms * 1 ms``), which is
  exact and avoids building datetimes in Python.

Errors propagate as asyncpg raised them; the flush classifies them.

:data:`WRITERS` declares, per event kind, its table and the two steps of writing it:
``prepare`` (CPU work done before the transaction opens: aggregation, building rows) and
``write`` (the staged statement inside it). The flush serves every kind through it without
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


@dataclass(frozen=True)
class Staged:
    """A table written through a staging table: ``columns`` (name, type) of the staged rows,
    and the ``INSERT ... SELECT ... FROM stage AS t`` that moves them (``{stage}`` in it is
    replaced by the staging table's name)."""

    stage: str
    columns: tuple[tuple[str, str], ...]
    insert: str

    @property
    def _prepare_sql(self) -> str:
        columns = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ({columns}) ON COMMIT DELETE ROWS; "
            f"DELETE FROM {self.stage}"
        )

    async def write(self, conn: Any, rows: Sequence[tuple[Any, ...]]) -> int:
        """Stage ``rows`` and move them into the table; return the rows inserted/updated."""
        if not rows:
            return 0
        if not conn.is_in_transaction():  # the staged rows live until the commit
            async with conn.transaction():
                return await self.write(conn, rows)
        await conn.execute(self._prepare_sql)
        names = [name for name, _ in self.columns]
        await conn.copy_records_to_table(self.stage, records=rows, columns=names)
        status: str = await conn.execute(self.insert.format(stage=self.stage))
        return _count(status)


BUCKETS = Staged(
    "pipeline_stage_api_usage",
    (
        ("hour_ms", "bigint"), ("service", "text"), ("endpoint", "text"), ("method", "text"),
        ("user_id", "text"), ("org_id", "text"), ("requests", "bigint"),
        ("successes", "bigint"), ("errors", "bigint"), ("tokens", "bigint"),
        ("cost_e8", "bigint"), ("rt_sum", "float8"), ("rt_max", "float8"), ("h0", "bigint"),
        ("h1", "bigint"), ("h2", "bigint"), ("h3", "bigint"), ("h4", "bigint"),
        ("h5", "bigint"), ("h6", "bigint"), ("h7", "bigint"),
    ),
    f"""
INSERT INTO api_usage AS u (
    time_window, service, endpoint, method, user_id, organization_id,
    request_count, success_count, error_count, token_usage, cost,
    response_time_ms_sum, response_time_ms_max,
    latency_le_50, latency_le_100, latency_le_250, latency_le_500,
    latency_le_1000, latency_le_2500, latency_le_5000, latency_gt_5000, updated_at)
SELECT {_EPOCH.format("t.hour_ms")}, t.service, t.endpoint, t.method, t.user_id, t.org_id,
       t.requests, t.successes, t.errors, t.tokens, t.cost_e8 * 0.00000001,
       t.rt_sum, t.rt_max, t.h0, t.h1, t.h2, t.h3, t.h4, t.h5, t.h6, t.h7, now()
FROM {{stage}} AS t
ORDER BY t.hour_ms, t.service, t.endpoint, t.method, t.user_id, t.org_id
ON CONFLICT (time_window, service, endpoint, method, user_id, organization_id) DO UPDATE SET
    {additive_set("u")}
""",
)  # fmt: skip

ANALYSES = Staged(
    "pipeline_stage_ai_analysis",
    (
        ("ms", "bigint"), ("event_id", "uuid"), ("user_id", "text"), ("org_id", "text"),
        ("entry_id", "text"), ("status", "text"), ("model_type", "text"),
        ("model_version", "text"), ("analysis_version", "text"), ("request_tokens", "int"),
        ("response_tokens", "int"), ("tokens_used", "bigint"), ("cost_e8", "bigint"),
        ("processing_ms", "float8"), ("queue_ms", "float8"), ("total_ms", "float8"),
        ("caching", "bool"), ("batch", "bool"), ("region", "text"), ("attempts", "int"),
        ("fallback", "bool"), ("error_type", "text"), ("metadata", "jsonb"),
    ),
    f"""
INSERT INTO ai_analysis (
    created_at, event_id, user_id, organization_id, entry_id, status, model_type,
    model_version, analysis_version, request_tokens, response_tokens, tokens_used, api_cost,
    processing_time_ms, queue_wait_time_ms, total_processing_time_ms, caching_used,
    batch_processed, region_processed, processing_attempts, fallback_used, error_type,
    metadata)
SELECT {_EPOCH.format("t.ms")}, t.event_id, t.user_id, t.org_id, t.entry_id, t.status,
       t.model_type, t.model_version, t.analysis_version, t.request_tokens,
       t.response_tokens, t.tokens_used, t.cost_e8 * 0.00000001, t.processing_ms,
       t.queue_ms, t.total_ms, t.caching, t.batch, t.region, t.attempts, t.fallback,
       t.error_type, t.metadata
FROM {{stage}} AS t
ON CONFLICT (created_at, event_id) DO NOTHING
""",
)  # fmt: skip

LOGS = Staged(
    "pipeline_stage_system_logs",
    (
        ("ms", "bigint"), ("event_id", "uuid"), ("level", "text"), ("service", "text"),
        ("message", "text"), ("metadata", "jsonb"), ("user_id", "text"),
        ("session_id", "text"),
    ),
    f"""
INSERT INTO system_logs (
    logged_at, event_id, level, service, message, metadata, user_id, session_id)
SELECT {_EPOCH.format("t.ms")}, t.event_id, t.level, t.service, t.message, t.metadata,
       t.user_id, t.session_id
FROM {{stage}} AS t
ON CONFLICT (logged_at, event_id) DO NOTHING
""",
)  # fmt: skip


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 42``."""
    return int(status.rsplit(" ", 1)[-1])


def bucket_rows(buckets: dict[BucketKey, list[float]]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`BUCKETS`. Unsorted: the ``INSERT ... SELECT`` orders them
    by key in PostgreSQL, where sorting 30,000 keys costs a few milliseconds instead of the
    ~17 % of the worker's CPU that sorting the Python tuples took."""
    return [(*key, *delta) for key, delta in buckets.items()]


def analysis_rows(events: Sequence[Analysis]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`ANALYSES`."""
    return [
        (
            e.occurred_at_ms, e.event_id, e.user_id, e.organization_id, e.entry_id,
            str(e.status), e.model_type, e.model_version, e.analysis_version,
            e.request_tokens, e.response_tokens, e.tokens_used, e.api_cost_e8,
            e.processing_time_ms, e.queue_wait_time_ms, e.total_processing_time_ms,
            e.caching_used, e.batch_processed, e.region_processed, e.processing_attempts,
            e.fallback_used, e.error_type, e.metadata_json,
        )
        for e in events
    ]  # fmt: skip


def log_rows(events: Sequence[SystemLog]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`LOGS`."""
    return [
        (e.occurred_at_ms, e.event_id, str(e.level), e.service, e.message, e.metadata_json,
         e.user_id, e.session_id)
        for e in events
    ]  # fmt: skip


async def upsert_buckets(conn: Any, buckets: dict[BucketKey, list[float]]) -> int:
    """Add ``buckets`` to api_usage; return the number of buckets written."""
    return await BUCKETS.write(conn, bucket_rows(buckets))


async def insert_analyses(conn: Any, events: Sequence[Analysis]) -> int:
    """Insert analysis rows; return how many were new (duplicates are ignored)."""
    return await ANALYSES.write(conn, analysis_rows(events))


async def insert_logs(conn: Any, events: Sequence[SystemLog]) -> int:
    """Insert log rows; return how many were new (duplicates are ignored)."""
    return await LOGS.write(conn, log_rows(events))


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


def _calls(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return bucket_rows(aggregate(e for e in events if isinstance(e, ApiCall)))


def _analyses(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return analysis_rows([e for e in events if isinstance(e, Analysis)])


def _logs(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return log_rows([e for e in events if isinstance(e, SystemLog)])


WRITERS: dict[EventKind, Writer] = {
    EventKind.API_CALL: Writer("api_usage", _calls, BUCKETS.write, aggregated=True),
    EventKind.ANALYSIS: Writer("ai_analysis", _analyses, ANALYSES.write),
    EventKind.SYSTEM_LOG: Writer("system_logs", _logs, LOGS.write),
}
