"""Where each assigned partition starts: PostgreSQL's watermark (stage: consume).

:func:`starting_positions` is what the consumer calls when partitions are assigned (or a
stopped one is retried). The contract:

- A partition with an ``ingest_offsets`` row starts at its watermark. Always.
- A partition without a row is new to the group: it starts at the group's committed Kafka
  offset (a group adopted from another consumer), else at the beginning
  (``start_from="earliest"``) or the end of the partition, and that start is recorded at
  once as its first watermark (:meth:`WatermarkStore.adopt`; when another worker recorded
  one first, that one wins). A committed offset is therefore read at most once per
  partition and group: from then on Kafka's committed offsets cannot move where the group
  starts, whoever commits them (faust issue #606, a reset, offset translation).
- Blocks, retrying with backoff, while PostgreSQL or the broker cannot answer: the
  partitions stay paused meanwhile. Raises only what is a bug (or cancellation, when the
  partitions are revoked).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from pipeline.errors import PipelineError
from pipeline.worker.retry import RetryPolicy

log = logging.getLogger(__name__)


class WatermarkStore(Protocol):
    """Where partitions start: the ``ingest_offsets`` rows of this consumer group.

    Both methods raise :class:`~pipeline.errors.PipelineError` when PostgreSQL cannot
    answer (the caller retries)."""

    async def read(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """The watermark of each partition that has a row."""

    async def adopt(self, starts: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Record ``starts`` as the watermarks of partitions that have no row yet; return
        the stored watermark of each (an existing row wins)."""


async def starting_positions(
    partitions: Collection[TopicPartition],
    *,
    watermarks: WatermarkStore,
    consumer: Any,
    start_from: str,
    retry: RetryPolicy,
    rng: random.Random | None = None,
) -> dict[TopicPartition, int]:
    """The offset each of ``partitions`` starts at (see the module docstring).

    ``consumer`` is the aiokafka consumer (``committed``, ``beginning_offsets``,
    ``end_offsets``) that the fallback asks.
    """
    rng = rng or random.Random()
    wanted = set(partitions)
    marks = await _until_answered(
        "read the watermarks of", wanted, lambda: watermarks.read(wanted), retry, rng
    )
    new = sorted(tp for tp in wanted if tp not in marks)
    if not new:
        return marks
    starts = {tp: await _fallback(consumer, tp, start_from, retry, rng) for tp in new}
    adopted = await _until_answered(
        "record the starting positions of",
        set(new),
        lambda: watermarks.adopt({tp: offset for tp, (offset, _) in starts.items()}),
        retry,
        rng,
    )
    marks.update(adopted)
    reasons: dict[str, int] = {}
    for tp, (offset, why) in starts.items():
        stored = adopted.get(tp, offset)
        why = why if stored == offset else "recorded by another worker first"
        reasons[why] = reasons.get(why, 0) + 1
        log.debug(
            "%s[%d] is new to the group: starts at %d (%s)", tp.topic, tp.partition, stored, why
        )
    log.info(
        "%d partitions new to the group start at: %s; recorded as their watermarks",
        len(starts),
        ", ".join(f"{why} ({n})" for why, n in sorted(reasons.items())),
    )
    return marks


async def _until_answered(
    what: str,
    partitions: set[TopicPartition],
    call: Callable[[], Awaitable[dict[TopicPartition, int]]],
    retry: RetryPolicy,
    rng: random.Random,
) -> dict[TopicPartition, int]:
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except PipelineError as exc:
            delay = retry.delay(attempt, rng)
            log.warning(
                "cannot %s %d assigned partitions (%s); they stay paused, retrying in %.1fs",
                what,
                len(partitions),
                exc,
                delay,
            )
            await asyncio.sleep(delay)


async def _fallback(
    consumer: Any, tp: TopicPartition, start_from: str, retry: RetryPolicy, rng: random.Random
) -> tuple[int, str]:
    """No watermark row yet: the group's committed offset, else start_from."""
    attempt = 0
    while True:
        attempt += 1
        try:
            committed = await consumer.committed(tp)
            if committed is not None:
                return committed, "the group's committed Kafka offset"
            if start_from == "earliest":
                ends = await consumer.beginning_offsets([tp])
            else:
                ends = await consumer.end_offsets([tp])
            return ends[tp], f"no committed offset: {start_from}"
        except KafkaError as exc:
            delay = retry.delay(attempt, rng)
            log.warning("cannot read %s[%d]'s committed offset (%r)", tp.topic, tp.partition, exc)
            await asyncio.sleep(delay)
