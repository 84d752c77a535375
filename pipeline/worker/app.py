"""The faust app: built by :func:`create_app` from the configuration, never at import time.

One agent per source topic reads with ``stream.noack_take(max_records, within)``: faust
never acks those events by itself. Takes are decoded and validated into the topic's
pending :class:`~pipeline.worker.batch.Batch` (:mod:`pipeline.worker.ingest`), flushed by
size (``flush_max_events``) or age (``flush_interval_ms``) through the topic's
:class:`~pipeline.worker.flush.Flusher`; when ``flush`` returns, the batch's effect and
watermark are committed in PostgreSQL, and only then are its events acked.
Faust commits acked offsets to Kafka later: those commits only tell a restarted consumer
where to start fetching; the PostgreSQL watermark decides what is applied.

Rebalances: faust pauses the revoked partitions and waits for the unacked events that
agents hold (``wait_empty``); the agent finishes its flush and acks, and the new owner
starts where Kafka's commit says, skipping whatever the watermark already covers. A worker
that keeps a partition too long (a zombie) is fenced by the watermark row lock.

Web views on the worker's port: ``/metrics`` (Prometheus), ``/healthz`` (the process
answers), ``/readyz`` (200 when partitions are assigned and no flush is stalled).
Leader-only timers run partition maintenance and the incremental rollup refresh.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.config import Config, KafkaConfig
from pipeline.contract import EventKind
from pipeline.kafka import client_options
from pipeline.worker.batch import Batch
from pipeline.worker.flush import Flusher
from pipeline.worker.ingest import TopicIngest
from pipeline.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def _credentials(kafka: KafkaConfig) -> Any:
    options = client_options(kafka)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=options.get("ssl_context"),
        )
    return options.get("ssl_context")


def create_app(config: Config, runtime: WorkerRuntime) -> Any:
    """Build the worker's faust app (agents, views, timer) for ``config``."""
    kafka = config.require_kafka()
    worker = config.worker
    app = faust.App(
        worker.group_id,
        broker=[f"kafka://{server}" for server in kafka.bootstrap_servers],
        broker_credentials=_credentials(kafka),
        broker_client_id=kafka.client_id,
        autodiscover=False,
        store="memory://",
        web_enabled=True,
        web_host="0.0.0.0",
        web_port=worker.web_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        # A new group's first join waits for the rebalance timeout: keep it short.
        broker_rebalance_timeout=10,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_interval=1.0,
        # Our agents ack after their own flush; faust must not wait for acks on shutdown
        # (an unflushable batch would hang it): unacked records are simply redelivered.
        stream_wait_empty=False,
        stream_buffer_maxsize=8_192,
        consumer_max_fetch_size=8 * 1024 * 1024,
        producer_acks=-1,
        topic_replication_factor=1,
        # faust declares only its internal topics (the leader-election topic that
        # on_leader timers need); source topics are created by operators with the right
        # partition count, never implicitly.
        topic_allow_declare=True,
    )
    interval_s = worker.flush_interval_ms / 1000

    for kind, topic_name in runtime.topics.items():
        topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
        app.agent(topic, name=f"ingest-{kind.value}")(
            _make_agent(runtime, kind, worker.flush_max_records, interval_s)
        )

    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        runtime.assigned = {(tp.topic, tp.partition) for tp in assigned}
        runtime.metrics.assigned_partitions.set(len(runtime.assigned))
        log.info("assigned %d partitions", len(assigned))

    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    @app.timer(interval=worker.maintenance_interval_s, on_leader=True)  # type: ignore[untyped-decorator]
    async def maintenance() -> None:
        try:
            await runtime.maintain_partitions()
        except Exception:
            log.exception("partition maintenance failed; the next run retries")

    @app.timer(interval=worker.rollup_interval_s, on_leader=True)  # type: ignore[untyped-decorator]
    async def rollups() -> None:
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
        return web.json({"alive": True, "worker_id": worker.worker_id})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        body = {
            "ready": runtime.ready,
            "started": runtime.started,
            "assigned_partitions": len(runtime.assigned),
            "flushing": {k.value: f.healthy for k, f in runtime.flushers.items()},
        }
        return web.json(body, status=200 if runtime.ready else 503)

    return app


def _make_agent(
    runtime: WorkerRuntime, kind: EventKind, max_records: int, interval_s: float
) -> Any:
    async def agent(stream: Any) -> None:
        await runtime.start()  # the first agent connects; the others wait for it
        flusher = runtime.flushers[kind]
        ingest = TopicIngest(
            flusher,
            kind,
            max_events=runtime.config.worker.flush_max_events,
            interval_s=interval_s,
            ack=stream.ack,
            metrics=runtime.metrics,
            clock=runtime.clock,
            on_flushed=lambda batch, _result: _update_lag(stream, runtime, flusher, batch),
        )
        timer = asyncio.ensure_future(ingest.run_timer())
        try:
            # Short takes keep decoding spread out; flushes follow size or age, not takes.
            async for events in stream.noack_take(max_records, within=min(interval_s, 0.1)):
                await ingest.add(events)
        finally:
            timer.cancel()
            await ingest.close()

    agent.__name__ = f"ingest_{kind.value}"
    return agent


def _update_lag(stream: Any, runtime: WorkerRuntime, flusher: Flusher, batch: Batch) -> None:
    consumer = stream.app.consumer
    topic = flusher.topic
    for partition in batch.partitions():
        try:
            high = consumer.highwater(faust.types.TP(topic, partition))
        except Exception:  # the partition may have been revoked meanwhile
            continue
        mark = flusher.watermark(partition)
        if high is not None and mark is not None:
            runtime.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - mark))
