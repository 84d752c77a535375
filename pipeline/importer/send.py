"""The second pass of an import: produce every chunk's records, checkpointing as it goes.

:func:`send_all` runs once per (re)start of an import whose scan is done:

1. check that the target topics exist (a ``ConfigError`` naming the variable if not),
   start a producer (acks=all, idempotent as configured, the configured compression);
2. append a fence to every partition of the target topics (:mod:`pipeline.importer.tail`);
   if an earlier run may have sent records, read from the position file's lower bounds up
   to the fences and remember the import's records found there (``landed``); if no run
   sent anything yet (no lower bounds), call ``before_send(fences)``: the import waits
   there until the workers applied everything before the fences, then takes the baseline;
3. save the position file with the fences as new lower bounds (and ``landed``);
4. for each file not done, from its ``next_ordinal``: read and decide the lines again
   (:func:`pipeline.importer.records.chunks`) and send each record whose key is not
   ``landed``; every ``checkpoint_chunks`` chunks (or ``checkpoint_s`` seconds) wait until
   the broker acknowledged everything sent, then move the position to the end of the
   last chunk, raise the lower bounds past the acknowledged offsets, add them to the
   watermark targets, and save the position file;
5. at the end of a file, check that it still has the SHA-256 the scan recorded.

A record that fails raises :class:`~pipeline.importer.tail.ImportKafkaError` after the
producer stopped; the position file then holds the last checkpoint, and running the same
command again resumes without skipping or repeating anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import Event, EventKind
from pipeline.importer.position import FileState, ImportState
from pipeline.importer.records import Chunk, Reject, chunks
from pipeline.importer.sources import Line, Source, SourceError
from pipeline.importer.tail import ImportKafkaError, find_landed, send_fences
from pipeline.kafka import check_topics, producer_options
from pipeline.producer.errors import is_transient

__all__ = ["SendReport", "send_all"]


@dataclass(frozen=True)
class SendReport:
    """What one run sent: records and events, and what it skipped as already landed."""

    records: int
    events: int
    skipped_records: int
    skipped_events: int
    landed_found: int


class _Sender:
    def __init__(
        self,
        producer: Any,
        topics: TopicsConfig,
        state: ImportState,
        save: Callable[[], None],
        progress: Callable[[int], None] | None,
        checkpoint_chunks: int,
        checkpoint_s: float,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.state = state
        self.save = save
        self.progress = progress
        self.checkpoint_chunks = checkpoint_chunks
        self.checkpoint_s = checkpoint_s
        self.pending: list[tuple[asyncio.Future[Any], int]] = []
        self.records = self.events = self.skipped_records = self.skipped_events = 0
        self.done_events = state.events_sent

    async def send_chunk(self, chunk: Chunk) -> None:
        landed = self.state.landed
        for record in chunk.records:
            self.done_events += record.events
            if record.key in landed:  # acknowledged in an earlier run: counted when saved
                self.skipped_records += 1
                self.skipped_events += record.events
                self.state.records_sent += 1
                self.state.events_sent += record.events
                continue
            topic = self.topics.topic(record.kind)
            future = await self.producer.send(topic, record.value, key=record.key.encode())
            self.pending.append((future, record.events))
            self.records += 1
            self.events += record.events
        if self.progress is not None:
            self.progress(self.done_events)

    async def checkpoint(self, file: FileState, next_ordinal: int, next_line: int) -> None:
        """Wait for every pending record, then move and save the position."""
        pending, self.pending = self.pending, []
        results = await asyncio.gather(*(f for f, _ in pending), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            kind = "retriable" if all(is_transient(f) for f in failures) else "not retriable"
            raise ImportKafkaError(
                f"{len(failures)} of {len(results)} records were not acknowledged by the "
                f"broker ({kind}: {type(first).__name__}: {first}); the position file holds "
                "the last checkpoint: run the same command again to resume"
            ) from first
        state = self.state
        metadatas: list[Any] = list(results)
        for metadata, (_, events) in zip(metadatas, pending, strict=True):
            tp = (metadata.topic, metadata.partition)
            end = metadata.offset + 1
            state.targets[tp] = max(state.targets.get(tp, 0), end)
            state.lower_bounds[tp] = max(state.lower_bounds.get(tp, 0), end)
            state.records_sent += 1
            state.events_sent += events
        file.next_ordinal, file.next_line = next_ordinal, next_line
        prefix = f"{file.sha256}:"
        for key in [k for k in state.landed if k.startswith(prefix)]:
            if int(key.split(":")[1]) < next_line:
                del state.landed[key]
        self.save()


async def send_all(
    kafka: KafkaConfig,
    topics: TopicsConfig,
    state: ImportState,
    sources: Sequence[Source],
    classify_line: Callable[[Line, Source], Event | Reject],
    *,
    save: Callable[[], None],
    progress: Callable[[int], None] | None = None,
    before_send: Callable[[Mapping[tuple[str, int], int]], Awaitable[None]] | None = None,
    checkpoint_chunks: int = 20,
    checkpoint_s: float = 2.0,
) -> SendReport:
    """Send what is left of the import (see the module docstring); ``save()`` writes the
    position file; ``progress(events)`` counts events handed to the producer (skipped ones
    included); ``before_send(fences)``, when no earlier run sent anything, runs after the
    fences are written and before the first record (what it raises propagates; the
    position file is then unchanged). Raises :class:`ImportKafkaError`,
    :class:`~pipeline.errors.BrokerUnreachableError`, ``ConfigError`` (a missing topic) or
    :class:`~pipeline.importer.sources.SourceError`."""
    kinds = {EventKind(k) for f in state.files for k, n in f.valid.items() if n}
    target_topics = {topics.topic(kind) for kind in kinds}
    settings = topics.settings()
    await check_topics(kafka, {topic: settings[topic] for topic in target_topics})
    producer = AIOKafkaProducer(
        **producer_options(kafka, max_request_size=state.max_record_bytes + 65_536)
    )
    try:
        await producer.start()
    except Exception as exc:
        await _stop(producer)
        hint = (
            "; if the broker has no idempotent producers (Tansu), set "
            "KAFKA_IDEMPOTENT_PRODUCER=false"
            if kafka.idempotent_producer and not is_transient(exc)
            else ""
        )
        raise ImportKafkaError(
            f"could not connect to Kafka at {kafka.bootstrap}: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    found = 0
    try:
        try:
            fences = await send_fences(producer, target_topics)
        except (KafkaError, OSError) as exc:
            raise ImportKafkaError(
                f"could not write to {', '.join(sorted(target_topics))}: {exc!r}"
            ) from exc
        if state.lower_bounds:  # an earlier run may have sent records beyond the position
            prefixes = [f"{f.sha256}:" for f in state.files if not f.done]
            landed = await find_landed(kafka, state.lower_bounds, fences, prefixes)
            found = len(landed)
            for key, (topic, partition, offset) in landed.items():
                state.landed[key] = (topic, partition, offset)
                tp = (topic, partition)
                state.targets[tp] = max(state.targets.get(tp, 0), offset + 1)
        elif before_send is not None:  # nothing sent by any run yet
            await before_send(fences)
        state.lower_bounds = {tp: offset + 1 for tp, offset in fences.items()}
        save()
        sender = _Sender(
            producer,
            topics,
            state,
            save,
            progress,
            checkpoint_chunks,
            checkpoint_s,
        )
        try:
            for source, file in zip(sources, state.files, strict=True):
                if not file.done:
                    await _send_file(sender, source, file, classify_line)
        except (KafkaError, OSError) as exc:  # refused before it reached the broker
            raise ImportKafkaError(
                f"sending stopped: {type(exc).__name__}: {exc}; the position file holds the "
                "last checkpoint: run the same command again to resume"
            ) from exc
    finally:
        await _stop(producer)
    return SendReport(
        sender.records, sender.events, sender.skipped_records, sender.skipped_events, found
    )


async def _send_file(
    sender: _Sender,
    source: Source,
    file: FileState,
    classify_line: Callable[[Line, Source], Event | Reject],
) -> None:
    state = sender.state
    since = 0
    last = time.monotonic()
    chunk: Chunk | None = None
    for chunk in chunks(
        source,
        file.sha256,
        start=file.next_ordinal,
        chunk_lines=state.chunk_lines,
        max_record_bytes=state.max_record_bytes,
        classify_line=lambda line: classify_line(line, source),
    ):
        await sender.send_chunk(chunk)
        since += 1
        if since >= sender.checkpoint_chunks or time.monotonic() - last >= sender.checkpoint_s:
            await sender.checkpoint(file, chunk.end_ordinal, chunk.last_line + 1)
            since, last = 0, time.monotonic()
    if source.sha256 is not None and source.sha256 != file.sha256:
        raise SourceError(
            f"{source.path} changed while it was being imported (its SHA-256 differs from "
            "the scan's); the records sent so far are from the old contents"
        )
    file.done = True
    end = chunk.end_ordinal if chunk is not None else file.next_ordinal
    last_line = chunk.last_line + 1 if chunk is not None else file.next_line
    await sender.checkpoint(file, end, last_line)


async def _stop(producer: Any) -> None:
    # Stopping after a failure: the failure is what gets reported.
    with contextlib.suppress(Exception):
        await producer.stop()
