"""Replica routing's decisions, with fake probes and a fake clock (no network)."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from prometheus_client import CollectorRegistry

from pipeline.analytics.routing import (
    ReplicaRouter,
    ReplicaState,
    RouteReason,
    judge,
    server_label,
)
from pipeline.config import AnalyticsConfig, DatabaseConfig
from pipeline.errors import ConfigError, DatabaseRefusedError, DatabaseUnavailableError
from pipeline.metrics import AnalyticsMetrics

PRIMARY = DatabaseConfig(url="postgresql://app:primary-secret@primary:5432/events")
R1 = DatabaseConfig(url="postgresql://analyst:r1-secret@r1:5432/events")
R2 = DatabaseConfig(url="postgresql://analyst@r2:6432/events")

CAUGHT_UP = ReplicaState(in_recovery=True, receiving=True, pending_bytes=0.0, replay_age_s=3600)
LAGGING = ReplicaState(in_recovery=True, receiving=True, pending_bytes=8192.0, replay_age_s=12)
PRIMARY_STATE = ReplicaState(in_recovery=False)


@pytest.mark.parametrize(
    ("state", "reason", "lag"),
    [
        # An idle primary: the last replayed commit is an hour old, yet nothing is pending.
        (CAUGHT_UP, RouteReason.HEALTHY_REPLICA, 0.0),
        # Replay behind what was received (or receive LSN behind after a restart: <= 0).
        (ReplicaState(True, True, 4096.0, False, 1.5), RouteReason.HEALTHY_REPLICA, 1.5),
        (ReplicaState(True, True, -16.0, False, 99.0), RouteReason.HEALTHY_REPLICA, 0.0),
        (LAGGING, RouteReason.REPLICA_LAGGING, 12.0),
        (ReplicaState(True, True, 4096.0, False, 5.0), RouteReason.REPLICA_LAGGING, 5.0),
        # Paused with WAL pending: lagging even though the last replayed commit is recent.
        (ReplicaState(True, True, 4096.0, True, 0.2), RouteReason.REPLICA_LAGGING, 0.2),
        # Paused with nothing pending: still caught up.
        (ReplicaState(True, True, 0.0, True, 30.0), RouteReason.HEALTHY_REPLICA, 0.0),
        # No WAL receiver: it cannot know what it misses; the age decides, paused never passes.
        (ReplicaState(True, False, 0.0, False, 2.0), RouteReason.HEALTHY_REPLICA, 2.0),
        (ReplicaState(True, False, 0.0, False, 60.0), RouteReason.REPLICA_LAGGING, 60.0),
        (ReplicaState(True, False, None, True, 0.1), RouteReason.REPLICA_LAGGING, 0.1),
        # Nothing replayed since start and WAL pending: unknown, so lagging.
        (ReplicaState(True, True, 100.0, False, None), RouteReason.REPLICA_LAGGING, None),
        (ReplicaState(True, False, None, False, None), RouteReason.REPLICA_LAGGING, None),
        (PRIMARY_STATE, RouteReason.REPLICA_NOT_IN_RECOVERY, None),
    ],
)
def test_judge(state: ReplicaState, reason: RouteReason, lag: float | None) -> None:
    got_reason, got_lag, detail = judge(state, max_lag_s=5.0)
    assert (got_reason, got_lag) == (reason, lag) and detail


def test_server_label_never_shows_a_password() -> None:
    assert server_label(R1) == "r1:5432/events"
    assert server_label(R2) == "r2:6432/events"
    assert server_label(DatabaseConfig(url="postgresql://u:pw@db/e")) == "db:5432/e"
    socket = DatabaseConfig(url="postgresql://postgres@/pipeline?host=/tmp/s&port=5433")
    assert server_label(socket) == "/tmp/s:5433/pipeline"
    assert server_label(DatabaseConfig(url="postgresql://u@h1:1,h2:2/e")) == "h1:1,h2:2/e"
    assert server_label(DatabaseConfig(url="postgresql://u@h")) == "h:5432/u"


class FakeProbe:
    """Answers from ``states`` (a state, or an exception to raise) per replica URL."""

    def __init__(self, states: dict[str, ReplicaState | Exception]) -> None:
        self.states = states
        self.calls: list[str] = []

    async def __call__(self, config: DatabaseConfig, timeout_s: float) -> ReplicaState:
        self.calls.append(config.url)
        answer = self.states[config.url]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def router(
    probe: FakeProbe,
    *replicas: DatabaseConfig,
    primary: DatabaseConfig | None = PRIMARY,
    clock: Clock | None = None,
    interval_s: float = 30.0,
) -> ReplicaRouter:
    return ReplicaRouter(
        AnalyticsConfig(replicas=replicas, max_lag_s=5.0, check_interval_s=interval_s),
        primary,
        metrics=AnalyticsMetrics(CollectorRegistry()),
        probe=probe,
        clock=clock or Clock(),
    )


def routes(r: ReplicaRouter, target: str, reason: RouteReason) -> float:
    value: float = r.metrics.routes.labels(target, reason.value)._value.get()
    return value


def gauge(r: ReplicaRouter, which: str, replica: DatabaseConfig) -> float:
    metric = r.metrics.replica_lag if which == "lag" else r.metrics.replica_healthy
    value: float = metric.labels(server_label(replica))._value.get()
    return value


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.asyncio
async def test_a_healthy_replica_answers(caplog: pytest.LogCaptureFixture) -> None:
    r = router(FakeProbe({R1.url: CAUGHT_UP}), R1)
    route = await r.choose()
    assert (route.database, route.target, route.reason) == (R1, "replica", "healthy_replica")
    assert route.describe() == (
        "the replica r1:5432/events (healthy_replica: replayed all WAL received)"
    )
    assert routes(r, "replica", RouteReason.HEALTHY_REPLICA) == 1
    assert (gauge(r, "lag", R1), gauge(r, "healthy", R1)) == (0.0, 1.0)
    assert warnings(caplog) == []


@pytest.mark.asyncio
async def test_the_first_healthy_replica_in_order_wins(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    unreachable = DatabaseUnavailableError("ConnectionRefusedError: connect call failed")
    r = router(FakeProbe({R1.url: unreachable, R2.url: CAUGHT_UP}), R1, R2)
    route = await r.choose()
    assert (route.database, route.reason) == (R2, RouteReason.HEALTHY_REPLICA)
    assert warnings(caplog) == []  # the query is served: an INFO line names the skipped one
    assert any("skipped r1:5432/events replica_unreachable" in m.getMessage()
               for m in caplog.records)  # fmt: skip
    assert math.isnan(gauge(r, "lag", R1)) and gauge(r, "healthy", R1) == 0
    both = router(FakeProbe({R1.url: CAUGHT_UP, R2.url: CAUGHT_UP}), R1, R2)
    assert (await both.choose()).database == R1


@pytest.mark.parametrize(
    ("answer", "reason", "said"),
    [
        (DatabaseUnavailableError("TimeoutError: timed out"), RouteReason.REPLICA_UNREACHABLE,
         "timed out"),
        (DatabaseRefusedError("InvalidPasswordError: password authentication failed"),
         RouteReason.REPLICA_UNREACHABLE, "password authentication failed"),
        (PRIMARY_STATE, RouteReason.REPLICA_NOT_IN_RECOVERY, "not in recovery"),
        (LAGGING, RouteReason.REPLICA_LAGGING, "replay lag 12.0 s >= 5 s"),
    ],
)  # fmt: skip
@pytest.mark.asyncio
async def test_fallback_to_the_primary_says_why_in_one_warning(
    caplog: pytest.LogCaptureFixture,
    answer: ReplicaState | Exception,
    reason: RouteReason,
    said: str,
) -> None:
    r = router(FakeProbe({R1.url: answer}), R1)
    route = await r.choose()
    assert (route.database, route.target, route.reason) == (PRIMARY, "primary", reason)
    assert route.describe() == f"the primary primary:5432/events ({reason.value})"
    assert routes(r, "primary", reason) == 1
    assert gauge(r, "healthy", R1) == 0
    [line] = warnings(caplog)
    assert line.startswith("no healthy read replica, analyst queries go to the primary")
    assert f"r1:5432/events {reason.value}" in line and said in line
    assert "secret" not in caplog.text


@pytest.mark.asyncio
async def test_the_route_reason_is_the_preferred_replicas(caplog: pytest.LogCaptureFixture) -> None:
    r = router(FakeProbe({R1.url: LAGGING, R2.url: DatabaseUnavailableError("down")}), R1, R2)
    route = await r.choose()
    assert route.reason is RouteReason.REPLICA_LAGGING
    [line] = warnings(caplog)
    assert "r1:5432/events replica_lagging" in line
    assert "r2:6432/events replica_unreachable (down)" in line


@pytest.mark.asyncio
async def test_no_replicas_configured_reads_the_primary_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = FakeProbe({})
    r = router(probe)
    route = await r.choose()
    assert (route.database, route.reason) == (PRIMARY, RouteReason.NO_REPLICAS_CONFIGURED)
    assert probe.calls == [] and warnings(caplog) == []
    assert routes(r, "primary", RouteReason.NO_REPLICAS_CONFIGURED) == 1
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        await router(probe, primary=None).choose()


@pytest.mark.asyncio
async def test_without_a_primary_an_unhealthy_replica_is_an_error() -> None:
    r = router(FakeProbe({R1.url: LAGGING}), R1, primary=None)
    with pytest.raises(DatabaseUnavailableError, match="no primary to fall back to") as raised:
        await r.choose()
    assert "r1:5432/events replica_lagging" in str(raised.value)
    assert routes(r, "none", RouteReason.REPLICA_LAGGING) == 1


@pytest.mark.asyncio
async def test_checks_are_cached_for_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    probe = FakeProbe({R1.url: CAUGHT_UP})
    r = router(probe, R1, clock=clock)
    await r.choose()
    clock.now += 29.9
    await r.choose()
    assert len(probe.calls) == 1  # a long-running process reuses the verdict
    await r.choose(fresh=True)
    assert len(probe.calls) == 2
    probe.states[R1.url] = LAGGING
    clock.now += 10
    assert (await r.choose()).target == "replica"  # still the cached verdict
    clock.now += 30
    assert (await r.choose()).target == "primary"
    assert len(probe.calls) == 3
    # One warning per change, not per query.
    for _ in range(3):
        await r.choose(fresh=True)
    assert len(warnings(caplog)) == 1
    assert routes(r, "primary", RouteReason.REPLICA_LAGGING) == 4
    probe.states[R1.url] = CAUGHT_UP
    assert (await r.choose(fresh=True)).target == "replica"
    probe.states[R1.url] = DatabaseUnavailableError("down")
    await r.choose(fresh=True)
    assert len(warnings(caplog)) == 2


@pytest.mark.asyncio
async def test_concurrent_queries_share_one_check() -> None:
    probe = FakeProbe({R1.url: CAUGHT_UP})
    r = router(probe, R1)
    chosen = await asyncio.gather(*(r.choose() for _ in range(5)))
    assert {c.database for c in chosen} == {R1} and len(probe.calls) == 1


@pytest.mark.asyncio
async def test_watch_rechecks_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe({R1.url: LAGGING})
    r = router(probe, R1, interval_s=0.01)
    task = asyncio.create_task(r.watch())
    try:
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(probe.calls) >= 3:
                break
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(probe.calls) >= 3
    assert len(warnings(caplog)) == 1  # the watcher logs the change once
    assert routes(r, "primary", RouteReason.REPLICA_LAGGING) == 0  # no query was routed


@pytest.mark.asyncio
async def test_a_bug_in_the_probe_is_not_taken_for_an_unreachable_replica() -> None:
    r = router(FakeProbe({R1.url: KeyError("bug")}), R1)
    with pytest.raises(KeyError):
        await r.choose()
