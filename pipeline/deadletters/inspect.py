"""What is on the dead-letter topic: counts by reason and source topic, with samples.

:func:`inspect_dead_letters` reads the dead-letter topic and the replay markers and
summarizes them. :func:`summarize` is pure (no I/O): it takes the distinct dead letters read by
:func:`pipeline.deadletters.read.read_dead_letters` and the keys already replayed (from the
replay markers topic), applies the operator's filters and keeps the first ``samples``
dead letters of each reason. :func:`summary_as_json` gives the stable JSON form printed by
``pipeline dlq inspect --format json``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import KafkaConfig
from pipeline.deadletters.broker import DEFAULT_BROKER_TIMEOUT_S
from pipeline.deadletters.read import (
    DEAD_LETTERS_SETTING,
    DeadLetter,
    DeadLetters,
    Filters,
    distinct,
    read_topics,
)
from pipeline.deadletters.replay import marked_keys, markers_topic

# Longest value printed per sample in JSON (a whole rejected record may be 1 MiB).
JSON_VALUE_CHARS = 4_096
ALL = Filters()


@dataclass
class Summary:
    """Counts (distinct dead letters matching the filters) and samples, largest first."""

    topic: str
    messages_read: int
    duplicates: int
    total: int = 0
    replayed: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_source_topic: Counter[str] = field(default_factory=Counter)
    by_reason_and_topic: Counter[tuple[str, str]] = field(default_factory=Counter)
    replayed_by_reason: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[DeadLetter]] = field(default_factory=dict)


def summarize(
    read: DeadLetters,
    *,
    filters: Filters = ALL,
    samples: int = 3,
    replayed_keys: Collection[str] = (),
) -> Summary:
    """Count the dead letters of ``read`` that match ``filters``; keep ``samples`` per reason.

    ``replayed_keys`` are the keys marked by ``pipeline dlq replay``; they are counted as
    well (they stay on the dead-letter topic) and reported in ``replayed``.
    """
    summary = Summary(read.topic, read.messages_read, read.duplicates)
    for letter in read.letters:
        if not filters.match(letter):
            continue
        topic = letter.source_topic or "?"
        summary.total += 1
        summary.by_reason[letter.reason] += 1
        summary.by_source_topic[topic] += 1
        summary.by_reason_and_topic[(letter.reason, topic)] += 1
        if letter.key in replayed_keys:
            summary.replayed += 1
            summary.replayed_by_reason[letter.reason] += 1
        kept = summary.samples.setdefault(letter.reason, [])
        if len(kept) < samples:
            kept.append(letter)
    order = [reason for reason, _ in summary.by_reason.most_common()]
    summary.samples = {r: summary.samples[r] for r in order if summary.samples.get(r)}
    return summary


async def inspect_dead_letters(
    kafka: KafkaConfig,
    topic: str,
    *,
    filters: Filters = ALL,
    samples: int = 3,
    limit: int | None = None,
    idle_s: float = 2.0,
    broker_timeout_s: float = DEFAULT_BROKER_TIMEOUT_S,
) -> Summary:
    """Read ``topic`` (at most ``limit`` records) and its replay markers; summarize.

    Reads without a consumer group and commits nothing. Blocks and raises as
    :func:`pipeline.deadletters.read.read_topics` does (``TopicNotFoundError`` when the
    dead-letter topic is missing; a missing markers topic means nothing was replayed;
    ``BrokerDownError`` when the broker does not answer within ``broker_timeout_s``).
    """
    markers = markers_topic(topic)
    read = await read_topics(
        kafka,
        [topic, markers],
        idle_s=idle_s,
        limits={topic: limit} if limit is not None else None,
        optional=[markers],
        settings={topic: DEAD_LETTERS_SETTING},
        broker_timeout_s=broker_timeout_s,
    )
    return summarize(
        distinct(topic, read[topic]),
        filters=filters,
        samples=samples,
        replayed_keys=marked_keys(read[markers]),
    )


def letter_as_json(letter: DeadLetter, *, max_chars: int = JSON_VALUE_CHARS) -> dict[str, Any]:
    """A dead letter as a JSON object (value as text, cut to ``max_chars``)."""
    text = letter.value_text()
    return {
        "key": letter.key,
        "reason": letter.reason,
        "detail": letter.detail,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "event_index": letter.event_index,
        "worker_id": letter.worker_id,
        "dlq_partition": letter.dlq_partition,
        "dlq_offset": letter.dlq_offset,
        "value": text[:max_chars],
        "value_truncated": len(text) > max_chars,
    }


def summary_as_json(summary: Summary) -> dict[str, Any]:
    """The summary as plain JSON types (keys in a stable order, counts largest first)."""
    return {
        "topic": summary.topic,
        "messages_read": summary.messages_read,
        "duplicates": summary.duplicates,
        "total": summary.total,
        "replayed": summary.replayed,
        "by_reason": dict(summary.by_reason.most_common()),
        "by_source_topic": dict(summary.by_source_topic.most_common()),
        "by_reason_and_topic": [
            {"reason": reason, "source_topic": topic, "count": count}
            for (reason, topic), count in summary.by_reason_and_topic.most_common()
        ],
        "replayed_by_reason": dict(summary.replayed_by_reason.most_common()),
        "samples": {
            reason: [letter_as_json(letter) for letter in letters]
            for reason, letters in summary.samples.items()
        },
    }
