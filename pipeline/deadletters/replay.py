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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.config import KafkaConfig
from pipeline.deadletters.read import (
    DeadLetter,
    DeadLetterToolError,
    Filters,
    distinct,
    read_topics,
)
from pipeline.kafka import client_options, producer_options

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
) -> ReplayPlan:
    """Read the dead letters and the markers, and plan the replay.

    Blocks while reading (see :func:`pipeline.deadletters.read.read_topics`); a missing
    markers topic means nothing was replayed yet. Raises
    :class:`~pipeline.deadletters.read.TopicNotFoundError` if the dead-letter topic does
    not exist, :class:`DeadLetterToolError` if the broker cannot be read.
    """
    markers = markers_topic(dead_letters_topic)
    read = await read_topics(
        kafka, [dead_letters_topic, markers], idle_s=idle_s, optional=[markers]
    )
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


async def ensure_markers_topic(kafka: KafkaConfig, name: str, *, replication_factor: int) -> bool:
    """Create the compacted markers topic (1 partition) if it is missing; True if created."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
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


async def execute_replay(
    kafka: KafkaConfig,
    plan: ReplayPlan,
    *,
    operator: str,
    replication_factor: int = 1,
    chunk_size: int = 100,
    progress: Callable[[Replayed], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[Replayed]:
    """Publish ``plan.to_replay`` chunk by chunk, each chunk followed by its markers.

    Returns when every record and marker was acknowledged by the broker (acks=all); the
    result lists where each copy landed. ``progress`` is called for each marked replay.
    Raises :class:`DeadLetterToolError` if the broker fails: the chunks before the failing
    one are published and marked, the failing one may be published without markers (see
    the module docstring).
    """
    if not plan.to_replay:
        return []
    markers = markers_topic(plan.dead_letters_topic)
    producer: Any = AIOKafkaProducer(**producer_options(kafka, max_request_size=4 * 1024 * 1024))
    done: list[Replayed] = []
    try:
        await ensure_markers_topic(kafka, markers, replication_factor=replication_factor)
        await producer.start()
        try:
            for start in range(0, len(plan.to_replay), chunk_size):
                chunk = plan.to_replay[start : start + chunk_size]
                done.extend(await _replay_chunk(producer, markers, chunk, operator, clock()))
                if progress is not None:
                    for item in done[-len(chunk) :]:
                        progress(item)
        finally:
            await producer.stop()
    except (KafkaError, OSError) as exc:
        raise DeadLetterToolError(
            f"replay stopped after {len(done)} of {len(plan.to_replay)} dead letters "
            f"(published and marked); the next chunk may be published without its markers: "
            f"{exc!r}"
        ) from exc
    return done


async def _replay_chunk(
    producer: Any, markers: str, chunk: Sequence[DeadLetter], operator: str, now: datetime
) -> list[Replayed]:
    sends = [
        await producer.send(
            letter.source_topic,
            value=letter.value,
            headers=[(REPLAYED_FROM_HEADER, letter.key.encode())],
        )
        for letter in chunk
    ]
    copies = await asyncio.gather(*sends)
    marks = [
        await producer.send(
            markers, key=letter.key.encode(), value=_marker(letter, copy, now, operator)
        )
        for letter, copy in zip(chunk, copies, strict=True)
    ]
    await asyncio.gather(*marks)
    return [
        Replayed(letter, copy.topic, copy.partition, copy.offset)
        for letter, copy in zip(chunk, copies, strict=True)
    ]
