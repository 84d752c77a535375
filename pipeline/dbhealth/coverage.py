"""Partition coverage: how far ahead partitions exist, and partitions past retention.

For each row of ``partition_policies`` (migration 0001), against the partitions that
``partition_ranges`` reads back from the catalog:

- **ahead**: how many consecutive partitions follow the current one (a gap ends the
  count). ``action`` when the current partition or the next one is missing: the
  maintenance timer (the group leader's ``ensure``) is not running, and rows for the next
  day or month are about to depend on on-demand creation, or fail with SQLSTATE 23514 for
  a writer that does not create partitions. ``warn`` when fewer than ``premake`` exist.
- **past retention**: partitions whose whole range ends at or before ``now -
  retention``: ``prune`` is not running (warn: disk, not correctness).
- **detach pending**: an interrupted ``DETACH ... CONCURRENTLY`` (warn; ``prune`` finishes
  it).

"Now" is the server's clock (or the ``now`` given to :func:`run`, for tests).

Reading ``partition_policies`` and ``partition_ranges`` takes SELECT on them, which
``pg_monitor`` has through migration 0010 (:data:`GRANT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.dbhealth._text import size
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity

NAME = "partitions"
TITLE = "Partition coverage"
# What a pg_monitor login needs for this check (sql/migrations/0010_monitoring_grants).
GRANT = "GRANT SELECT ON partition_policies, partition_ranges TO pg_monitor;"

_POLICIES_SQL = """
SELECT p.parent_table, p.granularity, p.premake, b.range_start, b.range_end
FROM partition_policies p
CROSS JOIN LATERAL partition_bounds(p.granularity, $1::timestamptz) b
ORDER BY p.parent_table
"""

_RANGES_SQL = """
SELECT r.parent_table, r.partition_name, r.range_start, r.range_end, r.detach_pending,
       r.total_bytes, r.range_end <= $1::timestamptz - p.retention AS expired
FROM partition_ranges r
JOIN partition_policies p USING (parent_table)
ORDER BY r.parent_table, r.range_start
"""


@dataclass(frozen=True)
class Range:
    name: str
    start: datetime
    end: datetime
    expired: bool = False
    detach_pending: bool = False
    bytes: int = 0


@dataclass(frozen=True)
class Coverage:
    table: str
    granularity: str
    premake: int
    current_exists: bool
    ahead: int  # consecutive partitions after the current one
    covered_until: datetime | None  # end of the last consecutive partition from now on
    expired: tuple[Range, ...]
    detach_pending: tuple[Range, ...]


def coverage(
    table: str,
    granularity: str,
    premake: int,
    current: tuple[datetime, datetime],
    ranges: Sequence[Range],
) -> Coverage:
    """Walk the partitions from the current one forward (pure)."""
    by_start = {r.start: r for r in ranges}
    current_exists = current[0] in by_start
    ahead = 0
    cursor = current[1]
    while cursor in by_start:
        ahead += 1
        cursor = by_start[cursor].end
    return Coverage(
        table, granularity, premake, current_exists, ahead,
        cursor if current_exists or ahead else None,
        tuple(r for r in ranges if r.expired), tuple(r for r in ranges if r.detach_pending),
    )  # fmt: skip


def coverage_findings(c: Coverage) -> list[Finding]:
    out: list[Finding] = []
    unit = c.granularity
    ensure = (
        "pipeline partitions ensure\nthen find why maintenance does not run "
        "(docs/operations.md, PipelineMaintenanceStale)"
    )
    if not c.current_exists or c.ahead < 1:
        missing = f"the current {unit}" if not c.current_exists else f"the next {unit}"
        out.append(
            Finding(
                Severity.ACTION,
                f"{c.table}: no partition for {missing} ({c.ahead} ahead, premake {c.premake})",
                "rows for a range without a partition are stored only through on-demand "
                "creation by the workers (a lock and a round trip per new range); other "
                "writers fail with SQLSTATE 23514. Partition maintenance is not running.",
                ensure,
                subject=c.table,
            )
        )
    elif c.ahead < c.premake:
        out.append(
            Finding(
                Severity.WARN,
                f"{c.table}: {c.ahead} partitions ahead, premake is {c.premake}",
                "maintenance keeps premake partitions ready; fewer means it has not run "
                "for at least a day or a month (the table's granularity).",
                ensure,
                subject=c.table,
            )
        )
    if c.expired:
        total = sum(r.bytes for r in c.expired)
        out.append(
            Finding(
                Severity.WARN,
                f"{c.table}: {len(c.expired)} partitions past retention ({size(total)}), "
                f"oldest {c.expired[0].name}",
                "prune is not running: the data is kept longer than the retention promises "
                "and takes disk.",
                "pipeline partitions prune --dry-run\npipeline partitions prune",
                subject=c.table,
            )
        )
    if c.detach_pending:
        out.append(
            Finding(
                Severity.WARN,
                f"{c.table}: detach pending for {', '.join(r.name for r in c.detach_pending)}",
                "a DETACH PARTITION ... CONCURRENTLY was interrupted.",
                "pipeline partitions prune  (it finishes the detach)",
                subject=c.table,
            )
        )
    return out


async def measure(conn: Any, now: datetime) -> list[Coverage]:
    ranges: dict[str, list[Range]] = {}
    for r in await conn.fetch(_RANGES_SQL, now):
        ranges.setdefault(r["parent_table"], []).append(
            Range(
                r["partition_name"],
                r["range_start"],
                r["range_end"],
                r["expired"],
                r["detach_pending"],
                r["total_bytes"],
            )
        )
    return [
        coverage(
            p["parent_table"],
            p["granularity"],
            p["premake"],
            (p["range_start"], p["range_end"]),
            ranges.get(p["parent_table"], []),
        )
        for p in await conn.fetch(_POLICIES_SQL, now)
    ]


def check(coverages: Sequence[Coverage]) -> tuple[list[Finding], Details]:
    findings = [f for c in coverages for f in coverage_findings(c)]
    if not findings:
        findings.append(
            Finding(
                Severity.OK,
                f"{len(coverages)} tables: current partition and premake ahead, none past "
                "retention",
            )
        )
    details = Details(
        (
            Column("table"), Column("granularity"), Column("premake", "count"),
            Column("ahead", "count"), Column("covered_until", "time"),
            Column("past_retention", "count"),
        ),
        tuple(
            (c.table, c.granularity, c.premake, c.ahead, c.covered_until, len(c.expired))
            for c in coverages
        ),
        title="partitions per table",
    )  # fmt: skip
    return findings, details


async def run(conn: Any, ctx: Context) -> CheckResult:
    if await conn.fetchval("SELECT to_regclass('partition_policies') IS NULL"):
        finding = Finding(
            Severity.ACTION,
            "partition_policies does not exist: the schema is not migrated",
            "without it no partition is created and no event can be stored.",
            "pipeline migrate up",
            subject="partition_policies",
        )
        return CheckResult(NAME, TITLE, (finding,))
    findings, details = check(await measure(conn, ctx.now))
    return CheckResult(NAME, TITLE, tuple(findings), (details,))
