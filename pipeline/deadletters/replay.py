"""Re-publishing dead letters to their source topic after a fix, at most once per key.

A replay publishes the stored value unchanged (an event keeps its ``event_id``; a whole
record keeps its bytes) to the dead letter's ``x-source-topic``, with an ``x-replayed-from``
header naming the dead letter's key (the worker ignores headers). After the broker has
acknowledged a chunk of replayed records, a **marker** per dead-letter key is written to
the compacted topic ``<dead-letter topic>.replayed`` (created on first use); a later replay
reads the markers first and skips every key already marked. So running a replay twice does
not publish twice.

Why the marker matters: ``analysis``, ``system_log`` and ``audit`` events are stored once
per ``event_id`` (a duplicate is ignored by PostgreSQL), but ``api_call`` and
``performance_metric`` events are *added* to hourly buckets or series: the same event
published twice is counted twice.

Remaining window: a crash (or a lost connection) after a chunk was published and before
its markers were acknowledged leaves that chunk unmarked; running the replay again then
publishes it a second time. The window is at most one chunk (``chunk_size`` records,
default 100); the command reports how far it got. Two replays running at the same time
can both publish the same keys: run one at a time.

A broker that goes away (or refuses a record) in the middle ends the replay within the
broker timeout (``broker_timeout_s``: each send and acknowledgement is bounded by it) with
:class:`ReplayIncompleteError`, which says what was and was not replayed, per dead letter:
``done`` (published and marked: a re-run skips them), ``unmarked`` (published, or possibly
published as no acknowledgement came back, without a marker: the window above; only these
need checking before a re-run) and ``not_sent`` (not written: a re-run replays them). The
records of a chunk that the broker did acknowledge get their markers even when others of
the chunk failed, so a refused record does not leave its neighbours unmarked. When nothing
can have been published yet, the broker's own error is raised, saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.config import KafkaConfig
from pipeline.deadletters.broker import (
    BOOTSTRAP_HINT,
    DEFAULT_BROKER_TIMEOUT_S,
    REFUSED_HINT,
    bounded,
    describe,
    stop_quietly,
    wait_for_broker,
)
from pipeline.deadletters.errors import DeadLetterToolError, noted
from pipeline.deadletters.read import (
    DEAD_LETTERS_SETTING,
    DeadLetter,
    Filters,
    distinct,
    read_topics,
)
from pipeline.errors import PipelineError
from pipeline.kafka import client_options, producer_options
from pipeline.producer.errors import is_transient

log = logging.getLogger(__name__)

MARKERS_SUFFIX = ".replayed"
REPLAYED_FROM_HEADER = "x-replayed-from"


def markers_topic(dead_letters_topic: str) -> str:
    """The compacted topic holding one marker per replayed dead-letter key."""
    return f"{dead_letters_topic}{MARKERS_SUFFIX}"


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay would do.

    ``to_replay``: selected, not yet marked, replayable (in dead-letter topic order, cut to
    the limit). ``already_replayed``: selected but marked by an earlier replay.
    ``not_replayable``: selected but without a usable source topic or value, with why.
    """

    dead_letters_topic: str
    to_replay: list[DeadLetter]
    already_replayed: list[DeadLetter]
    not_replayable: list[tuple[DeadLetter, str]]
    left_for_later: int  # replayable letters beyond the limit


@dataclass(frozen=True)
class Replayed:
    """One published replay: the dead letter and where its copy landed."""

    letter: DeadLetter
    topic: str
    partition: int
    offset: int


class ReplayIncompleteError(DeadLetterToolError):
    """A replay stopped before the end: the broker went away or refused a record.

    ``done``: published and marked (a re-run skips them). ``unmarked``: published, or
    possibly published (no acknowledgement came back), without a marker: a re-run would
    publish them again, so check their source topics for ``x-replayed-from`` headers
    naming their keys first (at most one chunk). ``not_sent``: not written (never sent, or
    refused by the broker): a re-run replays them. The cause is ``__cause__``.
    """

    retriable = True

    def __init__(
        self,
        message: str,
        *,
        done: Sequence[Replayed],
        unmarked: Sequence[DeadLetter],
        not_sent: Sequence[DeadLetter],
    ) -> None:
        super().__init__(message)
        self.done = list(done)
        self.unmarked = list(unmarked)
        self.not_sent = list(not_sent)


def plan_replay(
    dead_letters_topic: str,
    letters: Sequence[DeadLetter],
    replayed_keys: Collection[str],
    *,
    filters: Filters,
    allowed_topics: Collection[str],
    limit: int | None = None,
) -> ReplayPlan:
    """Select the dead letters to replay (pure, no I/O).

    Only letters whose source topic is in ``allowed_topics`` (the pipeline's configured
    source topics) are replayed, so a replay never writes to a topic the workers do not read.
    """
    to_replay: list[DeadLetter] = []
    already: list[DeadLetter] = []
    refused: list[tuple[DeadLetter, str]] = []
    beyond = 0
    for letter in letters:
        if not filters.match(letter):
            continue
        if letter.key in replayed_keys:
            already.append(letter)
        elif letter.source_topic is None:
            refused.append((letter, "no x-source-topic header"))
        elif letter.source_topic not in allowed_topics:
            refused.append((letter, f"source topic {letter.source_topic!r} is not configured"))
        elif letter.value is None:
            refused.append((letter, "null value (tombstone): nothing to replay"))
        elif letter.original_size is not None:
            refused.append(
                (
                    letter,
                    f"truncated ({letter.original_size} bytes originally): the record "
                    "is in its source topic at the position named",
                )
            )
        elif limit is not None and len(to_replay) >= limit:
            beyond += 1
        else:
            to_replay.append(letter)
    return ReplayPlan(dead_letters_topic, to_replay, already, refused, beyond)


async def prepare_replay(
    kafka: KafkaConfig,
    dead_letters_topic: str,
    *,
    filters: Filters,
    allowed_topics: Collection[str],
    limit: int | None = None,
    idle_s: float = 2.0,
    broker_timeout_s: float = DEFAULT_BROKER_TIMEOUT_S,
) -> ReplayPlan:
    """Read the dead letters and the markers, and plan the replay.

    Blocks while reading (see :func:`pipeline.deadletters.read.read_topics`); a missing
    markers topic means nothing was replayed yet. Raises what ``read_topics`` raises
    (:class:`~pipeline.deadletters.errors.TopicNotFoundError` if the dead-letter topic does
    not exist, :class:`~pipeline.deadletters.errors.BrokerDownError` if the broker does not
    answer within ``broker_timeout_s``), its message saying that nothing was replayed.
    """
    markers = markers_topic(dead_letters_topic)
    try:
        read = await read_topics(
            kafka,
            [dead_letters_topic, markers],
            idle_s=idle_s,
            optional=[markers],
            settings={dead_letters_topic: DEAD_LETTERS_SETTING},
            broker_timeout_s=broker_timeout_s,
        )
    except PipelineError as exc:
        raise noted(exc, "; nothing was replayed") from exc
    letters = distinct(dead_letters_topic, read[dead_letters_topic]).letters
    keys = marked_keys(read[markers])
    return plan_replay(
        dead_letters_topic,
        letters,
        keys,
        filters=filters,
        allowed_topics=allowed_topics,
        limit=limit,
    )


def marked_keys(records: Sequence[Any]) -> set[str]:
    """The dead-letter keys of marker records (a record without a value unmarks its key)."""
    keys: set[str] = set()
    for record in records:
        if not record.key:
            continue
        key = bytes(record.key).decode("utf-8", errors="replace")
        if record.value is None:
            keys.discard(key)
        else:
            keys.add(key)
    return keys


async def ensure_markers_topic(
    kafka: KafkaConfig,
    name: str,
    *,
    replication_factor: int,
    timeout_s: float = DEFAULT_BROKER_TIMEOUT_S,
) -> bool:
    """Create the compacted markers topic (1 partition) if it is missing; True if created.
    Each request waits at most ``timeout_s`` for the broker."""
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=_ms(timeout_s))
    try:
        await admin.start()
        if name in set(await admin.list_topics()):
            return False
        topic = NewTopic(
            name,
            num_partitions=1,
            replication_factor=replication_factor,
            topic_configs={"cleanup.policy": "compact"},
        )
        try:
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            return False
        log.info("created the replay markers topic %s", name)
        return True
    finally:
        await admin.close()


def _marker(letter: DeadLetter, copy: Any, now: datetime, operator: str) -> bytes:
    return orjson.dumps(
        {
            "key": letter.key,
            "reason": letter.reason,
            "replayed_to": {
                "topic": copy.topic,
                "partition": copy.partition,
                "offset": copy.offset,
            },
            "replayed_at": now.isoformat(timespec="milliseconds"),
            "replayed_by": operator,
        }
    )


def _ms(timeout_s: float) -> int:
    """A client's ``request_timeout_ms`` for a budget of ``timeout_s`` (at least 1 s)."""
    return max(int(timeout_s * 1000), 1000)


async def execute_replay(
    kafka: KafkaConfig,
    plan: ReplayPlan,
    *,
    operator: str,
    replication_factor: int = 1,
    chunk_size: int = 100,
    progress: Callable[[Replayed], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    broker_timeout_s: float = DEFAULT_BROKER_TIMEOUT_S,
) -> list[Replayed]:
    """Publish ``plan.to_replay`` chunk by chunk, each chunk followed by its markers.

    Returns when every record and marker was acknowledged by the broker (acks=all); the
    result lists where each copy landed. ``progress`` is called for each marked replay.

    Waits for an unreachable broker at most ``broker_timeout_s`` seconds before the first
    record, and as long for each acknowledgement. When the broker fails or refuses a
    record, raises :class:`ReplayIncompleteError` listing what was replayed and marked,
    what may be published without a marker (at most the failing chunk) and what was not
    replayed; before anything could be published, the classified broker error itself
    (:class:`~pipeline.deadletters.errors.BrokerDownError`, exit 1;
    :class:`~pipeline.deadletters.errors.BrokerRefusedError`, a configuration error) with
    "nothing was replayed".
    """
    if not plan.to_replay:
        return []
    markers = markers_topic(plan.dead_letters_topic)
    doing = f"replaying dead letters of {plan.dead_letters_topic}"
    refused_hint = REFUSED_HINT
    if kafka.idempotent_producer:
        refused_hint += (
            "; if the broker has no idempotent producers (e.g. the embedded Tansu), set "
            "KAFKA_IDEMPOTENT_PRODUCER=false"
        )
    producer: Any = AIOKafkaProducer(
        **producer_options(kafka, max_request_size=4 * 1024 * 1024),
        request_timeout_ms=_ms(broker_timeout_s),
    )
    try:
        try:
            await wait_for_broker(kafka, timeout_s=broker_timeout_s, doing=doing)
            await bounded(
                kafka,
                ensure_markers_topic(
                    kafka, markers, replication_factor=replication_factor,
                    timeout_s=broker_timeout_s,
                ),
                timeout_s=broker_timeout_s,
                doing=f"creating the replay markers topic {markers}",
            )  # fmt: skip
            await bounded(
                kafka,
                producer.start(),
                timeout_s=broker_timeout_s,
                doing="starting the replay producer",
                refused_hint=refused_hint,
            )
        except PipelineError as exc:
            raise noted(exc, f"; nothing was replayed ({len(plan.to_replay)} selected)") from exc
        done: list[Replayed] = []
        for start in range(0, len(plan.to_replay), chunk_size):
            chunk = plan.to_replay[start : start + chunk_size]
            result = await _replay_chunk(producer, markers, chunk, operator, clock())
            done.extend(result.done)
            if progress is not None:
                for item in result.done:
                    progress(item)
            if result.error is not None:
                raise _incomplete(
                    kafka, plan, done, result, plan.to_replay[start + chunk_size :]
                ) from result.error
        return done
    finally:
        await stop_quietly(producer, "producer")


def _incomplete(
    kafka: KafkaConfig,
    plan: ReplayPlan,
    done: list[Replayed],
    failed: _ChunkResult,
    later: Sequence[DeadLetter],
) -> ReplayIncompleteError:
    """The error for a replay that stopped at the chunk ``failed``."""
    cause = failed.error
    assert cause is not None
    not_sent = [*failed.not_sent, *later]
    if is_transient(cause):
        why = f"cannot reach the Kafka broker at {kafka.bootstrap} ({describe(cause)}); "
        why += BOOTSTRAP_HINT
    else:
        why = f"the Kafka broker at {kafka.bootstrap} refused a record ({describe(cause)})"
    parts = [f"{len(done)} of {len(plan.to_replay)} dead letters replayed and marked"]
    if failed.unmarked:
        parts.append(
            f"{len(failed.unmarked)} possibly published without their markers (a re-run "
            f"would publish them again: look for {REPLAYED_FROM_HEADER} headers with their "
            "keys in their source topics first)"
        )
    parts.append(f"{len(not_sent)} not replayed (a re-run replays them)")
    return ReplayIncompleteError(
        f"replay stopped: {', '.join(parts)}: {why}",
        done=done,
        unmarked=failed.unmarked,
        not_sent=not_sent,
    )


@dataclass
class _ChunkResult:
    """What became of one chunk; ``error`` is the first failure (None: all marked)."""

    done: list[Replayed] = field(default_factory=list)
    unmarked: list[DeadLetter] = field(default_factory=list)
    not_sent: list[DeadLetter] = field(default_factory=list)
    error: BaseException | None = None


async def _replay_chunk(
    producer: Any, markers: str, chunk: Sequence[DeadLetter], operator: str, now: datetime
) -> _ChunkResult:
    """Publish the copies of ``chunk``, then a marker for each copy the broker
    acknowledged; say per dead letter what became of it."""
    copies = await _send_all(
        producer,
        [
            (letter.source_topic, None, letter.value, [(REPLAYED_FROM_HEADER, letter.key.encode())])
            for letter in chunk
        ],
    )
    acked = [(letter, c) for letter, c in zip(chunk, copies.acked, strict=True) if c is not None]
    marks = await _send_all(
        producer,
        [
            (markers, letter.key.encode(), _marker(letter, copy, now, operator), [])
            for letter, copy in acked
        ],
    )
    result = _ChunkResult(error=copies.error or marks.error)
    marked = iter(marks.acked)
    for letter, copy, failure in zip(chunk, copies.acked, copies.failed, strict=True):
        if copy is not None:
            if next(marked) is not None:
                result.done.append(Replayed(letter, copy.topic, copy.partition, copy.offset))
            else:  # published, its marker not acknowledged
                result.unmarked.append(letter)
        elif failure is not None and is_transient(failure):  # sent; the outcome is unknown
            result.unmarked.append(letter)
        else:  # never sent, or refused by the broker: not written
            result.not_sent.append(letter)
    return result


@dataclass
class _Sent:
    """Per message: its RecordMetadata once acknowledged (else None) and the exception it
    failed with after being sent (else None); ``error`` is the first failure, including a
    ``send`` that raised before sending (the rest was not attempted then)."""

    acked: list[Any]
    failed: list[BaseException | None]
    error: BaseException | None


async def _send_all(
    producer: Any, messages: Sequence[tuple[str | None, bytes | None, bytes | None, Any]]
) -> _Sent:
    """Send ``messages`` (topic, key, value, headers) in order; wait for every answer.

    A ``send`` that raises (the record is refused before it is sent, or the topic's
    metadata did not come in time) stops sending: the rest is left unsent, so a dead broker
    costs one timeout, not one per record. Each acknowledgement waits at most the
    producer's ``request_timeout_ms``.
    """
    futures: list[Any] = []
    error: BaseException | None = None
    for topic, key, value, headers in messages:
        try:
            futures.append(await producer.send(topic, key=key, value=value, headers=headers))
        except Exception as exc:
            error = exc
            break
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    sent = _Sent([None] * len(messages), [None] * len(messages), None)
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            sent.failed[i] = outcome
            sent.error = sent.error or outcome
        else:
            sent.acked[i] = outcome
    sent.error = sent.error or error
    return sent
