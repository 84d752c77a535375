"""The worker group when the broker goes away: at start-up (memory broker started late, or
never) and mid-stream (a broker that keeps its data across a restart: Tansu on moto's S3).

Every test that moves data ends by comparing PostgreSQL with the generator's exact totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import DatabaseConfig, KafkaConfig
from pipeline.contract import EventKind
from pipeline.embedded import free_port
from pipeline.kafka import client_options
from pipeline.workload import (
    ExpectedTotals,
    Item,
    PackedRecord,
    WorkloadSpec,
    generate,
    pack_stream,
)
from tests.integration.harness import PARTITIONS, Pipeline, headers_of
from tests.integration.restartable import RestartableBroker
from tests.integration.test_worker_delivery import assert_same

NOW_MS = int(time.time() * 1000)
# Small flushes, so that some are in flight when the broker stops.
OUTAGE_SETTINGS: dict[str, Any] = {"flush_max_events": 400, "flush_interval_ms": 100}


def unreachable_kafka() -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=(f"127.0.0.1:{free_port()}",), idempotent_producer=False)


@pytest.mark.asyncio
async def test_a_worker_started_while_the_broker_is_down_waits_and_then_works(
    migrated_database: DatabaseConfig, restartable_broker: RestartableBroker, tmp_path: Path
) -> None:
    """The topics exist (the broker keeps them across its restart); the worker starts
    during the outage, waits (alive, unready) and works once the broker is back."""
    broker = restartable_broker
    stack = Pipeline(migrated_database, broker.kafka_config(), tmp_path)
    await stack.create_topics()
    broker.stop()
    worker = stack.start_worker(startup_timeout_s=120)
    try:
        deadline = time.monotonic() + 60
        while "the Kafka broker not usable yet" not in worker.log_tail():
            assert time.monotonic() < deadline and worker.running, worker.log_tail()
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # a few retries against nothing
        assert worker.running, worker.log_tail()
        status, body = worker.get("/healthz")
        assert status == 200, body  # alive: waiting is not failing
        status, body = worker.get("/readyz")
        assert status == 503, body
        broker.start_again()
        items = list(generate(WorkloadSpec(api_calls=1_000, start_ms=NOW_MS)))
        await stack.produce(items, max_events=100)
        await stack.wait_applied(timeout_s=120)
        assert_same(ExpectedTotals.of(items), await stack.totals(), stack)
        assert worker.wait_ready(30), worker.log_tail()
    finally:
        stack.stop_all()


@pytest.mark.asyncio
async def test_a_worker_that_never_reaches_the_broker_exits_naming_the_setting(
    migrated_database: DatabaseConfig, tmp_path: Path
) -> None:
    stack = Pipeline(migrated_database, unreachable_kafka(), tmp_path)
    started = time.monotonic()
    worker = stack.start_worker(startup_timeout_s=3)
    try:
        code = worker.wait(60)
    finally:
        stack.stop_all()
    took = time.monotonic() - started
    log = worker.log_tail()
    assert code == 1, log
    lines = [line for line in log.splitlines() if "worker stopped" in line]
    assert len(lines) == 1, log
    assert "KAFKA_BOOTSTRAP_SERVERS" in lines[0] and "PIPELINE_STARTUP_TIMEOUT_S" in lines[0]
    assert "Traceback" not in log
    print(f"exited {took:.1f}s after start with PIPELINE_STARTUP_TIMEOUT_S=3")


async def broker_copies(stack: Pipeline, sent: dict[bytes, list[Item]]) -> list[Item]:
    """Items of records the broker holds more than once (a producer re-sent a record whose
    acknowledgement was lost; Tansu has no idempotent producer). Reads every partition of
    the source topics to its end, counts each value, and records the ends in
    ``stack.acked`` (what the workers must apply)."""
    seen: Counter[bytes] = Counter()
    consumer = AIOKafkaConsumer(
        **client_options(stack.kafka), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(
            [TopicPartition(t, p) for t in stack.topics.source_topics for p in range(PARTITIONS)]
        )
        await consumer.seek_to_beginning()
        while got := await consumer.getmany(timeout_ms=2_000):  # until 2 s without data
            for tp, messages in got.items():
                seen.update(m.value for m in messages)
                stack.acked[(tp.topic, tp.partition)] = messages[-1].offset + 1
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka, after a restart
            await consumer.stop()
    missing = [value for value in sent if value not in seen]
    assert not missing, f"{len(missing)} of {len(sent)} records are not on the broker"
    return [item for value, n in seen.items() if n > 1 for item in sent[value] * (n - 1)]


async def readiness_while(stack: Pipeline, until: asyncio.Event) -> set[int]:
    """Every /readyz status the workers answered until ``until`` is set."""
    statuses: set[int] = set()
    while not until.is_set():
        for worker in stack.workers:
            with contextlib.suppress(OSError):
                statuses.add(worker.get("/readyz", timeout_s=1)[0])
        await asyncio.sleep(0.5)
    return statuses


def produce_command(stack: Pipeline, totals: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PIPELINE_"))}
    env.update(stack.config.to_env())
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "produce", "--totals", str(totals), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.asyncio
async def test_broker_stopped_mid_stream_and_started_again_loses_and_doubles_nothing(
    migrated_database: DatabaseConfig,
    restartable_broker: RestartableBroker,
    tmp_path: Path,
) -> None:
    """Two workers and ``pipeline produce --totals`` running; the broker is killed, stays
    down 15 s and comes back on the same address. The producer waits and finishes (exit
    0), the workers keep running (no restart) and say 503 on /readyz meanwhile, and
    PostgreSQL ends up with the producer's totals exactly (plus any record the broker
    holds twice: no idempotent producer on Tansu); no dead letters."""
    broker = restartable_broker
    stack = Pipeline(migrated_database, broker.kafka_config(), tmp_path)
    await stack.create_topics()
    workload = ["--events", "2000", "--start-ms", str(NOW_MS), "--max-record-events", "50"]
    first = stack.start_worker("w1", **OUTAGE_SETTINGS)
    second = stack.start_worker("w2", **OUTAGE_SETTINGS)
    assert first.wait_ready(120) and second.wait_ready(120), stack.logs()
    totals = tmp_path / "totals.json"
    producer = produce_command(stack, totals, *workload, "--rate", "100", "--no-create-topics")
    done = asyncio.Event()
    watching = asyncio.ensure_future(readiness_while(stack, done))
    try:
        await asyncio.sleep(8)
        assert producer.poll() is None, "the producer finished before the outage"
        broker.stop(kill=True)
        stopped_at = time.monotonic()
        await asyncio.sleep(15)
        assert producer.poll() is None, "the producer finished during the outage"
        broker.start_again()
        back_at = time.monotonic()
        output, _ = await asyncio.to_thread(producer.communicate, timeout=300)
        produced_s = time.monotonic() - back_at
        assert producer.returncode == 0, output
        items = list(generate(WorkloadSpec(api_calls=2000, start_ms=NOW_MS)))
        sent = {record.value: its for record, its in packed(items, max_events=50)}
        copies = await broker_copies(stack, sent)
        await stack.wait_applied(timeout_s=300)
        applied_s = time.monotonic() - back_at
        ready_again = first.wait_ready(120) and second.wait_ready(120)
        ready_s = time.monotonic() - back_at
    finally:
        done.set()
        if producer.poll() is None:
            producer.kill()
    statuses = await watching
    try:
        expected = ExpectedTotals.of(items)  # knows event_ids: copies of stored-once kinds
        assert expected.compare(ExpectedTotals.from_json(totals.read_bytes())) == []
        expected.add_all(copies)
        assert_same(expected, await stack.totals(), stack)
        assert first.running and second.running, stack.logs()  # no restart needed
        assert ready_again, stack.logs()
        assert 503 in statuses and 200 in statuses, statuses
        letters = await stack.dead_letters(idle_s=3)
        assert letters == [], [headers_of(m) for m in letters[:5]]
    finally:
        stack.stop_all()
    print(
        f"\nbroker killed, back after {back_at - stopped_at:.1f}s; then: the producer finished "
        f"in {produced_s:.1f}s, everything applied after {applied_s:.1f}s, both workers "
        f"ready after {ready_s:.1f}s; {len(copies)} items on the broker twice; broker "
        f"restart took {broker.timings.get('broker_restart', 0):.1f}s"
    )


def packed(items: Iterable[Item], *, max_events: int) -> Iterator[tuple[PackedRecord, list[Item]]]:
    """``pipeline produce``'s records (pack_stream) with the items each one carries."""
    pending: dict[EventKind, list[Item]] = {}
    for item in items:
        pending.setdefault(item.kind, []).append(item)
    records = pack_stream(
        (i for kind_items in pending.values() for i in kind_items), "batched", max_events
    )
    taken: dict[EventKind, int] = {}
    for record in records:
        start = taken.get(record.kind, 0)
        taken[record.kind] = start + record.events
        yield record, pending[record.kind][start : start + record.events]
