"""Sending a request's accepted events to the broker, and knowing whether it answers.

:meth:`Publisher.publish` packs each kind's accepted events into JSON-array records for
the kind's topic (as the producer SDK does, at most ``max_record_bytes`` each), sends them
all (``acks=all``) and waits for every acknowledgement, at most ``publish_timeout_s``.
It returns which events are durable (:class:`Outcome`): an event is acknowledged only if
its record is. It never re-sends: unlike the SDK, an HTTP request has a client waiting,
and the client decides (503 and ``Retry-After`` tell it to send the rest again).

:meth:`Publisher.probe` (every 2 s, from the server) asks the cluster for metadata; the
broker counts as **available** while a probe or an acknowledgement came within
``silence_s`` (10 s). While it is not, :meth:`publish` sends nothing and fails at once,
so clients are not kept waiting ``publish_timeout_s`` each during an outage. Any
acknowledgement or successful probe makes it available again.

**What was not sent is never sent later.** aiokafka keeps a record whose broker went away
and sends it once the broker is back (however long that takes), which would store events
the client was told to send again. So when acknowledgements do not come within
``publish_timeout_s`` (or a send fails half-way through a request), the client is
retired: every record it has not sent yet fails and is dropped, and a new client is
started once the broker answers a probe. What stays ambiguous is what was on the wire:
a produce request the broker received but had not answered (a broker dying mid-write, a
slow broker past the timeout, a network cut) may be stored though its events were
reported ``unavailable``, and stored twice if the client sends them again. With
``KAFKA_IDEMPOTENT_PRODUCER`` (Apache Kafka), aiokafka's own retries of one request never
duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import EventKind
from pipeline.errors import BrokerUnreachableError, ConfigError
from pipeline.kafka import producer_options
from pipeline.producer import DEFAULT_MAX_RECORD_BYTES, pack_arrays
from pipeline.producer.errors import is_transient

__all__ = ["Outcome", "Publisher"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S: Final = 2.0


@dataclass(slots=True)
class Outcome:
    """What :meth:`Publisher.publish` achieved: the request positions of acknowledged
    events; ``failure`` (None when all were) says why the others are not, and
    ``transient`` whether sending them again later may work (else the broker refused)."""

    acked: set[int] = field(default_factory=set)
    failure: str | None = None
    transient: bool = True


class Publisher:
    """The HTTP server's Kafka producer; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaConfig,
        topics: TopicsConfig,
        *,
        publish_timeout_s: float,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        silence_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        self._kafka = kafka
        self._topics = dict(topics.sources)
        self._timeout_s = publish_timeout_s
        self._max_record_bytes = max_record_bytes
        self._silence_s = silence_s
        self._clock = clock
        self._client: Any = None
        self._injected_client = client
        self._retired: set[asyncio.Task[None]] = set()
        self._last_contact = clock()
        self._down_logged = False

    @property
    def available(self) -> bool:
        """Whether the broker answered (probe or acknowledgement) within ``silence_s``
        and a client is connected."""
        return self._client is not None and self._clock() - self._last_contact < self._silence_s

    def _contact(self) -> None:
        self._last_contact = self._clock()
        if self._down_logged:
            self._down_logged = False
            log.info("the Kafka broker answers again; accepting events")

    def _lost(self, why: str) -> None:
        if not self.available and not self._down_logged:
            self._down_logged = True
            log.warning(
                "the Kafka broker at %s does not answer (%s): POST /v1/events answers 503 "
                "until it does",
                self._kafka.bootstrap,
                why,
            )

    async def start(self) -> None:
        """Connect. Raises :class:`BrokerUnreachableError` (retriable) when the cluster
        does not answer, :class:`ConfigError` when it refuses this client."""
        client = self._injected_client or AIOKafkaProducer(
            **producer_options(self._kafka, max_request_size=self._max_record_bytes + 65_536),
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        try:
            await client.start()
        except asyncio.CancelledError:  # a probe's deadline: stop what was half started
            with contextlib.suppress(Exception):
                await asyncio.shield(client.stop())
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            message = f"Kafka at {self._kafka.bootstrap}: {type(exc).__name__}: {exc}"
            if is_transient(exc):
                raise BrokerUnreachableError(message) from exc
            hint = (
                "; if the broker has no idempotent producers (Tansu), set "
                "KAFKA_IDEMPOTENT_PRODUCER=false"
                if self._kafka.idempotent_producer
                else ""
            )
            raise ConfigError(message + hint) from exc
        self._client = client
        self._contact()

    async def close(self) -> None:
        """Stop the client (what was sent is waited for by the requests that sent it)."""
        client, self._client = self._client, None
        if client is not None:
            await client.stop()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    def _retire(self, why: str) -> None:
        """Drop the client: the records it has not sent yet fail (so they are never sent
        later), the ones on the wire are left to be answered (acknowledged or not, their
        requests learn which), and later sends on it fail at once."""
        client, self._client = self._client, None
        if client is None:
            return
        # aiokafka has no public way to abandon what a producer holds. In one step, with
        # no await in between: its sender stops draining (cancelled; requests in flight
        # still complete), unsent batches fail and go, and the accumulator refuses more.
        # tests/integration/test_http.py (broker killed, then back) checks the effect.
        error = KafkaTimeoutError(why)
        sender_task = client._sender.sender_task
        if sender_task is not None:
            sender_task.cancel()
        accumulator = client._message_accumulator
        for batches in accumulator._batches.values():
            for batch in batches:
                batch.failure(exception=error)
        accumulator._batches.clear()
        accumulator._exception = error
        task = asyncio.create_task(_stop_quietly(client), name="retired-producer")
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def probe(self) -> bool:
        """Ask the cluster for metadata (at most 2 s), or start a new client after a
        retired one; True if the broker answered."""
        why = "no broker answered a metadata request"
        try:
            if self._client is None:
                await asyncio.wait_for(self.start(), _PROBE_TIMEOUT_S * 5)
                ok = True
            else:
                ok = bool(
                    await asyncio.wait_for(
                        self._client.client.force_metadata_update(), _PROBE_TIMEOUT_S
                    )
                )
        except (TimeoutError, OSError, BrokerUnreachableError) as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the broker refuses a new client: keep probing, say so
            ok, why = False, f"{type(exc).__name__}: {exc}"
            log.error("a new Kafka client was refused (probing again in a moment): %s", why)
        if ok:
            self._contact()
        else:
            self._lost(why)
        return ok

    async def publish(self, encoded: dict[EventKind, list[tuple[int, bytes]]]) -> Outcome:
        """Send ``encoded`` (kind -> ``(position, event)`` pairs) and wait for the broker;
        see the module docstring. Never raises for broker trouble: the :class:`Outcome`
        says what was acknowledged. Waits at most ``publish_timeout_s``."""
        outcome = Outcome()
        if not encoded:
            return outcome
        client = self._client
        if client is None or not self.available:
            outcome.failure = f"the Kafka broker has not answered for over {self._silence_s:g}s"
            return outcome
        sends: list[tuple[asyncio.Future[Any], list[int]]] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                for kind, events in encoded.items():
                    topic = self._topics[kind]
                    for value, positions in pack_arrays(events, self._max_record_bytes):
                        sends.append((await client.send(topic, value), positions))
                await asyncio.wait([f for f, _ in sends])
        except TimeoutError:
            outcome.failure = f"the broker did not acknowledge within {self._timeout_s:g}s"
            if client is self._client:
                self._retire(outcome.failure)
        except Exception as exc:  # send() itself failed (metadata, a closed client)
            if not is_transient(exc):
                outcome.transient = False
            outcome.failure = f"{type(exc).__name__}: {exc}"
            if client is self._client and sends:  # this request's earlier records: unsent
                self._retire(outcome.failure)
        for future, positions in sends:
            if not future.done():  # only if send() failed: the retired client fails them
                future.add_done_callback(_consume)
                continue
            error = future.exception()
            if error is None:
                outcome.acked.update(positions)
            else:
                outcome.failure = outcome.failure or f"{type(error).__name__}: {error}"
                if not is_transient(error):
                    outcome.transient = False
        if outcome.acked:
            self._contact()
        if outcome.failure is not None and outcome.transient:
            self._last_contact = min(self._last_contact, self._clock() - self._silence_s)
            self._lost(outcome.failure)
        return outcome


async def _stop_quietly(client: Any) -> None:
    """Stop a retired client: its requests in flight end within the request timeout; its
    connections are closed in any case."""
    try:
        await asyncio.wait_for(client.stop(), 15.0)
    except Exception as exc:
        log.debug("stopping a retired producer: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.client.close(), 5.0)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a late future's outcome so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
