"""Reading the dead-letter topic (and other small topics) from the beginning, group-less.

:func:`read_topics` assigns every partition of the given topics to a consumer without a
consumer group, seeks to the beginning and reads until the end. Nothing is committed, so
reading never moves any group's position and can be repeated at will.

"The end" is decided by two conditions that must both hold: every partition's position has
reached the end offset observed when reading started, and no record arrived for
``idle_s`` seconds. The idle condition is needed because some brokers (the embedded Tansu)
under-report end offsets of partitions written with multi-record batches; the end-offset
condition keeps a slow first fetch on a real broker from ending the read early.

A broker that cannot be reached is waited for at most ``broker_timeout_s`` seconds
(retrying), and every later step is bounded by the same budget, so a read never hangs: a
broker that goes away in the middle (no record for ``broker_timeout_s`` while partitions
are still behind) raises :class:`~pipeline.deadletters.errors.BrokerDownError` naming
``KAFKA_BOOTSTRAP_SERVERS`` (see :mod:`pipeline.deadletters.broker`).

:func:`read_dead_letters` parses the dead-letter records written by
:class:`pipeline.worker.deadletter.DeadLetterPublisher` into :class:`DeadLetter` values and
drops duplicates by key (delivery to the dead-letter topic is at-least-once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.config import KafkaConfig
from pipeline.deadletters.broker import (
    DEFAULT_BROKER_TIMEOUT_S,
    bounded,
    stop_quietly,
    wait_for_broker,
)
from pipeline.deadletters.errors import DeadLetterToolError, TopicNotFoundError
from pipeline.kafka import client_options, require_codecs

__all__ = [
    "DEAD_LETTERS_SETTING",
    "DeadLetter",
    "DeadLetterToolError",
    "DeadLetters",
    "Filters",
    "TopicNotFoundError",
    "distinct",
    "parse_dead_letter",
    "read_dead_letters",
    "read_topics",
]

log = logging.getLogger(__name__)

# The variable naming the dead-letter topic (for messages).
DEAD_LETTERS_SETTING = "PIPELINE_TOPIC_DEAD_LETTERS"
# After a read made no progress for the broker timeout: how long to ask the broker whether
# it is still there (to tell "the broker is gone" from "a partition without a leader").
_PROBE_S = 5.0
_POLL_MS = 200


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record, parsed from its key and ``x-*`` headers.

    ``key`` is ``<topic>/<partition>/<offset>[/<index>]``: the source position, shared by
    duplicates of the same dead letter. ``value`` is what the worker published: the rejected
    event's JSON, or the whole source record's raw value (``event_index`` is None then, or
    the record was a single object). ``dlq_partition``/``dlq_offset`` locate the first copy
    read from the dead-letter topic.
    """

    key: str
    reason: str
    detail: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    event_index: int | None
    worker_id: str | None
    value: bytes | None
    dlq_partition: int
    dlq_offset: int
    original_size: int | None = None  # set when the value was truncated (x-original-size)

    @property
    def source_position(self) -> str:
        """``topic/partition/offset[#index]`` for display (``?`` for missing parts)."""
        index = "" if self.event_index is None else f"#{self.event_index}"
        parts = (self.source_topic, self.source_partition, self.source_offset)
        return "/".join("?" if p is None else str(p) for p in parts) + index

    def value_text(self, max_chars: int | None = None) -> str:
        """The value as text (invalid UTF-8 replaced), cut to ``max_chars`` with an ellipsis."""
        if self.value is None:
            return "<null>"
        text = self.value.decode("utf-8", errors="replace")
        if max_chars is not None and len(text) > max_chars:
            return text[: max(max_chars - 1, 0)] + "…"
        return text


@dataclass(frozen=True)
class Filters:
    """Which dead letters to consider; an empty collection means "all"."""

    reasons: Collection[str] = ()
    source_topics: Collection[str] = ()

    def match(self, letter: DeadLetter) -> bool:
        return (not self.reasons or letter.reason in self.reasons) and (
            not self.source_topics or letter.source_topic in self.source_topics
        )


@dataclass(frozen=True)
class DeadLetters:
    """The distinct dead letters of a topic in the order they were read."""

    topic: str
    letters: list[DeadLetter]
    messages_read: int
    duplicates: int


def _header(headers: Mapping[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def parse_dead_letter(message: Any) -> DeadLetter:
    """Build a :class:`DeadLetter` from an aiokafka ``ConsumerRecord`` (never raises).

    A record without a key (not written by a pipeline worker) gets the key
    ``dlq/<partition>/<offset>`` so that it is still counted, once.
    """
    headers = {k: v for k, v in (message.headers or ()) if v is not None}
    topic = _header(headers, "x-source-topic")
    partition = _integer(_header(headers, "x-source-partition"))
    offset = _integer(_header(headers, "x-source-offset"))
    index = _integer(_header(headers, "x-event-index"))
    if message.key:
        key = bytes(message.key).decode("utf-8", errors="replace")
    else:
        key = f"dlq/{message.partition}/{message.offset}"
    return DeadLetter(
        key=key,
        reason=_header(headers, "x-reason") or "unknown",
        detail=_header(headers, "x-detail") or "",
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        event_index=index,
        worker_id=_header(headers, "x-worker-id"),
        value=None if message.value is None else bytes(message.value),
        dlq_partition=message.partition,
        dlq_offset=message.offset,
        original_size=_integer(_header(headers, "x-original-size")),
    )


async def _partitions(
    kafka: KafkaConfig, topics: Sequence[str], timeout_s: float
) -> dict[str, list[int]]:
    """Partition numbers of each existing topic among ``topics`` (all-topics metadata, so
    that asking never auto-creates a topic)."""
    admin = AIOKafkaAdminClient(
        **client_options(kafka), request_timeout_ms=max(int(timeout_s * 1000), 1000)
    )
    try:
        await admin.start()
        described = await admin.describe_topics()
    finally:
        await admin.close()
    found: dict[str, list[int]] = {}
    for entry in described:
        if entry.get("topic") in topics and not entry.get("error_code"):
            found[entry["topic"]] = sorted(p["partition"] for p in entry["partitions"])
    return found


async def read_topics(
    kafka: KafkaConfig,
    topics: Sequence[str],
    *,
    idle_s: float = 2.0,
    limits: Mapping[str, int] | None = None,
    optional: Collection[str] = (),
    settings: Mapping[str, str] | None = None,
    broker_timeout_s: float = DEFAULT_BROKER_TIMEOUT_S,
) -> dict[str, list[Any]]:
    """Read every record of ``topics`` from the beginning; return them per topic.

    Blocks until the end is reached (see the module docstring) or, for a topic in
    ``limits``, until that many records were read from it. A topic in ``optional`` that
    does not exist yields an empty list; a missing required topic raises
    :class:`TopicNotFoundError` (a configuration error) naming its variable from
    ``settings`` (topic -> variable).

    Waits for an unreachable broker at most ``broker_timeout_s`` seconds (retrying), and
    gives up on one that stops answering after as long without progress:
    :class:`~pipeline.deadletters.errors.BrokerDownError`. Raises
    :class:`~pipeline.deadletters.errors.BrokerRefusedError` or another
    :class:`~pipeline.errors.ConfigError` at once when the broker refuses this client, no
    bootstrap host resolves, or the client lacks a Kafka codec.
    """
    require_codecs()
    limits = dict(limits or {})
    settings = dict(settings or {})
    doing = f"reading {', '.join(topics)}"
    await wait_for_broker(kafka, timeout_s=broker_timeout_s, doing=doing)
    existing = await bounded(
        kafka, _partitions(kafka, topics, broker_timeout_s), timeout_s=broker_timeout_s,
        doing=doing,
    )  # fmt: skip
    missing = [t for t in topics if t not in existing and t not in optional]
    if missing:
        setting = settings.get(missing[0])
        raise TopicNotFoundError(
            f"topic {missing[0]!r} does not exist on the broker at {kafka.bootstrap}"
            + (f"; check {setting}" if setting else "")
        )
    result: dict[str, list[Any]] = {t: [] for t in topics}
    tps = [TopicPartition(t, p) for t, parts in existing.items() for p in parts]
    if not tps:
        return result
    return await _consume(kafka, tps, result, idle_s, limits, broker_timeout_s, doing)


async def _consume(
    kafka: KafkaConfig,
    tps: list[TopicPartition],
    result: dict[str, list[Any]],
    idle_s: float,
    limits: dict[str, int],
    timeout_s: float,
    doing: str,
) -> dict[str, list[Any]]:
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await bounded(kafka, consumer.start(), timeout_s=timeout_s, doing=doing)
        consumer.assign(tps)
        await bounded(kafka, consumer.seek_to_beginning(*tps), timeout_s=timeout_s, doing=doing)
        ends: dict[TopicPartition, int] = await bounded(
            kafka, consumer.end_offsets(tps), timeout_s=timeout_s, doing=doing
        )
        done: set[str] = set()  # topics whose limit was reached (paused)
        idle_since = time.monotonic()
        while True:
            batch = await bounded(
                kafka, consumer.getmany(timeout_ms=_POLL_MS), timeout_s=timeout_s, doing=doing
            )
            for tp, records in batch.items():
                if tp.topic in done:
                    continue
                result[tp.topic].extend(records)
                idle_since = time.monotonic()
                limit = limits.get(tp.topic)
                if limit is not None and len(result[tp.topic]) >= limit:
                    del result[tp.topic][limit:]
                    done.add(tp.topic)
                    consumer.pause(*[p for p in tps if p.topic == tp.topic])
            if all(tp.topic in done for tp in tps):
                return result
            idle = time.monotonic() - idle_since
            if idle < idle_s:
                continue
            behind = await bounded(
                kafka, _behind(consumer, tps, done, ends), timeout_s=timeout_s, doing=doing
            )
            if not behind:
                return result
            if idle >= max(timeout_s, idle_s):
                await _stalled(kafka, behind[0], ends, idle, result, doing, timeout_s)
    finally:
        await stop_quietly(consumer, "consumer")


async def _behind(
    consumer: Any, tps: list[TopicPartition], done: set[str], ends: dict[TopicPartition, int]
) -> list[tuple[TopicPartition, int]]:
    """The partitions whose position is short of the end offset seen at the start, with
    their position."""
    positions = [(tp, await consumer.position(tp)) for tp in tps if tp.topic not in done]
    return [(tp, position) for tp, position in positions if position < ends.get(tp, 0)]


async def _stalled(
    kafka: KafkaConfig,
    behind: tuple[TopicPartition, int],
    ends: dict[TopicPartition, int],
    idle: float,
    result: dict[str, list[Any]],
    doing: str,
    timeout_s: float,
) -> None:
    """No record arrived for ``idle`` seconds although a partition is behind: raise. Asks
    the broker first, to say whether it is gone (BrokerDownError, from
    :func:`~pipeline.deadletters.broker.wait_for_broker`) or answers without delivering
    (a partition without a leader)."""
    tp, position = behind
    got = sum(len(records) for records in result.values())
    progress = (
        f"{got} record(s) read, {tp.topic} partition {tp.partition} at offset {position} "
        f"of {ends.get(tp, 0)}"
    )
    probe_s = min(_PROBE_S, timeout_s)
    await wait_for_broker(kafka, timeout_s=probe_s, doing=f"{doing} ({progress})", waited_s=idle)
    raise DeadLetterToolError(
        f"no progress {doing} for {idle:.0f}s ({progress}) although the broker at "
        f"{kafka.bootstrap} answers: a partition without a leader? (--broker-timeout waits "
        "longer)"
    )


async def read_dead_letters(
    kafka: KafkaConfig,
    topic: str,
    *,
    idle_s: float = 2.0,
    limit: int | None = None,
    broker_timeout_s: float = DEFAULT_BROKER_TIMEOUT_S,
) -> DeadLetters:
    """Read the dead-letter topic ``topic`` (at most ``limit`` records) and drop duplicates.

    Same blocking and errors as :func:`read_topics`.
    """
    read = await read_topics(
        kafka,
        [topic],
        idle_s=idle_s,
        limits={topic: limit} if limit is not None else None,
        settings={topic: DEAD_LETTERS_SETTING},
        broker_timeout_s=broker_timeout_s,
    )
    return distinct(topic, read[topic])


def distinct(topic: str, records: Sequence[Any]) -> DeadLetters:
    """Parse ``records`` and keep the first dead letter of each key."""
    seen: dict[str, DeadLetter] = {}
    for record in records:
        letter = parse_dead_letter(record)
        seen.setdefault(letter.key, letter)
    return DeadLetters(topic, list(seen.values()), len(records), len(records) - len(seen))
