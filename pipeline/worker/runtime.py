"""What one worker process holds: the pool, the dead-letter publisher, the stages.

:class:`WorkerRuntime` is created by the entry point with the configuration. The ingest
service (:mod:`pipeline.worker.app`) calls :meth:`WorkerRuntime.start`, which blocks,
retrying with backoff, until PostgreSQL and the broker answer (a worker that starts during
an outage waits instead of crashing; after ``PIPELINE_STARTUP_TIMEOUT_S`` it raises
:class:`~pipeline.errors.StartupTimeoutError` naming the setting to check, and the process
exits 1), starts the dead-letter publisher and builds one
:class:`~pipeline.worker.flush.Flusher` per source topic, the
:class:`~pipeline.worker.engine.IngestEngine` and the
:class:`~pipeline.worker.source.SourceConsumer`. :meth:`WorkerRuntime.stop` releases them.

Leadership for the group-wide timers (partition maintenance, rollups) follows the ingest
consumer's own assignment: the worker that holds partition 0 of the first source topic is
the leader. Exactly one member holds it between rebalances, and no second consumer group
or leader topic is needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

from aiokafka import TopicPartition

from pipeline import db
from pipeline.config import Config
from pipeline.contract import EventKind
from pipeline.kafka import check_topics
from pipeline.maintenance import partitions, rollups
from pipeline.metrics import Metrics
from pipeline.startup import until_ready
from pipeline.worker import offsets
from pipeline.worker.deadletter import DeadLetterPublisher
from pipeline.worker.engine import IngestEngine
from pipeline.worker.flush import Flusher
from pipeline.worker.retry import RetryPolicy, classify
from pipeline.worker.source import SourceConsumer

log = logging.getLogger(__name__)
T = TypeVar("T")


class WorkerRuntime:
    """Pool, dead-letter publisher, flushers, engine and consumer of one worker."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.pool: Any = None
        self.dead_letters: DeadLetterPublisher | None = None
        self.flushers: dict[str, Flusher] = {}
        self.engine: IngestEngine | None = None
        self.source: SourceConsumer | None = None
        self._started = asyncio.Event()
        self.failure: BaseException | None = None
        """Why the ingest service stopped, when it failed (``/healthz`` says 503)."""
        self._prune_warned = False
        self._startup_deadline: float | None = None
        w = config.worker
        self.retry = RetryPolicy(w.retry_initial_ms / 1000, w.retry_max_ms / 1000)

    @property
    def topics(self) -> dict[EventKind, str]:
        """Each event kind's source topic, in the order of :data:`pipeline.kinds.KINDS`."""
        return dict(self.config.topics.sources)

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def assigned(self) -> set[TopicPartition]:
        return set() if self.engine is None else set(self.engine.positioned_partitions)

    @property
    def is_leader(self) -> bool:
        """Holds partition 0 of the first source topic (runs the group-wide timers)."""
        first = next(iter(self.topics.values()))
        return TopicPartition(first, 0) in self.assigned

    @property
    def ready(self) -> bool:
        """Partitions assigned and positioned, the broker answering fetches (see
        :meth:`SourceConsumer.broker_silence_s`), and no flush stalled on errors (PostgreSQL
        or the dead-letter topic)."""
        source = self.source
        return (
            self.started
            and self.engine is not None
            and source is not None
            and bool(self.engine.positioned_partitions)
            and self.engine.healthy
            and source.broker_silence_s() < source.silence_limit_s
        )

    async def start(self) -> None:
        """Connect to PostgreSQL and the broker (retrying until they answer, at most
        ``PIPELINE_STARTUP_TIMEOUT_S``), start the dead-letter publisher, and build the
        stages. Call once; then :meth:`connect_source`."""
        database = self.config.require_database()
        kafka = self.config.require_kafka()
        w = self.config.worker
        if w.startup_timeout_s > 0:
            self._startup_deadline = time.monotonic() + w.startup_timeout_s
        # Every topic may flush on flush_connections connections at once, plus one for
        # positioning, maintenance and the rollup timer.
        needed = len(self.topics) * w.flush_connections + 1
        if database.pool_max_size < needed:
            log.info(
                "connection pool raised from %d to %d (PIPELINE_FLUSH_CONNECTIONS=%d)",
                database.pool_max_size,
                needed,
                w.flush_connections,
            )
            database = dataclasses.replace(database, pool_max_size=needed)

        async def open_database() -> None:
            self.pool = await db.create_pool(database, application_name="pipeline-worker")
            try:
                async with self.pool.acquire() as conn:
                    await partitions.ensure(conn)
            except BaseException:
                await self.pool.close()
                self.pool = None
                raise

        await self._until_ready("PostgreSQL", "DATABASE_URL", open_database)
        self.metrics.database_available.set(1)
        t = self.config.topics
        settings = t.settings()
        brokers = "KAFKA_BOOTSTRAP_SERVERS"
        await self._until_ready("the Kafka broker", brokers, lambda: check_topics(kafka, settings))
        publisher = DeadLetterPublisher(
            kafka, t.dead_letters, w.worker_id, max_bytes=w.dead_letter_max_bytes
        )
        await self._until_ready("the dead-letter producer", brokers, publisher.start)
        self.dead_letters = publisher
        kinds = {topic: kind for kind, topic in self.topics.items()}
        for topic, kind in kinds.items():
            self.flushers[topic] = Flusher(
                self.pool,
                group=w.group_id,
                topic=topic,
                kind=kind,
                worker_id=w.worker_id,
                dead_letters=publisher,
                metrics=self.metrics,
                retry=self.retry,
                clock=self.clock,
                connections=w.flush_connections,
            )
        self.engine = IngestEngine(
            self.flushers,
            kinds,
            max_events=w.flush_max_events,
            max_records=w.flush_max_records,
            interval_s=w.flush_interval_ms / 1000,
            revoke_timeout_s=w.revoke_timeout_ms / 1000,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.source = SourceConsumer(
            kafka,
            group_id=w.group_id,
            topics=list(kinds),
            watermarks=_Watermarks(self),
            listener=self.engine,
            metrics=self.metrics,
            fetch_max_bytes=w.fetch_max_bytes,
            retry=self.retry,
            stopped_retry_s=w.stopped_retry_s,
            rebalance_timeout_ms=w.revoke_timeout_ms + 10_000,
        )
        self._started.set()
        log.info("worker %s connected", w.worker_id)

    async def connect_source(self) -> None:
        """Join the consumer group (after :meth:`start`), retrying like :meth:`start` while
        the broker cannot be reached, within the same start-up timeout."""
        assert self.source is not None, "start() first"
        source = self.source
        await self._until_ready(
            "the Kafka broker (consumer group)", "KAFKA_BOOTSTRAP_SERVERS", source.start
        )
        self._startup_deadline = None  # from here on, outages are waited out

    async def _until_ready(
        self, what: str, setting: str, step: Callable[[], Awaitable[None]]
    ) -> None:
        """Run a start-up ``step`` until it succeeds, at most until the start-up deadline
        (:func:`pipeline.startup.until_ready`); the availability gauge of ``setting``'s
        service follows."""
        gauge = (
            self.metrics.database_available
            if setting == "DATABASE_URL"
            else self.metrics.broker_available
        )
        await until_ready(
            what,
            setting,
            step,
            deadline=self._startup_deadline,
            timeout_s=self.config.worker.startup_timeout_s,
            delay=self.retry.delay,
            on_state=lambda ok: gauge.set(1 if ok else 0),
        )

    async def read_watermarks(self, tps: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """The committed watermarks of ``tps`` (partitions without a row are absent).

        Raises :class:`~pipeline.errors.PipelineError` when PostgreSQL cannot answer.
        """
        wanted = {tp: (tp.topic, tp.partition) for tp in tps}
        topics = sorted({tp.topic for tp in wanted})
        group = self.config.worker.group_id
        marks = await self._in_database(lambda conn: offsets.read_topics(conn, group, topics))
        return {tp: marks[key] for tp, key in wanted.items() if key in marks}

    async def adopt_watermarks(
        self, starts: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Record the first watermark of partitions new to the group (see
        :class:`~pipeline.worker.source.WatermarkStore`)."""
        w = self.config.worker
        keyed = {(tp.topic, tp.partition): offset for tp, offset in starts.items()}
        stored = await self._in_database(
            lambda conn: offsets.adopt(conn, w.group_id, keyed, w.worker_id)
        )
        return {
            tp: stored[(tp.topic, tp.partition)]
            for tp in starts
            if (tp.topic, tp.partition) in stored
        }

    async def _in_database(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(conn)`` on a pooled connection; PostgreSQL errors become
        :class:`~pipeline.errors.PipelineError` (anything else is a bug and propagates)."""
        try:
            async with self.pool.acquire() as conn:
                return await work(conn)
        except Exception as exc:
            error = classify(exc)
            if error is None:
                raise
            raise error from exc

    async def stop(self) -> None:
        """Close the publisher and the pool (after the engine stopped flushing)."""
        if self.dead_letters is not None:
            await self.dead_letters.stop()
            self.dead_letters = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def refresh_rollups(self) -> None:
        """Fold queued base-table changes into the rollups (run by the group's leader)."""
        if self.pool is None:
            return
        async with self.pool.acquire() as conn:
            report = await rollups.refresh_rollups(conn)
        if not report.busy:
            self.metrics.rollups_last_success.set(self.clock())

    async def maintain_partitions(self) -> None:
        """Ensure partitions ahead and prune expired ones (run by the group's leader)."""
        if self.pool is None:
            return
        async with self.pool.acquire() as conn:
            results = await partitions.ensure(conn)
            for r in results:
                if r.created:
                    self.metrics.partitions_created.labels(r.parent_table).inc()
            dropped = partitions.PruneResult()
            if await partitions.can_prune(conn):
                dropped = await partitions.prune(conn)
            elif not self._prune_warned:
                self._prune_warned = True
                log.warning(
                    "this login cannot drop expired partitions (it is not a member of their "
                    "owner, pipeline_migrator): run `pipeline partitions prune` on a schedule "
                    "under the migration login (docs/operations.md)"
                )
            ahead = await conn.fetch(
                "SELECT parent_table, count(*) FILTER (WHERE range_start > now()) AS n "
                "FROM partition_ranges GROUP BY parent_table"
            )
        for row in ahead:
            self.metrics.partitions_ahead.labels(row["parent_table"]).set(row["n"])
        self.metrics.maintenance_last_success.set(self.clock())
        log.info(
            "partition maintenance: %d created, %d dropped, %d expired analysis lifecycles",
            sum(r.created for r in results),
            len(dropped),
            dropped.lifecycle_rows,
        )


class _Watermarks:
    """The runtime's watermark methods as a :class:`~pipeline.worker.source.WatermarkStore`."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.read = runtime.read_watermarks
        self.adopt = runtime.adopt_watermarks
