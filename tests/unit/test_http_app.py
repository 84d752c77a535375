"""The routes of ``pipeline http`` (pipeline.http.app) through aiohttp's own test server
and client, with an Ingest built from fakes: keys, publisher and metrics (no PostgreSQL,
no broker). The server runs as ``serve`` runs it: ``auto_decompress=False``."""

from __future__ import annotations

import asyncio
import gzip
import random
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from pipeline.apikeys import ApiKey
from pipeline.config import HttpConfig
from pipeline.contract import EventKind
from pipeline.errors import DatabaseRefusedError, DatabaseUnavailableError
from pipeline.http import Ingest, build_app
from pipeline.http.keys import KeyCache
from pipeline.http.publish import Outcome, Publisher
from pipeline.http.ratelimit import RateLimiter
from pipeline.metrics import HttpMetrics
from pipeline.workload import EventFactory

NOW_MS = 1_790_000_000_000
KEY = "evk_0123456789ab_" + "k" * 43
KEY_ID = "0123456789ab"
ORG = "acme"
AUTH = {"Authorization": f"Bearer {KEY}"}
API_KEY = ApiKey(
    key_id=KEY_ID,
    organization_id=ORG,
    name="web",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    created_by="test",
    last_used_at=None,
    revoked_at=None,
)


class FakeKeys:
    """KeyCache's ``authenticate``: KEY is the one active key."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.presented: list[str] = []

    async def authenticate(self, presented: str) -> ApiKey | None:
        self.presented.append(presented)
        if self.error is not None:
            raise self.error
        return API_KEY if presented == KEY else None


Encoded = dict[EventKind, list[tuple[int, bytes]]]


class FakePublisher:
    """Publisher's ``available`` and ``publish``: ``decide`` answers each publish (by
    default every event acknowledged)."""

    def __init__(self) -> None:
        self.available = True
        self.calls: list[Encoded] = []
        self.decide: Callable[[Encoded], Outcome] = lambda encoded: Outcome(
            acked={i for pairs in encoded.values() for i, _ in pairs}
        )

    async def publish(self, encoded: Encoded) -> Outcome:
        self.calls.append(encoded)
        return self.decide(encoded)


@dataclass
class Harness:
    client: TestClient[Any, Any]
    ingest: Ingest
    keys: FakeKeys
    publisher: FakePublisher
    metrics: HttpMetrics
    sent: list[Encoded] = field(default_factory=list)

    async def post(
        self, body: bytes | Sequence[object], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.client.post(
            "/v1/events", data=data, headers=AUTH if headers is None else headers
        ) as response:
            payload = orjson.loads(await response.read())
            return response.status, payload, response.headers

    def counter(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def serving(
    config: HttpConfig | None = None, limiter: RateLimiter | None = None
) -> AsyncIterator[Harness]:
    config = config or HttpConfig()
    keys = FakeKeys()
    publisher = FakePublisher()
    metrics = HttpMetrics(CollectorRegistry())
    ingest = Ingest(
        config=config,
        keys=cast(KeyCache, keys),
        limiter=limiter
        or RateLimiter(config.rate_limit_events_per_s, config.rate_limit_burst_events),
        publisher=cast(Publisher, publisher),
        metrics=metrics,
        now_ms=lambda: NOW_MS,
    )
    # TestServer(app, auto_decompress=False) would drop the option silently: the runner's
    # options are start_server's. The client's own start_server then finds it started.
    server = TestServer(build_app(ingest))
    await server.start_server(auto_decompress=False)
    async with TestClient(server) as client:
        yield Harness(client, ingest, keys, publisher, metrics)


def events(
    count: int, kind: EventKind = EventKind.API_CALL, seed: int = 5
) -> list[dict[str, object]]:
    maker = EventFactory(random.Random(seed), NOW_MS).maker(kind)
    out: list[dict[str, object]] = []
    for _ in range(count):
        event = maker()
        event.pop("organization_id", None)
        out.append(event)
    return out


def invalid(count: int) -> list[dict[str, object]]:
    return [dict(e, tokens=-1) for e in events(count, seed=9)]


ACCEPTED = {"status": "accepted"}


# --- the key --------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"X-Api-Key": ""},
    ],
)
async def test_no_key_is_401(headers: dict[str, str]) -> None:
    async with serving() as h:
        status, body, response_headers = await h.post(events(1), headers)
        assert status == 401
        assert body["error"] == "unauthorized"
        assert "results" not in body
        assert response_headers["WWW-Authenticate"] == 'Bearer realm="events"'
        assert h.keys.presented == []
        assert h.publisher.calls == []
        assert h.counter("pipeline_http_requests_total", status="401") == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer evk_0123456789ab_" + "z" * 43}, {"X-Api-Key": "evk_nope"}],
)
async def test_an_unknown_key_is_401(headers: dict[str, str]) -> None:
    async with serving() as h:
        status, body, response_headers = await h.post(events(1), headers)
        assert status == 401
        assert body["error"] == "unauthorized"
        assert response_headers["WWW-Authenticate"] == 'Bearer realm="events"'
        assert len(h.keys.presented) == 1
        assert h.publisher.calls == []
        assert KEY not in orjson.dumps(body).decode()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"bearer {KEY}"}, {"X-Api-Key": KEY}, {"X-Api-Key": f" {KEY} "}],
)
async def test_the_key_in_either_header(headers: dict[str, str]) -> None:
    async with serving() as h:
        status, _, _ = await h.post(events(1), headers)
        assert status == 200
        assert h.keys.presented == [KEY]


@pytest.mark.asyncio
async def test_postgresql_not_answering_is_503_database_unavailable() -> None:
    async with serving() as h:
        h.keys.error = DatabaseUnavailableError("ConnectionRefusedError: refused")
        status, body, headers = await h.post(events(2))
        assert status == 503
        assert body["error"] == "database_unavailable"
        assert "results" not in body
        assert headers["Retry-After"] == "5"
        assert h.publisher.calls == []
        assert h.counter("pipeline_http_requests_total", status="503") == 1


@pytest.mark.asyncio
async def test_a_database_refusal_is_still_a_json_answer() -> None:
    async with serving() as h:
        h.keys.error = DatabaseRefusedError("permission denied for table api_keys")
        async with h.client.post("/v1/events", data=b"[]", headers=AUTH) as response:
            assert response.status >= 500
            assert response.headers["Content-Type"].startswith("application/json")
            assert "error" in orjson.loads(await response.read())


# --- the answers ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_all_accepted_is_200() -> None:
    async with serving() as h:
        sent = events(3) + events(2, EventKind.SYSTEM_LOG)
        status, body, headers = await h.post(sent)
        assert status == 200
        assert body == {
            "accepted": 5,
            "rejected": 0,
            "unavailable": 0,
            "results": [ACCEPTED] * 5,
        }
        assert headers["Content-Type"].startswith("application/json")
        [published] = h.publisher.calls
        assert {k: [p for p, _ in v] for k, v in published.items()} == {
            EventKind.API_CALL: [0, 1, 2],
            EventKind.SYSTEM_LOG: [3, 4],
        }
        # The key's organization is filled in.
        assert all(
            orjson.loads(d)["organization_id"] == ORG for _, d in published[EventKind.API_CALL]
        )
        assert h.counter("pipeline_http_requests_total", status="200") == 1
        assert h.counter("pipeline_http_events_accepted_total", kind="api_call") == 3
        assert h.counter("pipeline_http_events_accepted_total", kind="system_log") == 2
        assert h.counter("pipeline_http_request_bytes_total") == len(orjson.dumps(sent))
        assert h.counter("pipeline_http_in_flight_requests") == 0
        assert h.counter("pipeline_http_request_duration_seconds_count") == 1


@pytest.mark.asyncio
async def test_some_rejected_is_207_with_results_in_order() -> None:
    async with serving() as h:
        good = events(2)
        sent: list[object] = [good[0], invalid(1)[0], 42, good[1], {"type": "nope"}]
        status, body, _ = await h.post(sent)
        assert status == 207
        assert (body["accepted"], body["rejected"], body["unavailable"]) == (2, 3, 0)
        results = body["results"]
        assert results[0] == ACCEPTED
        assert results[1]["status"] == "rejected"
        assert results[1]["reason"] == "invalid_number"
        assert results[1]["field"] == "tokens"
        assert results[1]["detail"].startswith("tokens: ")
        assert results[2]["reason"] == "not_an_object"
        assert "field" not in results[2]  # no single field is at fault
        assert results[3] == ACCEPTED
        assert results[4]["reason"] == "unknown_event_type"
        assert results[4]["field"] == "type"
        assert h.counter("pipeline_http_events_rejected_total", reason="invalid_number") == 1
        assert h.counter("pipeline_http_requests_total", status="207") == 1


@pytest.mark.asyncio
async def test_all_rejected_is_422() -> None:
    async with serving() as h:
        status, body, _ = await h.post([*invalid(2), dict(events(1)[0], organization_id="x")])
        assert status == 422
        assert (body["accepted"], body["rejected"], body["unavailable"]) == (0, 3, 0)
        assert [r["reason"] for r in body["results"]] == [
            "invalid_number",
            "invalid_number",
            "organization_mismatch",
        ]
        assert body["results"][2]["field"] == "organization_id"
        assert h.counter("pipeline_http_events_rejected_total", reason="organization_mismatch") == 1


@pytest.mark.asyncio
async def test_ndjson_with_a_bad_line_is_207_and_the_line_has_no_field() -> None:
    async with serving() as h:
        good = events(2)
        body_bytes = orjson.dumps(good[0]) + b"\r\n\r\n{nope\n" + orjson.dumps(good[1]) + b"\n"
        status, body, _ = await h.post(body_bytes, {**AUTH, "Content-Type": "application/x-ndjson"})
        assert status == 207
        assert body["results"][0] == ACCEPTED
        assert body["results"][1]["reason"] == "malformed_json"
        assert "field" not in body["results"][1]
        assert body["results"][1]["detail"].startswith("line 3:")
        assert body["results"][2] == ACCEPTED


@pytest.mark.asyncio
@pytest.mark.parametrize("payload", [b"", b"  \n", b"[]"])
async def test_an_empty_request_is_200(payload: bytes) -> None:
    async with serving() as h:
        status, body, _ = await h.post(payload)
        assert status == 200
        assert body == {"accepted": 0, "rejected": 0, "unavailable": 0, "results": []}


@pytest.mark.asyncio
async def test_broker_unavailable_is_503_with_each_event_status() -> None:
    async with serving() as h:
        h.publisher.decide = lambda encoded: Outcome(
            acked={0}, failure="the broker did not acknowledge within 10s", transient=True
        )
        good = events(3)
        sent: list[object] = [good[0], invalid(1)[0], good[1], good[2]]
        status, body, headers = await h.post(sent)
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert body["error"] == "broker_unavailable"
        assert body["detail"] == "the broker did not acknowledge within 10s"
        assert (body["accepted"], body["rejected"], body["unavailable"]) == (1, 1, 2)
        assert [r["status"] for r in body["results"]] == [
            "accepted",
            "rejected",
            "unavailable",
            "unavailable",
        ]
        assert h.counter("pipeline_http_events_unavailable_total") == 2
        assert h.counter("pipeline_http_events_accepted_total", kind="api_call") == 1
        assert h.counter("pipeline_http_requests_total", status="503") == 1


@pytest.mark.asyncio
async def test_broker_refused_is_500_with_each_event_status() -> None:
    async with serving() as h:
        h.publisher.decide = lambda encoded: Outcome(
            acked={1}, failure="TopicAuthorizationFailedError: denied", transient=False
        )
        status, body, headers = await h.post(events(2) + invalid(1))
        assert status == 500
        assert "Retry-After" not in headers
        assert body["error"] == "broker_refused"
        assert body["detail"] == "TopicAuthorizationFailedError: denied"
        assert [r["status"] for r in body["results"]] == ["unavailable", "accepted", "rejected"]


@pytest.mark.asyncio
async def test_a_broker_known_to_be_down_with_only_rejected_events_is_422() -> None:
    async with serving() as h:
        h.publisher.available = False
        h.publisher.decide = lambda encoded: Outcome(failure="down") if encoded else Outcome()
        status, _, _ = await h.post(invalid(2))
        assert status == 422


# --- the request's limits -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_rate_limit_is_429_with_retry_after_and_nothing_sent() -> None:
    now = [100.0]
    config = HttpConfig(max_events=2, rate_limit_events_per_s=0.5, rate_limit_burst_events=2)
    limiter = RateLimiter(0.5, 2, clock=lambda: now[0])
    async with serving(config, limiter) as h:
        status, _, _ = await h.post(events(2))
        assert status == 200
        status, body, headers = await h.post(events(1))
        assert status == 429
        assert body["error"] == "rate_limited"
        assert "results" not in body
        assert headers["Retry-After"] == "2"  # one event at 0.5/s
        assert len(h.publisher.calls) == 1
        now[0] += 0.1
        status, _, headers = await h.post(events(2))
        assert status == 429
        assert headers["Retry-After"] == "4"  # ceil(3.8)
        now[0] += 3.9
        status, _, _ = await h.post(events(2))
        assert status == 200
        assert h.counter("pipeline_http_requests_total", status="429") == 2


@pytest.mark.asyncio
async def test_retry_after_is_at_least_one_second() -> None:
    now = [100.0]
    limiter = RateLimiter(1_000.0, 1_000, clock=lambda: now[0])
    async with serving(HttpConfig(rate_limit_events_per_s=1_000.0), limiter) as h:
        assert limiter.take(KEY_ID, 1_000) == 0.0
        status, _, headers = await h.post(events(1))
        assert status == 429
        assert headers["Retry-After"] == "1"


@pytest.mark.asyncio
async def test_the_rate_limit_is_per_key_id() -> None:
    now = [100.0]
    limiter = RateLimiter(1.0, 1_000, clock=lambda: now[0])
    async with serving(HttpConfig(rate_limit_events_per_s=1.0), limiter) as h:
        assert limiter.take("another key", 1_000) == 0.0
        status, _, _ = await h.post(events(1))
        assert status == 200


@pytest.mark.asyncio
async def test_a_body_too_large_as_sent_is_413() -> None:
    async with serving(HttpConfig(max_body_bytes=1024)) as h:
        status, body, _ = await h.post(b"[" + b" " * 2000 + b"]")
        assert status == 413
        assert body["error"] == "body_too_large"
        assert h.publisher.calls == []


@pytest.mark.asyncio
async def test_a_body_too_large_once_decompressed_is_413() -> None:
    async with serving(HttpConfig(max_body_bytes=1024)) as h:
        payload = gzip.compress(b"[" + b" " * 5000 + b"]")
        assert len(payload) < 1024
        status, body, _ = await h.post(payload, {**AUTH, "Content-Encoding": "gzip"})
        assert status == 413
        assert body["error"] == "body_too_large"


@pytest.mark.asyncio
async def test_too_many_events_is_413() -> None:
    async with serving(HttpConfig(max_events=2, rate_limit_burst_events=2)) as h:
        status, body, _ = await h.post(events(3))
        assert status == 413
        assert body["error"] == "too_many_events"
        assert h.publisher.calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZip ", gzip.compress)],
)
async def test_a_compressed_body(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    async with serving() as h:
        payload = b"\n".join(orjson.dumps(e) for e in events(3))
        status, body, _ = await h.post(compress(payload), {**AUTH, "Content-Encoding": encoding})
        assert status == 200
        assert body["accepted"] == 3
        assert h.counter("pipeline_http_request_bytes_total") == len(compress(payload))


@pytest.mark.asyncio
async def test_an_unsupported_encoding_is_415() -> None:
    async with serving() as h:
        status, body, _ = await h.post(b"[]", {**AUTH, "Content-Encoding": "br"})
        assert status == 415
        assert body["error"] == "unsupported_encoding"


@pytest.mark.asyncio
async def test_a_corrupt_compressed_body_is_400() -> None:
    async with serving() as h:
        status, body, _ = await h.post(b"[{}]", {**AUTH, "Content-Encoding": "gzip"})
        assert status == 400
        assert body["error"] == "malformed_body"


@pytest.mark.asyncio
async def test_a_json_array_that_is_not_json_is_400() -> None:
    async with serving() as h:
        status, body, _ = await h.post(b'[{"type": "api_call"},')
        assert status == 400
        assert body["error"] == "malformed_json"
        assert "results" not in body
        assert h.publisher.calls == []


@pytest.mark.asyncio
async def test_a_body_arriving_too_slowly_is_408() -> None:
    async with serving(HttpConfig(request_timeout_s=0.05)) as h:

        async def slow() -> AsyncIterator[bytes]:
            yield b"["
            await asyncio.sleep(0.5)
            yield b"]"

        async with h.client.post("/v1/events", data=slow(), headers=AUTH) as response:
            assert response.status == 408
            assert orjson.loads(await response.read())["error"] == "request_timeout"


# --- health, readiness, metrics, shutdown ---------------------------------------------------


@pytest.mark.asyncio
async def test_healthz() -> None:
    async with serving() as h:
        h.publisher.available = False
        async with h.client.get("/healthz") as response:
            assert response.status == 200
            assert orjson.loads(await response.read()) == {"status": "ok"}


@pytest.mark.asyncio
async def test_readyz_follows_the_broker() -> None:
    async with serving() as h:
        async with h.client.get("/readyz") as response:
            assert response.status == 200
            assert orjson.loads(await response.read()) == {"status": "ok", "broker": True}
        assert h.counter("pipeline_http_broker_available") == 1
        h.publisher.available = False
        async with h.client.get("/readyz") as response:
            assert response.status == 503
            assert orjson.loads(await response.read()) == {
                "status": "broker_unavailable",
                "broker": False,
            }
        assert h.counter("pipeline_http_broker_available") == 0


@pytest.mark.asyncio
async def test_readyz_is_503_while_stopping() -> None:
    async with serving() as h:
        h.ingest.stopping = True
        async with h.client.get("/readyz") as response:
            assert response.status == 503
            assert orjson.loads(await response.read()) == {"status": "stopping", "broker": True}


@pytest.mark.asyncio
async def test_metrics_page() -> None:
    async with serving() as h:
        await h.post(events(1))
        await h.post(events(1), {})
        h.publisher.available = False
        async with h.client.get("/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = (await response.read()).decode()
        assert 'pipeline_http_requests_total{status="200"} 1.0' in text
        assert 'pipeline_http_requests_total{status="401"} 1.0' in text
        assert "pipeline_http_broker_available 0.0" in text
        assert "pipeline_http_request_duration_seconds_bucket" in text


@pytest.mark.asyncio
async def test_answers_while_stopping_close_the_connection() -> None:
    async with serving() as h:
        status, _, headers = await h.post(events(1))
        assert status == 200
        assert headers.get("Connection", "").lower() != "close"
        h.ingest.stopping = True
        status, _, headers = await h.post(events(1))
        assert status == 200
        assert headers["Connection"].lower() == "close"
        status, _, headers = await h.post(events(1), {})
        assert status == 401
        assert headers["Connection"].lower() == "close"


@pytest.mark.asyncio
async def test_drain_waits_for_requests_under_way() -> None:
    async with serving() as h:
        release = asyncio.Event()
        original = h.publisher.publish

        async def held(encoded: Encoded) -> Outcome:
            await release.wait()
            return await original(encoded)

        h.publisher.publish = held  # type: ignore[method-assign]
        request = asyncio.create_task(h.post(events(1)))
        for _ in range(100):
            if h.ingest.in_flight:
                break
            await asyncio.sleep(0.005)
        assert h.ingest.in_flight == 1
        assert h.counter("pipeline_http_in_flight_requests") == 1
        assert not await h.ingest.drain(0.02)
        release.set()
        assert await h.ingest.drain(1.0)
        status, _, _ = await request
        assert status == 200
        assert h.ingest.in_flight == 0
