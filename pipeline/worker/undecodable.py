"""Record batches the Kafka client cannot decode (stage: consume).

A corrupt batch or a codec the client does not know makes aiokafka raise from the middle of
``getmany``: :data:`DECODE_ERRORS` lists what it raises then (its own errors and those of
the decompressors). The consumer finds the partition and offset; :func:`describe` says, in
the one line the consumer logs, what cannot be read and how to skip it: the batch's offsets
and codec come from its header (:func:`pipeline.kafka.batch_extent`), which needs no
decoding.
"""

from __future__ import annotations

import gzip
import zlib

from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError

from pipeline.config import KafkaConfig
from pipeline.kafka import batch_extent


def _decode_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        CorruptRecordException,
        UnsupportedCodecError,
        zlib.error,
        gzip.BadGzipFile,
        EOFError,  # a truncated gzip stream
    ]
    try:
        import cramjam

        errors.append(cramjam.DecompressionError)
    except (ImportError, AttributeError):  # pragma: no cover - the codecs are a dependency
        pass
    return tuple(errors)


DECODE_ERRORS = _decode_errors()


async def describe(
    exc: BaseException,
    kafka: KafkaConfig | None,
    group: str,
    tp: TopicPartition,
    offset: int | None,
) -> str:
    """Why ``tp`` stops at ``offset``: the cause and, when the broker returns the batch's
    header, its offsets, codec and the statement that skips it. ``kafka`` None: no header
    is read (tests with a fake client)."""
    cause = f"{type(exc).__name__}: {exc}"
    extent = None
    if offset is not None and kafka is not None:
        extent = await batch_extent(kafka, tp.topic, tp.partition, offset)
    if extent is None:
        return f"the record batch there cannot be decoded ({cause})"
    after = extent.last_offset + 1
    return (
        f"records {extent.first_offset}..{extent.last_offset} (one batch of "
        f"{extent.records}, codec {extent.codec}) cannot be decoded ({cause}); to skip "
        f"them: UPDATE ingest_offsets SET next_offset = {after} WHERE consumer_group = "
        f"'{group}' AND topic = '{tp.topic}' AND partition = {tp.partition} AND "
        f"next_offset < {after}"
    )
