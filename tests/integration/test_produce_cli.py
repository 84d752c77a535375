"""``pipeline produce`` as an operator runs it: a real process against the test broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import KafkaConfig
from pipeline.kafka import client_options
from pipeline.kinds import KINDS
from pipeline.workload import ExpectedTotals, WorkloadSpec, generate, pack_stream
from tests.conftest import REPO, unique_topics
from tests.integration.test_producer import consume

START_MS = 1_790_000_000_000


def run_produce(
    kafka: KafkaConfig, topics: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PIPELINE_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "KAFKA_IDEMPOTENT_PRODUCER": "true" if kafka.idempotent_producer else "false",
            **topics,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "produce", *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def topic_env() -> dict[str, str]:
    return {setting: topic for topic, setting in unique_topics().settings().items()}


async def partitions_of(kafka: KafkaConfig, topic: str) -> int:
    producer = AIOKafkaProducer(**client_options(kafka))
    await producer.start()
    try:
        return len(await producer.partitions_for(topic))
    finally:
        await producer.stop()


@pytest.mark.asyncio
async def test_produce_writes_the_exact_totals_and_sends_everything(
    kafka: KafkaConfig, tmp_path: Path
) -> None:
    topics = topic_env()
    totals = tmp_path / "totals.json"
    result = run_produce(
        kafka, topics,
        "--events", "2000", "--seed", "7", "--start-ms", str(START_MS),
        "--invalid-fraction", "0.05", "--late-fraction", "0.1", "--duplicate-fraction", "0.2",
        "--partitions", "2", "--totals", str(totals),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = WorkloadSpec(
        seed=7,
        api_calls=2000,
        start_ms=START_MS,
        invalid_fraction=0.05,
        late_fraction=0.1,
        duplicate_fraction=0.2,
    )
    items = list(generate(spec))
    assert totals.read_bytes() == ExpectedTotals.of(items).to_json()
    assert f"produced {len(items):,} events" in result.stdout
    assert "poison by reason:" in result.stdout and "malformed_json" in result.stdout
    assert "producing" in result.stderr and "100.0%" in result.stderr  # progress, not a TTY
    assert "Traceback" not in result.stderr

    names = [topics[spec.topic_setting] for spec in KINDS]
    records = list(pack_stream(items, "batched"))  # deterministic: what the command sent
    messages = await consume(kafka, names, until=len(records))
    assert sorted(m.value or b"" for m in messages) == sorted(r.value for r in records)
    assert await partitions_of(kafka, names[0]) == 2


def test_produce_single_records_at_a_rate_quietly(kafka: KafkaConfig, tmp_path: Path) -> None:
    topics = topic_env()
    totals = tmp_path / "totals.json"
    result = run_produce(
        kafka, topics,
        "--events", "400", "--seed", "3", "--start-ms", str(START_MS), "--shape", "single",
        "--rate", "50000", "--invalid-fraction", "0.02", "--quiet", "--totals", str(totals),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    spec = WorkloadSpec(seed=3, api_calls=400, start_ms=START_MS, invalid_fraction=0.02)
    assert totals.read_bytes() == ExpectedTotals.of(generate(spec)).to_json()


def test_an_unreachable_broker_exits_1_with_one_line(tmp_path: Path) -> None:
    from pipeline.embedded import free_port

    kafka = KafkaConfig(bootstrap_servers=(f"127.0.0.1:{free_port()}",))
    result = run_produce(kafka, topic_env(), "--events", "10", "--no-create-topics", "--quiet")
    assert result.returncode == 1
    assert "could not connect to Kafka" in result.stderr and "Traceback" not in result.stderr
