"""Index usage: scans per index, unused, duplicate and invalid indexes, with their size.

Figures come from ``pg_stat_user_indexes`` (scans since the statistics were reset) and the
catalog. An index of a partitioned table is reported once, as the parent's index, with
its scans and sizes summed over every partition (that is what a migration creates and
drops); a local index created on one partition only is reported on its own.

- **Unused**: ``idx_scan = 0`` summed over the partitions, not backing a primary key,
  unique or exclusion constraint (those enforce something even when never scanned, and
  a unique index without a constraint enforces uniqueness), on a table with at least
  :data:`~pipeline.dbhealth.thresholds.UNUSED_INDEX_MIN_TABLE_ACTIVITY` rows written plus
  scans (below it, zero scans says nothing yet). The activity is that of the table the
  index is on (:func:`table_activity`): a partitioned table's is summed over its
  partitions, a local index on one partition counts that partition's alone. Scans on a
  read replica are counted on the replica, so run the check there too before dropping.
- **Duplicate**: same table, access method, key columns or expressions (with their
  operator classes, collations and ordering), INCLUDE columns and predicate. One of each
  group is kept (a constraint's index first, then the most scanned, then the oldest name);
  the others are recommended for dropping.
- **Invalid**: ``indisvalid = false``, left by a failed ``CREATE INDEX CONCURRENTLY``: it is
  maintained on every write and never used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.dbhealth._text import ident, qualified, size
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity
from pipeline.dbhealth.thresholds import UNUSED_INDEX_MIN_TABLE_ACTIVITY

NAME = "indexes"
TITLE = "Index usage"

_SQL = """
WITH leaf AS (
    SELECT coalesce(pg_partition_root(s.indexrelid), s.indexrelid) AS indexrelid,
           s.idx_scan,
           pg_relation_size(s.indexrelid) AS bytes
    FROM pg_stat_user_indexes s
), per_index AS (
    SELECT indexrelid, sum(idx_scan)::bigint AS scans, sum(bytes)::bigint AS bytes,
           count(*)::int AS pieces
    FROM leaf
    GROUP BY indexrelid
)
SELECT n.nspname AS schema, t.relname AS table_name, i.relname AS index_name,
       x.indrelid::oid::bigint AS table_oid,
       p.scans, p.bytes, p.pieces, t.relkind = 'p' AS partitioned,
       x.indisprimary AS is_primary, x.indisunique AS is_unique,
       x.indisexclusion AS is_exclusion, x.indisvalid AS is_valid,
       con.conname AS constraint_name,
       pg_get_constraintdef(con.oid) AS constraint_definition,
       am.amname, x.indkey::text AS key_columns, x.indclass::text AS opclasses,
       x.indcollation::text AS collations, x.indoption::text AS options,
       coalesce(pg_get_expr(x.indexprs, x.indrelid), '') AS expressions,
       coalesce(pg_get_expr(x.indpred, x.indrelid), '') AS predicate,
       pg_get_indexdef(x.indexrelid) AS definition
FROM per_index p
JOIN pg_index x ON x.indexrelid = p.indexrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype IN ('p', 'u', 'x')
ORDER BY p.bytes DESC, n.nspname, i.relname
"""


# Rows written plus scans of each table (a partition on its own), with the partitioned
# tables it belongs to (pg_partition_ancestors: itself and every parent up to the root).
_ACTIVITY_SQL = """
SELECT t.relid::oid::bigint AS relid,
       array(SELECT a::oid::bigint FROM pg_partition_ancestors(t.relid) a) AS ancestors,
       (t.n_tup_ins + t.n_tup_upd + t.n_tup_del
        + coalesce(t.seq_scan, 0) + coalesce(t.idx_scan, 0))::bigint AS activity
FROM pg_stat_user_tables t
"""


def table_activity(rows: Iterable[tuple[int, Sequence[int], int]]) -> dict[int, int]:
    """Activity per table oid from ``(relid, ancestors, activity)`` rows (pure): each
    table's own, added to every partitioned table above it. An index on a partitioned
    table is judged by the sum over its partitions; a local index on one partition (or an
    index of a plain table) by that table's own."""
    totals: dict[int, int] = {}
    for relid, ancestors, activity in rows:
        for table in {relid, *ancestors}:
            totals[table] = totals.get(table, 0) + activity
    return totals


@dataclass(frozen=True)
class IndexStat:
    """One index (a partitioned table's index summed over its partitions)."""

    schema: str
    table: str
    index: str
    scans: int
    bytes: int
    partitions: int  # how many physical indexes (1 for an index of a plain table)
    partitioned: bool
    primary: bool
    unique: bool
    exclusion: bool
    valid: bool
    constraint: str | None
    signature: tuple[str, ...]  # access method, keys, opclasses, ..., predicate
    definition: str  # CREATE INDEX ... as pg_get_indexdef gives it
    table_activity: int
    restore: str = ""  # the statement that recreates it (a migration's down)

    @property
    def name(self) -> str:
        return qualified(self.schema, self.index)

    @property
    def enforces(self) -> bool:
        """Backs a primary key, unique or exclusion constraint, or enforces uniqueness."""
        return self.primary or self.unique or self.exclusion or self.constraint is not None

    @property
    def kind(self) -> str:
        if self.primary:
            return "primary key"
        if self.exclusion:
            return "exclusion"
        if self.unique:
            return "unique"
        return "" if self.valid else "INVALID"


def from_row(row: Any, table_activity: int = 0) -> IndexStat:
    return IndexStat(
        schema=row["schema"],
        table=row["table_name"],
        index=row["index_name"],
        scans=row["scans"] or 0,
        bytes=row["bytes"] or 0,
        partitions=row["pieces"],
        partitioned=row["partitioned"],
        primary=row["is_primary"],
        unique=row["is_unique"],
        exclusion=row["is_exclusion"],
        valid=row["is_valid"],
        constraint=row["constraint_name"],
        signature=(
            row["amname"],
            row["key_columns"],
            row["opclasses"],
            row["collations"],
            row["options"],
            row["expressions"],
            row["predicate"],
        ),
        definition=row["definition"],
        table_activity=table_activity,
        restore=restore_statement(
            row["schema"],
            row["table_name"],
            row["constraint_name"],
            row["constraint_definition"],
            row["definition"],
        ),
    )


def restore_statement(
    schema: str, table: str, constraint: str | None, constraint_def: str | None, definition: str
) -> str:
    """The statement that recreates an index (or the constraint it backs). An index of a
    partitioned table reads ``ON ONLY`` in pg_get_indexdef, which would create it for the
    parent alone: without ``ONLY`` it is created on every partition too."""
    if constraint is not None and constraint_def is not None:
        return (
            f"ALTER TABLE {qualified(schema, table)} ADD CONSTRAINT {ident(constraint)} "
            f"{constraint_def};"
        )
    return definition.replace(" ON ONLY ", " ON ", 1) + ";"


async def fetch(conn: Any) -> list[IndexStat]:
    activity = table_activity(
        (r["relid"], r["ancestors"], r["activity"]) for r in await conn.fetch(_ACTIVITY_SQL)
    )
    return [from_row(r, activity.get(r["table_oid"], 0)) for r in await conn.fetch(_SQL)]


def find_unused(
    stats: Iterable[IndexStat], min_activity: int = UNUSED_INDEX_MIN_TABLE_ACTIVITY
) -> list[IndexStat]:
    """Valid indexes never scanned that enforce nothing, on tables active enough to judge,
    biggest first."""
    unused = [
        s
        for s in stats
        if s.scans == 0 and s.valid and not s.enforces and s.table_activity >= min_activity
    ]
    return sorted(unused, key=lambda s: (-s.bytes, s.name))


def find_duplicates(stats: Iterable[IndexStat]) -> list[tuple[IndexStat, list[IndexStat]]]:
    """Groups of identical indexes of one table as (the one to keep, the others)."""
    groups: dict[tuple[str, ...], list[IndexStat]] = {}
    for s in stats:
        if s.valid:
            groups.setdefault((s.schema, s.table, *s.signature), []).append(s)
    out = []
    for members in groups.values():
        if len(members) > 1:
            ranked = sorted(members, key=_keep_order)
            out.append((ranked[0], ranked[1:]))
    return sorted(out, key=lambda g: (g[0].schema, g[0].table, g[0].index))


def _keep_order(s: IndexStat) -> tuple[int, int, str]:
    constraint = 0 if s.primary else 1 if s.constraint or s.unique or s.exclusion else 2
    return (constraint, -s.scans, s.index)


def drop_statement(s: IndexStat) -> str:
    """The SQL that removes ``s`` (for a migration's up file)."""
    table = qualified(s.schema, s.table)
    if s.constraint is not None:
        return f"ALTER TABLE {table} DROP CONSTRAINT {ident(s.constraint)};"
    if s.partitioned:  # CONCURRENTLY is not supported on a partitioned index
        return f"DROP INDEX {s.name};"
    return f"DROP INDEX CONCURRENTLY {s.name};"


def drop_recommendation(s: IndexStat) -> str:
    """How to drop ``s`` the project's way: a migration with the exact down."""
    statement = drop_statement(s)
    lines = [f"add a migration: pipeline migrate new drop_{s.index}"]
    if "CONCURRENTLY" in statement:
        lines.append("  up (first line: -- pipeline:no-transaction):")
    else:
        lines.append("  up:")
    lines.append(f"    {statement}")
    lines.append(f"  down:\n    {s.restore}")
    return "\n".join(lines)


def check(stats: Sequence[IndexStat], ctx: Context) -> tuple[list[Finding], Details]:
    """Findings and the scans-per-index table for ``stats`` (pure: no database)."""
    findings: list[Finding] = []
    duplicates = find_duplicates(stats)
    redundant = {d.name for _, others in duplicates for d in others}
    for s in find_unused(stats):
        if s.name in redundant:
            continue  # reported once, as a duplicate
        where = f"{s.partitions} partitions of " if s.partitioned else ""
        findings.append(
            Finding(
                Severity.WARN,
                f"{s.name} on {s.table} ({size(s.bytes)}) was never scanned",
                f"0 scans over {where}{s.table} {ctx.stats_since()}, while the table saw "
                f"{s.table_activity:,} rows written and scans: the index costs every "
                f"insert and update and {size(s.bytes)} of disk and cache. Scans on a read "
                "replica are counted there: check pg_stat_user_indexes on each replica "
                "before dropping it.",
                drop_recommendation(s),
                subject=s.name,
            )
        )
    for keep, others in duplicates:
        for s in others:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{s.name} ({size(s.bytes)}) duplicates {keep.name} on {s.table}",
                    "same columns or expressions, operator classes, INCLUDE columns and "
                    f"predicate: every write maintains both. Keeping {keep.name} "
                    f"({keep.kind or 'index'}, {keep.scans:,} scans); {s.name} has "
                    f"{s.scans:,}.",
                    drop_recommendation(s),
                    subject=s.name,
                )
            )
    for s in stats:
        if not s.valid:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{s.name} on {s.table} is invalid ({size(s.bytes)})",
                    "left by a failed or interrupted CREATE INDEX CONCURRENTLY (or REINDEX): "
                    "every write maintains it, no query can use it.",
                    _rebuild_invalid(s),
                    subject=s.name,
                )
            )
    if not findings:
        total = sum(s.bytes for s in stats)
        findings.append(
            Finding(
                Severity.OK,
                f"{len(stats)} indexes ({size(total)}): none unused, duplicate or invalid",
            )
        )
    details = Details(
        (
            Column("index"), Column("table"), Column("scans", "count"),
            Column("size_bytes", "bytes", "size"), Column("partitions", "count"), Column("kind"),
        ),
        tuple((s.name, s.table, s.scans, s.bytes, s.partitions, s.kind) for s in stats),
        title="scans per index, biggest first",
    )  # fmt: skip
    return findings, details


async def run(conn: Any, ctx: Context) -> CheckResult:
    findings, details = check(await fetch(conn), ctx)
    return CheckResult(NAME, TITLE, tuple(findings), (details,))


def _rebuild_invalid(s: IndexStat) -> str:
    if s.partitioned:  # no CONCURRENTLY for a partitioned index
        return f"DROP INDEX {s.name};\nthen create it again:\n  {s.restore}"
    again = s.restore.replace(" INDEX ", " INDEX CONCURRENTLY ", 1)
    return f"DROP INDEX CONCURRENTLY {s.name};\nthen create it again:\n  {again}"
