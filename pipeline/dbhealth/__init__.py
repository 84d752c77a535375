"""Database health: ``pipeline db health``.

**Contract.** Each check is a module with ``NAME``, ``TITLE`` and ``async def run(conn,
ctx) -> CheckResult``. It reads statistics views and the catalog (never the data: the
command must be cheap enough for a cron job) and returns findings (:mod:`.model`): a
severity (``ok``, ``warn``: worth a look, ``action``: someone must act), what was found,
why it matters, and a concrete recommendation with the SQL or command to run. Thresholds
are the named constants of :mod:`.thresholds`. The pure parts of each check (judging rows,
rendering) take plain values, so they are tested without a database.

The checks, in report order:

- :mod:`.coverage`: partitions ahead of now per ``partition_policies`` row, and past retention
- :mod:`.indexes`: scans per index; unused, duplicate and invalid indexes with their size
- :mod:`.cache`: cache hit ratios of the database, tables and indexes
- :mod:`.bloat`: table and index bloat, estimated from the catalog
- :mod:`.vacuum`: dead tuples, autovacuum recency, transaction-ID age
- :mod:`.sessions`: long-running and idle-in-transaction sessions
- :mod:`.replication`: standby lag and replication slots
- :mod:`.statements`: top statements by total time (``pg_stat_statements``), or how to
  enable it

:func:`run` runs them on one read-only connection (the replication check, on a standby,
also reads the primary's WAL position when it is given). A check whose SQL fails on the
server becomes an ``action`` finding saying so, and the others still run: a missing
privilege (SQLSTATE 42501) with the exact GRANT that fixes it (a check's ``GRANT``, else
``pg_monitor`` for the login). Losing the connection ends the run (a classified
:class:`~pipeline.errors.DatabaseUnavailableError`). The report's exit code is 1 when any
finding needs action, else 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pipeline.config import DatabaseConfig
from pipeline.dbhealth import (
    bloat,
    cache,
    coverage,
    indexes,
    replication,
    sessions,
    statements,
    vacuum,
)
from pipeline.dbhealth._text import ident
from pipeline.dbhealth.model import CheckResult, Context, Finding, Report, Severity
from pipeline.dbhealth.thresholds import REPLICATION_LAG_WARN_S
from pipeline.errors import classify_database_error, is_insufficient_privilege, is_session_lost

log = logging.getLogger(__name__)

CheckFn = Callable[[Any, Context], Awaitable[CheckResult]]

CHECKS: tuple[tuple[str, str, CheckFn], ...] = tuple(
    (m.NAME, m.TITLE, m.run)
    for m in (coverage, indexes, cache, bloat, vacuum, sessions, replication, statements)
)

# What a check reads beyond pg_monitor's privileges: the GRANT that lets a pg_monitor login
# run it (SQLSTATE 42501 otherwise).
GRANTS: dict[str, str] = {coverage.NAME: coverage.GRANT}

# The session is read-only, and waits at most this long for a lock (reading a relation's
# size takes a light lock, which queues behind a pending ALTER TABLE): a health check must
# never stall, nor make writers queue behind it.
LOCK_TIMEOUT = "5s"

_CONTEXT_SQL = """
SELECT coalesce($1::timestamptz, now()) AS now,
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database())
           AS stats_reset,
       current_setting('block_size')::int AS block_size,
       current_setting('server_version') AS server_version,
       current_user::text AS login,
       pg_has_role(current_user, 'pg_monitor', 'USAGE') AS monitor
"""


async def run(
    conn: Any,
    *,
    database: str,
    now: datetime | None = None,
    checks: tuple[tuple[str, str, CheckFn], ...] = CHECKS,
    replication_lag_warn_s: float = REPLICATION_LAG_WARN_S,
    primary: DatabaseConfig | None = None,
    primary_timeout_s: float = 2.0,
) -> Report:
    """Run ``checks`` on ``conn`` and return the report. ``database`` is the redacted URL
    the report names; ``now`` replaces the server's clock (tests). A standby's replay lag
    warns from ``replication_lag_warn_s`` (ANALYTICS_MAX_LAG_S) and is judged against
    ``primary``'s WAL position when given (see :mod:`.replication`). The session is left
    read-only with a short lock timeout: give it a connection of its own."""
    await conn.execute(
        f"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SET lock_timeout = '{LOCK_TIMEOUT}'"
    )
    row = await conn.fetchrow(_CONTEXT_SQL, now)
    ctx = Context(
        now=row["now"],
        stats_reset=row["stats_reset"],
        block_size=row["block_size"],
        login=row["login"],
        monitor=row["monitor"],
        replication_lag_warn_s=replication_lag_warn_s,
        primary=primary,
        primary_timeout_s=primary_timeout_s,
    )
    results = []
    for name, title, check in checks:
        started = time.monotonic()
        results.append(await _run_one(conn, ctx, name, title, check))
        log.debug("check %s took %.0f ms", name, (time.monotonic() - started) * 1000)
    return Report(database, row["server_version"], ctx.now, tuple(results))


async def _run_one(conn: Any, ctx: Context, name: str, title: str, check: CheckFn) -> CheckResult:
    try:
        return await check(conn, ctx)
    except Exception as exc:
        error = classify_database_error(exc)
        if error is None:
            raise
        if is_session_lost(error):
            raise error from exc  # nothing else can run
        log.warning("health check %s failed: %s", name, error)
        if is_insufficient_privilege(error):
            recommendation = grant_recommendation(name, ctx)
        else:
            recommendation = (
                "run the check as a login with pg_monitor (GRANT pg_monitor TO <login>;) and "
                "the schema migrated (pipeline migrate up); the message above says what failed"
            )
        finding = Finding(
            Severity.ACTION,
            f"the {title.lower()} check could not run: {error}",
            "this part of the database's health is unknown.",
            recommendation,
            subject=name,
        )
        return CheckResult(name, title, (finding,))


def grant_recommendation(name: str, ctx: Context) -> str:
    """The GRANTs that let this login run check ``name``, after a permission error."""
    login = ident(ctx.login) if ctx.login else "<login>"
    member = f"GRANT pg_monitor TO {login};"
    if name in GRANTS:
        lines = [
            f"as the schema owner (a member of pipeline_migrator): {GRANTS[name]}",
            "  (migration 0010 grants exactly this: pipeline migrate up)",
        ]
        if not ctx.monitor:
            lines.append(f"and, as a superuser: {member}")
        return "\n".join(lines)
    if not ctx.monitor:
        return f"as a superuser: {member}"
    return (
        f"{login} already has pg_monitor: the message above names the object it may not "
        "read; grant SELECT on it to pg_monitor (as its owner), or run the check as its owner"
    )
