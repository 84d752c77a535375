"""Finding, on resume, the import's records that reached Kafka after the last position.

The position file only moves after the broker acknowledged every record before it, so a
crash leaves records beyond the position that may or may not be in their topic (sent and
acknowledged, sent without the acknowledgement arriving, or never sent). Sending them
again would count API calls and metric samples twice (they are added to aggregates), so a
resumed import first finds out which of them landed, reading the target partitions
between two bounds:

- **upper bound, a fence**: at the start of every run the importer appends an empty record
  (``[]``, key ``pipeline-import-fence``: valid, carries no events, the workers skip it) to
  every partition of every target topic (:func:`send_fences`). A record of an earlier run
  lies before that run's fence in its partition: its process is gone (run one import of a
  file at a time; the importer locks the first file against a second run on this host);
- **lower bound**, from the position file: per partition, the offset after which a record
  not covered by the position can lie: the previous run's fence, moved at each checkpoint
  past the last record acknowledged there (a checkpoint waits until nothing is in flight,
  so later records land after it).

:func:`find_landed` reads each partition from its lower bound up to the fence, group-less
(nothing committed, no consumer group moved), and returns every record whose key starts
with one of the files' SHA-256 prefixes (see :func:`pipeline.importer.records.record_key`).
The read covers at most one checkpoint interval of each partition's traffic, and does not
depend on the end offsets a broker reports (the embedded Tansu under-reports them).

It must start **at** the lower bound: if the topic's retention deleted records between
the lower bound and the fence (a resume long after the interruption), which of the
import's records were acknowledged can no longer be proved, and starting from the log's
new beginning instead would send some of them again (API calls and metric samples are
added, so counted twice). :func:`find_landed` first compares each partition's beginning
offset with its lower bound (:func:`retention_gaps`) and refuses with
:class:`ImportRetentionError` (exit 1); the read itself never jumps to the log's beginning
either (``auto_offset_reset="none"``: an offset deleted meanwhile refuses the same way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from pipeline.config import KafkaConfig
from pipeline.errors import PipelineError
from pipeline.kafka import client_options, require_codecs

__all__ = [
    "FENCE_KEY",
    "ImportKafkaError",
    "ImportRetentionError",
    "find_landed",
    "retention_gaps",
    "send_fences",
]

FENCE_KEY: Final = b"pipeline-import-fence"
FENCE_VALUE: Final = b"[]"
_STUCK_S: Final = 60.0

Offsets = dict[tuple[str, int], int]
Gap = tuple[tuple[str, int], int, int | None]
"""A partition, its lower bound and where its log begins now (None: unknown)."""


class ImportKafkaError(PipelineError):
    """The broker could not be written or read; nothing is lost: run the same command
    again to resume."""

    retriable = True


class ImportRetentionError(PipelineError):
    """The topics' retention deleted records an interrupted import may have sent after its
    last checkpoint: resuming cannot prove what was sent, so it refuses (exit 1)."""

    def __init__(self, gaps: list[Gap]) -> None:
        (topic, partition), lower, beginning = gaps[0]
        span = (
            f"offsets {lower} to {beginning - 1}"
            if beginning is not None
            else f"records from offset {lower}"
        )
        others = f" (and {len(gaps) - 1} more partition(s))" if len(gaps) > 1 else ""
        super().__init__(
            f"cannot resume the import: Kafka's retention deleted {span} of {topic} "
            f"partition {partition}{others}, where the interrupted "
            "run may have sent records after its last checkpoint, so the import cannot prove "
            "which of them were sent and resending could count events twice; nothing more "
            "was sent: verify what PostgreSQL holds for the files' days against the files "
            "(the position file keeps their figures and the baseline) and import what is "
            "missing from a new file with a new position file"
        )
        self.gaps = gaps


def retention_gaps(
    lower_bounds: Mapping[tuple[str, int], int],
    fences: Mapping[tuple[str, int], int],
    beginnings: Mapping[tuple[str, int], int],
) -> list[Gap]:
    """The partitions to read (lower bound below the fence) whose log now begins after the
    lower bound (the records in between were deleted), as ``(tp, lower, beginning)``,
    sorted. A partition without a lower bound (added since) is to be read from offset 0;
    a partition whose beginning is unknown counts as deleted from the fence."""
    gaps: list[Gap] = []
    for tp, fence in sorted(fences.items()):
        lower = lower_bounds.get(tp, 0)
        if lower >= fence:
            continue
        beginning = beginnings.get(tp, fence)
        if beginning > lower:
            gaps.append((tp, lower, beginning))
    return gaps


async def send_fences(producer: Any, topics: Collection[str]) -> Offsets:
    """Append a fence to every partition of ``topics``; return each fence's offset."""
    futures = []
    for topic in sorted(topics):
        partitions = await producer.partitions_for(topic)
        for partition in sorted(partitions):
            futures.append(
                await producer.send(topic, FENCE_VALUE, key=FENCE_KEY, partition=partition)
            )
    return {(m.topic, m.partition): m.offset for m in await asyncio.gather(*futures)}


async def find_landed(
    kafka: KafkaConfig,
    lower_bounds: Mapping[tuple[str, int], int],
    fences: Mapping[tuple[str, int], int],
    prefixes: Collection[str],
) -> dict[str, tuple[str, int, int]]:
    """Keys (with topic, partition, offset) of the records between the bounds whose key
    starts with one of ``prefixes``; see the module docstring. A partition without a lower
    bound (added since) is read from its beginning.

    Raises :class:`ImportRetentionError` if records between a lower bound and its fence
    were deleted, :class:`ImportKafkaError` if the broker cannot be read or makes no
    progress for a minute.
    """
    wanted = tuple(p.encode() for p in prefixes)
    todo = {tp: end for tp, end in fences.items() if lower_bounds.get(tp, 0) < end}
    if not todo or not wanted:
        return {}
    require_codecs()
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",  # never jump to the log's beginning: see the docstring
    )
    landed: dict[str, tuple[str, int, int]] = {}
    try:
        await consumer.start()
        parts = {tp: TopicPartition(*tp) for tp in todo}
        found = await consumer.beginning_offsets(list(parts.values()))
        beginnings = {(p.topic, p.partition): offset for p, offset in found.items()}
        gaps = retention_gaps(lower_bounds, todo, beginnings)
        if gaps:
            raise ImportRetentionError(gaps)
        consumer.assign(list(parts.values()))
        for tp, part in parts.items():
            consumer.seek(part, lower_bounds.get(tp, 0))
        progress_at = time.monotonic()
        while todo:
            batch = await consumer.getmany(*[parts[tp] for tp in todo], timeout_ms=500)
            for part, records in batch.items():
                tp = (part.topic, part.partition)
                end = todo.get(tp)
                if end is None:
                    continue
                progress_at = time.monotonic()
                for record in records:
                    if record.offset >= end:
                        break
                    key = record.key
                    if key and key.startswith(wanted):
                        landed[key.decode()] = (part.topic, part.partition, record.offset)
            for tp in list(todo):
                if await consumer.position(parts[tp]) >= todo[tp]:
                    del todo[tp]
                    consumer.pause(parts[tp])
            if todo and time.monotonic() - progress_at > _STUCK_S:
                topic, partition = next(iter(todo))
                raise ImportKafkaError(
                    f"no progress reading {topic} partition {partition} for {_STUCK_S:.0f}s "
                    "while looking for records of the interrupted import; run the command "
                    "again"
                )
    except OffsetOutOfRangeError as exc:  # deleted after the check above
        out = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        lost: list[Gap] = [((p.topic, p.partition), o, None) for p, o in out.items()]
        first = next(iter(todo))
        raise ImportRetentionError(lost or [(first, lower_bounds.get(first, 0), None)]) from exc
    except KafkaError as exc:
        raise ImportKafkaError(f"could not read the target topics: {exc!r}") from exc
    except OSError as exc:
        raise ImportKafkaError(f"could not reach the broker at {kafka.bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    return landed
