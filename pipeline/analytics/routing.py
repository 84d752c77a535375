"""Read-replica routing for analyst queries: a healthy replica, else the primary.

Contract
--------
:meth:`ReplicaRouter.choose` returns a :class:`Route`: the
:class:`~pipeline.config.DatabaseConfig` to run the query on, whether that is a replica or
the primary, and why (:class:`RouteReason`). An unhealthy replica is never an error: the
route falls back to the primary. ``choose`` raises only when there is nothing to read
from: :class:`~pipeline.errors.ConfigError` when neither replicas nor a primary are
configured, :class:`~pipeline.errors.DatabaseUnavailableError` when no replica is healthy
and no primary is configured (an analyst environment with replicas only).

A replica (``ANALYTICS_DATABASE_URL``, comma-separated, in order of preference) is
*healthy* when one check (:data:`CHECK_SQL`, one round trip on a connection of its own)
finds it:

1. reachable: connected and answered within ``ANALYTICS_CHECK_TIMEOUT_S``; a login it
   refuses counts as unreachable too, the detail says which (and names
   ``ANALYTICS_DATABASE_URL``);
2. in recovery (``pg_is_in_recovery()``): a standby, not a primary or a promoted replica;
3. with replay lag under ``ANALYTICS_MAX_LAG_S`` (:func:`judge`). Before the replicas are
   checked, the primary's WAL position is read (:data:`PRIMARY_POSITION_SQL`,
   ``pg_current_wal_lsn()`` on ``DATABASE_URL``, which any login may call; within the same
   timeout). Then, on each replica:

   - replayed up to that position (``pg_last_wal_replay_lsn()`` at or past it): lag 0.
     It has everything the primary had written when the check began. The age of its last
     replayed transaction is *not* used here: on an idle primary it grows without bound
     although the replica is fully caught up;
   - behind it with WAL replay paused (``pg_is_wal_replay_paused()``): lagging, whatever
     the age says (it will not catch up by itself);
   - behind it otherwise (catching up a backlog, or just restarted or reconnected, even
     when it has replayed everything it received): the age of the last replayed commit,
     ``clock_timestamp() - pg_last_xact_replay_timestamp()``; unknown (nothing replayed
     since the replica started) counts as lagging. Everything committed before that commit
     is on the replica, so the replica is at most that stale. This compares the replica's
     clock with the primary's commit times: keep clocks in sync. (A replica of a primary
     idle for hours that has not yet replayed the last few bytes, say a checkpoint record,
     is judged by that old commit and skipped until it replays them, within milliseconds.)

   Without the primary's position (no ``DATABASE_URL``, or the primary did not answer in
   time or is itself in recovery) the replica is judged alone, by the weaker rule: a WAL
   receiver runs and everything it received is replayed (``pg_last_wal_receive_lsn() <=
   pg_last_wal_replay_lsn()``; after a restart the receive position can be below the
   replay position): lag 0, although a replica catching up a backlog, or just reconnected,
   also sits at its receive position while behind; replay paused with WAL pending, or with
   no WAL receiver: lagging; otherwise the age of the last replayed commit as above. The
   check's detail then says ``primary position unknown``.

The first healthy replica in the listed order answers (put the nearest first). With none,
the primary (``DATABASE_URL``, its login included) answers, and the route's reason is the
preferred (first) replica's verdict. Every check sets the gauges
``pipeline_analytics_replica_lag_seconds`` and ``pipeline_analytics_replica_healthy``;
every ``choose`` counts ``pipeline_analytics_route_total{target, reason}``. Whenever the
route changes (always on the first ``choose`` of a process) one line is logged: a WARNING
naming each replica and its reason when falling back to the primary (or when nothing can
answer, for :meth:`ReplicaRouter.watch`), INFO otherwise.

Checks are cached for ``ANALYTICS_CHECK_INTERVAL_S``: a long-running process calls
``choose`` before each query and the replicas are checked at most once per interval
(:meth:`ReplicaRouter.watch` also re-checks every interval in the background, so the
gauges and the log stay current without queries); a one-shot command (``pipeline query``)
builds a router per run, so it checks right before its query.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from pipeline.config import AnalyticsConfig, DatabaseConfig
from pipeline.errors import (
    ConfigError,
    DatabaseRefusedError,
    DatabaseUnavailableError,
    PipelineError,
    classify_database_error,
)
from pipeline.metrics import AnalyticsMetrics

log = logging.getLogger(__name__)


class RouteReason(enum.StrEnum):
    """Why a query went where it went (the ``reason`` label of the route metric)."""

    HEALTHY_REPLICA = "healthy_replica"
    REPLICA_UNREACHABLE = "replica_unreachable"
    REPLICA_NOT_IN_RECOVERY = "replica_not_in_recovery"
    REPLICA_LAGGING = "replica_lagging"
    NO_REPLICAS_CONFIGURED = "no_replicas_configured"


PRIMARY_POSITION_SQL = "SELECT pg_current_wal_lsn()::text"
"""The primary's WAL position, read before the replicas are checked (any login may call
``pg_current_wal_lsn()``; on a server in recovery it fails with SQLSTATE 55000)."""

CHECK_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS receiving,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8
           AS pending_bytes,
       pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::float8
           AS behind_primary_bytes,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END
           AS replay_paused,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
           AS replay_age_s
"""
"""One round trip, readable by any login (``pg_stat_wal_receiver`` shows every role
whether a WAL receiver runs; its details need ``pg_read_all_stats``, not used here).
``$1`` is the primary's WAL position as text, or NULL when unknown."""


@dataclass(frozen=True)
class ReplicaState:
    """What a check read from a server (the columns of :data:`CHECK_SQL`)."""

    in_recovery: bool
    receiving: bool = False  # a WAL receiver process runs (streaming, or trying to)
    pending_bytes: float | None = None  # WAL received but not replayed; None: no receiver
    replay_paused: bool = False
    replay_age_s: float | None = None  # clock_timestamp() - the last replayed commit
    # The primary's WAL position read before the check minus the replay position; None
    # when the primary's position is unknown (then the replica is judged alone).
    behind_primary_bytes: float | None = None
    replay_lsn: str | None = None
    primary_lsn: str | None = None

    @classmethod
    def from_row(cls, row: Any, primary_lsn: str | None) -> ReplicaState:
        """The state :data:`CHECK_SQL` read, run with ``primary_lsn`` as its parameter."""
        return cls(
            in_recovery=row["in_recovery"],
            receiving=row["receiving"],
            pending_bytes=row["pending_bytes"],
            replay_paused=row["replay_paused"],
            replay_age_s=row["replay_age_s"],
            behind_primary_bytes=row["behind_primary_bytes"],
            replay_lsn=row["replay_lsn"],
            primary_lsn=primary_lsn,
        )


def judge(state: ReplicaState, max_lag_s: float) -> tuple[RouteReason, float | None, str]:
    """The verdict on one replica: its reason (``HEALTHY_REPLICA`` when usable), its replay
    lag in seconds (``None`` when unknown) and a short explanation. See the module
    docstring for the rule; without ``state.behind_primary_bytes`` (the primary's position
    unknown) the replica is judged alone, by the weaker rule."""
    if not state.in_recovery:
        return RouteReason.REPLICA_NOT_IN_RECOVERY, None, "not in recovery (a primary?)"
    age = None if state.replay_age_s is None else max(state.replay_age_s, 0.0)
    behind = state.behind_primary_bytes
    if behind is not None:
        if behind <= 0:
            return (
                RouteReason.HEALTHY_REPLICA,
                0.0,
                f"replayed up to the primary's position {state.primary_lsn}",
            )
        where = f"{behind:.0f} bytes behind the primary"
    else:
        pending = state.pending_bytes
        if state.receiving and pending is not None and pending <= 0:
            return (
                RouteReason.HEALTHY_REPLICA,
                0.0,
                "replayed all WAL received, primary position unknown",
            )
        if state.receiving:
            where = f"{pending or 0:.0f} bytes of WAL pending, primary position unknown"
        else:
            where = "no WAL receiver, primary position unknown"
    if state.replay_paused:
        return RouteReason.REPLICA_LAGGING, age, f"WAL replay is paused, {where}"
    if age is None:
        return (
            RouteReason.REPLICA_LAGGING,
            None,
            f"lag unknown: no transaction replayed yet, {where}",
        )
    if age >= max_lag_s:
        return (
            RouteReason.REPLICA_LAGGING,
            age,
            f"replay lag {age:.1f} s >= {max_lag_s:g} s, {where}",
        )
    return RouteReason.HEALTHY_REPLICA, age, f"replay lag {age:.1f} s, {where}"


async def _fetchrow(
    config: DatabaseConfig, timeout_s: float, setting: str, sql: str, *args: object
) -> asyncpg.Record:
    """Connect to ``config``, run ``sql`` and disconnect, all within ``timeout_s``. Raises
    a classified :class:`~pipeline.errors.PipelineError` naming ``setting`` when that
    fails; an exception that is not a database or connection error (a bug) propagates."""
    conn = None
    try:
        async with asyncio.timeout(timeout_s):
            conn = await asyncpg.connect(
                config.url,
                timeout=timeout_s,
                server_settings={
                    "application_name": "pipeline-replica-check",
                    "statement_timeout": str(max(1, int(timeout_s * 1000))),
                },
            )
            row = await conn.fetchrow(sql, *args)
            await conn.close(timeout=timeout_s)
            conn = None
    except TimeoutError as exc:
        raise DatabaseUnavailableError(
            f"did not answer within ANALYTICS_CHECK_TIMEOUT_S={timeout_s:g}s"
        ) from exc
    except Exception as exc:
        error = classify_database_error(exc)
        if error is None:
            raise
        if isinstance(error, DatabaseRefusedError):
            raise DatabaseRefusedError(
                f"{error}; check the login in {setting} (user, password, database) and the "
                "server's pg_hba.conf",
                sqlstate=error.sqlstate,
            ) from exc
        raise error from exc
    finally:
        if conn is not None:
            conn.terminate()
    return row


async def read_primary_lsn(config: DatabaseConfig, timeout_s: float) -> str:
    """The primary's current WAL position (``pg_current_wal_lsn()``) as text, read within
    ``timeout_s``. Raises a classified :class:`~pipeline.errors.PipelineError` when that
    fails (unreachable, refused, or the server is in recovery)."""
    row = await _fetchrow(config, timeout_s, "DATABASE_URL", PRIMARY_POSITION_SQL)
    lsn: str = row[0]
    return lsn


async def probe_replica(
    config: DatabaseConfig, timeout_s: float, primary_lsn: str | None = None
) -> ReplicaState:
    """Connect to ``config`` and read its :class:`ReplicaState` (compared with the
    primary's position ``primary_lsn`` when known), all within ``timeout_s``. Raises a
    classified :class:`~pipeline.errors.PipelineError` when that fails."""
    row = await _fetchrow(config, timeout_s, "ANALYTICS_DATABASE_URL", CHECK_SQL, primary_lsn)
    return ReplicaState.from_row(row, primary_lsn)


Probe = Callable[[DatabaseConfig, float, str | None], Awaitable[ReplicaState]]
PrimaryPosition = Callable[[DatabaseConfig, float], Awaitable[str]]


def server_label(config: DatabaseConfig) -> str:
    """``host:port/database`` of ``config`` (a socket directory as the host): for logs and
    metric labels, never a password."""
    parts = urlsplit(config.url)
    query = parse_qs(parts.query)
    hosts = parts.netloc.rpartition("@")[2]
    port = query.get("port", ["5432"])[0]
    if not hosts:
        hosts = f"{query.get('host', ['localhost'])[0]}:{port}"
    elif "," not in hosts and not re.search(r":\d+$", hosts):
        hosts = f"{hosts}:{port}"
    database = parts.path.lstrip("/") or query.get("dbname", [""])[0] or parts.username
    return f"{hosts}/{database or 'postgres'}"


@dataclass(frozen=True)
class ReplicaCheck:
    """The verdict on one replica at one check."""

    replica: DatabaseConfig
    reason: RouteReason
    lag_s: float | None
    detail: str
    state: ReplicaState | None = None  # what the check read; None: unreachable

    @property
    def healthy(self) -> bool:
        return self.reason is RouteReason.HEALTHY_REPLICA

    @property
    def server(self) -> str:
        return server_label(self.replica)

    def describe(self) -> str:
        return f"{self.server} {self.reason.value} ({self.detail})"


@dataclass(frozen=True)
class Route:
    """Where one query goes: ``target`` is ``replica`` or ``primary``."""

    database: DatabaseConfig
    target: str
    reason: RouteReason
    checks: tuple[ReplicaCheck, ...] = ()

    @property
    def server(self) -> str:
        return server_label(self.database)

    def describe(self) -> str:
        """E.g. ``the replica r1:5432/events (healthy_replica: replay lag 0.0 s)``."""
        chosen = next((c for c in self.checks if c.replica == self.database), None)
        why = f"{self.reason.value}: {chosen.detail}" if chosen else self.reason.value
        return f"the {self.target} {self.server} ({why})"


async def check_replica(
    replica: DatabaseConfig,
    *,
    max_lag_s: float,
    timeout_s: float,
    primary_lsn: str | None = None,
    probe: Probe = probe_replica,
) -> ReplicaCheck:
    """Check one replica against the primary's position ``primary_lsn`` (None: unknown).
    Database and connection errors make it unreachable (with the error as the detail); any
    other exception is a bug and propagates."""
    try:
        state = await probe(replica, timeout_s, primary_lsn)
    except PipelineError as exc:
        return ReplicaCheck(replica, RouteReason.REPLICA_UNREACHABLE, None, str(exc))
    reason, lag_s, detail = judge(state, max_lag_s)
    return ReplicaCheck(replica, reason, lag_s, detail, state)


class ReplicaRouter:
    """Chooses the server for each analyst query; see the module docstring for the contract.

    ``probe``, ``primary_position`` and ``clock`` (monotonic seconds) are injectable for
    tests.
    """

    def __init__(
        self,
        config: AnalyticsConfig,
        primary: DatabaseConfig | None,
        *,
        metrics: AnalyticsMetrics | None = None,
        probe: Probe = probe_replica,
        primary_position: PrimaryPosition = read_primary_lsn,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.primary = primary
        self.metrics = metrics if metrics is not None else AnalyticsMetrics()
        self._probe = probe
        self._primary_position = primary_position
        self._clock = clock
        self._lock = asyncio.Lock()
        self._checks: tuple[ReplicaCheck, ...] | None = None
        self._checked_at = -math.inf
        self._logged: tuple[object, ...] | None = None

    async def check(self) -> tuple[ReplicaCheck, ...]:
        """Check every replica now (concurrently); update the gauges and the cache."""
        async with self._lock:
            return await self._check_now()

    async def choose(self, *, fresh: bool = False) -> Route:
        """The route for one query: checks the replicas first unless the last check is
        younger than ``check_interval_s`` (``fresh=True``: always). Counts the route and
        logs a line when it differs from the previous one."""
        async with self._lock:
            checks = self._checks
            if fresh or checks is None or self._age() >= self.config.check_interval_s:
                checks = await self._check_now()
        try:
            route = self._decide(checks)
        except DatabaseUnavailableError:
            self.metrics.routes.labels("none", checks[0].reason.value).inc()
            raise
        self.metrics.routes.labels(route.target, route.reason.value).inc()
        self._note(route)
        return route

    async def watch(self) -> None:
        """Re-check every ``check_interval_s`` until cancelled (for long-running processes:
        keeps the gauges, the log line and the cached verdict current)."""
        while True:
            checks = await self.check()
            try:
                route = self._decide(checks)
            except DatabaseUnavailableError as exc:
                self._note_unavailable(checks, exc)
            else:
                self._note(route)
            await asyncio.sleep(self.config.check_interval_s)

    def _age(self) -> float:
        return self._clock() - self._checked_at

    async def _check_now(self) -> tuple[ReplicaCheck, ...]:
        c = self.config
        primary_lsn = await self._read_primary_lsn() if c.replicas else None
        checks = tuple(
            await asyncio.gather(
                *(
                    check_replica(
                        r, max_lag_s=c.max_lag_s, timeout_s=c.check_timeout_s,
                        primary_lsn=primary_lsn, probe=self._probe,
                    )
                    for r in c.replicas
                )
            )
        )  # fmt: skip
        for check in checks:
            lag = math.nan if check.lag_s is None else check.lag_s
            self.metrics.replica_lag.labels(check.server).set(lag)
            self.metrics.replica_healthy.labels(check.server).set(1 if check.healthy else 0)
        self._checks, self._checked_at = checks, self._clock()
        return checks

    async def _read_primary_lsn(self) -> str | None:
        """The primary's WAL position before the replicas are checked; None without a
        primary, or when it cannot tell (then each replica is judged alone)."""
        if self.primary is None:
            return None
        try:
            return await self._primary_position(self.primary, self.config.check_timeout_s)
        except PipelineError as exc:
            log.debug("the primary's WAL position is unknown, replicas judged alone: %s", exc)
            return None

    def _decide(self, checks: Sequence[ReplicaCheck]) -> Route:
        if not checks:
            if self.primary is None:
                raise ConfigError(
                    "no database to query: set ANALYTICS_DATABASE_URL (read replicas) "
                    "and/or DATABASE_URL (the primary)"
                )
            return Route(self.primary, "primary", RouteReason.NO_REPLICAS_CONFIGURED)
        healthy = next((c for c in checks if c.healthy), None)
        if healthy is not None:
            return Route(healthy.replica, "replica", RouteReason.HEALTHY_REPLICA, tuple(checks))
        if self.primary is None:
            raise DatabaseUnavailableError(
                f"no healthy read replica ({_listing(checks)}) and no primary to fall back "
                "to: fix the replicas, or set DATABASE_URL"
            )
        return Route(self.primary, "primary", checks[0].reason, tuple(checks))

    def _note(self, route: Route) -> None:
        """Log one line when the route (or a replica's verdict) changed."""
        key = (route.target, route.server, tuple((c.server, c.reason) for c in route.checks))
        if key == self._logged:
            return
        self._logged = key
        if route.target == "primary" and route.checks:
            log.warning(
                "no healthy read replica, analyst queries go to the primary %s: %s",
                route.server,
                _listing(route.checks),
            )
        elif route.target == "replica":
            skipped = [c for c in route.checks if not c.healthy]
            tail = f"; skipped {_listing(skipped)}" if skipped else ""
            log.info("analyst queries go to %s%s", route.describe(), tail)
        else:
            log.debug("analyst queries go to %s", route.describe())

    def _note_unavailable(self, checks: Sequence[ReplicaCheck], error: Exception) -> None:
        """Log one WARNING when nothing can answer (no healthy replica, no primary), once
        per change like :meth:`_note`."""
        key = ("none", "", tuple((c.server, c.reason) for c in checks))
        if key == self._logged:
            return
        self._logged = key
        log.warning("%s", error)


def _listing(checks: Sequence[ReplicaCheck]) -> str:
    return "; ".join(c.describe() for c in checks)


__all__ = [
    "CHECK_SQL",
    "PRIMARY_POSITION_SQL",
    "ReplicaCheck",
    "ReplicaRouter",
    "ReplicaState",
    "Route",
    "RouteReason",
    "check_replica",
    "judge",
    "probe_replica",
    "read_primary_lsn",
    "server_label",
]
