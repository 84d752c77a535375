"""The restartable broker fixture: records acknowledged before an outage are all there after
the broker process stopped and started again on the same port (Tansu on moto's S3)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from pipeline.config import KafkaConfig
from pipeline.kafka import client_options, ensure_topics, producer_options
from tests.conftest import unique_name
from tests.integration.restartable import RestartableBroker

RECORDS = 200
ROUNDS = 10
PARTITIONS = 3
TIMEOUT_MS = 30_000  # generous: every request is an S3 round trip to one Python process


async def produce(config: KafkaConfig, topic: str) -> dict[bytes, tuple[int, int]]:
    """Send RECORDS small records (acks=all) in ROUNDS waves, so each partition holds
    several batch objects in S3; return each value's acknowledged (partition, offset)."""
    producer = AIOKafkaProducer(
        **producer_options(config, max_request_size=1 << 20), request_timeout_ms=TIMEOUT_MS
    )
    await producer.start()
    acked: dict[bytes, tuple[int, int]] = {}
    try:
        for wave in range(ROUNDS):
            values = [f"record-{wave:02d}-{i:03d}".encode() for i in range(RECORDS // ROUNDS)]
            futures = [await producer.send(topic, v, key=v) for v in values]
            for value, md in zip(values, await asyncio.gather(*futures), strict=True):
                acked[value] = (md.partition, md.offset)
    finally:
        await producer.stop()
    return acked


async def read_all(config: KafkaConfig, topic: str, *, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the start (no consumer group); stops at RECORDS."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(config),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=TIMEOUT_MS,
    )
    await consumer.start()
    got: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < RECORDS and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(messages)
    finally:
        await consumer.stop()
    return got


async def refuses_clients(config: KafkaConfig, port: int) -> bool:
    """Nothing listens on ``port`` and a Kafka client fails to bootstrap."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return False
    probe = AIOKafkaConsumer(**client_options(config), group_id=None, request_timeout_ms=2000)
    try:
        await probe.start()
    except KafkaConnectionError:
        return True
    finally:
        await probe.stop()
    return False


@pytest.mark.asyncio
async def test_records_survive_a_broker_restart(restartable_broker: RestartableBroker) -> None:
    broker = restartable_broker
    config = broker.kafka_config()
    topic = unique_name("restart")
    await ensure_topics(config, [topic], partitions=PARTITIONS)

    began = time.monotonic()
    acked = await produce(config, topic)
    produced_s = time.monotonic() - began
    assert len(acked) == RECORDS

    broker.stop()
    assert not broker.running
    assert await refuses_clients(config, broker.port), broker.logs()

    bootstrap = broker.start_again()
    assert bootstrap == config.bootstrap
    began = time.monotonic()
    got = await read_all(config, topic)
    read_s = time.monotonic() - began

    positions = {m.value: (m.partition, m.offset) for m in got}
    assert len(got) == RECORDS, f"read {len(got)} of {RECORDS}\n{broker.logs()}"
    assert positions == acked, broker.logs()
    timings = ", ".join(f"{step} {s:.2f}s" for step, s in broker.timings.items())
    print(
        f"\nrestartable broker: {timings}; produce {RECORDS} {produced_s:.2f}s, "
        f"read back after restart {read_s:.2f}s"
    )
