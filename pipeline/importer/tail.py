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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.config import KafkaConfig
from pipeline.errors import PipelineError
from pipeline.kafka import client_options, require_codecs

__all__ = ["FENCE_KEY", "ImportKafkaError", "find_landed", "send_fences"]

FENCE_KEY: Final = b"pipeline-import-fence"
FENCE_VALUE: Final = b"[]"
_STUCK_S: Final = 60.0

Offsets = dict[tuple[str, int], int]


class ImportKafkaError(PipelineError):
    """The broker could not be written or read; nothing is lost: run the same command
    again to resume."""

    retriable = True


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

    Raises :class:`ImportKafkaError` if the broker cannot be read or makes no progress
    for a minute.
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
        auto_offset_reset="earliest",
    )
    landed: dict[str, tuple[str, int, int]] = {}
    try:
        await consumer.start()
        parts = {tp: TopicPartition(*tp) for tp in todo}
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
    except KafkaError as exc:
        raise ImportKafkaError(f"could not read the target topics: {exc!r}") from exc
    except OSError as exc:
        raise ImportKafkaError(f"could not reach the broker at {kafka.bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    return landed
