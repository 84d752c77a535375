"""The ``pipeline http`` process: start-up, serving, graceful shutdown.

:func:`serve` connects to PostgreSQL (API keys) and the broker, each retried while it is
transiently unavailable until ``PIPELINE_STARTUP_TIMEOUT_S`` (then
:class:`~pipeline.errors.StartupTimeoutError` names the setting to check), checks that the
``api_keys`` table and every kind's topic exist (else :class:`~pipeline.errors.ConfigError`
saying what to run), then listens. A probe asks the broker for metadata every 2 s
(``/readyz``, and 503s without waiting while it does not answer).

Returns after ``stop`` is set (the CLI sets it on SIGTERM/SIGINT): the listening socket is
closed and ``/readyz`` says 503 at once, requests under way (a body still arriving
included) get ``shutdown_timeout_s`` to finish, answers carry ``Connection: close``, then
the connections, the producer and the pool are closed. After start-up nothing but a bug ends
it early: a broker or PostgreSQL outage is answered with 503s until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline import apikeys, db
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError
from pipeline.http.app import Ingest, build_app
from pipeline.http.keys import KeyCache
from pipeline.http.publish import Publisher
from pipeline.http.ratelimit import RateLimiter
from pipeline.kafka import check_topics
from pipeline.metrics import HttpMetrics
from pipeline.startup import until_ready
from pipeline.worker.retry import RetryPolicy

__all__ = ["serve"]

log = logging.getLogger(__name__)

_PROBE_INTERVAL_S: Final = 2.0


class _RedactKeys(logging.Filter):
    """Keys out of every log line, the libraries' included: aiohttp logs a malformed
    request with its header lines (``Authorization: Bearer evk_...`` among them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            trace = logging.Formatter().formatException(record.exc_info)
            if apikeys.PREFIX in trace:
                record.exc_info, record.exc_text = None, None
                message = f"{message}\n{trace}"
        if apikeys.PREFIX in message:
            record.msg, record.args = apikeys.redact(message), ()
        return True


_REDACT_KEYS: Final = _RedactKeys()


class _Stopped(Exception):
    """``stop`` was set during start-up."""


async def _unless_stopped(step: Awaitable[Any], stop: asyncio.Event) -> Any:
    """``await step``, unless ``stop`` is set first: then it is cancelled, :class:`_Stopped`."""
    task = asyncio.ensure_future(step)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise _Stopped


# Start-up retries: 0.1 s doubling to 5 s, jittered.
_STARTUP_RETRY: Final = RetryPolicy(initial_s=0.1, max_s=5.0)


async def _require_api_keys_table(pool: Any) -> None:
    async with pool.acquire() as conn:
        found = await conn.fetchval("SELECT to_regclass('api_keys') IS NOT NULL")
    if not found:
        raise ConfigError(
            "the database has no api_keys table: run `pipeline migrate up` (migration 0012), "
            "or point DATABASE_URL at the pipeline's database"
        )


async def _probe(publisher: Publisher, metrics: HttpMetrics) -> None:
    while True:
        await asyncio.sleep(_PROBE_INTERVAL_S)
        await publisher.probe()
        metrics.broker_available.set(1 if publisher.available else 0)


async def serve(
    config: Config,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    on_listening: Callable[[str, int], None] | None = None,
) -> None:
    """Run the server until ``stop`` is set; see the module docstring.

    ``on_listening(host, port)`` is called once the socket listens (the port is the real
    one when ``PIPELINE_HTTP_PORT`` is 0). Raises :class:`ConfigError` (exit 2) or
    :class:`StartupTimeoutError` (exit 1) when it cannot start.
    """
    for handler in logging.getLogger().handlers:
        if _REDACT_KEYS not in handler.filters:
            handler.addFilter(_REDACT_KEYS)
    try:
        await _serve(config, stop, registry, on_listening)
    except _Stopped:
        log.info("stopped during start-up")


async def _serve(
    config: Config,
    stop: asyncio.Event,
    registry: CollectorRegistry | None,
    on_listening: Callable[[str, int], None] | None,
) -> None:
    settings = config.http
    kafka = config.require_kafka()
    database = config.require_database()
    timeout_s = config.worker.startup_timeout_s
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    metrics = HttpMetrics(registry)

    async def ready(what: str, setting: str, step: Callable[[], Awaitable[Any]]) -> Any:
        waiting = until_ready(
            what, setting, step, deadline=deadline, timeout_s=timeout_s, delay=_STARTUP_RETRY.delay
        )
        return await _unless_stopped(waiting, stop)

    # Every kind's topic must exist (the server writes them all); the dead-letter one need not.
    sources = {t: v for t, v in config.topics.settings().items() if t != config.topics.dead_letters}

    pool = await ready(
        "PostgreSQL",
        "DATABASE_URL",
        lambda: db.create_pool(database, application_name="pipeline-http"),
    )
    publisher = Publisher(kafka, config.topics, publish_timeout_s=settings.publish_timeout_s)
    keys = KeyCache(pool, ttl_s=settings.key_cache_ttl_s)
    runner: web.AppRunner | None = None
    probe: asyncio.Task[None] | None = None
    try:
        await _require_api_keys_table(pool)
        await ready(
            "the Kafka broker", "KAFKA_BOOTSTRAP_SERVERS", lambda: check_topics(kafka, sources)
        )
        await ready("the Kafka broker", "KAFKA_BOOTSTRAP_SERVERS", publisher.start)
        metrics.broker_available.set(1)
        ingest = Ingest(
            config=settings,
            keys=keys,
            limiter=RateLimiter(settings.rate_limit_events_per_s, settings.rate_limit_burst_events),
            publisher=publisher,
            metrics=metrics,
        )
        runner = web.AppRunner(
            build_app(ingest),
            access_log=None,  # one line per request is too many; see the metrics
            auto_decompress=False,  # pipeline.http.body inflates, bounded by the body limit
            keepalive_timeout=settings.keepalive_timeout_s,
            shutdown_timeout=2.0,  # the drain below has waited for requests already
            handle_signals=False,
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        log.info("accepting events on http://%s:%s/v1/events", host, port)
        if on_listening is not None:
            on_listening(host, port)
        probe = asyncio.create_task(_probe(publisher, metrics), name="broker-probe")
        probe.add_done_callback(lambda _: stop.set())  # it ends only by a bug: stop, exit 1
        await stop.wait()
        log.info(
            "stopping: finishing requests under way (at most %gs)", settings.shutdown_timeout_s
        )
        # No new connections; requests under way (bodies still arriving included: aiohttp's
        # own shutdown would stop reading them) finish before the connections are closed.
        ingest.stopping = True
        for listening in list(runner.sites):
            await listening.stop()
        if not await ingest.drain(settings.shutdown_timeout_s):
            log.warning(
                "%d requests still under way after PIPELINE_HTTP_SHUTDOWN_TIMEOUT_S (%gs); "
                "they are cut off",
                ingest.in_flight,
                settings.shutdown_timeout_s,
            )
        if probe.done() and not probe.cancelled() and probe.exception() is not None:
            failure = probe.exception()
            raise PipelineError(f"the broker probe failed: {failure!r}") from failure
    finally:
        if runner is not None:
            await runner.cleanup()  # closes the connections left (idle ones, after a drain)
        if probe is not None and not probe.done():
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(keys.close(), 5.0)
        try:  # a stop waits for records in flight: at most the publish timeout
            await asyncio.wait_for(publisher.close(), settings.publish_timeout_s + 5.0)
        except Exception as exc:
            log.warning("the Kafka producer did not stop cleanly: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pool.close(), 5.0)
    log.info("stopped")
