"""Retrying a flush (pipeline.worker.retry): capped backoff with jitter, which errors stall
the worker (retried forever) and which end it, with an injected sleep (no real waiting)."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from pipeline.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailableError,
    DataRejectedError,
    LockTimeoutError,
    MigrationError,
    NoPartitionError,
    PipelineError,
    SchemaMissingError,
)
from pipeline.worker.deadletter import DeadLetterError
from pipeline.worker.retry import RetryPolicy, classify, retry_until_done, stalls


class Attempts:
    """An attempt that raises or returns the scripted outcomes in order."""

    def __init__(self, *outcomes: BaseException | str) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Sleeps:
    """An injected sleep that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Retries:
    def __init__(self) -> None:
        self.calls: list[tuple[PipelineError, int, float]] = []

    def __call__(self, error: PipelineError, attempt: int, delay: float) -> None:
        self.calls.append((error, attempt, delay))


# -- RetryPolicy ----------------------------------------------------------------------------------
def test_delay_doubles_per_attempt_with_jitter_between_half_and_full() -> None:
    policy = RetryPolicy(initial_s=0.1, max_s=30.0)
    rng = random.Random(7)
    for attempt in range(1, 9):
        ceiling = 0.1 * 2 ** (attempt - 1)
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9 and min(delays) < ceiling * 0.6  # jittered


def test_delay_is_capped_at_max_s() -> None:
    policy = RetryPolicy(initial_s=0.1, max_s=2.0)
    rng = random.Random(3)
    delays = [policy.delay(attempt, rng) for attempt in range(6, 60)]
    assert all(1.0 <= d <= 2.0 for d in delays)


# -- classify / stalls ----------------------------------------------------------------------------
def test_pipeline_errors_classify_as_themselves() -> None:
    error = DataRejectedError("bad row", sqlstate="22003")
    assert classify(error) is error


@pytest.mark.parametrize("exc", [OSError("reset"), ConnectionResetError(), TimeoutError()])
def test_network_failures_classify_as_database_unavailable(exc: BaseException) -> None:
    assert isinstance(classify(exc), DatabaseUnavailableError)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), DatabaseUnavailableError),
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), DatabaseUnavailableError),
        (asyncpg.exceptions.UndefinedTableError("no table"), SchemaMissingError),
        (asyncpg.exceptions.NumericValueOutOfRangeError("too big"), DataRejectedError),
    ],
)
def test_asyncpg_errors_classify_by_sqlstate(
    exc: BaseException, expected: type[PipelineError]
) -> None:
    assert type(classify(exc)) is expected


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("bug"), AssertionError()])
def test_anything_else_is_a_bug_not_a_pipeline_error(exc: BaseException) -> None:
    assert classify(exc) is None


@pytest.mark.parametrize(
    "error",
    [
        DatabaseUnavailableError("down"),
        NoPartitionError("no partition", sqlstate="23514"),
        LockTimeoutError("lock"),
        DeadLetterError("dead-letter topic unreachable"),
        DatabaseError("relation does not exist", sqlstate="42P01"),  # fixed by migrating
    ],
)
def test_errors_that_cannot_be_pinned_on_records_stall(error: PipelineError) -> None:
    assert stalls(error)


@pytest.mark.parametrize(
    "error",
    [DataRejectedError("bad value", sqlstate="22003"), ConfigError("bad"), MigrationError("x")],
)
def test_data_and_configuration_errors_do_not_stall(error: PipelineError) -> None:
    assert not stalls(error)


# -- retry_until_done -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_first_success_returns_with_one_attempt_and_no_sleep() -> None:
    sleeps, retries = Sleeps(), Retries()
    result = await retry_until_done(
        Attempts("ok"), policy=RetryPolicy(), on_retry=retries, sleep=sleeps
    )
    assert result == ("ok", 1)
    assert sleeps.delays == [] and retries.calls == []


@pytest.mark.asyncio
async def test_stalling_errors_are_retried_with_backoff_until_the_attempt_returns() -> None:
    down = DatabaseUnavailableError("down")
    attempts = Attempts(down, OSError("connection reset"), "done")
    sleeps, retries = Sleeps(), Retries()
    policy = RetryPolicy(initial_s=1.0, max_s=8.0)

    result = await retry_until_done(
        attempts, policy=policy, on_retry=retries, sleep=sleeps, rng=random.Random(5)
    )

    assert result == ("done", 3)
    assert [(type(e), n) for e, n, _ in retries.calls] == [
        (DatabaseUnavailableError, 1),
        (DatabaseUnavailableError, 2),  # the OSError, classified
    ]
    assert retries.calls[0][0] is down
    assert sleeps.delays == [d for _, _, d in retries.calls]
    assert 0.5 <= sleeps.delays[0] <= 1.0 and 1.0 <= sleeps.delays[1] <= 2.0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "error", [DataRejectedError("bad value", sqlstate="22P02"), ValueError("a bug")]
)
async def test_data_errors_and_bugs_propagate_at_once(error: Exception) -> None:
    attempts, sleeps = Attempts(error, "never"), Sleeps()
    with pytest.raises(type(error)) as raised:
        await retry_until_done(attempts, policy=RetryPolicy(), on_retry=Retries(), sleep=sleeps)
    assert raised.value is error
    assert attempts.calls == 1 and sleeps.delays == []


@pytest.mark.asyncio
async def test_cancellation_of_the_attempt_propagates_without_retry() -> None:
    attempts, sleeps = Attempts(asyncio.CancelledError(), "never"), Sleeps()
    with pytest.raises(asyncio.CancelledError):
        await retry_until_done(attempts, policy=RetryPolicy(), on_retry=Retries(), sleep=sleeps)
    assert attempts.calls == 1 and sleeps.delays == []


@pytest.mark.asyncio
async def test_cancellation_during_the_backoff_sleep_ends_the_retries() -> None:
    attempts = Attempts(DatabaseUnavailableError("down"), "never")
    asleep = asyncio.Event()

    async def forever(delay: float) -> None:
        asleep.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(
        retry_until_done(attempts, policy=RetryPolicy(), on_retry=Retries(), sleep=forever)
    )
    await asleep.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts.calls == 1


@pytest.mark.asyncio
async def test_a_stall_of_more_than_1024_attempts_is_still_retried() -> None:
    attempts = Attempts(*[DatabaseUnavailableError("down")] * 1100, "done")
    sleeps = Sleeps()
    result = await retry_until_done(
        attempts,
        policy=RetryPolicy(initial_s=0.1, max_s=30.0),
        on_retry=Retries(),
        sleep=sleeps,
        rng=random.Random(1),
    )
    assert result == ("done", 1101)
    assert max(sleeps.delays) <= 30.0
