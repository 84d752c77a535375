"""Partition maintenance: create ahead, prune behind, report.

The policy of each partitioned table lives in the ``partition_policies`` table and the
range arithmetic in SQL (``ensure_partition``/``ensure_partitions``, migration 0001), so
the CLI, the worker's on-demand creation and the leader's timer share one implementation.

Contract:

- :func:`ensure` is idempotent and safe with concurrent runners (creators serialise on a
  per-table advisory lock inside ``ensure_partition``). Returning means every partition in
  each policy's window exists.
- :func:`prune` detaches (``DETACH PARTITION ... CONCURRENTLY``, so writers of the other
  partitions are not blocked) and drops partitions whose whole range ends at or before
  ``now - retention``. It needs a connection outside any transaction. Concurrent prunes
  serialise on a session advisory lock; a prune that cannot get it within ``lock_wait_s``
  does nothing and says so. An interrupted detach is finished on the next run.
- ``now`` is injectable everywhere so tests do not depend on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

_PRUNE_LOCK_KEY = 0x7069_7065_7072_756E  # "pipeprun"


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as the catalog describes it."""

    parent_table: str
    partition_name: str
    range_start: datetime
    range_end: datetime
    detach_pending: bool
    estimated_rows: int
    total_bytes: int


@dataclass(frozen=True)
class EnsureResult:
    parent_table: str
    partition_name: str
    created: bool


async def ensure(conn: Any, *, now: datetime | None = None) -> list[EnsureResult]:
    """Make sure each policy's window of partitions exists; return every partition in the
    windows with ``created`` telling which this call made."""
    rows = await conn.fetch(
        "SELECT parent_table, partition_name, created "
        "FROM ensure_partitions(coalesce($1::timestamptz, now()))",
        now,
    )
    results = [EnsureResult(r["parent_table"], r["partition_name"], r["created"]) for r in rows]
    created = [r.partition_name for r in results if r.created]
    if created:
        log.info("created %d partitions: %s", len(created), ", ".join(created))
    return results


async def stats(conn: Any) -> list[PartitionInfo]:
    """Every partition of every policy table, oldest first within each table."""
    rows = await conn.fetch(
        "SELECT parent_table, partition_name, range_start, range_end, detach_pending, "
        "estimated_rows, total_bytes FROM partition_ranges ORDER BY parent_table, range_start"
    )
    return [PartitionInfo(**dict(r)) for r in rows]


async def expired(conn: Any, *, now: datetime | None = None) -> list[PartitionInfo]:
    """Partitions whose whole range lies beyond their table's retention at ``now``."""
    rows = await conn.fetch(
        "SELECT r.parent_table, r.partition_name, r.range_start, r.range_end, "
        "r.detach_pending, r.estimated_rows, r.total_bytes "
        "FROM partition_ranges r JOIN partition_policies p USING (parent_table) "
        "WHERE r.range_end <= coalesce($1::timestamptz, now()) - p.retention "
        "ORDER BY r.parent_table, r.range_start",
        now,
    )
    return [PartitionInfo(**dict(r)) for r in rows]


async def can_prune(conn: Any) -> bool:
    """Whether this login may detach and drop partitions: DETACH and DROP need the owner
    of the partitioned tables (``pipeline_migrator`` after migration 0006), so a login
    with only ``pipeline_writer`` can create partitions but not prune them."""
    allowed: bool | None = await conn.fetchval(
        "SELECT bool_and(pg_has_role(current_user, c.relowner, 'USAGE')) "
        "FROM partition_policies p JOIN pg_class c ON c.oid = to_regclass(p.parent_table)"
    )
    return bool(allowed)


async def prune(
    conn: Any,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    lock_wait_s: float = 10.0,
) -> list[PartitionInfo]:
    """Detach and drop expired partitions; return those dropped (or that would be)."""
    candidates = await expired(conn, now=now)
    if dry_run or not candidates:
        return candidates
    if not await _try_lock(conn, lock_wait_s):
        log.warning("another prune is running; skipping this one")
        return []
    try:
        dropped = []
        for part in await expired(conn, now=now):  # re-read under the lock
            parent = _quote_ident(part.parent_table)
            child = _quote_ident(part.partition_name)
            mode = "FINALIZE" if part.detach_pending else "CONCURRENTLY"
            await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {child} {mode}")
            await conn.execute(f"DROP TABLE {child}")
            log.info(
                "dropped partition %s (%s .. %s, ~%d rows)",
                part.partition_name,
                part.range_start,
                part.range_end,
                part.estimated_rows,
            )
            dropped.append(part)
        return dropped
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _PRUNE_LOCK_KEY)


async def _try_lock(conn: Any, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _PRUNE_LOCK_KEY):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
