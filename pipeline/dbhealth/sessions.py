"""Long-running and idle-in-transaction sessions of this database (``pg_stat_activity``).

Client sessions only (not autovacuum or replication processes), this command's own
excluded. An *active* session is judged by the age of its transaction (a long statement
or a long series of statements both hold a snapshot that stops vacuum); an *idle in
transaction* session by how long it has been idle and by the age of its transaction (a
client pausing briefly between the statements of an hours-old transaction holds the same
snapshot and locks), whichever is worse. Without ``pg_read_all_stats`` (part of
``pg_monitor``) the sessions of other roles are hidden, which the check says. Logins in
the recommended SQL are quoted as ``quote_ident()`` would (``"user"``, ``"Alice"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipeline.dbhealth._text import duration, ident
from pipeline.dbhealth.model import (
    CheckResult,
    Column,
    Context,
    Details,
    Finding,
    Severity,
    worst,
)
from pipeline.dbhealth.thresholds import (
    IDLE_IN_TRANSACTION_ACTION,
    IDLE_IN_TRANSACTION_WARN,
    LONG_TRANSACTION_ACTION,
    LONG_TRANSACTION_WARN,
)

NAME = "sessions"
TITLE = "Sessions"

_SQL = r"""
SELECT pid, usename AS login, application_name AS application,
       coalesce(client_addr::text, 'local') AS client, state,
       CASE WHEN wait_event_type IN ('Client', 'Activity') THEN ''  -- waiting for work
            ELSE coalesce(wait_event_type || ':' || wait_event, '') END AS waiting_on,
       extract(epoch FROM now() - xact_start)::float8 AS transaction_s,
       extract(epoch FROM now() - state_change)::float8 AS state_s,
       left(regexp_replace(coalesce(query, ''), '\s+', ' ', 'g'), 160) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND datname = current_database()
ORDER BY xact_start NULLS LAST, pid
"""

_PRIVILEGED_SQL = "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')"


@dataclass(frozen=True)
class Session:
    pid: int
    login: str | None
    application: str
    client: str
    state: str | None
    waiting_on: str
    transaction_s: float | None
    state_s: float | None
    query: str

    @property
    def who(self) -> str:
        app = f"{self.application}, " if self.application else ""
        return f"pid {self.pid} ({app}{self.login or '?'}@{self.client})"


def _over(seconds: float | None, warn: timedelta, action: timedelta) -> Severity:
    if seconds is None or seconds < warn.total_seconds():
        return Severity.OK
    return Severity.ACTION if seconds >= action.total_seconds() else Severity.WARN


def session_finding(s: Session) -> Finding | None:
    """The finding for one session, or None when it is fine (pure)."""
    login = ident(s.login) if s.login else "<login>"
    if s.state in ("idle in transaction", "idle in transaction (aborted)"):
        severity = worst(
            [
                _over(s.state_s, IDLE_IN_TRANSACTION_WARN, IDLE_IN_TRANSACTION_ACTION),
                _over(s.transaction_s, LONG_TRANSACTION_WARN, LONG_TRANSACTION_ACTION),
            ]
        )
        if severity is Severity.OK:
            return None
        return Finding(
            severity,
            f"{s.who} {s.state} for {duration(s.state_s or 0)}, in a transaction open for "
            f"{duration(s.transaction_s or 0)}",
            "it holds its locks and its snapshot while doing nothing: vacuum cannot remove "
            "rows deleted since its transaction began, and partition creation or DETACH "
            f"waits behind its locks. Last statement: {s.query or '?'}",
            f"SELECT pg_terminate_backend({s.pid});\nthen fix the client (commit or roll "
            "back, and keep transactions short); guards for that login:\n"
            f"  ALTER ROLE {login} SET idle_in_transaction_session_timeout = '5min';\n"
            f"  ALTER ROLE {login} SET transaction_timeout = '1h';  -- PostgreSQL 17+",
            subject=f"pid {s.pid}",
        )
    if s.state == "active":
        severity = _over(s.transaction_s, LONG_TRANSACTION_WARN, LONG_TRANSACTION_ACTION)
        if severity is Severity.OK:
            return None
        waiting = f", waiting on {s.waiting_on}" if s.waiting_on else ""
        return Finding(
            severity,
            f"{s.who} in a transaction running for {duration(s.transaction_s or 0)}{waiting}",
            "its snapshot stops vacuum from removing dead rows in every table of the "
            f"database while it runs. Statement: {s.query or '?'}",
            f"if it is not expected: SELECT pg_cancel_backend({s.pid});  (or "
            f"pg_terminate_backend({s.pid}) to end the session);\nfor a slow query, "
            "EXPLAIN (ANALYZE, BUFFERS) it; bound the login with\n"
            f"  ALTER ROLE {login} SET statement_timeout = '5min';",
            subject=f"pid {s.pid}",
        )
    return None


def check(sessions: list[Session], privileged: bool) -> tuple[list[Finding], Details]:
    findings = [f for f in map(session_finding, sessions) if f is not None]
    if not privileged:
        findings.append(
            Finding(
                Severity.WARN,
                "sessions of other logins are hidden from this one",
                "without pg_read_all_stats, pg_stat_activity shows other roles' sessions "
                "without state or query: a stuck one would go unnoticed.",
                "run the check as a login with pg_monitor: GRANT pg_monitor TO <login>;",
                subject="pg_read_all_stats",
            )
        )
    if not findings:
        active = sum(1 for s in sessions if s.state == "active")
        findings.append(
            Finding(
                Severity.OK,
                f"{len(sessions)} other sessions ({active} active): none long-running or "
                "idle in a transaction",
            )
        )
    details = Details(
        (
            Column("pid"), Column("application"), Column("login"), Column("state"),
            Column("transaction_seconds", "seconds", "transaction"),
            Column("state_seconds", "seconds", "in state"),
            Column("waiting_on"), Column("query"),
        ),
        tuple(
            (s.pid, s.application, s.login, s.state, s.transaction_s, s.state_s,
             s.waiting_on, s.query)
            for s in sessions
            if s.transaction_s is not None
        ),
        title="sessions in a transaction, oldest first",
    )  # fmt: skip
    return findings, details


async def run(conn: Any, ctx: Context) -> CheckResult:
    sessions = [Session(**dict(r)) for r in await conn.fetch(_SQL)]
    findings, details = check(sessions, bool(await conn.fetchval(_PRIVILEGED_SQL)))
    return CheckResult(NAME, TITLE, tuple(findings), (details,))
