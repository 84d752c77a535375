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
- Each detach and each drop is recorded in ``audit_trail`` ('partition.detached',
  'partition.dropped', through ``pipeline_audit``) once the schema has it (migration 0009),
  and the same run deletes the ``analysis_lifecycle`` rows that outlived ``ai_analysis``'s
  retention (``prune_analysis_lifecycle``); a dry run counts them instead.
- ``now`` is injectable everywhere so tests do not depend on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
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


class PruneResult(list[PartitionInfo]):
    """The partitions :func:`prune` dropped (or would drop), oldest first within each table,
    plus ``lifecycle_rows``: the ``analysis_lifecycle`` rows it deleted (or would delete)
    because their last change is older than ``ai_analysis``'s retention. A list, so callers
    that only want the partitions use it as one."""

    def __init__(self, partitions: Iterable[PartitionInfo] = (), lifecycle_rows: int = 0) -> None:
        super().__init__(partitions)
        self.lifecycle_rows = lifecycle_rows


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
) -> PruneResult:
    """Detach and drop expired partitions and delete expired analysis lifecycles; return the
    partitions dropped and the number of lifecycle rows deleted (or that would be)."""
    candidates = await expired(conn, now=now)
    lifecycles = await _expired_lifecycles(conn, now)
    if dry_run or not (candidates or lifecycles):
        return PruneResult(candidates, lifecycles)
    if not await _try_lock(conn, lock_wait_s):
        log.warning("another prune is running; skipping this one")
        return PruneResult()
    try:
        audited = await _has_function(conn, "pipeline_audit(text,text,text,jsonb,jsonb)")
        dropped = PruneResult()
        for part in await expired(conn, now=now):  # re-read under the lock
            parent = _quote_ident(part.parent_table)
            child = _quote_ident(part.partition_name)
            mode = "FINALIZE" if part.detach_pending else "CONCURRENTLY"
            await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {child} {mode}")
            if audited:
                await _audit(conn, "partition.detached", part)
            await conn.execute(f"DROP TABLE {child}")
            if audited:
                await _audit(conn, "partition.dropped", part)
            log.info(
                "dropped partition %s (%s .. %s, ~%d rows)",
                part.partition_name,
                part.range_start,
                part.range_end,
                part.estimated_rows,
            )
            dropped.append(part)
        if await _has_function(conn, "prune_analysis_lifecycle(timestamptz)"):
            dropped.lifecycle_rows = await conn.fetchval(
                "SELECT prune_analysis_lifecycle(coalesce($1::timestamptz, now()))", now
            )
            if dropped.lifecycle_rows:
                log.info("deleted %d expired analysis lifecycles", dropped.lifecycle_rows)
        return dropped
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _PRUNE_LOCK_KEY)


async def _expired_lifecycles(conn: Any, now: datetime | None) -> int:
    """How many rows ``prune_analysis_lifecycle`` would delete at ``now`` (the same
    condition, read-only: a dry run may run as the writer, which cannot delete)."""
    if await conn.fetchval("SELECT to_regclass('analysis_lifecycle') IS NULL"):
        return 0
    count: int = await conn.fetchval(
        "SELECT count(*) FROM analysis_lifecycle "
        "WHERE status_at < analysis_lifecycle_cutoff(coalesce($1::timestamptz, now()))",
        now,
    )
    return count


async def _has_function(conn: Any, signature: str) -> bool:
    exists: bool = await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", signature)
    return exists


async def _audit(conn: Any, action: str, part: PartitionInfo) -> None:
    """Record a detach or drop in the audit trail (migration 0009), as ensure_partition
    records a creation. Each statement commits on its own (DETACH ... CONCURRENTLY cannot
    run in a transaction), so a prune killed between a step and its record leaves that step
    unrecorded."""
    await conn.execute(
        "SELECT pipeline_audit($1, 'partition', $2, NULL, jsonb_build_object("
        "'parent_table', $3::text, 'range_start', $4::timestamptz, "
        "'range_end', $5::timestamptz))",
        action,
        part.partition_name,
        part.parent_table,
        part.range_start,
        part.range_end,
    )


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
