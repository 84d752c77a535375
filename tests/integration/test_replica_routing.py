"""Replica routing against a real streaming replica: healthy, lagging (replay paused while
the primary writes), catching up after a pause, and stopped, through the router and
through `pipeline query`; and `pipeline db health` on the standby, judged the same way.

The module starts a primary of its own (embedded PostgreSQL, migrated) and a hot standby
of it (tests/integration/standby.py), whatever DATABASE_URL says: the standby needs a base
backup of a server this suite runs. Both are stopped at the end, also on failure.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from pipeline import dbhealth
from pipeline.analytics.routing import ReplicaRouter, RouteReason, server_label
from pipeline.config import AnalyticsConfig, DatabaseConfig
from pipeline.dbhealth import replication
from pipeline.dbhealth.model import Severity
from pipeline.embedded import EmbeddedPostgres
from pipeline.metrics import AnalyticsMetrics
from pipeline.migrations.runner import MigrationRunner
from tests.conftest import REPO, SQL_DIR
from tests.integration.standby import Standby
from tests.integration.test_analytics_rollups import NOW, call, prepare, write_calls

DATABASE = "pipeline"
READER = "replica_reader"  # a plain login: the checks must work without privileges
DAY = NOW.date().isoformat()


@dataclass(frozen=True)
class Cluster:
    primary: EmbeddedPostgres
    standby: Standby

    @property
    def primary_url(self) -> str:
        return self.primary.url

    @property
    def replica_url(self) -> str:
        return self.standby.url_for(DATABASE, user=READER)


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await MigrationRunner(conn, SQL_DIR, applied_by="tests").up()
        await conn.execute(f"CREATE ROLE {READER} LOGIN IN ROLE pipeline_analyst_all")
        await prepare(conn)
        await write_calls(conn, [call(NOW, service="auth")])
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="pipeline-replica-") as path:
        primary = EmbeddedPostgres(Path(path) / "primary", database=DATABASE)
        standby = Standby(primary, Path(path) / "standby")
        try:
            primary.start()
            asyncio.run(_migrate(primary.url))
            standby.create()  # after the writes: the base backup holds them
            yield Cluster(primary, standby)
        finally:
            standby.destroy()
            primary.stop()


@pytest_asyncio.fixture
async def admin(cluster: Cluster) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Superuser connections to the primary and to the standby."""
    primary = await asyncpg.connect(cluster.primary_url)
    standby = await asyncpg.connect(cluster.standby.url_for(DATABASE))
    try:
        yield primary, standby
    finally:
        await primary.close()
        await standby.close()


def router(cluster: Cluster, *replicas: str, max_lag_s: float = 5.0) -> ReplicaRouter:
    config = AnalyticsConfig(
        replicas=tuple(DatabaseConfig(url=u) for u in replicas or (cluster.replica_url,)),
        max_lag_s=max_lag_s,
        check_timeout_s=2.0,
    )
    primary = DatabaseConfig(url=cluster.primary_url)
    return ReplicaRouter(config, primary, metrics=AnalyticsMetrics(CollectorRegistry()))


def run_query(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`pipeline query error-rates` for NOW's day, CSV, verbose, routed between the two."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL"))}
    env.update(
        PYTHONPATH=str(REPO),
        DATABASE_URL=cluster.primary_url,
        ANALYTICS_DATABASE_URL=cluster.replica_url,
    )
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "query", "error-rates", "--from", DAY, "--to", DAY,
         "--format", "csv", "--verbose", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def services(csv_text: str) -> list[str]:
    return sorted(line.split(",")[0] for line in csv_text.splitlines()[1:])


async def services_on(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT service FROM service_error_rates($1::timestamptz, $1::timestamptz + "
        "interval '1 day', NULL)",
        NOW.replace(hour=0, minute=0),
    )
    return sorted(r["service"] for r in rows)


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING " in line]


async def wait_for(conn: asyncpg.Connection, sql: str, what: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await conn.fetchval(sql):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_caught_up(primary: asyncpg.Connection, standby: asyncpg.Connection) -> None:
    lsn = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    await wait_for(standby, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn", "replay")


def lsn(text: str | None) -> int:
    """A WAL position ``X/Y`` as a number (comparable)."""
    assert text is not None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@pytest.mark.asyncio
async def test_healthy_replica_answers(
    cluster: Cluster, admin: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    await admin[0].execute("SELECT pg_current_xact_id()")  # a commit for the replica to replay
    await wait_caught_up(*admin)
    # Then the primary is idle: the last replayed commit gets older than the lag threshold,
    # yet the replica has replayed everything, so it is healthy with lag 0.
    await wait_for(
        admin[1],
        "SELECT clock_timestamp() - pg_last_xact_replay_timestamp() > interval '0.5 s'",
        "the last replayed commit to age",
    )
    r = router(cluster, max_lag_s=0.5)
    route = await r.choose()
    assert (route.target, route.reason, route.server) == (
        "replica", RouteReason.HEALTHY_REPLICA, server_label(DatabaseConfig(cluster.replica_url)),
    )  # fmt: skip
    assert route.checks[0].lag_s == 0.0  # idle primary, everything replayed: no false lag
    assert route.checks[0].detail.startswith("replayed up to the primary's position ")
    assert r.metrics.replica_healthy.labels(route.server)._value.get() == 1

    result = await asyncio.to_thread(run_query, cluster)
    assert result.returncode == 0, result.stderr
    assert services(result.stdout) == ["auth"]
    assert f"answered by the replica {route.server} (healthy_replica" in result.stderr
    assert warning_lines(result.stderr) == []


@pytest.mark.asyncio
async def test_lagging_replica_falls_back_to_the_primary(
    cluster: Cluster, admin: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    primary, standby = admin
    await wait_caught_up(primary, standby)
    await standby.execute("SELECT pg_wal_replay_pause()")
    try:
        await write_calls(primary, [call(NOW, service="search")])
        await wait_for(
            standby,
            "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()",
            "WAL received but not replayed",
        )
        assert await services_on(standby) == ["auth"]  # the replica misses the new row
        r = router(cluster)
        route = await r.choose()
        assert (route.target, route.reason) == ("primary", RouteReason.REPLICA_LAGGING)
        assert "WAL replay is paused" in route.checks[0].detail

        result = await asyncio.to_thread(run_query, cluster)
        assert result.returncode == 0, result.stderr
        assert services(result.stdout) == ["auth", "search"]  # the primary's answer
        [line] = warning_lines(result.stderr)
        replica = server_label(DatabaseConfig(cluster.replica_url))
        assert (
            f"analyst queries go to the primary {server_label(DatabaseConfig(cluster.primary_url))}"
            in line
        )
        assert f"{replica} replica_lagging (WAL replay is paused" in line
        assert "answered by the primary" in result.stderr
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")
    await wait_caught_up(primary, standby)
    assert (await router(cluster).choose()).target == "replica"  # back once caught up


@pytest.mark.asyncio
async def test_a_replica_catching_up_is_not_caught_up_before_the_primarys_position(
    cluster: Cluster, admin: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    """Replayed everything received is not caught up: after a pause, the replica is judged
    caught up (lag 0) only once its replay position reaches the primary's, read before the
    check; until then the age of its last replayed commit decides."""
    primary, standby = admin
    await primary.execute("SELECT pg_current_xact_id()")  # a commit for the replica to replay
    await wait_caught_up(primary, standby)
    # The last commit replayed before the pause gets older than the threshold, so that
    # behind the primary that age cannot pass for caught up.
    await wait_for(
        standby,
        "SELECT clock_timestamp() - pg_last_xact_replay_timestamp() > interval '0.5 s'",
        "the last replayed commit to age",
    )
    await standby.execute("SELECT pg_wal_replay_pause()")
    try:
        # A backlog of a few MB of WAL, all received (streaming goes on while paused).
        await primary.execute(
            "CREATE TABLE catch_up AS "
            "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 30000) g"
        )
        written = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
        await wait_for(
            standby, f"SELECT pg_last_wal_receive_lsn() >= '{written}'::pg_lsn", "WAL received"
        )
        [paused] = await router(cluster, max_lag_s=0.5).check()
        assert paused.reason is RouteReason.REPLICA_LAGGING
        assert "WAL replay is paused" in paused.detail and "behind the primary" in paused.detail

        # `pipeline db health` on the standby, given its primary, judges it the same way.
        conn = await asyncpg.connect(cluster.standby.url_for(DATABASE, user=READER))
        try:
            report = await dbhealth.run(
                conn,
                database="standby",
                checks=((replication.NAME, replication.TITLE, replication.run),),
                replication_lag_warn_s=0.5,
                primary=DatabaseConfig(cluster.primary_url),
            )
        finally:
            await conn.close()
        [finding] = report.checks[0].findings
        assert finding.severity is Severity.ACTION and "behind the primary" in finding.what
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")

    # Resumed: check over and over while it replays the backlog. Whatever the timing, a
    # check says lag 0 only if the replica had replayed up to the primary's position the
    # test read before the check.
    r = router(cluster, max_lag_s=0.5)
    deadline = asyncio.get_running_loop().time() + 30
    verdicts: list[str] = []
    while True:
        before = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
        [check] = await r.check()
        state = check.state
        assert state is not None and state.primary_lsn is not None
        assert lsn(state.primary_lsn) >= lsn(before) >= lsn(written)
        caught_up = lsn(state.replay_lsn) >= lsn(state.primary_lsn)
        judged_caught_up = check.detail.startswith("replayed up to the primary's position")
        assert judged_caught_up is caught_up, (check, before)
        if caught_up:
            assert check.lag_s == 0.0
        else:  # the age of its last replayed commit: old, or the backlog's own commit
            assert "behind the primary" in check.detail and check.lag_s != 0.0, check
        verdicts.append(check.detail)
        if caught_up:
            break
        assert asyncio.get_running_loop().time() < deadline, verdicts[-5:]
    assert check.healthy and lsn(state.replay_lsn) >= lsn(written)
    await primary.execute("DROP TABLE catch_up")
    await wait_caught_up(primary, standby)


@pytest.mark.asyncio
async def test_stopped_replica_falls_back_to_the_primary(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.standby.stop_server)
    try:
        r = router(cluster)
        route = await r.choose()
        assert (route.target, route.reason) == ("primary", RouteReason.REPLICA_UNREACHABLE)
        assert r.metrics.routes.labels("primary", "replica_unreachable")._value.get() == 1

        result = await asyncio.to_thread(run_query, cluster)
        assert result.returncode == 0, result.stderr
        assert "auth" in services(result.stdout)
        [line] = warning_lines(result.stderr)
        assert "replica_unreachable" in line and "answered by the primary" in result.stderr
    finally:
        await asyncio.to_thread(cluster.standby.start_server)
    assert (await router(cluster).choose()).target == "replica"


@pytest.mark.asyncio
async def test_a_primary_listed_as_a_replica_is_not_used(cluster: Cluster) -> None:
    reader_on_primary = cluster.primary.url.replace("postgres@", f"{READER}@")
    stopped = cluster.standby.url_for(DATABASE).replace(str(cluster.standby.port), "1")
    route = await router(cluster, stopped, reader_on_primary).choose()
    assert (route.target, route.reason) == ("primary", RouteReason.REPLICA_UNREACHABLE)
    assert [c.reason for c in route.checks] == [
        RouteReason.REPLICA_UNREACHABLE, RouteReason.REPLICA_NOT_IN_RECOVERY,
    ]  # fmt: skip
