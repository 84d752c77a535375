"""Retrying a flush: the backoff, and which errors stall the worker rather than end it.

:func:`retry_until_done` runs an attempt until it returns. Between attempts it sleeps
(:class:`RetryPolicy`: capped exponential backoff with jitter) and reports the failure to
``on_retry``. Which errors are retried is decided by :func:`stalls`:

- anything PostgreSQL or the broker said that cannot be pinned on specific records
  (connection lost, PostgreSQL restarting, a deadlock, a missing partition, the dead-letter
  topic unreachable, a missing table until someone migrates) is retried forever: the
  worker stalls, acks nothing, and recovers by itself;
- everything else propagates: a :class:`~pipeline.errors.DataRejectedError` was meant to be
  isolated by the caller, and an exception that is not a pipeline error is a bug, which
  must end the process rather than spin.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pipeline.errors import (
    DatabaseError,
    DataRejectedError,
    PipelineError,
    classify_database_error,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter: attempt n waits up to initial * 2**(n-1)."""

    initial_s: float = 0.1
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        # The exponent is capped first: 2.0 ** 1024 overflows, and a stall may last days.
        ceiling = min(self.max_s, self.initial_s * 2.0 ** min(max(attempt - 1, 0), 64))
        return ceiling * rng.uniform(0.5, 1.0)


def classify(exc: BaseException) -> PipelineError | None:
    """The pipeline's view of an exception from PostgreSQL, the network or the pipeline;
    None for anything else (a bug)."""
    if isinstance(exc, PipelineError):
        return exc
    if type(exc).__module__.startswith("asyncpg") or isinstance(exc, OSError | TimeoutError):
        return classify_database_error(exc)
    return None


def stalls(error: PipelineError) -> bool:
    """Whether ``error`` stalls the flush (retried forever) instead of ending the worker."""
    return error.retriable or (
        isinstance(error, DatabaseError) and not isinstance(error, DataRejectedError)
    )


async def retry_until_done(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    on_retry: Callable[[PipelineError, int, float], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> tuple[T, int]:
    """Run ``attempt`` until it returns; return (its result, the number of attempts).

    ``on_retry(error, attempt, delay)`` is called before each sleep. Raises what
    :func:`stalls` does not retry, and ``asyncio.CancelledError``.
    """
    rng = rng or random.Random()
    n = 0
    while True:
        n += 1
        try:
            return await attempt(), n
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = classify(exc)
            if error is None or not stalls(error):
                raise
            delay = policy.delay(n, rng)
            on_retry(error, n, delay)
            await sleep(delay)
