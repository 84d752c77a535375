"""Dead tuples, autovacuum recency and transaction-ID age.

From ``pg_stat_user_tables`` (each partition on its own: autovacuum works per partition;
partitioned parents hold no rows and are skipped) and ``pg_database``:

- autovacuum or ``track_counts`` switched off: action (dead rows pile up, and freezing,
  which prevents transaction-ID wraparound, then depends on emergency vacuums);
- a table with at least :data:`~pipeline.dbhealth.thresholds.DEAD_TUPLES_MIN` dead rows
  that are :data:`~pipeline.dbhealth.thresholds.DEAD_TUPLE_RATIO_WARN` of it, or past its
  autovacuum trigger (``autovacuum_vacuum_threshold + scale_factor * reltuples``, the
  server-wide settings) and not vacuumed for
  :data:`~pipeline.dbhealth.thresholds.VACUUM_STALE_AFTER`: warn;
- a table with :data:`~pipeline.dbhealth.thresholds.ANALYZE_MIN_CHANGES` changes never
  analyzed: warn (the planner guesses its size);
- the oldest ``age(datfrozenxid)`` of any database of the cluster over the XID thresholds:
  warn / action (the transaction-ID counter is cluster-wide: the worst database, maybe not
  this one, decides when PostgreSQL stops accepting writes everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.dbhealth._text import duration, percent, qualified
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity
from pipeline.dbhealth.thresholds import (
    ANALYZE_MIN_CHANGES,
    DEAD_TUPLE_RATIO_WARN,
    DEAD_TUPLES_MIN,
    VACUUM_STALE_AFTER,
    XID_AGE_ACTION,
    XID_AGE_WARN,
)

NAME = "vacuum"
TITLE = "Dead tuples and autovacuum"
_TOP = 10

_SETTINGS_SQL = """
SELECT current_setting('autovacuum')::bool AS autovacuum,
       current_setting('track_counts')::bool AS track_counts,
       current_setting('autovacuum_vacuum_threshold')::bigint AS av_threshold,
       current_setting('autovacuum_vacuum_scale_factor')::float8 AS av_scale,
       x.age AS xid_age, x.datname AS xid_database
FROM (SELECT age(datfrozenxid) AS age, datname FROM pg_database
      ORDER BY age(datfrozenxid) DESC LIMIT 1) x
"""

_TABLES_SQL = """
SELECT s.schemaname AS schema, s.relname AS name, s.n_live_tup AS live, s.n_dead_tup AS dead,
       s.n_mod_since_analyze AS changed, greatest(c.reltuples, 0)::float8 AS reltuples,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze,
       coalesce((SELECT split_part(o, '=', 2)::bool FROM unnest(c.reloptions) o
                 WHERE o LIKE 'autovacuum_enabled=%'), true) AS autovacuum_enabled
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
WHERE c.relkind <> 'p'
ORDER BY s.n_dead_tup DESC, s.schemaname, s.relname
"""


@dataclass(frozen=True)
class TableVacuum:
    name: str  # schema-qualified
    live: int
    dead: int
    changed: int
    reltuples: float
    last_vacuum: datetime | None
    last_analyze: datetime | None
    autovacuum_enabled: bool

    @property
    def dead_ratio(self) -> float:
        total = self.live + self.dead
        return self.dead / total if total else 0.0


def table_findings(
    t: TableVacuum, *, now: datetime, av_threshold: int, av_scale: float
) -> list[Finding]:
    """What is wrong with one table's vacuum and analyze state (pure)."""
    out: list[Finding] = []
    trigger = av_threshold + av_scale * t.reltuples
    stale = t.last_vacuum is None or now - t.last_vacuum >= VACUUM_STALE_AFTER
    since = "never vacuumed" if t.last_vacuum is None else (
        f"last vacuumed {duration((now - t.last_vacuum).total_seconds())} ago"
    )  # fmt: skip
    if t.dead >= DEAD_TUPLES_MIN and (
        t.dead_ratio >= DEAD_TUPLE_RATIO_WARN or (t.dead > trigger and stale)
    ):
        off = "" if t.autovacuum_enabled else " autovacuum is disabled on this table;"
        out.append(
            Finding(
                Severity.WARN,
                f"{t.name}: {t.dead:,} dead rows ({percent(t.dead_ratio)}), {since}",
                f"autovacuum's trigger for it is ~{trigger:,.0f} dead rows;{off} dead rows "
                "slow scans and bloat the table until vacuum removes them.",
                f"VACUUM (ANALYZE, VERBOSE) {t.name};\nif it reports dead row versions that "
                "'cannot be removed yet', end the oldest transaction (see Sessions) or the "
                "replication slot holding them (see Replication).",
                subject=t.name,
            )
        )
    if t.last_analyze is None and t.changed >= ANALYZE_MIN_CHANGES:
        out.append(
            Finding(
                Severity.WARN,
                f"{t.name}: never analyzed after {t.changed:,} changed rows",
                "without statistics the planner guesses the table's size and value "
                "distribution, and chooses plans accordingly.",
                f"ANALYZE {t.name};",
                subject=t.name,
            )
        )
    return out


def xid_finding(age: int, database: str = "") -> Finding:
    """The cluster's transaction-ID age: ``age`` of the oldest ``database``."""
    of = f" (database {database})" if database else ""
    if age < XID_AGE_WARN:
        return Finding(
            Severity.OK, f"transaction-ID age {age:,}{of}", subject=database or "datfrozenxid"
        )
    severity = Severity.ACTION if age >= XID_AGE_ACTION else Severity.WARN
    connect = f"connect to database {database} and " if database else ""
    return Finding(
        severity,
        f"transaction-ID age of the cluster is {age:,}{of}",
        "anti-wraparound vacuums are not completing; PostgreSQL refuses writes in every "
        "database of the server when the age nears 2.1 billion.",
        f"{connect}find the oldest tables and freeze them (one at a time):\n"
        "  SELECT c.oid::regclass, age(c.relfrozenxid) FROM pg_class c\n"
        "  WHERE c.relkind IN ('r', 'm', 't') ORDER BY 2 DESC LIMIT 10;\n"
        "  VACUUM (FREEZE, VERBOSE) <table>;\n"
        "and end whatever holds the oldest xmin (long transactions, prepared transactions, "
        "replication slots).",
        subject=database or "datfrozenxid",
    )


async def run(conn: Any, ctx: Context) -> CheckResult:
    settings = await conn.fetchrow(_SETTINGS_SQL)
    findings: list[Finding] = []
    for setting in ("autovacuum", "track_counts"):
        if not settings[setting]:
            findings.append(
                Finding(
                    Severity.ACTION,
                    f"{setting} is off",
                    "dead rows are never removed and tables are only frozen by emergency "
                    "vacuums: bloat, then a forced shutdown at transaction-ID wraparound.",
                    f"ALTER SYSTEM SET {setting} = on;\nSELECT pg_reload_conf();",
                    subject=setting,
                )
            )
    tables = [
        TableVacuum(
            qualified(r["schema"], r["name"]),
            r["live"],
            r["dead"],
            r["changed"],
            r["reltuples"],
            r["last_vacuum"],
            r["last_analyze"],
            r["autovacuum_enabled"],
        )
        for r in await conn.fetch(_TABLES_SQL)
    ]
    for t in tables:
        findings.extend(
            table_findings(
                t,
                now=ctx.now,
                av_threshold=settings["av_threshold"],
                av_scale=settings["av_scale"],
            )
        )
    xid = xid_finding(settings["xid_age"], settings["xid_database"])
    if xid.severity is not Severity.OK or not findings:
        findings.append(xid)
    if all(f.severity is Severity.OK for f in findings):
        dead = sum(t.dead for t in tables)
        findings = [
            Finding(
                Severity.OK,
                f"{len(tables)} tables, {dead:,} dead rows in all, autovacuum keeping up; "
                f"oldest transaction-ID age {settings['xid_age']:,} "
                f"(database {settings['xid_database']})",
            )
        ]
    details = Details(
        (
            Column("table"), Column("live_rows", "count"), Column("dead_rows", "count"),
            Column("dead_ratio", "ratio", "dead"), Column("last_vacuum", "time"),
            Column("last_analyze", "time"),
        ),
        tuple(
            (t.name, t.live, t.dead, t.dead_ratio, t.last_vacuum, t.last_analyze)
            for t in tables[:_TOP]
            if t.dead
        ),
        title=f"most dead rows (top {_TOP})",
    )  # fmt: skip
    return CheckResult(NAME, TITLE, tuple(findings), (details,))
