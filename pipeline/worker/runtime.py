"""Resources one worker process shares between its agents: pool, dead letters, flushers.

:class:`WorkerRuntime` is created by the entry point with the configuration; the faust app
(:mod:`pipeline.worker.app`) has every agent call :meth:`WorkerRuntime.start` before it takes
a record (the first call connects, the others wait for it), and the worker process calls
:meth:`WorkerRuntime.stop` when it stops.
``start`` blocks, retrying with backoff, until PostgreSQL and the broker answer: a worker
that starts during an outage waits instead of crashing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from pipeline import db
from pipeline.config import Config
from pipeline.contract import EventKind
from pipeline.errors import PipelineError, classify_database_error
from pipeline.maintenance import partitions, rollups
from pipeline.metrics import Metrics
from pipeline.worker.deadletter import DeadLetterPublisher
from pipeline.worker.flush import Flusher, RetryPolicy

log = logging.getLogger(__name__)


class WorkerRuntime:
    """Pool, dead-letter publisher and one :class:`Flusher` per topic of one worker."""

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
        self.flushers: dict[EventKind, Flusher] = {}
        self.assigned: set[tuple[str, int]] = set()
        self._started = asyncio.Event()
        self._lock = asyncio.Lock()
        self._prune_warned = False
        w = config.worker
        self.retry = RetryPolicy(w.retry_initial_ms / 1000, w.retry_max_ms / 1000)

    @property
    def topics(self) -> dict[EventKind, str]:
        t = self.config.topics
        return {
            EventKind.API_CALL: t.api_calls,
            EventKind.ANALYSIS: t.analyses,
            EventKind.SYSTEM_LOG: t.logs,
        }

    @property
    def started(self) -> bool:
        return self._started.is_set()

    @property
    def ready(self) -> bool:
        """Assigned at least one partition and no flush is stalled on errors."""
        return (
            self.started and bool(self.assigned) and all(f.healthy for f in self.flushers.values())
        )

    async def start(self) -> None:
        """Connect to PostgreSQL and the broker (retrying until both answer), build flushers,
        and make sure the partitions around now exist. Idempotent."""
        async with self._lock:
            if self.started:
                return
            database = self.config.require_database()
            kafka = self.config.require_kafka()
            attempt = 0
            rng = random.Random()
            while True:
                attempt += 1
                try:
                    self.pool = await db.create_pool(database, application_name="pipeline-worker")
                    async with self.pool.acquire() as conn:
                        await partitions.ensure(conn)
                    break
                except (PipelineError, OSError) as exc:
                    error = classify_database_error(exc)
                    if self.pool is not None:
                        await self.pool.close()
                        self.pool = None
                    delay = self.retry.delay(attempt, rng)
                    log.warning("PostgreSQL not usable yet (%s); retrying in %.1fs", error, delay)
                    self.metrics.database_available.set(0)
                    await asyncio.sleep(delay)
            self.metrics.database_available.set(1)
            publisher = DeadLetterPublisher(
                kafka, self.config.topics.dead_letters, self.config.worker.worker_id
            )
            await publisher.start()
            self.dead_letters = publisher
            for kind, topic in self.topics.items():
                self.flushers[kind] = Flusher(
                    self.pool,
                    group=self.config.worker.group_id,
                    topic=topic,
                    kind=kind,
                    worker_id=self.config.worker.worker_id,
                    dead_letters=publisher,
                    metrics=self.metrics,
                    retry=self.retry,
                    clock=self.clock,
                )
            self._started.set()
            log.info("worker %s connected", self.config.worker.worker_id)

    async def stop(self) -> None:
        """Close the publisher and the pool (after the agents stopped flushing)."""
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
            dropped: list[partitions.PartitionInfo] = []
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
            "partition maintenance: %d created, %d dropped",
            sum(r.created for r in results),
            len(dropped),
        )
