"""Which PostgreSQL partitions exist, as far as this worker knows.

Before a flush writes rows, :meth:`PartitionGuard.prepare` makes sure the partition of every
time range in the batch exists, calling the SQL function ``ensure_partition`` (migration
0001) for ranges it has not seen yet, and reports the ranges that lie wholly beyond the
table's retention: their events are dead-lettered with reason ``beyond_retention`` instead
of recreating a partition that ``prune`` dropped. Results are cached per worker; a range
never changes from "beyond retention" back to "writable", and a partition that disappears
anyway (a concurrent prune) surfaces as SQLSTATE 23514, after which the flush calls
:meth:`forget` and prepares again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import DatabaseError

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


def range_start_ms(granularity: str, ms: int) -> int:
    """Start (epoch ms, UTC) of the day or month that holds ``ms``."""
    if granularity == "day":
        return ms - ms % DAY_MS
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


class PartitionGuard:
    """Per-worker cache of writable and expired partition ranges of one table."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._granularity: str | None = None
        self._writable: set[int] = set()
        self._expired: set[int] = set()

    async def prepare(
        self, conn: Any, times_ms: Iterable[int], *, on_created: Any = None
    ) -> set[int]:
        """Ensure partitions for ``times_ms``; return the range starts beyond retention.

        Runs its own short statements (autocommit); call it outside the flush transaction.
        ``on_created(table)`` is called for each partition this call created.
        """
        if self._granularity is None:
            self._granularity = await conn.fetchval(
                "SELECT granularity FROM partition_policies WHERE parent_table = $1", self.table
            )
            if self._granularity is None:
                raise DatabaseError(
                    f"no partition policy for {self.table}: run `pipeline migrate up`"
                )
        granularity = self._granularity
        starts = {range_start_ms(granularity, ms) for ms in times_ms}
        for start in sorted(starts - self._writable - self._expired):
            row = await conn.fetchrow(
                "SELECT partition_name, created FROM ensure_partition($1, "
                "timestamptz 'epoch' + $2::bigint * interval '1 millisecond')",
                self.table,
                start,
            )
            if row["partition_name"] is None:
                self._expired.add(start)
                log.warning(
                    "%s: events for the range starting %s are beyond retention",
                    self.table,
                    datetime.fromtimestamp(start / 1000, tz=UTC).isoformat(),
                )
            else:
                self._writable.add(start)
                if row["created"]:
                    log.info("created partition %s on demand", row["partition_name"])
                    if on_created is not None:
                        on_created(self.table)
        return starts & self._expired

    def range_start(self, ms: int) -> int:
        if self._granularity is None:
            raise RuntimeError("prepare() has not run yet")
        return range_start_ms(self._granularity, ms)

    def forget(self) -> None:
        """Drop the cache (after SQLSTATE 23514: a partition vanished)."""
        self._writable.clear()
