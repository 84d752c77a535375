"""The routes of ``pipeline http``: ``POST /v1/events``, ``/healthz``, ``/readyz``, ``/metrics``.

``POST /v1/events`` (the contract for clients is ``docs/http.md`` and
``docs/openapi/events-v1.yaml``), in order:

1. the API key (``Authorization: Bearer`` or ``X-Api-Key``): 401 without an active one,
   503 if PostgreSQL cannot say (:mod:`pipeline.http.keys`);
2. the body, within ``request_timeout_s`` (408), at most ``max_body_bytes`` as sent and
   after decompression (413), gzip or deflate (else 415), split into events
   (:mod:`pipeline.http.body`; 400 / 413);
3. the key's token bucket takes one token per event (429 with ``Retry-After``, nothing sent;
   :mod:`pipeline.http.ratelimit`);
4. every event decided by the contract (:mod:`pipeline.http.admit`);
5. the accepted ones sent and acknowledged (:mod:`pipeline.http.publish`);
6. the answer: 200 all accepted, 207 some rejected, 422 all rejected, 503 (``Retry-After``)
   when the broker did not acknowledge some, with one result per event either way.

Handlers never log a key, and log nothing per request above DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.config import HttpConfig
from pipeline.errors import DatabaseUnavailableError, PipelineError
from pipeline.http.admit import Rejected, admit
from pipeline.http.body import BodyError, decompress, split_events, too_large
from pipeline.http.keys import KeyCache, presented_key
from pipeline.http.publish import Publisher
from pipeline.http.ratelimit import RateLimiter
from pipeline.metrics import HttpMetrics
from pipeline.producer.client import wall_clock_ms

__all__ = ["Ingest", "build_app"]

log = logging.getLogger(__name__)

RETRY_AFTER_S: Final = 5
"""``Retry-After`` of a 503: about two broker probes."""

_ACCEPTED: Final[dict[str, object]] = {"status": "accepted"}
_UNAVAILABLE: Final[dict[str, object]] = {"status": "unavailable"}
_JSON: Final = "application/json"


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON, headers=headers)


def _error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return _json(status, {"error": code, "detail": detail}, headers)


@dataclass
class Ingest:
    """What the routes need; the server (:mod:`pipeline.http.server`) builds it and owns
    the lifecycle of its parts."""

    config: HttpConfig
    keys: KeyCache
    limiter: RateLimiter
    publisher: Publisher
    metrics: HttpMetrics
    now_ms: Callable[[], int] = wall_clock_ms
    stopping: bool = False
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is being handled, at most ``timeout_s``; True if none is.

        First waits a moment for requests whose headers arrived just before (not yet
        handed to a handler) to start."""
        await asyncio.sleep(min(0.2, timeout_s))
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self.in_flight

    async def post_events(self, request: web.Request) -> web.Response:
        metrics = self.metrics
        metrics.in_flight.inc()
        self.in_flight += 1
        self._idle.clear()
        started = time.perf_counter()
        try:
            response = await self._post_events(request)
        except PipelineError as exc:  # e.g. no privilege on api_keys: an operator's problem
            log.error("POST /v1/events failed: %s", exc)
            response = _error(500, "internal_error", "the server cannot take events right now")
        except Exception:  # a bug: answered in JSON like everything else, and logged
            log.exception("POST /v1/events failed")
            response = _error(500, "internal_error", "the server cannot take events right now")
        finally:
            metrics.in_flight.dec()
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
        if self.stopping:  # the client should take its next request elsewhere
            response.force_close()
        metrics.request_duration.observe(time.perf_counter() - started)
        metrics.requests.labels(str(response.status)).inc()
        return response

    async def _post_events(self, request: web.Request) -> web.Response:
        headers = request.headers
        presented = presented_key(headers.get("Authorization"), headers.get("X-Api-Key"))
        if presented is None:
            return _unauthorized("no API key: send `Authorization: Bearer <key>`")
        try:
            key = await self.keys.authenticate(presented)
        except DatabaseUnavailableError as exc:
            log.warning("cannot check an API key, PostgreSQL does not answer: %s", exc)
            return _error(
                503,
                "database_unavailable",
                "the API key cannot be checked right now; retry later",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        if key is None:
            return _unauthorized("the API key is not valid (unknown, malformed or revoked)")
        config = self.config
        try:
            async with asyncio.timeout(config.request_timeout_s):
                body = await request.read()
        except TimeoutError:
            return _error(
                408,
                "request_timeout",
                f"the body did not arrive within {config.request_timeout_s:g}s",
            )
        except web.HTTPRequestEntityTooLarge:
            error = too_large(config.max_body_bytes)
            return _error(error.status, error.code, error.detail)
        except (ConnectionError, HttpProcessingError) as exc:  # the client went away
            log.debug("a request body was cut off: %s", type(exc).__name__)
            return _error(400, "malformed_body", "the body was cut off before its end")
        self.metrics.request_bytes.inc(len(body))
        encoding = headers.get("Content-Encoding", "").strip().lower()
        try:
            plain = decompress(body, encoding, config.max_body_bytes)
            items = split_events(plain, max_events=config.max_events)
        except BodyError as exc:
            return _error(exc.status, exc.code, exc.detail)
        wait_s = self.limiter.take(key.key_id, len(items))
        if wait_s:
            retry_after = max(1, math.ceil(wait_s))
            return _error(
                429,
                "rate_limited",
                f"this key's rate limit ({config.rate_limit_events_per_s:g} events/s) is "
                f"used up; retry in {retry_after}s",
                {"Retry-After": str(retry_after)},
            )
        admission = admit(items, organization_id=key.organization_id, now_ms=self.now_ms())
        del body, plain, items  # only the encoded events wait for the broker
        outcome = await self.publisher.publish(admission.encoded)
        return self._answer(admission.results, outcome.acked, outcome.failure, outcome.transient)

    def _answer(
        self,
        decided: list[Any],
        acked: set[int],
        failure: str | None,
        transient: bool,
    ) -> web.Response:
        metrics = self.metrics
        results: list[dict[str, object]] = []
        append = results.append
        accepted = rejected = unavailable = 0
        accepted_by_kind: dict[str, int] = {}
        for position, result in enumerate(decided):
            if type(result) is Rejected:
                rejected += 1
                metrics.events_rejected.labels(result.reason).inc()
                entry: dict[str, object] = {"status": "rejected", "reason": result.reason}
                if result.field is not None:
                    entry["field"] = result.field
                entry["detail"] = result.detail
                append(entry)
            elif position in acked:
                accepted += 1
                accepted_by_kind[result] = accepted_by_kind.get(result, 0) + 1
                append(_ACCEPTED)
            else:
                unavailable += 1
                append(_UNAVAILABLE)
        for kind, count in accepted_by_kind.items():
            metrics.events_accepted.labels(kind).inc(count)
        body: dict[str, object] = {
            "accepted": accepted,
            "rejected": rejected,
            "unavailable": unavailable,
        }
        if failure is not None and unavailable:
            metrics.events_unavailable.inc(unavailable)
            if transient:
                body.update(error="broker_unavailable", detail=failure, results=results)
                return _json(503, body, {"Retry-After": str(RETRY_AFTER_S)})
            log.error("the broker refused events: %s", failure)
            body.update(error="broker_refused", detail=failure, results=results)
            return _json(500, body)
        body["results"] = results
        status = 200 if not rejected else 207 if accepted else 422
        return _json(status, body)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        broker = self.publisher.available
        self.metrics.broker_available.set(1 if broker else 0)
        if self.stopping:
            return _json(503, {"status": "stopping", "broker": broker})
        return _json(
            200 if broker else 503,
            {"status": "ok" if broker else "broker_unavailable", "broker": broker},
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.broker_available.set(1 if self.publisher.available else 0)
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


def _unauthorized(detail: str) -> web.Response:
    return _error(401, "unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="events"'})


def build_app(ingest: Ingest) -> web.Application:
    """The aiohttp application serving ``ingest``'s routes."""
    app = web.Application(client_max_size=ingest.config.max_body_bytes)
    app.router.add_post("/v1/events", ingest.post_events)
    app.router.add_get("/healthz", ingest.healthz)
    app.router.add_get("/readyz", ingest.readyz)
    app.router.add_get("/metrics", ingest.metrics_page)
    return app
