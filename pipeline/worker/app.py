"""The worker application: faust runs the process, the ingest engine moves the records.

faust-streaming is the worker application: ``pipeline worker``, signals, logging, the web
server (``/metrics``, ``/healthz``, ``/readyz``) and the timers. Its own Kafka consumer,
producer and agents are switched off (:class:`_NoKafkaBoot`): records reach the flush
through :class:`IngestService`, a service started with the worker that runs the
:class:`~pipeline.worker.engine.IngestEngine` over a
:class:`~pipeline.worker.source.SourceConsumer` (aiokafka ``getmany``). faust's per-record
Stream machinery (an Event, a queue hop and several tasks per record) capped a worker at
~5,000 single-event records/s; the bulk path does not have that cost (docs/architecture.md,
"Why the worker consumes in bulk").

``/readyz`` is 200 when partitions are assigned and positioned, the broker answers fetches
and no flush is stalled;
``/healthz`` is 200 while the ingest service runs and 503 once it failed (the process then
exits non-zero within the shutdown bound).
The group-wide timers (partition maintenance, rollup refresh) run on every worker and do
their work only on the leader (:attr:`WorkerRuntime.is_leader`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline import logs
from pipeline.config import Config
from pipeline.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class _NoKafkaBoot(BootStrategy):
    """faust without its Kafka consumer, producer and agents: web, timers, sensors."""

    enable_kafka = False


class _App(faust.App):
    BootStrategy = _NoKafkaBoot


class IngestService(Service):
    """Runs the ingest engine for the life of the worker process.

    Starting it spawns the run (connect, join the group, consume); it returns at once, so
    the web server answers ``/healthz`` while PostgreSQL is still awaited. If the run ends
    with an exception (a flush bug, a fatal start-up error), ``on_fatal(exc)`` is called:
    the process then exits non-zero. Stopping it stops polling, waits up to
    ``PIPELINE_REVOKE_TIMEOUT_MS`` for the flushes in flight, leaves the group and closes.
    """

    def __init__(self, runtime: WorkerRuntime, on_fatal: Callable[[BaseException], None]) -> None:
        super().__init__()
        self.runtime = runtime
        self._on_fatal = on_fatal
        self._run_task: asyncio.Task[None] | None = None

    async def on_started(self) -> None:
        logs.limit_repeats()  # faust has configured logging by now
        self._run_task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        runtime = self.runtime
        try:
            await runtime.start()
            await runtime.connect_source()
            assert runtime.engine is not None and runtime.source is not None
            await runtime.engine.run(runtime.source)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            runtime.failure = exc
            self._on_fatal(exc)

    async def on_stop(self) -> None:
        runtime = self.runtime
        if runtime.engine is not None:
            runtime.engine.stop()
        if self._run_task is not None and not self._run_task.done():
            done, _ = await asyncio.wait([self._run_task], timeout=5)
            if not done:
                self._run_task.cancel()
        if runtime.engine is not None:
            await runtime.engine.settle(runtime.config.worker.revoke_timeout_ms / 1000)
        if runtime.source is not None:
            try:
                await runtime.source.stop()
            except Exception as exc:  # leaving the group is best effort on the way out
                log.warning("leaving the consumer group failed: %r", exc)
        await runtime.stop()


def create_app(config: Config, runtime: WorkerRuntime) -> Any:
    """Build the worker's faust app (web views, timers) for ``config``."""
    worker = config.worker
    app = _App(
        f"{worker.group_id}-worker",
        autodiscover=False,
        store="memory://",
        web_enabled=True,
        web_host="0.0.0.0",
        web_port=worker.web_port,
        web_in_thread=False,
    )

    @app.timer(interval=worker.maintenance_interval_s)  # type: ignore[untyped-decorator]
    async def maintenance() -> None:
        if not runtime.is_leader:
            return
        try:
            await runtime.maintain_partitions()
        except Exception:
            log.exception("partition maintenance failed; the next run retries")

    @app.timer(interval=worker.rollup_interval_s)  # type: ignore[untyped-decorator]
    async def rollups() -> None:
        if not runtime.is_leader:
            return
        try:
            await runtime.refresh_rollups()
        except Exception:
            log.exception("rollup refresh failed; the next run retries")

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(runtime.metrics.registry),
            content_type=CONTENT_TYPE_LATEST.split(";")[0],
        )

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        failure = runtime.failure
        body: dict[str, Any] = {"alive": failure is None, "worker_id": worker.worker_id}
        if failure is not None:  # the process is on its way out (exit non-zero)
            body["failure"] = f"{type(failure).__name__}: {failure}"
        return web.json(body, status=200 if failure is None else 503)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        engine, source = runtime.engine, runtime.source
        body = {
            "ready": runtime.ready,
            "started": runtime.started,
            "assigned_partitions": len(runtime.assigned),
            "broker_silence_s": round(source.broker_silence_s(), 1) if source is not None else None,
            "leader": runtime.is_leader,
            "flushing": {t: f.healthy for t, f in runtime.flushers.items()},
            "pending_events": engine.pending_events() if engine is not None else {},
            "stopped_partitions": {
                f"{tp.topic}[{tp.partition}]": why for tp, why in source.stopped.items()
            }
            if source is not None
            else {},
        }
        return web.json(body, status=200 if runtime.ready else 503)

    return app
