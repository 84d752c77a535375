"""Cache hit ratios: the share of block reads served from ``shared_buffers``.

Three ratios, each judged only over at least
:data:`~pipeline.dbhealth.thresholds.CACHE_MIN_BLOCKS` block accesses: the whole database
(``pg_stat_database``, catalogs included), the tables' heaps and their indexes
(``pg_statio_user_tables``). A "read" may still come from the operating system's page
cache, so a low ratio means "outside PostgreSQL's buffers", not necessarily "from disk".
The detail rows are the tables (partitions summed into their parent) reading the most
blocks: where a larger cache or a better plan would help.
"""

from __future__ import annotations

from typing import Any

from pipeline.dbhealth._text import percent
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity
from pipeline.dbhealth.thresholds import CACHE_HIT_RATIO_WARN, CACHE_MIN_BLOCKS

NAME = "cache"
TITLE = "Cache hit ratios"
_TOP_TABLES = 10

_TOTALS_SQL = """
SELECT d.blks_hit::bigint AS db_hit, d.blks_read::bigint AS db_read,
       t.heap_hit, t.heap_read, t.idx_hit, t.idx_read,
       current_setting('shared_buffers') AS shared_buffers
FROM pg_stat_database d
CROSS JOIN (
    SELECT coalesce(sum(heap_blks_hit), 0)::bigint AS heap_hit,
           coalesce(sum(heap_blks_read), 0)::bigint AS heap_read,
           coalesce(sum(idx_blks_hit), 0)::bigint AS idx_hit,
           coalesce(sum(idx_blks_read), 0)::bigint AS idx_read
    FROM pg_statio_user_tables
) t
WHERE d.datname = current_database()
"""

_TABLES_SQL = """
SELECT format('%I.%I', n.nspname, c.relname) AS table_name,
       sum(coalesce(s.heap_blks_hit, 0) + coalesce(s.idx_blks_hit, 0))::bigint AS hit,
       sum(coalesce(s.heap_blks_read, 0) + coalesce(s.idx_blks_read, 0))::bigint AS read
FROM pg_statio_user_tables s
JOIN pg_class c ON c.oid = coalesce(pg_partition_root(s.relid), s.relid)
JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY 1
HAVING sum(coalesce(s.heap_blks_read, 0) + coalesce(s.idx_blks_read, 0)) > 0
ORDER BY read DESC
LIMIT $1
"""


def ratio(hit: int, read: int) -> float | None:
    """hit / (hit + read), or None over too few accesses to mean anything."""
    total = hit + read
    if total < CACHE_MIN_BLOCKS:
        return None
    return hit / total


def judge(label: str, hit: int, read: int, shared_buffers: str) -> Finding:
    r = ratio(hit, read)
    if r is None:
        return Finding(
            Severity.OK,
            f"{label}: {hit + read:,} block accesses, too few to judge "
            f"(under {CACHE_MIN_BLOCKS:,})",
            subject=label,
        )
    if r >= CACHE_HIT_RATIO_WARN:
        return Finding(
            Severity.OK, f"{label}: {percent(r)} of block reads from cache", subject=label
        )
    return Finding(
        Severity.WARN,
        f"{label}: only {percent(r)} of {hit + read:,} block reads from cache",
        f"under {percent(CACHE_HIT_RATIO_WARN)}: the working set does not fit in "
        f"shared_buffers ({shared_buffers}), or queries read more than they need (sequential "
        "scans of big tables).",
        "find the statements reading the most blocks (Top statements below, shared_blks_read), "
        "and add the index or the range filter they miss; if the reads are needed, raise "
        "shared_buffers towards 25 % of the server's memory:\n"
        "  ALTER SYSTEM SET shared_buffers = '4GB';  -- then restart PostgreSQL",
        subject=label,
    )


async def run(conn: Any, ctx: Context) -> CheckResult:
    row = await conn.fetchrow(_TOTALS_SQL)
    findings = [
        judge("database", row["db_hit"], row["db_read"], row["shared_buffers"]),
        judge("tables", row["heap_hit"], row["heap_read"], row["shared_buffers"]),
        judge("indexes", row["idx_hit"], row["idx_read"], row["shared_buffers"]),
    ]
    tables = await conn.fetch(_TABLES_SQL, _TOP_TABLES)
    details = Details(
        (Column("table"), Column("blocks_read", "count"), Column("hit_ratio", "ratio")),
        tuple((t["table_name"], t["read"], t["hit"] / (t["hit"] + t["read"])) for t in tables),
        title=f"tables reading the most blocks outside shared_buffers (top {_TOP_TABLES})",
    )
    return CheckResult(NAME, TITLE, tuple(findings), (details,))
