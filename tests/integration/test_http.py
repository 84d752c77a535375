"""``pipeline http`` end to end: a real server process, a real HTTP client (aiohttp), the
suite's broker, real workers and PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline import apikeys
from pipeline.config import Config, DatabaseConfig, KafkaConfig
from pipeline.contract import EventKind
from pipeline.kafka import client_options, ensure_topics
from pipeline.workload import ExpectedTotals, Item, WorkloadSpec, generate
from tests.conftest import unique_topics
from tests.integration.harness import Pipeline
from tests.integration.httpserver import HttpServer
from tests.integration.restartable import RestartableBroker

ORG = "org-http"


async def new_key(database: DatabaseConfig, org: str = ORG) -> str:
    conn = await asyncpg.connect(database.url)
    try:
        _, key = await apikeys.create(conn, org, "integration test")
    finally:
        await conn.close()
    return key


async def with_new_topics(database: DatabaseConfig, kafka: KafkaConfig) -> Config:
    """Settings for a server of one test: its database, the broker, topics of its own."""
    topics = unique_topics()
    await ensure_topics(kafka, [*topics.source_topics, topics.dead_letters], partitions=1)
    return Config(database=database, kafka=kafka, topics=topics)


def bound_items(api_calls: int, org: str = ORG) -> list[Item]:
    """Valid workload events, every organization replaced by ``org``."""
    items = []
    for item in generate(WorkloadSpec(api_calls=api_calls, start_ms=int(time.time() * 1000))):
        assert item.event is not None
        event = dict(item.event)
        if "organization_id" in event:
            event["organization_id"] = org
        items.append(replace(item, event=event))
    return items


async def post(
    session: aiohttp.ClientSession,
    url: str,
    key: str | None,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    async with session.post(url + "/v1/events", data=body, headers=sent) as response:
        return response.status, await response.json(content_type=None), response.headers


async def events_in_topics(kafka: KafkaConfig, topics: list[str], idle_s: float = 2.0) -> int:
    """Events held by ``topics`` (each record is a JSON array)."""
    consumer = AIOKafkaConsumer(
        *topics, **client_options(kafka), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    count = 0
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_s:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    count += len(orjson.loads(record.value))
                    idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return count


@pytest.mark.asyncio
async def test_events_over_http_reach_postgresql_exactly_once(
    stack: Pipeline, tmp_path: Path
) -> None:
    key = await new_key(stack.database)
    server = HttpServer(stack.config, tmp_path / "http.log").start()
    stack.start_worker()
    items = bound_items(1_500)
    expected = ExpectedTotals()
    expected.add_all(items)
    bodies: list[tuple[bytes, dict[str, str]]] = []
    for n, start in enumerate(range(0, len(items), 100)):
        events = [item.event for item in items[start : start + 100]]
        if n % 3 == 0:
            bodies.append((orjson.dumps(events), {"Content-Type": "application/json"}))
        elif n % 3 == 1:
            ndjson = b"\n".join(orjson.dumps(e) for e in events) + b"\n"
            bodies.append((ndjson, {"Content-Type": "application/x-ndjson"}))
        else:
            bodies.append((gzip.compress(orjson.dumps(events)), {"Content-Encoding": "gzip"}))
    try:
        async with aiohttp.ClientSession() as session:  # keep-alive connections
            answers = await asyncio.gather(
                *(post(session, server.url, key, body, h) for body, h in bodies)
            )
        for status, body, _ in answers:
            assert status == 200, body
            assert body["rejected"] == 0 and body["unavailable"] == 0
            assert all(r == {"status": "accepted"} for r in body["results"])
        assert sum(b["accepted"] for _, b, _ in answers) == len(items)

        deadline = time.monotonic() + 90
        while (totals := await stack.totals()).compare(expected):
            assert time.monotonic() < deadline, (
                f"{totals.compare(expected)[:5]}\n{stack.logs()}\n{server.logs()}"
            )
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # and nothing more arrives
        assert (await stack.totals()).compare(expected) == []

        conn = await stack.connect()
        try:
            used = await conn.fetchval(
                "SELECT last_used_at FROM api_keys WHERE key_id = $1", apikeys.parse_key(key)
            )
        finally:
            await conn.close()
        assert used is not None
    finally:
        assert server.stop() == 0, server.logs()
    logs = server.logs()
    assert key not in logs and key.split("_", 2)[2] not in logs
    assert "accepting events" in logs


@pytest.mark.asyncio
async def test_every_rejection_is_answered_and_nothing_rejected_is_sent(
    migrated_database: DatabaseConfig, kafka: KafkaConfig, tmp_path: Path
) -> None:
    config = await with_new_topics(migrated_database, kafka)
    topics = config.topics
    server = HttpServer(
        config,
        tmp_path / "http.log",
        max_events=50,
        max_body_bytes=32_768,
        rate_limit_events_per_s=10.0,
        rate_limit_burst_events=60,
        key_cache_ttl_s=0.5,
    ).start()
    key, other_key, limited_key = [await new_key(migrated_database) for _ in range(3)]
    valid = [item.event for item in bound_items(30) if item.event is not None][:10]
    url = server.url
    sent = 0
    try:
        async with aiohttp.ClientSession() as s:
            # Bad JSON, too many events, too large (also once decompressed), bad encoding.
            status, body, _ = await post(s, url, key, b'[{"type": "api_call",')
            assert (status, body["error"]) == (400, "malformed_json"), body
            status, body, _ = await post(s, url, key, orjson.dumps([{}] * 51))
            assert (status, body["error"]) == (413, "too_many_events"), body
            status, body, _ = await post(s, url, key, b"[" + b" " * 40_000 + b"]")
            assert (status, body["error"]) == (413, "body_too_large"), body
            bomb = gzip.compress(b"[" + b" " * 10_000_000 + b"]")
            status, body, _ = await post(s, url, key, bomb, {"Content-Encoding": "gzip"})
            assert (status, body["error"]) == (413, "body_too_large"), body
            status, body, _ = await post(s, url, key, b"[]", {"Content-Encoding": "br"})
            assert (status, body["error"]) == (415, "unsupported_encoding"), body

            # Invalid events mixed with valid ones: 207, one result per event.
            bad_type = {**valid[0], "type": "nope"}
            no_field = {k: v for k, v in valid[1].items() if k != "event_id"}
            other_org = {**valid[2], "organization_id": "someone-else"}
            mixed = [valid[3], bad_type, no_field, other_org, 7, valid[4]]
            status, body, _ = await post(s, url, key, orjson.dumps(mixed))
            assert status == 207, body
            assert (body["accepted"], body["rejected"]) == (2, 4)
            results = body["results"]
            assert results[0] == results[5] == {"status": "accepted"}
            assert (results[1]["reason"], results[1]["field"]) == ("unknown_event_type", "type")
            assert (results[2]["reason"], results[2]["field"]) == ("missing_field", "event_id")
            assert results[3]["reason"] == "organization_mismatch"
            assert results[4]["reason"] == "not_an_object"
            sent += 2
            # NDJSON: a line that is not JSON is one rejected event.
            ndjson = orjson.dumps(valid[5]) + b"\n{oops\n\n" + orjson.dumps(valid[6])
            status, body, _ = await post(s, url, key, ndjson)
            assert status == 207, body
            assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
            assert body["results"][1]["reason"] == "malformed_json"
            sent += 2
            # Everything rejected: 422.
            status, body, _ = await post(s, url, key, orjson.dumps([bad_type, other_org]))
            assert (status, body["accepted"], body["rejected"]) == (422, 0, 2), body

            # No key, a malformed one, an unknown one, a revoked one (after the cache TTL).
            for presented in (None, "evk_nonsense", other_key[:-2] + "xx"):
                status, body, headers = await post(s, url, presented, orjson.dumps(valid[:1]))
                assert (status, body["error"]) == (401, "unauthorized"), body
                assert headers["WWW-Authenticate"].startswith("Bearer")
            status, body, _ = await post(
                s, url, None, orjson.dumps(valid[7:8]), {"X-Api-Key": other_key}
            )
            assert status == 200, body
            sent += 1
            conn = await asyncpg.connect(migrated_database.url)
            try:
                await apikeys.revoke(conn, apikeys.parse_key(other_key) or "")
            finally:
                await conn.close()
            await asyncio.sleep(0.6)
            status, body, _ = await post(s, url, other_key, orjson.dumps(valid[8:9]))
            assert (status, body["error"]) == (401, "unauthorized"), body

            # Rate limited: 60 tokens, 10/s; a 50-event request passes, the next does not.
            status, body, _ = await post(s, url, limited_key, orjson.dumps([valid[9]] * 50))
            assert status == 200, body
            sent += 50
            status, body, headers = await post(s, url, limited_key, orjson.dumps([valid[9]] * 50))
            assert (status, body["error"]) == (429, "rate_limited"), body
            assert 1 <= int(headers["Retry-After"]) <= 5
            # Another key has its own bucket.
            status, body, _ = await post(s, url, key, orjson.dumps([valid[9]] * 50))
            assert status == 200, body
            sent += 50

            async with s.get(url + "/metrics") as response:
                metrics = await response.text()
        assert 'pipeline_http_requests_total{status="429"} 1.0' in metrics
        assert 'pipeline_http_events_rejected_total{reason="organization_mismatch"} 2.0' in metrics
        assert await events_in_topics(kafka, list(topics.source_topics)) == sent
    finally:
        assert server.stop() == 0, server.logs()
    logs = server.logs()
    for presented in (key, other_key, limited_key):
        assert presented.split("_", 2)[2] not in logs


@pytest.mark.asyncio
async def test_broker_down_answers_503_and_accepts_nothing(
    migrated_database: DatabaseConfig, restartable_broker: RestartableBroker, tmp_path: Path
) -> None:
    kafka = restartable_broker.kafka_config()
    config = await with_new_topics(migrated_database, kafka)
    topics = config.topics
    server = HttpServer(config, tmp_path / "http.log", publish_timeout_s=3.0).start()
    key = await new_key(migrated_database)
    events = [item.event for item in bound_items(40) if item.kind is EventKind.API_CALL]
    first, during, after = events[:10], events[10:20], events[20:30]
    try:
        async with aiohttp.ClientSession() as s:
            status, body, _ = await post(s, server.url, key, orjson.dumps(first))
            assert status == 200, body
            restartable_broker.stop(kill=True)
            started = time.monotonic()
            status, body, headers = await post(s, server.url, key, orjson.dumps(during))
            assert (status, body["error"]) == (503, "broker_unavailable"), body
            assert headers["Retry-After"] == "5"
            assert body["accepted"] == 0 and body["unavailable"] == 10
            assert all(r == {"status": "unavailable"} for r in body["results"])
            assert time.monotonic() - started < 10
            # Known down: the next request is answered at once, and /readyz says so.
            started = time.monotonic()
            status, body, _ = await post(s, server.url, key, orjson.dumps(during))
            assert status == 503 and time.monotonic() - started < 1.0, body
            assert server.get("/readyz") == 503 and server.get("/healthz") == 200

            restartable_broker.start_again()
            server.wait_ready(timeout_s=60)
            status, body, _ = await post(s, server.url, key, orjson.dumps(after))
            assert status == 200, body
        assert await events_in_topics(kafka, [topics.topic(EventKind.API_CALL)]) == 20
    finally:
        assert server.stop() == 0, server.logs()


@pytest.mark.asyncio
async def test_sigterm_finishes_the_request_under_way(
    migrated_database: DatabaseConfig, kafka: KafkaConfig, tmp_path: Path
) -> None:
    config = await with_new_topics(migrated_database, kafka)
    topics = config.topics
    server = HttpServer(config, tmp_path / "http.log").start()
    key = await new_key(migrated_database)
    events = [item.event for item in bound_items(20)][:20]
    payload = orjson.dumps(events)
    assert server.process is not None
    process = server.process

    async def slow_body() -> Any:
        yield payload[:100]
        await asyncio.sleep(0.3)  # the server has the headers and is reading the body
        process.terminate()  # SIGTERM while the body is still arriving
        await asyncio.sleep(1.0)
        yield payload[100:]

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            server.url + "/v1/events",
            data=slow_body(),
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        status, body = response.status, await response.json()
    assert status == 200, body
    assert body["accepted"] == 20
    assert process.wait(30) == 0, server.logs()
    assert "stopped" in server.logs()
    assert await events_in_topics(kafka, list(topics.source_topics)) == 20
