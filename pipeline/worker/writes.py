"""Writing rows through staging tables, and the shape of a kind's writer (stage: write).

Rows reach each table through a **staging table**: a temporary table of the session
(``ON COMMIT DELETE ROWS``) filled with binary ``COPY`` (asyncpg's
``copy_records_to_table``), then moved by one ``INSERT ... SELECT`` into the partitioned
table. Measured on this project's machine, that is 30-45 % cheaper than the same
``INSERT ... SELECT FROM unnest($1::text[], ...)`` for bucket upserts and ~15 % for row
inserts (docs/performance.md, "Write path"), because binary COPY encodes rows without
asyncpg's per-element array checks and PostgreSQL parses no array literals. Each write
runs on a connection that is already inside the flush's transaction; none commits.

- Aggregating writers upsert deltas (``ON CONFLICT DO UPDATE`` with additive SET
  clauses) and read the staged rows ``ORDER BY`` their key, so two flushes sharing keys
  lock rows in the same order and cannot deadlock; a statement never holds the same key
  twice (aggregation merged them).
- Row writers insert with ``ON CONFLICT DO NOTHING`` on the primary key: the contract
  stores an event once per ``event_id``, and a producer may send one twice in different
  records, so conflicts are possible and must be handled; a plain ``COPY`` into the table
  would fail on the first duplicate.
- A staging table is emptied before each use (``DELETE``, a no-op when empty), because a
  transaction may write the same table more than once (isolating rows PostgreSQL rejects).
  Times travel as epoch milliseconds converted in SQL (:data:`EPOCH_MS`), which is exact
  and avoids building datetimes in Python.

Errors propagate as asyncpg raised them; the flush classifies them. Each kind's
:class:`Writer` (its tables and SQL) is declared with the kind in :mod:`pipeline.kinds`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.contract import Event

EPOCH_MS = "(timestamptz 'epoch' + {} * interval '1 millisecond')"
"""SQL turning epoch milliseconds (``{}``: a column or parameter) into a timestamptz."""


@dataclass(frozen=True)
class Staged:
    """A table written through a staging table: ``columns`` (name, type) of the staged rows,
    and the ``INSERT ... SELECT ... FROM stage AS t`` that moves them (``{stage}`` in it is
    replaced by the staging table's name)."""

    stage: str
    columns: tuple[tuple[str, str], ...]
    insert: str
    then: tuple[str, ...] = ()
    """Further statements reading the same staged rows (e.g. a current-state table fed by
    the same events), run after ``insert``; their row counts are not reported."""

    @property
    def _prepare_sql(self) -> str:
        columns = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ({columns}) ON COMMIT DELETE ROWS; "
            f"DELETE FROM {self.stage}"
        )

    async def write(self, conn: Any, rows: Sequence[tuple[Any, ...]]) -> int:
        """Stage ``rows`` and move them into the table; return the rows inserted/updated."""
        if not rows:
            return 0
        if not conn.is_in_transaction():  # the staged rows live until the commit
            async with conn.transaction():
                return await self.write(conn, rows)
        await conn.execute(self._prepare_sql)
        names = [name for name, _ in self.columns]
        await conn.copy_records_to_table(self.stage, records=rows, columns=names)
        status: str = await conn.execute(self.insert.format(stage=self.stage))
        for statement in self.then:
            await conn.execute(statement.format(stage=self.stage))
        return count_rows(status)


def count_rows(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 42``."""
    return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True)
class Writer:
    """How events of one kind reach their tables.

    - ``table``: the main table; the events' time ranges must be within its retention
      (older events become ``beyond_retention`` dead letters).
    - ``also``: further time-partitioned tables the write fills (e.g. raw samples beside
      an aggregate). The flush creates their partitions too; rows beyond *their* retention
      are left out by the writer's SQL, not dead-lettered.
    - ``prepare(events)`` runs before the flush transaction opens (pure CPU, no I/O);
      ``write(conn, prepared)`` runs inside it and returns the rows written to ``table``.
    - ``aggregated``: ``table`` holds buckets (an upsert adds events up), not one row per
      event, so fewer rows than events is not a sign of duplicates.
    """

    table: str
    prepare: Callable[[Sequence[Event]], Any]
    write: Callable[[Any, Any], Awaitable[int]]
    aggregated: bool = False
    also: tuple[str, ...] = ()

    @property
    def tables(self) -> tuple[str, ...]:
        """Every time-partitioned table this writer fills, ``table`` first."""
        return (self.table, *self.also)
