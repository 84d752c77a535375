"""The exactly-once watermark: ``ingest_offsets`` rows, locked and advanced in the flush.

Contract, for one (consumer group, topic) and the partitions of a batch:

- :func:`lock` runs inside the flush transaction. It creates missing rows (next_offset 0),
  then takes row locks in partition order (``FOR UPDATE``) and returns each partition's
  ``next_offset``. Until the transaction ends, any other worker flushing one of these
  partitions (a zombie still holding it after a rebalance) waits here, then sees the
  advanced watermark and skips what this transaction applied. Whoever commits first wins.
- :func:`advance` sets each row to ``max(next_offset, new)`` in the same transaction.
- :func:`read_topics` returns the committed watermarks without locking:
  where a worker starts each partition it is assigned, and what tools show.
- :func:`adopt` records where a partition new to the group starts (its first watermark),
  unless a row exists already, and returns the stored watermarks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_CREATE = """
INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset, updated_by)
SELECT $1, $2, p, 0, $4 FROM unnest($3::int[]) AS p
ON CONFLICT (consumer_group, topic, partition) DO NOTHING
"""

_LOCK = """
SELECT partition, next_offset FROM ingest_offsets
WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])
ORDER BY partition
FOR UPDATE
"""

_ADVANCE = """
UPDATE ingest_offsets AS o
SET next_offset = greatest(o.next_offset, n.next_offset), updated_at = now(), updated_by = $5
FROM unnest($3::int[], $4::bigint[]) AS n(partition, next_offset)
WHERE o.consumer_group = $1 AND o.topic = $2 AND o.partition = n.partition
"""

_READ_TOPICS = """
SELECT topic, partition, next_offset FROM ingest_offsets
WHERE consumer_group = $1 AND topic = ANY($2::text[])
"""


async def lock(
    conn: Any, group: str, topic: str, partitions: Sequence[int], worker_id: str
) -> dict[int, int]:
    """Lock (creating if needed) the watermark rows; return partition -> next_offset."""
    ordered = sorted(partitions)
    await conn.execute(_CREATE, group, topic, ordered, worker_id)
    rows = await conn.fetch(_LOCK, group, topic, ordered)
    return {r["partition"]: r["next_offset"] for r in rows}


async def advance(
    conn: Any, group: str, topic: str, next_offsets: Mapping[int, int], worker_id: str
) -> None:
    """Move the locked rows forward (never backward) to ``next_offsets``."""
    if not next_offsets:
        return
    parts = sorted(next_offsets)
    await conn.execute(_ADVANCE, group, topic, parts, [next_offsets[p] for p in parts], worker_id)


async def read_topics(conn: Any, group: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The committed watermarks of every partition of ``topics`` seen by ``group``."""
    rows = await conn.fetch(_READ_TOPICS, group, list(topics))
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


_ADOPT = """
INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset, updated_by)
SELECT $1, s.topic, s.partition, s.next_offset, $5
FROM unnest($2::text[], $3::int[], $4::bigint[]) AS s(topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO NOTHING
"""

_READ_SOME = """
SELECT o.topic, o.partition, o.next_offset
FROM ingest_offsets AS o
JOIN unnest($2::text[], $3::int[]) AS s(topic, partition)
  ON o.topic = s.topic AND o.partition = s.partition
WHERE o.consumer_group = $1
"""


async def adopt(
    conn: Any, group: str, starts: Mapping[tuple[str, int], int], worker_id: str
) -> dict[tuple[str, int], int]:
    """Create the rows of ``starts`` that do not exist; return every stored watermark."""
    keys = sorted(starts)
    topics = [t for t, _ in keys]
    parts = [p for _, p in keys]
    async with conn.transaction():
        await conn.execute(_ADOPT, group, topics, parts, [starts[k] for k in keys], worker_id)
        rows = await conn.fetch(_READ_SOME, group, topics, parts)
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
