"""``pipeline dlq inspect|replay`` against the real (embedded) broker.

Dead letters are written exactly as a worker writes them (DeadLetterPublisher with the
worker's key and headers) to unique topics; nothing mocks Kafka.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import EventKind, Reason
from pipeline.deadletters import (
    Filters,
    TopicNotFoundError,
    execute_replay,
    inspect_dead_letters,
    markers_topic,
    prepare_replay,
)
from pipeline.kafka import client_options, ensure_topics
from pipeline.worker.batch import Record, Rejected
from pipeline.worker.deadletter import DeadLetterPublisher, dead_letter_key
from tests.conftest import REPO, unique_name, unique_topics

IDLE_S = 1.0

CALL_MISSING = b'{"event_id": "00000000-0000-4000-8000-000000000001"}'
CALL_INVALID = b'{"event_id": "00000000-0000-4000-8000-000000000002", "method": "get"}'
ANALYSIS_RAW = b"{not json"
LOG_INVALID = b'{"event_id": "00000000-0000-4000-8000-000000000003", "level": "loud"}'


def _topics() -> TopicsConfig:
    return unique_topics()


async def _write_dead_letters(kafka: KafkaConfig, topics: TopicsConfig) -> dict[str, bytes]:
    """Publish four distinct dead letters (the api-call ones twice); return key -> value."""
    await ensure_topics(
        kafka,
        [*topics.source_topics, topics.dead_letters],
        partitions=2,
    )
    calls = Record(1, 10, 0, [], is_array=True)
    calls.rejected = [
        Rejected(Reason.MISSING_FIELD, "service: required", 0, CALL_MISSING),
        Rejected(Reason.INVALID_VALUE, "method: must be upper-case", 2, CALL_INVALID),
    ]
    analysis = Record(0, 5, 0, [])
    analysis.rejected = [Rejected(Reason.MALFORMED_JSON, "not JSON", None, ANALYSIS_RAW)]
    log_record = Record(0, 7, 0, [])
    log_record.rejected = [Rejected(Reason.INVALID_VALUE, "level: unknown", None, LOG_INVALID)]
    publisher = DeadLetterPublisher(kafka, topics.dead_letters, "test-worker")
    await publisher.start()
    try:
        calls_items = [(calls, r) for r in calls.rejected]
        await publisher.publish(topics.topic(EventKind.API_CALL), calls_items)
        await publisher.publish(
            topics.topic(EventKind.API_CALL), calls_items
        )  # at-least-once: a duplicate
        await publisher.publish(
            topics.topic(EventKind.ANALYSIS), [(analysis, analysis.rejected[0])]
        )
        await publisher.publish(
            topics.topic(EventKind.SYSTEM_LOG), [(log_record, log_record.rejected[0])]
        )
    finally:
        await publisher.stop()
    keys = {}
    for topic, record in (
        (topics.topic(EventKind.API_CALL), calls),
        (topics.topic(EventKind.ANALYSIS), analysis),
        (topics.topic(EventKind.SYSTEM_LOG), log_record),
    ):
        for rejected in record.rejected:
            keys[dead_letter_key(topic, record, rejected).decode()] = rejected.payload
    return keys


async def _read_all(kafka: KafkaConfig, topic: str) -> list[Any]:
    """Every record of ``topic`` (reads until IDLE_S without data)."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < IDLE_S:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


def _cli(kafka: KafkaConfig, topics: TopicsConfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PIPELINE_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "KAFKA_IDEMPOTENT_PRODUCER": "true" if kafka.idempotent_producer else "false",
        }
    )
    env.update({setting: topic for topic, setting in topics.settings().items()})
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "dlq", *args, "--idle-timeout", str(IDLE_S)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.asyncio
async def test_inspect_counts_distinct_dead_letters_by_reason_with_samples(
    kafka: KafkaConfig,
) -> None:
    topics = _topics()
    keys = await _write_dead_letters(kafka, topics)

    summary = await inspect_dead_letters(kafka, topics.dead_letters, samples=1, idle_s=IDLE_S)
    assert summary.messages_read == 6 and summary.duplicates == 2
    assert summary.total == 4 and summary.replayed == 0
    assert dict(summary.by_reason) == {"invalid_value": 2, "missing_field": 1, "malformed_json": 1}
    assert dict(summary.by_source_topic) == {
        topics.topic(EventKind.API_CALL): 2,
        topics.topic(EventKind.ANALYSIS): 1,
        topics.topic(EventKind.SYSTEM_LOG): 1,
    }
    assert {r: len(s) for r, s in summary.samples.items()} == {
        "invalid_value": 1, "missing_field": 1, "malformed_json": 1,
    }  # fmt: skip
    (missing,) = summary.samples["missing_field"]
    assert (missing.source_topic, missing.source_partition, missing.source_offset) == (
        topics.topic(EventKind.API_CALL), 1, 10,
    )  # fmt: skip
    assert missing.event_index == 0 and missing.detail == "service: required"
    assert missing.value == CALL_MISSING and missing.key in keys
    (raw,) = summary.samples["malformed_json"]
    assert raw.event_index is None and raw.value == ANALYSIS_RAW

    filtered = await inspect_dead_letters(
        kafka,
        topics.dead_letters,
        filters=Filters(source_topics={topics.topic(EventKind.API_CALL)}),
        idle_s=IDLE_S,
    )
    assert dict(filtered.by_reason) == {"invalid_value": 1, "missing_field": 1}

    result = _cli(kafka, topics, "inspect", "--format", "json", "--reason", "invalid_value")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["total"] == 2 and report["by_reason"] == {"invalid_value": 2}
    sources = {s["source_topic"] for s in report["samples"]["invalid_value"]}
    assert sources == {topics.topic(EventKind.API_CALL), topics.topic(EventKind.SYSTEM_LOG)}

    table = _cli(kafka, topics, "inspect")
    assert table.returncode == 0, table.stderr
    assert "4 dead letters" in table.stdout and "samples of invalid_value:" in table.stdout
    assert f"{topics.topic(EventKind.API_CALL)}/1/10#0" in table.stdout


@pytest.mark.asyncio
async def test_replay_publishes_selected_dead_letters_once_even_when_run_twice(
    kafka: KafkaConfig,
) -> None:
    topics = _topics()
    await _write_dead_letters(kafka, topics)
    sources = set(topics.source_topics)

    async def replay_invalid() -> tuple[int, int]:
        plan = await prepare_replay(
            kafka,
            topics.dead_letters,
            filters=Filters(reasons={"invalid_value"}),
            allowed_topics=sources,
            idle_s=IDLE_S,
        )
        done = await execute_replay(kafka, plan, operator="tests")
        return len(done), len(plan.already_replayed)

    assert await replay_invalid() == (2, 0)
    assert await replay_invalid() == (0, 2)  # the markers stop a second publication

    calls = await _read_all(kafka, topics.topic(EventKind.API_CALL))
    logs = await _read_all(kafka, topics.topic(EventKind.SYSTEM_LOG))
    assert [r.value for r in calls] == [CALL_INVALID]
    assert [r.value for r in logs] == [LOG_INVALID]
    assert await _read_all(kafka, topics.topic(EventKind.ANALYSIS)) == []
    replayed_from = dict(calls[0].headers)["x-replayed-from"].decode()
    assert replayed_from == f"{topics.topic(EventKind.API_CALL)}/1/10/2"

    markers = await _read_all(kafka, markers_topic(topics.dead_letters))
    assert len(markers) == 2
    assert json.loads(markers[0].value)["replayed_to"]["topic"] in sources

    summary = await inspect_dead_letters(kafka, topics.dead_letters, idle_s=IDLE_S)
    assert summary.replayed == 2 and dict(summary.replayed_by_reason) == {"invalid_value": 2}

    # The command: everything else is replayed once, then nothing is left.
    first = _cli(kafka, topics, "replay", "--source-topic", topics.topic(EventKind.API_CALL))
    assert first.returncode == 0, first.stderr
    assert "1 to replay, 1 already replayed" in first.stdout
    again = _cli(kafka, topics, "replay", "--source-topic", topics.topic(EventKind.API_CALL))
    assert "0 to replay, 2 already replayed" in again.stdout
    # The command records each replay that published something in the audit trail.
    audits = await _read_all(kafka, topics.topic(EventKind.AUDIT))
    assert len(audits) == 1, "a replay of nothing is not audited"
    value = json.loads(audits[0].value)
    audit = value[0] if isinstance(value, list) else value  # the producer packs arrays
    assert audit["action"] == "dead_letters.replayed" and audit["actor_type"] == "user"
    assert audit["entity_id"] == topics.dead_letters
    assert audit["after"]["replayed"] == 1
    assert audit["after"]["by_source_topic"] == {topics.topic(EventKind.API_CALL): 1}
    assert sorted(
        r.value for r in await _read_all(kafka, topics.topic(EventKind.API_CALL))
    ) == sorted([CALL_INVALID, CALL_MISSING])


@pytest.mark.asyncio
async def test_replay_dry_run_and_limit(kafka: KafkaConfig) -> None:
    topics = _topics()
    await _write_dead_letters(kafka, topics)

    dry = _cli(kafka, topics, "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "4 to replay, 0 already replayed" in dry.stdout
    assert "dry run: nothing published" in dry.stdout
    for topic in topics.source_topics:
        assert await _read_all(kafka, topic) == []

    limited = _cli(kafka, topics, "replay", "--limit", "1", "--reason", "missing_field")
    assert limited.returncode == 0, limited.stderr
    assert "1 to replay" in limited.stdout and "replayed 1 dead letters" in limited.stdout
    assert [r.value for r in await _read_all(kafka, topics.topic(EventKind.API_CALL))] == [
        CALL_MISSING
    ]


@pytest.mark.asyncio
async def test_replay_refuses_topics_the_pipeline_does_not_read(kafka: KafkaConfig) -> None:
    topics = _topics()
    await _write_dead_letters(kafka, topics)
    other = TopicsConfig(
        sources={**topics.sources, EventKind.API_CALL: unique_name("calls")},
        dead_letters=topics.dead_letters,
    )
    result = _cli(
        kafka, other, "replay", "--dry-run", "--source-topic", topics.topic(EventKind.API_CALL)
    )
    assert result.returncode == 0, result.stderr
    assert "0 to replay" in result.stdout and "2 not replayable" in result.stdout
    assert "is not configured" in result.stdout


@pytest.mark.asyncio
async def test_a_missing_dead_letter_topic_is_an_error_and_is_not_created(
    kafka: KafkaConfig,
) -> None:
    name = unique_name("nodlq")
    with pytest.raises(TopicNotFoundError, match="does not exist"):
        await inspect_dead_letters(kafka, name, idle_s=IDLE_S)
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        assert name not in await admin.list_topics()
    finally:
        await admin.close()
