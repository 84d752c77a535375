"""Table and index bloat: space a relation occupies beyond what its rows need.

**The estimate** (no scan of the data: cheap enough for a cron check). For a table, the
pages its rows need are ``reltuples`` rows of ``header + average row width + line
pointer`` bytes (average widths from ``pg_stats``, i.e. as of the last ANALYZE), packed
into 8 KiB pages filled to the table's ``fillfactor``; bloat is ``relpages`` minus that.
For a B-tree index, the same with index tuples (8-byte header + key widths) packed to the
index's fillfactor (90 by default) plus ~1 % inner pages and the metapage. Expression
indexes, other access methods and relations without statistics are not estimated.

**Its error**: typically within 20-30 % of the relation's size. It ignores alignment
padding between columns and per-row null bitmaps (it then overstates bloat), and B-tree
deduplication (PostgreSQL 13+: a low-cardinality index can be smaller than "needed",
reported as no bloat); it is only as fresh as the last ANALYZE. Hence a finding only above
:data:`~pipeline.dbhealth.thresholds.BLOAT_WARN_RATIO` and for relations of at least
:data:`~pipeline.dbhealth.thresholds.BLOAT_MIN_BYTES`; confirm with ``pgstattuple`` (exact,
but reads the whole relation) before rewriting anything.

Each partition is a relation of its own, estimated and rewritten on its own.

**Visibility.** ``pg_stats`` shows a column's statistics only to a login that may SELECT
it, and none of a table under row-level security the login does not bypass: a
``pg_monitor`` login sees no widths at all. Such relations are counted as *hidden*, not
estimated; when relations over the size floor exist but none could be estimated, the
check warns (bloat unknown is not "no bloat") and says which login can see them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.dbhealth._text import percent, qualified, size
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity
from pipeline.dbhealth.thresholds import BLOAT_MIN_BYTES, BLOAT_WARN_RATIO

NAME = "bloat"
TITLE = "Table and index bloat (estimate)"
_TOP = 10

# PostgreSQL's on-page layout (src/include/storage/bufpage.h, access/htup_details.h, nbtree.h).
PAGE_HEADER = 24
LINE_POINTER = 4
HEAP_TUPLE_HEADER = 23
INDEX_TUPLE_HEADER = 8
BTREE_SPECIAL = 16
MAXALIGN = 8
BTREE_DEFAULT_FILLFACTOR = 90
BTREE_INNER_SHARE = 0.01  # inner pages per leaf page of a B-tree with wide fan-out

_FILLFACTOR = (
    "coalesce((SELECT split_part(o, '=', 2)::int FROM unnest({rel}.reloptions) o "
    "WHERE o LIKE 'fillfactor=%'), {default})"
)
_USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"

_TABLES_SQL = f"""
SELECT n.nspname AS schema, c.relname AS name, c.relpages::bigint AS pages,
       c.reltuples::float8 AS tuples,
       w.width, w.with_stats, w.has_nulls,
       (SELECT count(*)::int FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       {_FILLFACTOR.format(rel="c", default=100)} AS fillfactor,
       has_table_privilege(c.oid, 'SELECT') AND NOT row_security_active(c.oid) AS visible
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
    SELECT sum(s.avg_width)::int AS width, count(*)::int AS with_stats,
           coalesce(bool_or(s.null_frac > 0), false) AS has_nulls
    FROM pg_stats s
    WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND NOT s.inherited
) w
WHERE c.relkind IN ('r', 'm') AND {_USER_SCHEMAS}
  AND c.relpages::bigint * current_setting('block_size')::bigint >= $1
  AND c.reltuples > 0
"""

_INDEXES_SQL = f"""
SELECT n.nspname AS schema, i.relname AS name, t.relname AS table_name,
       i.relpages::bigint AS pages, i.reltuples::float8 AS tuples,
       w.width, w.with_stats, array_length(x.indkey::int2[], 1) AS key_columns,
       {_FILLFACTOR.format(rel="i", default=BTREE_DEFAULT_FILLFACTOR)} AS fillfactor,
       has_table_privilege(t.oid, 'SELECT') AND NOT row_security_active(t.oid) AS visible
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
CROSS JOIN LATERAL (
    SELECT sum(s.avg_width)::int AS width, count(*)::int AS with_stats
    FROM unnest(x.indkey::int2[]) k(attnum)
    JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
    JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname
                   AND s.attname = a.attname AND NOT s.inherited
) w
WHERE i.relkind = 'i' AND am.amname = 'btree' AND NOT 0 = ANY (x.indkey::int2[])
  AND {_USER_SCHEMAS}
  AND i.relpages::bigint * current_setting('block_size')::bigint >= $1
  AND i.reltuples > 0
"""


def _align(n: float) -> int:
    return int(math.ceil(n / MAXALIGN) * MAXALIGN)


def expected_heap_pages(
    tuples: float,
    row_width: int,
    *,
    columns: int,
    has_nulls: bool,
    fillfactor: int = 100,
    block_size: int = 8192,
) -> int:
    """Pages ``tuples`` rows of ``row_width`` average bytes need when freshly packed."""
    bitmap = math.ceil(columns / 8) if has_nulls else 0
    per_row = _align(HEAP_TUPLE_HEADER + bitmap) + _align(row_width) + LINE_POINTER
    usable = (block_size - PAGE_HEADER) * fillfactor / 100
    per_page = max(1, int(usable // per_row))
    return math.ceil(tuples / per_page)


def expected_btree_pages(
    tuples: float, key_width: int, *, fillfactor: int = 90, block_size: int = 8192
) -> int:
    """Pages a freshly built B-tree of ``tuples`` entries of ``key_width`` bytes needs."""
    per_entry = _align(INDEX_TUPLE_HEADER + key_width) + LINE_POINTER
    usable = (block_size - PAGE_HEADER - BTREE_SPECIAL) * fillfactor / 100
    per_page = max(1, int(usable // per_entry))
    leaves = math.ceil(tuples / per_page)
    return leaves + math.ceil(leaves * BTREE_INNER_SHARE) + 1  # + the metapage


@dataclass(frozen=True)
class Bloat:
    kind: str  # "table" or "index"
    name: str  # schema-qualified
    table: str
    actual_bytes: int
    wasted_bytes: int

    @property
    def ratio(self) -> float:
        return self.wasted_bytes / self.actual_bytes if self.actual_bytes else 0.0


def estimate(kind: str, name: str, table: str, pages: int, expected: int, block: int) -> Bloat:
    return Bloat(kind, name, table, pages * block, max(0, pages - expected) * block)


def finding(b: Bloat) -> Finding:
    if b.kind == "index":
        fix = (
            f"REINDEX INDEX CONCURRENTLY {b.name};  -- rebuilds it without blocking writes "
            "(needs the disk space of a second copy while it runs)"
        )
    else:
        fix = (
            f"confirm first: SELECT * FROM pgstattuple_approx('{b.name}');  "
            "-- CREATE EXTENSION pgstattuple\n"
            f"then rewrite it: VACUUM FULL {b.name};  -- locks it out while it runs: only for "
            "a partition no longer written (a past day or month), else pg_repack, which "
            "does not block writers"
        )
    return Finding(
        Severity.WARN,
        f"{b.kind} {b.name} is ~{percent(b.ratio)} bloat "
        f"({size(b.wasted_bytes)} of {size(b.actual_bytes)})",
        "estimated from the catalog (error up to 20-30 % of the size): the space "
        "holds dead or deleted rows that vacuum freed but cannot give back; scans and "
        "the cache carry it.",
        fix,
        subject=b.name,
    )


@dataclass(frozen=True)
class Measured:
    """The estimates, and the relations over the size floor that could not be estimated:
    ``hidden`` (pg_stats hides their statistics from this login) or ``unanalyzed``."""

    estimates: list[Bloat]
    hidden: int = 0
    unanalyzed: int = 0

    @property
    def candidates(self) -> int:
        return len(self.estimates) + self.hidden + self.unanalyzed


async def measure(conn: Any, ctx: Context) -> Measured:
    block = ctx.block_size
    out: list[Bloat] = []
    hidden = unanalyzed = 0
    for r in await conn.fetch(_TABLES_SQL, BLOAT_MIN_BYTES):
        if not r["with_stats"]:  # no widths to estimate from
            hidden, unanalyzed = _skip(r["visible"], hidden, unanalyzed)
            continue
        expected = expected_heap_pages(
            r["tuples"], r["width"], columns=r["columns"], has_nulls=r["has_nulls"],
            fillfactor=r["fillfactor"], block_size=block,
        )  # fmt: skip
        name = qualified(r["schema"], r["name"])
        out.append(estimate("table", name, name, r["pages"], expected, block))
    for r in await conn.fetch(_INDEXES_SQL, BLOAT_MIN_BYTES):
        if r["with_stats"] != r["key_columns"]:  # a column without statistics
            hidden, unanalyzed = _skip(r["visible"], hidden, unanalyzed)
            continue
        expected = expected_btree_pages(
            r["tuples"], r["width"], fillfactor=r["fillfactor"], block_size=block
        )
        table = qualified(r["schema"], r["table_name"])
        out.append(
            estimate("index", qualified(r["schema"], r["name"]), table, r["pages"], expected, block)
        )
    return Measured(sorted(out, key=lambda b: -b.wasted_bytes), hidden, unanalyzed)


def _skip(visible: bool, hidden: int, unanalyzed: int) -> tuple[int, int]:
    return (hidden, unanalyzed + 1) if visible else (hidden + 1, unanalyzed)


def unestimated_finding(m: Measured) -> Finding:
    """Relations over the floor exist, none could be estimated: bloat is unknown."""
    reasons = []
    steps = []
    if m.hidden:
        reasons.append(f"{m.hidden} with statistics this login cannot see")
        steps.append(
            "run the check as a login that can read the tables and bypasses row-level "
            "security: the schema owner (a member of pipeline_migrator) or a superuser, e.g.\n"
            "  pipeline db health --database-url <the migrations login's URL>"
        )
    if m.unanalyzed:
        reasons.append(f"{m.unanalyzed} never analyzed")
        steps.append("ANALYZE the tables never analyzed (autovacuum does it after enough writes)")
    return Finding(
        Severity.WARN,
        f"{m.candidates} relations over {size(BLOAT_MIN_BYTES)}, none could be estimated "
        f"({', '.join(reasons)})",
        "the estimate needs average column widths from pg_stats, which shows them only for "
        "columns the login may SELECT and not for tables under row-level security it does "
        "not bypass (a pg_monitor login sees none): their bloat is unknown, not absent.",
        "\n".join(steps),
        subject="pg_stats",
    )


def check(measured: Measured) -> tuple[list[Finding], Details]:
    m = measured
    findings = [finding(b) for b in m.estimates if b.ratio >= BLOAT_WARN_RATIO]
    skipped = m.hidden + m.unanalyzed
    if not findings and not m.estimates and skipped:
        findings.append(unestimated_finding(m))
    elif not findings:
        if not m.candidates:
            what = f"no table or index over {size(BLOAT_MIN_BYTES)}: nothing to estimate"
        else:
            unknown = f" ({skipped} not estimated: no statistics visible)" if skipped else ""
            what = (
                f"{len(m.estimates)} relations over {size(BLOAT_MIN_BYTES)} estimated: none "
                f"over {percent(BLOAT_WARN_RATIO)} bloat{unknown}"
            )
        findings.append(Finding(Severity.OK, what))
    details = Details(
        (
            Column("relation"), Column("kind"), Column("size_bytes", "bytes", "size"),
            Column("bloat_bytes", "bytes", "bloat (est.)"), Column("bloat_ratio", "ratio", "ratio"),
        ),
        tuple(
            (b.name, b.kind, b.actual_bytes, b.wasted_bytes, b.ratio) for b in m.estimates[:_TOP]
        ),
        title=f"most estimated bloat, relations over {size(BLOAT_MIN_BYTES)} (top {_TOP})",
    )  # fmt: skip
    return findings, details


async def run(conn: Any, ctx: Context) -> CheckResult:
    findings, details = check(await measure(conn, ctx))
    return CheckResult(NAME, TITLE, tuple(findings), (details,))
