"""Replica routing's decisions, with fake probes and a fake clock (no network)."""

from __future__ import annotations

import asyncio
import logging
import math

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from pipeline.analytics.routing import (
    ReplicaRouter,
    ReplicaState,
    RouteReason,
    check_replica,
    judge,
    probe_replica,
    read_primary_lsn,
    server_label,
)
from pipeline.config import AnalyticsConfig, DatabaseConfig
from pipeline.errors import ConfigError, DatabaseRefusedError, DatabaseUnavailableError
from pipeline.metrics import AnalyticsMetrics

PRIMARY = DatabaseConfig(url="postgresql://app:primary-secret@primary:5432/events")
R1 = DatabaseConfig(url="postgresql://analyst:r1-secret@r1:5432/events")
R2 = DatabaseConfig(url="postgresql://analyst@r2:6432/events")

PRIMARY_LSN = "0/5000000"
# Replayed up to the primary's position, though the last replayed commit is an hour old
# (an idle primary).
CAUGHT_UP = ReplicaState(
    in_recovery=True, receiving=True, pending_bytes=0.0, replay_age_s=3600,
    behind_primary_bytes=0.0, replay_lsn=PRIMARY_LSN, primary_lsn=PRIMARY_LSN,
)  # fmt: skip
LAGGING = ReplicaState(
    in_recovery=True, receiving=True, pending_bytes=8192.0, replay_age_s=12,
    behind_primary_bytes=8192.0, primary_lsn=PRIMARY_LSN,
)  # fmt: skip
PRIMARY_STATE = ReplicaState(in_recovery=False)


def behind(bytes_: float, paused: bool, age: float | None, **kw: object) -> ReplicaState:
    """A standby compared with the primary's position: ``bytes_`` behind it."""
    base: dict[str, object] = dict(
        in_recovery=True, receiving=True, pending_bytes=0.0, replay_paused=paused,
        replay_age_s=age, behind_primary_bytes=bytes_, primary_lsn=PRIMARY_LSN,
    )  # fmt: skip
    base.update(kw)
    return ReplicaState(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "reason", "lag"),
    [
        # At or past the primary's position read before the check: lag 0, however old the
        # last replayed commit (an idle primary commits nothing).
        (CAUGHT_UP, RouteReason.HEALTHY_REPLICA, 0.0),
        (behind(-128.0, False, 3600.0), RouteReason.HEALTHY_REPLICA, 0.0),
        # Paused, or without a WAL receiver, but nothing missing: caught up.
        (behind(0.0, True, 30.0), RouteReason.HEALTHY_REPLICA, 0.0),
        (behind(0.0, False, 600.0, receiving=False, pending_bytes=None),
         RouteReason.HEALTHY_REPLICA, 0.0),
        # Replayed everything it received (or receive below replay after a restart) but
        # behind the primary: catching up a backlog, or just reconnected. Not caught up:
        # the age of the last replayed commit decides.
        (behind(16e6, False, 99.0), RouteReason.REPLICA_LAGGING, 99.0),
        (behind(4096.0, False, 99.0, pending_bytes=-16.0), RouteReason.REPLICA_LAGGING, 99.0),
        (behind(4096.0, False, 1.5), RouteReason.HEALTHY_REPLICA, 1.5),
        (LAGGING, RouteReason.REPLICA_LAGGING, 12.0),
        (behind(4096.0, False, 5.0), RouteReason.REPLICA_LAGGING, 5.0),
        # Nothing replayed since start: unknown, so lagging.
        (behind(4096.0, False, None), RouteReason.REPLICA_LAGGING, None),
        # Paused behind the primary: lagging even though the last replayed commit is recent.
        (behind(4096.0, True, 0.2, pending_bytes=4096.0), RouteReason.REPLICA_LAGGING, 0.2),
        (PRIMARY_STATE, RouteReason.REPLICA_NOT_IN_RECOVERY, None),
    ],
)  # fmt: skip
def test_judge_against_the_primarys_position(
    state: ReplicaState, reason: RouteReason, lag: float | None
) -> None:
    got_reason, got_lag, detail = judge(state, max_lag_s=5.0)
    assert (got_reason, got_lag) == (reason, lag) and detail
    assert "primary position unknown" not in detail


@pytest.mark.parametrize(
    ("state", "reason", "lag"),
    [
        # The weaker rule: a WAL receiver runs and replay reached the receive position
        # (receive <= replay: after a restart the receive position can be below replay).
        (ReplicaState(True, True, 0.0, False, 3600.0), RouteReason.HEALTHY_REPLICA, 0.0),
        (ReplicaState(True, True, -16.0, False, 99.0), RouteReason.HEALTHY_REPLICA, 0.0),
        (ReplicaState(True, True, 4096.0, False, 1.5), RouteReason.HEALTHY_REPLICA, 1.5),
        (ReplicaState(True, True, 4096.0, False, 5.0), RouteReason.REPLICA_LAGGING, 5.0),
        (ReplicaState(True, True, 4096.0, True, 0.2), RouteReason.REPLICA_LAGGING, 0.2),
        (ReplicaState(True, True, 0.0, True, 30.0), RouteReason.HEALTHY_REPLICA, 0.0),
        # No WAL receiver: it cannot know what it misses; the age decides, paused never passes.
        (ReplicaState(True, False, 0.0, False, 2.0), RouteReason.HEALTHY_REPLICA, 2.0),
        (ReplicaState(True, False, 0.0, False, 60.0), RouteReason.REPLICA_LAGGING, 60.0),
        (ReplicaState(True, False, None, True, 0.1), RouteReason.REPLICA_LAGGING, 0.1),
        (ReplicaState(True, True, 100.0, False, None), RouteReason.REPLICA_LAGGING, None),
        (ReplicaState(True, False, None, False, None), RouteReason.REPLICA_LAGGING, None),
    ],
)
def test_judge_without_the_primarys_position_judges_the_replica_alone(
    state: ReplicaState, reason: RouteReason, lag: float | None
) -> None:
    got_reason, got_lag, detail = judge(state, max_lag_s=5.0)
    assert (got_reason, got_lag) == (reason, lag)
    assert "primary position unknown" in detail


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
        self.primary_lsns: list[str | None] = []

    async def __call__(
        self, config: DatabaseConfig, timeout_s: float, primary_lsn: str | None
    ) -> ReplicaState:
        self.calls.append(config.url)
        self.primary_lsns.append(primary_lsn)
        answer = self.states[config.url]
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakePrimary:
    """The primary's WAL position (or an exception to raise); records when it was read."""

    def __init__(self, answer: str | Exception = PRIMARY_LSN, log: list[str] | None = None):
        self.answer = answer
        self.log = log if log is not None else []

    async def __call__(self, config: DatabaseConfig, timeout_s: float) -> str:
        self.log.append(f"primary {server_label(config)}")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


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
    primary_position: FakePrimary | None = None,
) -> ReplicaRouter:
    return ReplicaRouter(
        AnalyticsConfig(replicas=replicas, max_lag_s=5.0, check_interval_s=interval_s),
        primary,
        metrics=AnalyticsMetrics(CollectorRegistry()),
        probe=probe,
        primary_position=primary_position or FakePrimary(),
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
        "the replica r1:5432/events (healthy_replica: replayed up to the primary's position "
        "0/5000000)"
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
        (DatabaseUnavailableError("did not answer within ANALYTICS_CHECK_TIMEOUT_S=2s"),
         RouteReason.REPLICA_UNREACHABLE, "did not answer within ANALYTICS_CHECK_TIMEOUT_S=2s"),
        (DatabaseRefusedError("InvalidPasswordError: password authentication failed"),
         RouteReason.REPLICA_UNREACHABLE, "password authentication failed"),
        (PRIMARY_STATE, RouteReason.REPLICA_NOT_IN_RECOVERY, "not in recovery"),
        (LAGGING, RouteReason.REPLICA_LAGGING,
         "replay lag 12.0 s >= 5 s, 8192 bytes behind the primary"),
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


@pytest.mark.asyncio
async def test_the_primarys_position_is_read_before_the_replicas_and_given_to_each() -> None:
    order: list[str] = []

    class Probe(FakeProbe):
        async def __call__(
            self, config: DatabaseConfig, timeout_s: float, primary_lsn: str | None
        ) -> ReplicaState:
            order.append(f"replica {server_label(config)}")
            return await super().__call__(config, timeout_s, primary_lsn)

    probe = Probe({R1.url: LAGGING, R2.url: CAUGHT_UP})
    r = router(probe, R1, R2, primary_position=FakePrimary(log=order))
    assert (await r.choose()).database == R2
    assert order[0] == "primary primary:5432/events" and len(order) == 3
    assert probe.primary_lsns == [PRIMARY_LSN, PRIMARY_LSN]


@pytest.mark.asyncio
async def test_without_the_primarys_position_each_replica_is_judged_alone() -> None:
    alone = ReplicaState(True, True, 0.0, False, 3600.0)  # what the probe reads then
    down = FakePrimary(DatabaseUnavailableError("did not answer"))
    probe = FakeProbe({R1.url: alone})
    route = await router(probe, R1, primary_position=down).choose()
    assert probe.primary_lsns == [None] and down.log == ["primary primary:5432/events"]
    assert route.target == "replica"
    assert route.checks[0].detail == "replayed all WAL received, primary position unknown"

    unread = FakePrimary()
    probe = FakeProbe({R1.url: alone})
    await router(probe, R1, primary=None, primary_position=unread).choose()
    assert probe.primary_lsns == [None] and unread.log == []  # no primary configured


@pytest.mark.asyncio
async def test_watch_without_any_server_warns_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = FakeProbe({R1.url: LAGGING})
    r = router(probe, R1, primary=None, interval_s=0.01)
    task = asyncio.create_task(r.watch())
    try:
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(probe.calls) >= 4:
                break
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(probe.calls) >= 4
    [line] = warnings(caplog)  # not one per interval
    assert "no primary to fall back to" in line


@pytest.mark.asyncio
async def test_a_replica_not_answering_in_time_says_which_setting_bounds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hangs(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(60)

    monkeypatch.setattr(asyncpg, "connect", hangs)
    with pytest.raises(DatabaseUnavailableError) as raised:
        await probe_replica(R1, 0.05, None)
    assert str(raised.value) == "did not answer within ANALYTICS_CHECK_TIMEOUT_S=0.05s"
    check = await check_replica(R1, max_lag_s=5.0, timeout_s=0.05)
    assert check.reason is RouteReason.REPLICA_UNREACHABLE
    assert check.describe() == (
        "r1:5432/events replica_unreachable (did not answer within ANALYTICS_CHECK_TIMEOUT_S=0.05s)"
    )


@pytest.mark.asyncio
async def test_a_refused_login_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuses(*args: object, **kwargs: object) -> None:
        error = asyncpg.InvalidPasswordError('password authentication failed for user "analyst"')
        error.sqlstate = "28P01"
        raise error

    monkeypatch.setattr(asyncpg, "connect", refuses)
    with pytest.raises(DatabaseRefusedError) as raised:
        await probe_replica(R1, 1.0, None)
    assert "password authentication failed" in str(raised.value)
    assert "ANALYTICS_DATABASE_URL" in str(raised.value) and "secret" not in str(raised.value)
    with pytest.raises(DatabaseRefusedError, match="check the login in DATABASE_URL"):
        await read_primary_lsn(PRIMARY, 1.0)
