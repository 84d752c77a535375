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

:func:`run` runs them on one read-only connection. A check whose SQL fails on the server
(e.g. a missing privilege) becomes an ``action`` finding saying so, and the others still
run; losing the connection ends the run (a classified
:class:`~pipeline.errors.DatabaseUnavailableError`). The report's exit code is 1 when any
finding needs action, else 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

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
from pipeline.dbhealth.model import CheckResult, Context, Finding, Report, Severity
from pipeline.errors import DatabaseUnavailableError, classify_database_error

log = logging.getLogger(__name__)

CheckFn = Callable[[Any, Context], Awaitable[CheckResult]]

CHECKS: tuple[tuple[str, str, CheckFn], ...] = tuple(
    (m.NAME, m.TITLE, m.run)
    for m in (coverage, indexes, cache, bloat, vacuum, sessions, replication, statements)
)

# The session is read-only, and waits at most this long for a lock (reading a relation's
# size takes a light lock, which queues behind a pending ALTER TABLE): a health check must
# never stall, nor make writers queue behind it.
LOCK_TIMEOUT = "5s"

_CONTEXT_SQL = """
SELECT coalesce($1::timestamptz, now()) AS now,
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database())
           AS stats_reset,
       current_setting('block_size')::int AS block_size,
       current_setting('server_version') AS server_version
"""


async def run(
    conn: Any,
    *,
    database: str,
    now: datetime | None = None,
    checks: tuple[tuple[str, str, CheckFn], ...] = CHECKS,
) -> Report:
    """Run ``checks`` on ``conn`` and return the report. ``database`` is the redacted URL
    the report names; ``now`` replaces the server's clock (tests). The session is left
    read-only with a short lock timeout: give it a connection of its own."""
    await conn.execute(
        f"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SET lock_timeout = '{LOCK_TIMEOUT}'"
    )
    row = await conn.fetchrow(_CONTEXT_SQL, now)
    ctx = Context(now=row["now"], stats_reset=row["stats_reset"], block_size=row["block_size"])
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
        if _connection_lost(error):
            raise error from exc  # nothing else can run
        log.warning("health check %s failed: %s", name, error)
        finding = Finding(
            Severity.ACTION,
            f"the {title.lower()} check could not run: {error}",
            "this part of the database's health is unknown.",
            "run the check as a login with pg_monitor (GRANT pg_monitor TO <login>;) and "
            "the schema migrated (pipeline migrate up); the message above says what failed",
            subject=name,
        )
        return CheckResult(name, title, (finding,))


# SQLSTATEs after which the session is gone: class 08 (connection exception) and the
# server shutting down or not accepting connections.
_SESSION_GONE = ("08", "57P01", "57P02", "57P03")


def _connection_lost(error: Exception) -> bool:
    if not isinstance(error, DatabaseUnavailableError):
        return False
    return not error.sqlstate or error.sqlstate.startswith(_SESSION_GONE)
