"""The dead-letter tools against a broker that is down, restarting or unreachable.

An operator tool must neither hang nor print a traceback when the broker is away. Every
step that talks to the broker is bounded by one budget, ``timeout_s`` (``pipeline dlq
--broker-timeout``, default :data:`DEFAULT_BROKER_TIMEOUT_S`):

- :func:`wait_for_broker` asks the broker for its topic list until it answers, retrying
  with backoff for up to the budget (a broker restarting is ridden out), then raises
  :class:`~pipeline.deadletters.errors.BrokerDownError` naming ``KAFKA_BOOTSTRAP_SERVERS``
  (exit 1). What is not transient fails at once: a host that does not resolve, a broker
  that refuses this client (a :class:`~pipeline.errors.ConfigError`, exit 2). The
  question is :func:`pipeline.kafka.check_topics`, the worker's own start-up check, so
  both classify alike.
- :func:`broker_error` maps what aiokafka raises afterwards onto the same errors, by
  exception class (through :func:`pipeline.producer.errors.is_transient`, the one place
  aiokafka's errors are classified), never by message text.
- :func:`stop_quietly` stops an aiokafka client within :data:`STOP_TIMEOUT_S` without
  letting its shutdown replace the outcome: after the broker went away, aiokafka's
  consumer can raise ``CancelledError`` from ``stop()`` (its fetcher awaits tasks it has
  just cancelled), and its producer waits for batches it can no longer send.
- :func:`~pipeline.logs.quiet_client_logs` keeps aiokafka's own log lines off stderr at
  the default log level: during an outage it logs several ERROR lines per second (one per
  reconnection attempt), and the tools report the outage themselves, in one line.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from pipeline.config import KafkaConfig
from pipeline.deadletters.errors import BrokerDownError, BrokerRefusedError
from pipeline.errors import BrokerUnreachableError, PipelineError
from pipeline.kafka import check_topics
from pipeline.logs import quiet_client_logs as quiet_client_logs  # re-exported
from pipeline.producer.errors import is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long the tools wait for a broker that does not answer (retrying), and how long one
# step may go without progress, before giving up. Long enough to ride out a broker
# restart, short enough for an operator at a terminal; `--broker-timeout` changes it.
DEFAULT_BROKER_TIMEOUT_S = 15.0
# How long stopping a client may take once its broker is gone.
STOP_TIMEOUT_S = 5.0
# Backoff between connection attempts: 0.25 s doubling to 4 s, with jitter.
_BACKOFF_INITIAL_S = 0.25
_BACKOFF_MAX_S = 4.0
# The shortest attempt worth making with what is left of the budget.
_LAST_ATTEMPT_S = 0.1

BOOTSTRAP_HINT = "is it running, and is KAFKA_BOOTSTRAP_SERVERS right?"
REFUSED_HINT = "check KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_*"


def describe(exc: BaseException) -> str:
    """``Class: message`` of an exception (aiokafka's errors already start with their
    class name; a bare ``TimeoutError()`` has no message)."""
    if isinstance(exc, KafkaError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def down(
    kafka: KafkaConfig, doing: str, cause: str, *, waited_s: float | None = None
) -> BrokerDownError:
    """The error for a broker that does not answer while ``doing`` something."""
    waited = "" if waited_s is None else f" (tried for {waited_s:.0f}s)"
    return BrokerDownError(
        f"cannot reach the Kafka broker at {kafka.bootstrap}{waited} while {doing} "
        f"({cause}); {BOOTSTRAP_HINT} (--broker-timeout waits longer)"
    )


def broker_error(
    kafka: KafkaConfig, exc: Exception, *, doing: str, refused_hint: str = REFUSED_HINT
) -> PipelineError | None:
    """The pipeline's view of ``exc``, raised by aiokafka (or a socket) while ``doing``
    something with the broker; None for anything else (a bug, which the caller lets
    propagate). The caller raises the result ``from exc``.

    Pipeline errors are returned as they are. Transient errors (no connection, a timeout,
    a retriable Kafka error: :func:`~pipeline.producer.errors.is_transient`) become
    :class:`BrokerDownError`; any other Kafka error means the broker refuses this client:
    :class:`BrokerRefusedError` with ``refused_hint``.
    """
    if isinstance(exc, PipelineError):
        return exc
    if is_transient(exc):
        return down(kafka, doing, describe(exc))
    if isinstance(exc, KafkaError):
        return BrokerRefusedError(
            f"the Kafka broker at {kafka.bootstrap} refused {doing} ({describe(exc)}); "
            f"{refused_hint}"
        )
    return None


async def wait_for_broker(
    kafka: KafkaConfig, *, timeout_s: float, doing: str, waited_s: float = 0.0
) -> None:
    """Return once the broker answers (it lists its topics); retry for up to
    ``timeout_s`` seconds while it cannot be reached. ``waited_s``: how long the caller
    already went without an answer (added to the time the error reports).

    Raises :class:`BrokerDownError` when the budget is spent (each attempt is bounded by
    what is left of it: a broker that accepts connections but never answers counts as
    down), and :class:`~pipeline.errors.ConfigError` at once when no bootstrap host
    resolves or the broker refuses this client.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout_s
    rng = random.Random()
    attempt = 0
    cause: str | None = None
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                await check_topics(kafka, {})
            return
        except BrokerUnreachableError as exc:  # check_topics' transient failure
            cause = describe(exc.__cause__) if exc.__cause__ is not None else str(exc)
        except TimeoutError:  # the budget ran out during an attempt: keep an earlier cause
            cause = cause or f"no answer within {timeout_s:g}s"
        remaining = deadline - loop.time()
        if remaining < _LAST_ATTEMPT_S:
            raise down(kafka, doing, cause, waited_s=waited_s + loop.time() - started)
        delay = min(_BACKOFF_MAX_S, _BACKOFF_INITIAL_S * 2.0 ** (attempt - 1))
        delay = min(delay * rng.uniform(0.5, 1.0), remaining - _LAST_ATTEMPT_S)
        log.info(
            "the Kafka broker at %s cannot be reached yet (%s); retrying in %.1fs",
            kafka.bootstrap,
            cause,
            delay,
        )
        await asyncio.sleep(delay)


async def stop_quietly(client: Any, what: str) -> None:
    """Stop an aiokafka client (``await client.stop()``), at most :data:`STOP_TIMEOUT_S`;
    failures are logged, not raised, unless this task itself is being cancelled."""
    task = asyncio.current_task()
    try:
        await asyncio.wait_for(client.stop(), STOP_TIMEOUT_S)
    except asyncio.CancelledError:
        if task is not None and task.cancelling():
            raise
        log.info("stopping the Kafka %s was interrupted by the client itself", what)
    except Exception as exc:  # TimeoutError included: the broker is gone, give up on it
        log.info("stopping the Kafka %s failed: %s", what, describe(exc))


async def bounded(
    kafka: KafkaConfig,
    step: Awaitable[T],
    *,
    timeout_s: float,
    doing: str,
    refused_hint: str = REFUSED_HINT,
) -> T:
    """Await one broker ``step`` for at most ``timeout_s`` seconds; raise what it raises
    as :func:`broker_error` classifies it (:class:`BrokerDownError` when the time is up)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await step
    except TimeoutError as exc:
        raise down(kafka, doing, f"no answer within {timeout_s:g}s") from exc
    except Exception as exc:
        error = broker_error(kafka, exc, doing=doing, refused_hint=refused_hint)
        if error is None:
            raise
        raise error from exc
