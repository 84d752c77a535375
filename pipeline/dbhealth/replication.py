"""Replication lag and replication slots.

On a primary: each standby of ``pg_stat_replication`` (``replay_lag``, which PostgreSQL
measures itself, and the bytes of WAL not yet replayed), and each slot of
``pg_replication_slots`` (an inactive slot keeps WAL forever). On a standby (the check
run against a replica): ``now() - pg_last_xact_replay_timestamp()``, counted as 0 when
everything received is replayed (an idle primary sends nothing, which is not lag).
Thresholds: :data:`~pipeline.dbhealth.thresholds.REPLICATION_LAG_WARN_S` (where analytics
reads leave a replica) and ``REPLICATION_LAG_ACTION_S``.
"""

from __future__ import annotations

from typing import Any

from pipeline.dbhealth._text import duration, literal, size
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity
from pipeline.dbhealth.thresholds import (
    REPLICATION_LAG_ACTION_S,
    REPLICATION_LAG_WARN_S,
    SLOT_RETAINED_ACTION_BYTES,
)

NAME = "replication"
TITLE = "Replication"

_STANDBYS_SQL = """
SELECT application_name AS name, coalesce(client_addr::text, 'local') AS client, state,
       sync_state, coalesce(extract(epoch FROM replay_lag), 0)::float8 AS lag_s,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint AS behind_bytes
FROM pg_stat_replication
ORDER BY application_name
"""

_SLOTS_SQL = """
SELECT slot_name AS name, slot_type AS type, active,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint AS retained
FROM pg_replication_slots
ORDER BY slot_name
"""

_STANDBY_SELF_SQL = """
SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT NULL
             AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS lag_s,
       pg_is_wal_replay_paused() AS paused
"""


def lag_severity(lag_s: float) -> Severity:
    if lag_s >= REPLICATION_LAG_ACTION_S:
        return Severity.ACTION
    return Severity.WARN if lag_s >= REPLICATION_LAG_WARN_S else Severity.OK


def standby_finding(row: Any) -> Finding:
    who = f"standby {row['name'] or '?'} ({row['client']})"
    severity = lag_severity(row["lag_s"])
    if row["state"] != "streaming" and severity is Severity.OK:
        severity = Severity.WARN
    what = (
        f"{who}: {row['state']}, replay lag {duration(row['lag_s'])}, "
        f"{size(row['behind_bytes'])} of WAL behind"
    )
    if severity is Severity.OK:
        return Finding(Severity.OK, what, subject=row["name"])
    return Finding(
        severity,
        what,
        f"analytics reads leave a replica more than {REPLICATION_LAG_WARN_S:.0f} s behind; "
        "a standby that stays behind cannot serve them, and fails over with data missing.",
        "on the standby: look at its I/O and CPU, at long queries there delaying replay "
        "(max_standby_streaming_delay), and at the network; "
        "SELECT pg_is_wal_replay_paused(); resume with SELECT pg_wal_replay_resume();",
        subject=row["name"],
    )


def slot_finding(row: Any) -> Finding | None:
    if row["active"]:
        return None
    severity = Severity.ACTION if row["retained"] >= SLOT_RETAINED_ACTION_BYTES else Severity.WARN
    return Finding(
        severity,
        f"{row['type']} slot {row['name']} is inactive and retains {size(row['retained'])} of WAL",
        "the primary keeps every WAL segment the slot's consumer has not confirmed, until "
        "the disk fills; it also holds back vacuum (the slot's xmin).",
        "if its consumer is gone for good:\n"
        f"  SELECT pg_drop_replication_slot({literal(row['name'])});\n"
        "else restart the consumer (the standby or the logical subscriber).",
        subject=row["name"],
    )


async def run(conn: Any, ctx: Context) -> CheckResult:
    if await conn.fetchval("SELECT pg_is_in_recovery()"):
        row = await conn.fetchrow(_STANDBY_SELF_SQL)
        severity = lag_severity(row["lag_s"])
        if row["paused"]:
            severity = Severity.ACTION
        what = f"this server is a standby, {duration(row['lag_s'])} behind its primary" + (
            " (replay paused)" if row["paused"] else ""
        )
        finding = Finding(
            severity,
            what,
            "" if severity is Severity.OK else "queries here see data that old.",
            "" if severity is Severity.OK else (
                "SELECT pg_wal_replay_resume();  -- if replay is paused\n"
                "else check the standby's I/O, the network, and long queries here"
            ),
            subject="replay",
        )  # fmt: skip
        return CheckResult(NAME, TITLE, (finding,))
    standbys = await conn.fetch(_STANDBYS_SQL)
    slots = await conn.fetch(_SLOTS_SQL)
    findings = [standby_finding(r) for r in standbys]
    findings += [f for f in map(slot_finding, slots) if f is not None]
    if not findings:
        findings.append(
            Finding(Severity.OK, "no standby attached, no replication slot (nothing to lag)")
        )
    details = Details(
        (
            Column("slot"),
            Column("type"),
            Column("active"),
            Column("retained_bytes", "bytes", "retains"),
        ),
        tuple((s["name"], s["type"], s["active"], s["retained"]) for s in slots),
        title="replication slots",
    )
    return CheckResult(NAME, TITLE, tuple(findings), (details,) if slots else ())
