"""Waiting for PostgreSQL and the broker at start-up, for every long-running process.

A worker and an HTTP server both start by connecting to services that may be restarting.
:func:`until_ready` runs one start-up step until it succeeds: transient failures
(:func:`classify_startup`: a connection refused, a timeout, a broker restarting) are
retried with backoff, one warning line each, until the deadline (``PIPELINE_STARTUP_TIMEOUT_S``
from the start); then :class:`~pipeline.errors.StartupTimeoutError` names the setting to
check. Anything else (wrong credentials, an unknown host or database, a missing topic: a
configuration error; or a bug) is raised at once, so the process exits saying why.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from pipeline.errors import (
    BrokerUnreachableError,
    PipelineError,
    StartupTimeoutError,
    classify_database_error,
)

__all__ = ["classify_startup", "until_ready"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def classify_startup(exc: BaseException) -> PipelineError | None:
    """The pipeline's view of a start-up failure; None for a bug. PostgreSQL and network
    errors as :func:`~pipeline.errors.classify_database_error` maps them; what aiokafka
    raises while the broker is down or restarting (connection errors, timeouts, retriable
    errors), and a step that did not answer before the deadline, as retriable."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, TimeoutError):
        return BrokerUnreachableError(f"no answer ({exc!r})")
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and exc.retriable
    ):
        return BrokerUnreachableError(f"cannot reach the Kafka broker ({exc!r})")
    if type(exc).__module__.startswith("asyncpg") or isinstance(exc, OSError):
        return classify_database_error(exc)
    return None


async def until_ready(
    what: str,
    setting: str,
    step: Callable[[], Awaitable[T]],
    *,
    deadline: float | None,
    timeout_s: float,
    delay: Callable[[int, random.Random], float],
    on_state: Callable[[bool], None] | None = None,
) -> T:
    """Run ``step`` until it succeeds and return its result (see the module docstring).

    ``deadline``: monotonic time after which a transient failure ends start-up (None:
    never); a step that hangs ends there too. ``timeout_s`` is the setting's value, for
    the message. ``delay(attempt, rng)`` is the backoff before attempt ``attempt + 1``.
    ``on_state(ok)`` is told whether the service answered (a gauge).
    """
    rng = random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            if deadline is None:
                result = await step()
            else:
                result = await asyncio.wait_for(step(), max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            error = classify_startup(exc)
            if error is None or (error is exc and not error.retriable):
                raise
            if not error.retriable:
                raise error from exc
            if on_state is not None:
                on_state(False)
            if deadline is not None and time.monotonic() >= deadline:
                raise StartupTimeoutError(
                    f"{what} did not answer within {timeout_s:g}s of start-up (last error: "
                    f"{error}); check {setting}, or raise PIPELINE_STARTUP_TIMEOUT_S "
                    "(0 waits forever)"
                ) from exc
            pause = delay(attempt, rng)
            if deadline is not None:  # one last attempt at the deadline
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            log.warning("%s not usable yet (%s); retrying in %.1fs", what, error, pause)
            await asyncio.sleep(pause)
        else:
            if on_state is not None:
                on_state(True)
            return result
