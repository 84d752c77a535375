"""Top statements by total execution time, from ``pg_stat_statements`` when available.

The extension needs two steps: its library in ``shared_preload_libraries`` (a server
restart) and ``CREATE EXTENSION`` in the database. When either is missing the check says
which, and how to do it (warn: the rest of the report stands without it). When present,
the :data:`~pipeline.dbhealth.thresholds.STATEMENTS_TOP_N` statements of this database
with the most total time are listed, and the ones both frequent and slow are findings.
Column names of PostgreSQL 13+ (``total_exec_time``) and 12 (``total_time``) both work.
"""

from __future__ import annotations

from typing import Any

from pipeline.dbhealth._text import ident
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity
from pipeline.dbhealth.thresholds import (
    SLOW_STATEMENT_MEAN_MS,
    SLOW_STATEMENT_MIN_CALLS,
    STATEMENTS_TOP_N,
)
from pipeline.errors import is_not_in_prerequisite_state

NAME = "statements"
TITLE = "Top statements"

_EXTENSION_SQL = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

_COLUMNS_SQL = """
SELECT attname FROM pg_attribute
WHERE attrelid = $1::regclass AND attname IN ('total_exec_time', 'total_time')
"""

_TOP_SQL = r"""
SELECT s.queryid::text AS queryid, s.calls, s.{total}::float8 AS total_ms,
       s.{mean}::float8 AS mean_ms, s.rows,
       s.shared_blks_hit, s.shared_blks_read,
       left(regexp_replace(s.query, '\s+', ' ', 'g'), 200) AS query
FROM {view} s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY s.{total} DESC
LIMIT $1
"""

_LIBRARY = "pg_stat_statements"


def enable_recommendation(preloaded: str, *, library_loaded: bool) -> str:
    """How to enable pg_stat_statements from where this server stands."""
    create = "CREATE EXTENSION pg_stat_statements;  -- in this database"
    if library_loaded:
        return create
    libraries = [x.strip() for x in preloaded.split(",") if x.strip()]
    value = ", ".join([*libraries, _LIBRARY])
    return (
        f"1. ALTER SYSTEM SET shared_preload_libraries = '{value}';\n"
        "   (managed services: the same in the parameter group / database flags; docker "
        "compose: command: postgres -c shared_preload_libraries=pg_stat_statements)\n"
        "2. restart PostgreSQL (the library loads only at start; the contrib package must "
        "be installed)\n"
        f"3. {create}"
    )


def unavailable(preloaded: str, *, library_loaded: bool, extension: bool) -> Finding:
    if extension:
        what = "pg_stat_statements is created but its library is not preloaded"
    elif library_loaded:
        what = "pg_stat_statements is preloaded but not created in this database"
    else:
        what = "pg_stat_statements is not enabled"
    return Finding(
        Severity.WARN,
        what,
        "without it there is no record of which statements take the database's time; the "
        "top statements by total time cannot be listed.",
        enable_recommendation(preloaded, library_loaded=library_loaded),
        subject=_LIBRARY,
    )


def slow_findings(rows: list[Any]) -> list[Finding]:
    out = []
    for r in rows:
        if r["mean_ms"] >= SLOW_STATEMENT_MEAN_MS and r["calls"] >= SLOW_STATEMENT_MIN_CALLS:
            out.append(
                Finding(
                    Severity.WARN,
                    f"statement {r['queryid']} averages {r['mean_ms']:,.0f} ms over "
                    f"{r['calls']:,} calls",
                    f"frequent and slow: {r['query']}",
                    "EXPLAIN (ANALYZE, BUFFERS) it with typical parameters; look for a "
                    "sequential scan of a big table (a missing index) or a range not "
                    "narrowed to few partitions",
                    subject=str(r["queryid"]),
                )
            )
    return out


async def run(conn: Any, ctx: Context) -> CheckResult:
    preloaded = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    loaded = _LIBRARY in [x.strip() for x in preloaded.split(",")]
    schema = await conn.fetchval(_EXTENSION_SQL)
    if schema is None or not loaded:
        finding = unavailable(preloaded, library_loaded=loaded, extension=schema is not None)
        return CheckResult(NAME, TITLE, (finding,))
    view = f"{ident(schema)}.pg_stat_statements"
    columns = {r["attname"] for r in await conn.fetch(_COLUMNS_SQL, view)}
    total, mean = (
        ("total_exec_time", "mean_exec_time")
        if "total_exec_time" in columns
        else ("total_time", "mean_time")
    )
    try:
        rows = await conn.fetch(
            _TOP_SQL.format(total=total, mean=mean, view=view), STATEMENTS_TOP_N
        )
    except Exception as exc:
        # The view exists but its library is not loaded (SQLSTATE 55000).
        if not is_not_in_prerequisite_state(exc):
            raise
        finding = unavailable(preloaded, library_loaded=False, extension=True)
        return CheckResult(NAME, TITLE, (finding,))
    findings = slow_findings(rows) or [
        Finding(
            Severity.OK,
            f"top {len(rows)} statements by total time listed; none averages "
            f"{SLOW_STATEMENT_MEAN_MS:,.0f} ms over {SLOW_STATEMENT_MIN_CALLS} calls",
        )
    ]
    details = Details(
        (
            Column("queryid"), Column("calls", "count"), Column("total_ms", "count"),
            Column("mean_ms", "count"), Column("rows", "count"), Column("hit_ratio", "ratio"),
            Column("query"),
        ),
        tuple(
            (
                r["queryid"], r["calls"], round(r["total_ms"]), round(r["mean_ms"], 1),
                r["rows"], _hit_ratio(r["shared_blks_hit"], r["shared_blks_read"]), r["query"],
            )
            for r in rows
        ),
        title=f"top {STATEMENTS_TOP_N} statements by total time",
    )  # fmt: skip
    return CheckResult(NAME, TITLE, tuple(findings), (details,))


def _hit_ratio(hit: int, read: int) -> float | None:
    return hit / (hit + read) if hit + read else None
