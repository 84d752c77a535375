"""Records written by another Kafka client, with every codec Kafka defines.

librdkafka (through confluent-kafka) is the client under Go, .NET, Node, Python's
confluent-kafka and many more; producers there are usually configured with
``compression.type`` snappy, lz4 or zstd. Everything they write must be read: by the worker
(applied exactly once) and by the dead-letter tools.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Sequence

import confluent_kafka
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from pipeline.config import KafkaConfig
from pipeline.contract import EventKind
from pipeline.deadletters import Filters, inspect_dead_letters, prepare_replay
from pipeline.kafka import client_options, ensure_topics
from pipeline.verify import wait_for_watermarks, watermarks
from pipeline.workload import ExpectedTotals, Item, WorkloadSpec, generate, pack
from tests.conftest import unique_name
from tests.integration.harness import Pipeline, headers_of
from tests.integration.test_worker_delivery import assert_same

NOW_MS = int(time.time() * 1000)
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def produce_with_librdkafka(
    kafka: KafkaConfig, topic: str, values: Sequence[bytes], codec: str, *, tag: int = 0
) -> dict[tuple[str, int], int]:
    """Send ``values`` with librdkafka and ``codec``: keys on every other record, headers on
    every third. Returns (topic, partition) -> one past the last acknowledged offset."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "compression.type": codec,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": False,  # the embedded broker has no idempotent producers
        }
    )
    acked: dict[tuple[str, int], int] = {}
    errors: list[object] = []

    def delivered(error: object, message: confluent_kafka.Message) -> None:
        if error is not None:
            errors.append(error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        acked[(topic, partition)] = max(acked.get((topic, partition), 0), offset + 1)

    for i, value in enumerate(values):
        producer.produce(
            topic,
            value,
            key=f"{codec}-{tag}-{i}".encode() if i % 2 else None,
            headers=[("trace-id", f"{i:08x}".encode())] if i % 3 == 0 else None,
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(60) == 0, "librdkafka did not deliver everything"
    assert errors == []
    return acked


def shaped(items: list[Item], index: int) -> list[bytes]:
    """Every other chunk as single-event records, the others as arrays of up to 50."""
    shape = "single" if index % 2 else "batched"
    return [r.value for r in pack(items, shape, max_events=50)]  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_records_of_every_codec_from_librdkafka_are_applied_exactly_once(
    stack: Pipeline,
) -> None:
    spec = WorkloadSpec(api_calls=5_000, start_ms=NOW_MS, invalid_fraction=0.02)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    by_kind: dict[EventKind, list[Item]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    for kind, kind_items in by_kind.items():
        chunks = [kind_items[i :: len(CODECS) * 2] for i in range(len(CODECS) * 2)]
        for index, chunk in enumerate(chunks):
            codec = CODECS[index % len(CODECS)]
            acked = await asyncio.to_thread(
                produce_with_librdkafka,
                stack.kafka,
                stack.topic_of(kind),
                shaped(chunk, index),
                codec,
                tag=index,
            )
            for key, end in acked.items():
                stack.acked[key] = max(stack.acked.get(key, 0), end)
    worker = stack.start_worker()
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)
    assert worker.running

    letters = await stack.dead_letters()
    by_reason: dict[str, int] = {}
    for message in letters:
        reason = headers_of(message)["x-reason"]
        by_reason[reason] = by_reason.get(reason, 0) + 1
    assert by_reason == {str(r): n for r, n in expected.invalid_by_reason.items()}

    # The worker's dead letters (zstd, our default) read back by the dead-letter tools.
    summary = await inspect_dead_letters(stack.kafka, stack.topics.dead_letters, idle_s=1.0)
    assert dict(summary.by_reason) == by_reason


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.asyncio
async def test_dead_letter_tools_read_letters_written_by_librdkafka(
    kafka: KafkaConfig, codec: str
) -> None:
    source, dead_letters = unique_name("calls"), unique_name("dlq")
    await ensure_topics(kafka, [source, dead_letters], partitions=2)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": kafka.bootstrap, "compression.type": codec, "linger.ms": 5}
    )
    for offset in range(20):
        producer.produce(
            dead_letters,
            b'{"event_id": "bad"}',
            key=f"{source}/0/{offset}".encode(),
            headers=[
                ("x-reason", b"invalid_value"),
                ("x-detail", b"event_id: not a UUID"),
                ("x-source-topic", source.encode()),
                ("x-source-partition", b"0"),
                ("x-source-offset", str(offset).encode()),
                ("x-worker-id", b"elsewhere"),
            ],
        )
    assert producer.flush(60) == 0
    summary = await inspect_dead_letters(kafka, dead_letters, idle_s=1.0)
    assert summary.total == 20 and dict(summary.by_reason) == {"invalid_value": 20}
    plan = await prepare_replay(
        kafka, dead_letters, filters=Filters(), allowed_topics={source}, idle_s=1.0
    )
    assert len(plan.to_replay) == 20


async def produce_corrupt_batch(kafka: KafkaConfig, topic: str, partition: int) -> int:
    """Write one zstd batch of 5 records whose compressed bytes are garbage (with a valid
    CRC, as a buggy client would); return its first offset. The broker stores it as is."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=4, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for i in range(5):
        builder.append(i, timestamp=None, key=None, value=b'{"x": %d}' % i, headers=[])
    data = bytearray(builder.build())
    for i in range(65, len(data)):  # the compressed records, after the 61-byte header
        data[i] ^= 0x5A
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    producer = AIOKafkaProducer(**client_options(kafka))
    await producer.start()
    try:
        node = producer.client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(
            transactional_id=None, required_acks=-1, timeout=10_000,
            topics=[(topic, [(partition, bytes(data))])],
        )  # fmt: skip
        response = await producer.client.send(node, request)
    finally:
        await producer.stop()
    ((_, ((_, error, offset, *_),)),) = response.topics
    assert error == 0
    return int(offset)


@pytest.mark.asyncio
async def test_an_undecodable_batch_stops_only_its_partition_until_skipped(
    stack: Pipeline,
) -> None:
    spec = WorkloadSpec(api_calls=2_000, start_ms=NOW_MS, analyses_per_api_call=0)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    half = len(items) // 2
    await stack.produce(items[:half], max_events=20)
    calls = stack.topics.topic(EventKind.API_CALL)
    bad = await produce_corrupt_batch(stack.kafka, calls, 1)
    await stack.produce(items[half:], max_events=20)
    assert stack.acked[(calls, 1)] > bad + 5  # good records follow the bad batch

    worker = stack.start_worker(stopped_retry_s=2.0)
    conn = await stack.connect()
    try:
        targets = {tp: end for tp, end in stack.acked.items() if tp != (calls, 1)}
        targets[(calls, 1)] = bad
        assert await wait_for_watermarks(conn, stack.group, targets, timeout_s=120), stack.logs()
        await asyncio.sleep(3)  # a retry of the stopped partition happens meanwhile
        marks = await watermarks(conn, stack.group)
        assert marks[(calls, 1)] == bad, "the partition went past a batch it cannot read"
        status, body = worker.get("/readyz")
        assert status == 200, body  # ready: the other partitions flow
        assert f"{calls}[1]" in json.loads(body)["stopped_partitions"], body
        _, metrics = worker.get("/metrics")
        assert "pipeline_partitions_stopped 1.0" in metrics
        log = worker.log_tail(400)
        assert f"{calls}[1] stopped at offset {bad}" in log, log
        assert f"records {bad}..{bad + 4} (one batch of 5, codec zstd)" in log, log

        # The operator skips the batch as the log line says; the worker picks it up.
        await conn.execute(
            "UPDATE ingest_offsets SET next_offset = $4 WHERE consumer_group = $1 "
            "AND topic = $2 AND partition = $3 AND next_offset < $4",
            stack.group, calls, 1, bad + 5,
        )  # fmt: skip
    finally:
        await conn.close()
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)
    assert worker.running
