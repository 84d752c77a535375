"""Replication lag and replication slots.

On a primary: each standby of ``pg_stat_replication`` (``replay_lag``, which PostgreSQL
measures itself, and the bytes of WAL not yet replayed), and each slot of
``pg_replication_slots`` (an inactive slot keeps WAL forever).

On a standby (the check run against a replica): the read-replica routing's own judgement
(:func:`pipeline.analytics.routing.judge` on :data:`~pipeline.analytics.routing.CHECK_SQL`),
so that ``pipeline db health`` and ``pipeline query`` agree on a replica's lag. With the
primary given (``--database-url`` the standby, ``DATABASE_URL`` the primary) its WAL
position is read first and the standby has lag 0 only once it has replayed up to it;
otherwise the standby is judged alone: lag 0 when a WAL receiver runs and replay has
reached the receive position, else the age of the last replayed commit. Unknown lag
(nothing replayed since the standby started) and a missing WAL receiver (not streaming)
warn; paused replay needs action.

Thresholds: the context's ``replication_lag_warn_s`` (``ANALYTICS_MAX_LAG_S``: where analyst
reads leave a replica) and :data:`~pipeline.dbhealth.thresholds.REPLICATION_LAG_ACTION_S`.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.analytics.routing import CHECK_SQL, ReplicaState, judge, read_primary_lsn
from pipeline.dbhealth._text import duration, literal, size
from pipeline.dbhealth.model import CheckResult, Column, Context, Details, Finding, Severity
from pipeline.dbhealth.thresholds import (
    REPLICATION_LAG_ACTION_S,
    REPLICATION_LAG_WARN_S,
    SLOT_RETAINED_ACTION_BYTES,
)
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

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


def lag_severity(lag_s: float, warn_s: float = REPLICATION_LAG_WARN_S) -> Severity:
    if lag_s >= REPLICATION_LAG_ACTION_S:
        return Severity.ACTION
    return Severity.WARN if lag_s >= warn_s else Severity.OK


def standby_finding(row: Any, warn_s: float = REPLICATION_LAG_WARN_S) -> Finding:
    who = f"standby {row['name'] or '?'} ({row['client']})"
    severity = lag_severity(row["lag_s"], warn_s)
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
        f"analytics reads leave a replica {warn_s:g} s or more behind (ANALYTICS_MAX_LAG_S); "
        "a standby that stays behind cannot serve them, and fails over with data missing.",
        "on the standby: look at its I/O and CPU, at long queries there delaying replay "
        "(max_standby_streaming_delay), and at the network; "
        "SELECT pg_is_wal_replay_paused(); resume with SELECT pg_wal_replay_resume();",
        subject=row["name"],
    )


def self_findings(state: ReplicaState, warn_s: float = REPLICATION_LAG_WARN_S) -> list[Finding]:
    """What a standby says about itself (pure): its lag as the routing judges it, unknown
    lag and a missing WAL receiver as warnings, paused replay as action."""
    _, lag_s, detail = judge(state, warn_s)
    if lag_s is None:
        severity = Severity.WARN
        what = f"this server is a standby, replay lag unknown ({detail})"
    else:
        severity = lag_severity(lag_s, warn_s)
        what = f"this server is a standby, {duration(lag_s)} behind its primary ({detail})"
    if state.replay_paused:
        severity = Severity.ACTION
    if severity is Severity.OK:
        lag = Finding(Severity.OK, what, subject="replay")
    elif lag_s is None and not state.replay_paused:
        lag = Finding(
            severity,
            what,
            "no transaction was replayed since the standby started and its primary's WAL "
            "position is unknown, so how old its data is cannot be told.",
            "run the check with the primary given, so that the standby is compared with it:\n"
            "  DATABASE_URL=<the primary> pipeline db health --database-url <this standby>",
            subject="replay",
        )
    else:
        lag = Finding(
            severity,
            what,
            f"queries here see data that old; analyst reads leave a replica {warn_s:g} s or "
            "more behind (ANALYTICS_MAX_LAG_S).",
            "SELECT pg_wal_replay_resume();  -- if replay is paused\n"
            "else check the standby's I/O, the network, and long queries here",
            subject="replay",
        )
    findings = [lag]
    if not state.receiving:
        findings.append(
            Finding(
                Severity.WARN,
                "this standby has no WAL receiver: it is not streaming from its primary",
                "it replays only what it already has (or a WAL archive gives it) and falls "
                "further behind with every write on the primary.",
                "here: SHOW primary_conninfo; and the server log (connection or "
                "authentication errors); on the primary: pg_stat_replication, the "
                "replication slot, pg_hba.conf",
                subject="wal_receiver",
            )
        )
    return findings


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


async def _primary_lsn(ctx: Context) -> str | None:
    if ctx.primary is None:
        return None
    try:
        return await read_primary_lsn(ctx.primary, ctx.primary_timeout_s)
    except PipelineError as exc:
        log.warning("the primary's WAL position is unknown, the standby is judged alone: %s", exc)
        return None


async def run(conn: Any, ctx: Context) -> CheckResult:
    warn_s = ctx.replication_lag_warn_s
    if await conn.fetchval("SELECT pg_is_in_recovery()"):
        primary_lsn = await _primary_lsn(ctx)  # before the standby is read
        state = ReplicaState.from_row(await conn.fetchrow(CHECK_SQL, primary_lsn), primary_lsn)
        return CheckResult(NAME, TITLE, tuple(self_findings(state, warn_s)))
    standbys = await conn.fetch(_STANDBYS_SQL)
    slots = await conn.fetch(_SLOTS_SQL)
    findings = [standby_finding(r, warn_s) for r in standbys]
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
