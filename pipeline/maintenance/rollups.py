"""The rollup job: keep the rollup tables of migration 0004 exactly equal to aggregates of
their base tables, incrementally.

- from api_usage: ``api_usage_daily`` (per day and user), ``api_usage_summary_hourly`` and
  ``api_usage_summary_daily`` (per hour/day, organization and service),
  ``api_usage_org_hourly`` and ``api_usage_org_daily`` (per hour/day and organization:
  migration 0011);
- from ai_analysis: ``ai_analysis_hourly`` and ``ai_analysis_daily`` (per hour/day, user,
  model, version, region), ``ai_analysis_summary_hourly`` and ``ai_analysis_summary_daily``
  (per hour/day, organization and model), ``ai_analysis_user_hourly`` and
  ``ai_analysis_user_daily``, ``ai_analysis_user_monthly`` (per hour/day/month,
  organization and user), ``ai_analysis_org_hourly`` and ``ai_analysis_org_daily`` (per
  hour/day and organization): migration 0011.

Call :func:`refresh_rollups` on one connection (outside any transaction) from a single
place at a time, e.g. the workers' leader-only maintenance timer; concurrent calls are safe
(the second one finds the lock taken and returns at once with ``busy=True``).

How the rollups stay exact
--------------------------

Rollup *units* are whole periods: a UTC hour of an ``*_hourly`` rollup, a UTC day of a
``*_daily`` one. A unit is never patched with deltas; it is recomputed from the level below
(``SELECT ... GROUP BY``) and its rows are made equal to the result (see :func:`_replace`:
vanished keys deleted, changed rows updated, unchanged rows left alone).
The only question is *which* units may have changed since they were last computed.

A high-water mark on ``updated_at``/``ingested_at`` answers it badly. Both are ``now()`` of
the writing transaction, i.e. its *start*, not its commit: a flush that started at 10:00:00
and commits at 10:00:07 becomes visible after a refresh that ran at 10:00:05 and recorded
"seen up to 10:00:05", so a mark must be pulled back by a safety margin longer than any
writer transaction, which nothing bounds (a stalled connection, a lock wait). It also needs
an index on ``updated_at``, which would turn every additive upsert of api_usage from a HOT
update into one that rewrites all four indexes.

Instead, migration 0004 puts statement-level triggers on the base tables that insert, **in
the writer's own transaction**, one row per touched UTC hour into ``rollup_pending``. A
change to the base table and its queue row therefore become visible together, atomically,
whenever that transaction commits. The refresh runs each batch in one ``REPEATABLE READ``
transaction, i.e. one snapshot:

1. ``DELETE FROM rollup_pending ... RETURNING`` claims the queue rows visible in the
   snapshot (rows committed later are invisible to it and stay queued);
2. the units of the claimed hours are recomputed from the base table *in the same
   snapshot*, so they include exactly the changes whose queue rows were claimed, plus
   possibly some whose queue rows are still queued (harmless: recomputed again later);
3. commit. A transaction that commits after the snapshot, whatever its ``now()``, left its
   queue row behind, and the next refresh recomputes its units.

Hence, after a refresh with an empty queue, every rollup row equals the aggregate of its
base rows; late events (a bucket of an old hour upserted again, an analysis arriving days
late) queue their own old hour; replays and duplicates change nothing in the base tables
(exactly-once upserts, ``ON CONFLICT DO NOTHING``) and recomputing an unchanged unit writes
the same rows. Running the job twice in a row changes nothing the second time.

Writers never wait for the queue: it has no unique key, so concurrent flushes append
without conflicting. (Skipping the insert when an equal row is already visible would be
wrong: a refresh whose snapshot predates the writer's commit could claim that row and miss
the writer's change.) Readers use the queue too: the ``*_facts`` SQL functions read a
queued hour, and its day, from the level below, so answers are exact even between
refreshes (see ``sql/migrations/0005_analyst_functions.up.sql``).

Hourly rollups are recomputed for the batch's queued hours, daily ones for its days, in
the order of :data:`pipeline.maintenance.rollup_plan.PLAN`: a daily rollup from the
hourly one below it (or, for ``api_usage_daily``, from api_usage), after that hourly one
in the same transaction.
Batches take whole days (every queued hour of a day at once), so when a day is
recomputed, each of its hours was either recomputed in that transaction or not queued in
its snapshot, i.e. already exact.

Guards: a unit is recomputed only if the base partition holding it exists (a unit of a
dropped, expired base partition would otherwise be recomputed as empty and wipe a rollup
that is retained longer than its source, like ``ai_analysis_daily``), and only if the
rollup partition for it exists or can be created within the rollup's retention. Queue rows
of units that fail a guard are consumed and reported as ``skipped``.

Cost: a batch reads every api_usage bucket of its days, the ai_analysis rows of its hours
and the hourly rollup rows of its days. In steady state (queued: the current hour, and a
few old hours for late events) that is today's api_usage buckets and ai_analysis_hourly
rows plus the current hour of ai_analysis, per late day the same for that day.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import PipelineError, raised_as
from pipeline.maintenance.rollup_plan import PLAN

log = logging.getLogger(__name__)

LOCK_KEY = 0x7069_7065_726F_6C6C  # "piperoll": one refresh at a time per database
SOURCES = ("api_usage", "ai_analysis")
DEFAULT_DAYS_PER_BATCH = 7

_QUEUED_DAYS = """
SELECT DISTINCT date_trunc('day', unit_start, 'UTC') AS day
FROM rollup_pending WHERE source = $1
ORDER BY 1
"""

# The days (of $2) whose base partition still exists: recomputing a day whose raw rows
# were pruned would replace its longer-retained rollup rows with nothing.
_DAYS_WITH_BASE = """
SELECT d.day
FROM unnest($2::timestamptz[]) AS d(day), partition_policies p
WHERE p.parent_table = $1
  AND to_regclass(partition_table_name(p.parent_table, p.granularity,
                                       (partition_bounds(p.granularity, d.day)).range_start))
      IS NOT NULL
"""

_ENSURE = "SELECT partition_name FROM ensure_partition($1, $2, coalesce($3::timestamptz, now()))"

_CLAIM = """
DELETE FROM rollup_pending
WHERE source = $1 AND date_trunc('day', unit_start, 'UTC') = ANY($2::timestamptz[])
RETURNING unit_start
"""

# Sorting and hashing a day of buckets needs more than the default 4 MB; only inside the
# refresh transaction (SET LOCAL), never for the writer's other sessions.
_WORK_MEM = "SET LOCAL work_mem = '64MB'"

_STATE = """
INSERT INTO rollup_state (source, refreshed_at, last_units, last_rows, last_duration_ms)
VALUES ($1, coalesce($2::timestamptz, now()), $3, $4, $5)
ON CONFLICT (source) DO UPDATE SET
    refreshed_at = excluded.refreshed_at, last_units = excluded.last_units,
    last_rows = excluded.last_rows, last_duration_ms = excluded.last_duration_ms
"""


@dataclass(frozen=True)
class SourceReport:
    """What one refresh did for one source.

    ``hours``: queued hours consumed; ``days``: days recomputed; ``rows``: rollup rows
    written; ``skipped``: days whose queue rows were consumed without recomputation (base
    partition gone or beyond the rollup's retention); ``batches``: transactions committed.
    """

    source: str
    hours: int = 0
    days: int = 0
    rows: int = 0
    skipped: int = 0
    batches: int = 0


@dataclass(frozen=True)
class RollupReport:
    """What :func:`refresh_rollups` did. ``busy`` means another refresh held the lock and
    this call did nothing."""

    busy: bool
    duration_ms: int
    sources: tuple[SourceReport, ...] = ()

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.sources)

    @property
    def days(self) -> int:
        return sum(s.days for s in self.sources)


async def refresh_rollups(
    conn: Any,
    *,
    now: datetime | None = None,
    days_per_batch: int = DEFAULT_DAYS_PER_BATCH,
) -> RollupReport:
    """Fold every queued change into the rollups; return what was done.

    ``conn`` is an asyncpg connection outside any transaction; it is left as found.
    ``now`` (default: the server's clock) decides which rollup partitions are within
    retention and is recorded in ``rollup_state.refreshed_at``. Works off the days queued
    when it starts, oldest first, each batch of at most ``days_per_batch`` days in one
    transaction, so a long backlog (the first run after migration 0004 on a full
    database) takes bounded transactions; hours queued while it runs are left for the next
    call (readers see them exactly meanwhile, through the queue).

    Raises a :class:`~pipeline.errors.PipelineError` (retriable for connection loss and
    serialization failures); batches committed before the error stay committed, and the
    next call continues from the queue.
    """
    if days_per_batch < 1:
        raise ValueError(f"days_per_batch must be >= 1, got {days_per_batch}")
    started = time.perf_counter()
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            log.info("another rollup refresh is running; skipping this one")
            return RollupReport(busy=True, duration_ms=_ms(started))
        try:
            reports = []
            for source in SOURCES:
                reports.append(await _refresh_source(conn, source, now, days_per_batch))
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    except PipelineError:
        raise
    except Exception as exc:
        raise raised_as(exc) from exc
    report = RollupReport(busy=False, duration_ms=_ms(started), sources=tuple(reports))
    for s in report.sources:
        if s.batches:
            log.info(
                "rollups of %s: %d hours queued, %d days recomputed, %d rows, %d skipped",
                s.source,
                s.hours,
                s.days,
                s.rows,
                s.skipped,
            )
    return report


async def _refresh_source(
    conn: Any, source: str, now: datetime | None, days_per_batch: int
) -> SourceReport:
    # Only the days queued now: under continuous writes the current hour is queued again
    # every second, and chasing it would never end. Later changes wait for the next call.
    backlog = [r["day"] for r in await conn.fetch(_QUEUED_DAYS, source)]
    total = SourceReport(source)
    for first in range(0, len(backlog), days_per_batch):
        days = backlog[first : first + days_per_batch]
        batch_started = time.perf_counter()
        # Partitions first, each in its own short transaction: creating one takes a strong
        # lock on the parent, which must not be held for the whole recomputation.
        valid = await _days_with_partitions(conn, source, days, now)
        async with conn.transaction(isolation="repeatable_read"):
            hours = {r["unit_start"] for r in await conn.fetch(_CLAIM, source, days)}
            valid_hours = sorted(h for h in hours if _day_start(h) in valid)
            rows = await _recompute(conn, source, sorted(valid), valid_hours)
            await conn.execute(
                _STATE, source, now, len(valid_hours) + len(valid), rows, _ms(batch_started)
            )
        total = SourceReport(
            source,
            hours=total.hours + len(hours),
            days=total.days + len(valid),
            rows=total.rows + rows,
            skipped=total.skipped + len(days) - len(valid),
            batches=total.batches + 1,
        )
        if len(valid) < len(days):
            log.warning(
                "rollups of %s: skipped %d days without a base partition or beyond the "
                "rollup's retention: %s",
                source,
                len(days) - len(valid),
                ", ".join(f"{d:%Y-%m-%d}" for d in sorted(set(days) - valid)),
            )
    return total


async def _days_with_partitions(
    conn: Any, source: str, days: list[datetime], now: datetime | None
) -> set[datetime]:
    """The days whose base partition exists and whose rollup partitions exist (created
    here if needed) within the rollups' retention."""
    valid = {r["day"] for r in await conn.fetch(_DAYS_WITH_BASE, source, days)}
    for step in PLAN[source]:
        for day in sorted(valid):
            if await conn.fetchval(_ENSURE, step.table, day, now) is None:
                valid.discard(day)
    return valid


async def _recompute(conn: Any, source: str, days: list[datetime], hours: list[datetime]) -> int:
    """Make the rollup rows of ``days`` and ``hours`` exact; return the rows written."""
    if not days:
        return 0
    await conn.execute(_WORK_MEM)
    rows = 0
    for step in PLAN[source]:
        units = days if step.units == "days" else hours
        written: int = await conn.fetchval(step.statement, units)
        rows += written
    return rows


def _day_start(moment: datetime) -> datetime:
    """The start of the UTC day holding ``moment`` (asyncpg returns timestamptz in UTC)."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
