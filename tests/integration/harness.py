"""Running real worker processes against the test suite's broker and PostgreSQL.

A :class:`Pipeline` owns one test's topics (unique names), consumer group and database,
starts ``pipeline worker`` processes with the matching environment, produces workload
records while remembering the offsets the broker acknowledged, and waits until the
PostgreSQL watermark covers them. Nothing here mocks Kafka or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.config import Config, DatabaseConfig, KafkaConfig, TopicsConfig, WorkerConfig
from pipeline.contract import EventKind
from pipeline.embedded import free_port
from pipeline.kafka import client_options, ensure_topics
from pipeline.launch import WorkerProcess
from pipeline.verify import totals_from_database, wait_for_watermarks
from pipeline.worker.undecodable import DECODE_ERRORS
from pipeline.workload import ExpectedTotals, Item, pack
from tests.conftest import unique_name, unique_topics

PARTITIONS = 4

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    database: DatabaseConfig
    kafka: KafkaConfig
    tmp: Path
    group: str = field(default_factory=lambda: unique_name("group"))
    topics: TopicsConfig = field(default_factory=unique_topics)
    workers: list[WorkerProcess] = field(default_factory=list)
    acked: dict[tuple[str, int], int] = field(default_factory=dict)
    broker_copies: list[Item] = field(default_factory=list)
    """Items of records the broker holds twice because :meth:`produce` retried a request
    whose acknowledgement was lost (Tansu has no idempotent producer). The pipeline counts
    what the broker holds; :meth:`expect` adds these to an expectation."""

    @property
    def config(self) -> Config:
        """The settings every worker of this test starts from: short flush intervals and
        retry backoff, so the tests spend their time on behaviour, not waiting."""
        return Config(
            database=self.database,
            kafka=self.kafka,
            topics=self.topics,
            worker=WorkerConfig(
                group_id=self.group,
                flush_interval_ms=200,
                retry_initial_ms=50,
                retry_max_ms=1000,
                shutdown_timeout_s=20,
            ),
        )

    def topic_of(self, kind: EventKind) -> str:
        return self.topics.topic(kind)

    async def create_topics(self) -> None:
        t = self.topics
        names = [*t.source_topics, t.dead_letters]
        await ensure_topics(self.kafka, names, partitions=PARTITIONS)

    def start_worker(
        self, name: str | None = None, *, config: Config | None = None, **settings: Any
    ) -> WorkerProcess:
        """Start a worker of ``config`` (default: :attr:`config`); ``settings`` override
        fields of its WorkerConfig."""
        worker_id = name or f"w{len(self.workers) + 1}"
        config = config or self.config
        config = replace(config, worker=replace(config.worker, **settings))
        worker = WorkerProcess(
            config,
            worker_id=worker_id,
            web_port=free_port(),
            log_path=self.tmp / f"{worker_id}-{len(self.workers)}.log",
            cwd=self.tmp,
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for w in self.workers:
            w.signal(signal.SIGTERM)
        for w in self.workers:
            w.stop(timeout_s=30)

    def logs(self) -> str:
        return "\n\n".join(f"--- {w.worker_id} ---\n{w.log_tail()}" for w in self.workers)

    async def produce(
        self, items: Iterable[Item], *, shape: str = "batched", max_events: int = 500
    ) -> int:
        """Pack and send ``items``; remember the acknowledged offsets. Returns records sent."""
        by_kind: dict[EventKind, list[Item]] = {}
        for item in items:
            by_kind.setdefault(item.kind, []).append(item)
        producer = AIOKafkaProducer(
            **client_options(self.kafka), acks="all", linger_ms=5, max_request_size=4 << 20
        )
        await producer.start()
        ends_before = dict(self.acked)
        contents: dict[bytes, list[Item]] = {}
        try:
            futures = []
            for kind, kind_items in by_kind.items():
                topic = self.topic_of(kind)
                taken = 0
                for record in pack(kind_items, shape, max_events=max_events):  # type: ignore[arg-type]
                    contents[record.value] = kind_items[taken : taken + record.events]
                    taken += record.events
                    futures.append(await producer.send(topic, record.value))
            written: dict[tuple[str, int], set[int]] = {}
            for metadata in await asyncio.gather(*futures):
                key = (metadata.topic, metadata.partition)
                written.setdefault(key, set()).add(metadata.offset)
                self.acked[key] = max(self.acked.get(key, 0), metadata.offset + 1)
        finally:
            await producer.stop()
        await self._find_copies(written, ends_before, contents)
        return len(futures)

    async def _find_copies(
        self,
        written: dict[tuple[str, int], set[int]],
        ends_before: dict[tuple[str, int], int],
        contents: dict[bytes, list[Item]],
    ) -> None:
        """Offsets this call's records left unacknowledged between the partition's end
        before the call and its last acknowledged record hold first copies of retried
        requests: read them and remember their items (see :attr:`broker_copies`)."""
        gaps = {
            key: sorted(set(range(ends_before.get(key, 0), max(offsets) + 1)) - offsets)
            for key, offsets in written.items()
        }
        gaps = {key: offsets for key, offsets in gaps.items() if offsets}
        if not gaps:
            return
        consumer = AIOKafkaConsumer(
            **client_options(self.kafka), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        found = 0
        try:
            for (topic, partition), offsets in gaps.items():
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                consumer.seek(tp, offsets[0])
                wanted = set(offsets)
                while wanted:
                    try:
                        got = await consumer.getmany(tp, timeout_ms=5000)
                    except DECODE_ERRORS:  # a test's own corrupt batch, not our record
                        break
                    assert got, f"cannot read back {topic}[{partition}] offsets {sorted(wanted)}"
                    for message in got[tp]:
                        if message.offset in wanted:
                            wanted.discard(message.offset)
                            items = contents.get(message.value, [])  # else another producer's
                            self.broker_copies.extend(items)
                            found += len(items)
                    if got[tp][-1].offset >= offsets[-1]:
                        break
        finally:
            await consumer.stop()
        if found:
            log.warning(
                "the broker holds %d items twice: the test producer retried requests whose "
                "acknowledgement was lost (offsets %s)",
                found,
                gaps,
            )

    def expect(self, expected: ExpectedTotals) -> ExpectedTotals:
        """``expected`` plus the items the broker holds twice (:attr:`broker_copies`)."""
        if not self.broker_copies:
            return expected
        adjusted = copy.deepcopy(expected)
        adjusted.add_all(self.broker_copies)
        return adjusted

    async def connect(self) -> Any:
        return await asyncpg.connect(self.database.url)

    async def wait_applied(self, timeout_s: float = 120) -> None:
        """Wait until the watermark covers every acknowledged record; fail at once when no
        worker process is left running."""
        conn = await self.connect()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if await wait_for_watermarks(conn, self.group, self.acked, timeout_s=min(2, left)):
                    return
                assert any(w.running for w in self.workers), f"every worker exited\n{self.logs()}"
                assert time.monotonic() < deadline, (
                    f"not everything was applied within {timeout_s}s\n{self.logs()}"
                )
        finally:
            await conn.close()

    async def totals(self) -> ExpectedTotals:
        conn = await self.connect()
        try:
            return await totals_from_database(conn)
        finally:
            await conn.close()

    async def dead_letters(self, *, idle_s: float = 3.0) -> list[Any]:
        """Every message on the dead-letter topic (reads until ``idle_s`` without data)."""
        consumer = AIOKafkaConsumer(
            self.topics.dead_letters,
            **client_options(self.kafka),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        messages: list[Any] = []
        try:
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < idle_s:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    messages.extend(records)
                    idle_since = time.monotonic()
        finally:
            await consumer.stop()
        return messages


def headers_of(message: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in (message.headers or ())}
