"""Applying and rolling back migrations against one PostgreSQL connection.

The contract:

- **Exactly once under concurrency.** ``up`` and ``down`` take a session-level advisory lock
  (:data:`LOCK_KEY`) before reading the history, waiting at most ``lock_timeout_s``
  (then :class:`~pipeline.errors.LockTimeoutError`, retriable). Several workers starting at
  once therefore apply each migration exactly once: the ones that wait find it applied.
- **One transaction per file**, holding both the file's statements and its history row, so
  a migration is applied entirely or not at all. A file marked ``-- pipeline:no-transaction``
  runs statement by statement; if one fails, the earlier ones stay applied, no history row
  is written, and the error says which statement failed (write such files idempotently:
  ``IF NOT EXISTS``).
- **Drift is refused.** Before changing anything, ``up`` and ``down`` compare the history
  with the files (:meth:`MigrationRunner.verify`): an applied migration whose file changed
  or disappeared, or a pending file numbered below an applied one, raises
  :class:`~pipeline.errors.MigrationDriftError` and nothing runs.
- ``dry_run=True`` reports what would run and changes nothing (it takes no lock).
- **Self-audit.** Once the schema has ``pipeline_audit`` (migration 0009), each migration
  applied or rolled back is also recorded in ``audit_trail`` ('migration.applied' /
  'migration.rolled_back', entity ``NNNN_name``), in the same transaction as its history row.

The runner never commits on anyone else's behalf: it owns the connection for the call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import (
    LockTimeoutError,
    MigrationDriftError,
    MigrationError,
    classify_database_error,
)
from pipeline.migrations.files import Migration, SqlScript, discover

# An arbitrary constant shared by every runner: pg_advisory_lock(int8) key "pipeline migrate".
LOCK_KEY = 0x7069_7065_6D69_6772

HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text        NOT NULL,
    duration_ms integer     NOT NULL
);
-- The down file's checksum (NULL for migrations applied before down files were checked:
-- the next `up` records their current down file).
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS down_checksum text;
"""


@dataclass(frozen=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime
    applied_by: str
    duration_ms: int
    down_checksum: str | None = None


@dataclass(frozen=True)
class Problem:
    """A difference between the history and the files that blocks ``up`` and ``down``."""

    version: int
    kind: str  # "changed" | "missing" | "out_of_order"
    message: str


@dataclass(frozen=True)
class StatusRow:
    version: int
    name: str
    state: str  # "applied" | "pending" | "changed" | "missing" | "out_of_order"
    applied: AppliedMigration | None


class MigrationRunner:
    """Runs the migrations found in ``directory`` on ``connection`` (an asyncpg connection).

    ``report`` receives one line per step (applied, rolled back, would run); the CLI prints
    them. The connection must not be inside a transaction.
    """

    def __init__(
        self,
        connection: Any,
        directory: Path,
        *,
        applied_by: str,
        lock_timeout_s: float = 60.0,
        report: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self._conn = connection
        self._directory = directory
        self._applied_by = applied_by
        self._lock_timeout_s = lock_timeout_s
        self._report = report

    # -- reading ------------------------------------------------------------------------
    async def applied(self) -> dict[int, AppliedMigration]:
        """The history, by version; empty when the history table does not exist yet."""
        exists = await self._conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return {}
        rows = await self._conn.fetch(
            # to_jsonb(m) reads down_checksum also from a history created before that
            # column existed (status and verify never change the table).
            "SELECT version, name, checksum, applied_at, applied_by, duration_ms, "
            "to_jsonb(m) ->> 'down_checksum' AS down_checksum "
            "FROM schema_migrations AS m ORDER BY version"
        )
        return {r["version"]: AppliedMigration(**dict(r)) for r in rows}

    async def status(self) -> list[StatusRow]:
        """Every migration known to the files or the history, with its state."""
        files = {m.version: m for m in discover(self._directory)}
        applied = await self.applied()
        problems = {p.version: p.kind for p in _compare(files, applied)}
        rows = []
        for version in sorted(files.keys() | applied.keys()):
            name = files[version].name if version in files else applied[version].name
            state = problems.get(version, "applied" if version in applied else "pending")
            rows.append(StatusRow(version, name, state, applied.get(version)))
        return rows

    async def verify(self) -> list[Problem]:
        """Differences between history and files; an empty list means all is consistent."""
        files = {m.version: m for m in discover(self._directory)}
        return _compare(files, await self.applied())

    # -- changing -------------------------------------------------------------------------
    async def up(self, *, to: int | None = None, dry_run: bool = False) -> list[Migration]:
        """Apply pending migrations in order (those numbered ``<= to`` if given).

        Returns the migrations applied (or that would be, with ``dry_run``). Raises
        :class:`MigrationDriftError` before changing anything if :meth:`verify` finds a
        problem, :class:`MigrationError` if a file fails (that file is not recorded).
        """
        if dry_run:
            return await self._plan_up(to)
        async with self._locked():
            await self._conn.execute(HISTORY_DDL)
            await self._record_down_checksums()
            plan = await self._plan_up(to)
            for migration in plan:
                await self._run(migration, migration.up, direction="up")
            return plan

    async def down(
        self, *, to: int | None = None, steps: int | None = None, dry_run: bool = False
    ) -> list[Migration]:
        """Roll back applied migrations, newest first: those numbered ``> to``, or the
        last ``steps`` (default 1). Same errors as :meth:`up`."""
        if to is not None and steps is not None:
            raise MigrationError("give either --to or --steps, not both")
        if dry_run:
            return await self._plan_down(to, steps)
        async with self._locked():
            plan = await self._plan_down(to, steps)
            for migration in plan:
                await self._run(migration, migration.down, direction="down")
            return plan

    # -- internals ------------------------------------------------------------------------
    async def _checked(self) -> tuple[dict[int, Migration], dict[int, AppliedMigration]]:
        files = {m.version: m for m in discover(self._directory)}
        applied = await self.applied()
        problems = _compare(files, applied)
        if problems:
            details = "\n".join(f"  - {p.message}" for p in problems)
            raise MigrationDriftError(
                f"the migration history does not match the files in {self._directory}; "
                f"nothing was run:\n{details}\n"
                "Restore applied files exactly as they were applied and put changes in a new "
                "migration (`pipeline migrate new NAME`)."
            )
        return files, applied

    async def _plan_up(self, to: int | None) -> list[Migration]:
        files, applied = await self._checked()
        return [m for v, m in sorted(files.items()) if v not in applied and (to is None or v <= to)]

    async def _plan_down(self, to: int | None, steps: int | None) -> list[Migration]:
        files, applied = await self._checked()
        newest_first = sorted(applied, reverse=True)
        if to is not None:
            chosen = [v for v in newest_first if v > to]
        else:
            count = 1 if steps is None else steps
            if count < 0:
                raise MigrationError("--steps must be 0 or more")
            chosen = newest_first[:count]
        return [files[v] for v in chosen]

    async def _run(self, migration: Migration, script: SqlScript, *, direction: str) -> None:
        started = time.perf_counter()
        try:
            if script.in_transaction:
                async with self._conn.transaction():
                    await self._conn.execute(script.text)
                    await self._record(migration, direction, started)
                    await self._audit(migration, direction)
            else:
                statements = script.statements()
                for number, statement in enumerate(statements, 1):
                    try:
                        await self._conn.execute(statement)
                    except Exception as exc:
                        raise MigrationError(
                            f"{migration.label} {direction}: statement {number} of "
                            f"{len(statements)} failed ({exc}); it runs outside a transaction, "
                            f"so statements 1..{number - 1} stay applied. Fix the cause and run "
                            "again (no-transaction files must be idempotent)."
                        ) from exc
                await self._record(migration, direction, started)
                await self._audit(migration, direction)
        except MigrationError:
            raise
        except Exception as exc:
            error = classify_database_error(exc)
            if error is None:
                raise
            if error.retriable:
                raise error from exc
            raise MigrationError(
                f"{migration.label} {direction} failed and was rolled back: {exc}"
            ) from exc
        self._report(
            f"{'applied' if direction == 'up' else 'rolled back'} {migration.label} "
            f"({(time.perf_counter() - started) * 1000:.0f} ms)"
        )

    async def _record(self, migration: Migration, direction: str, started: float) -> None:
        if direction == "up":
            await self._conn.execute(
                "INSERT INTO schema_migrations "
                "(version, name, checksum, applied_by, duration_ms, down_checksum)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                migration.version,
                migration.name,
                migration.checksum,
                self._applied_by,
                round((time.perf_counter() - started) * 1000),
                migration.down_checksum,
            )
        else:
            await self._conn.execute(
                "DELETE FROM schema_migrations WHERE version = $1", migration.version
            )

    async def _audit(self, migration: Migration, direction: str) -> None:
        """Record the step in the audit trail (``pipeline_audit``, migration 0009) when the
        schema has one at that point: not before 0009 is applied, nor after it is rolled
        back (the trail went with it). In the migration's transaction, so the audit row
        exists exactly when the step does."""
        if not await self._conn.fetchval(
            "SELECT to_regprocedure('pipeline_audit(text,text,text,jsonb,jsonb)') IS NOT NULL"
        ):
            return
        await self._conn.execute(
            "SELECT pipeline_audit($1, 'migration', $2, NULL, "
            "jsonb_build_object('version', $3::integer, 'checksum', $4::text))",
            "migration.applied" if direction == "up" else "migration.rolled_back",
            migration.label,
            migration.version,
            migration.checksum,
        )

    async def _record_down_checksums(self) -> None:
        """Record the down file's checksum of applied migrations that have none yet (applied
        before down files were checked): trusted as they are on disk now."""
        files = {m.version: m for m in discover(self._directory)}
        adopted = 0
        for version, row in (await self.applied()).items():
            if row.down_checksum is None and version in files:
                await self._conn.execute(
                    "UPDATE schema_migrations SET down_checksum = $2 "
                    "WHERE version = $1 AND down_checksum IS NULL",
                    version,
                    files[version].down_checksum,
                )
                adopted += 1
        if adopted:
            self._report(f"recorded the down file checksums of {adopted} applied migrations")

    def _locked(self) -> _AdvisoryLock:
        return _AdvisoryLock(self._conn, self._lock_timeout_s, self._report)


class _AdvisoryLock:
    """Session-level advisory lock with a bounded, polling wait."""

    def __init__(self, conn: Any, timeout_s: float, report: Callable[[str], None]) -> None:
        self._conn = conn
        self._timeout_s = timeout_s
        self._report = report

    async def __aenter__(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        waited = False
        while not await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            if not waited:
                self._report("waiting for another migration runner to finish...")
                waited = True
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"another migration runner held the lock for more than {self._timeout_s}s; "
                    "retry later or raise PIPELINE_MIGRATION_LOCK_TIMEOUT_S"
                )
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        if not self._conn.is_closed():
            await self._conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _compare(files: dict[int, Migration], applied: dict[int, AppliedMigration]) -> list[Problem]:
    problems = []
    for version, row in sorted(applied.items()):
        label = f"{version:04d}_{row.name}"
        migration = files.get(version)
        if migration is None:
            problems.append(
                Problem(version, "missing", f"{label} was applied but its file is missing")
            )
        elif migration.checksum != row.checksum:
            problems.append(
                Problem(
                    version,
                    "changed",
                    f"{label} changed after it was applied on {row.applied_at:%Y-%m-%d %H:%M} "
                    f"(checksum {row.checksum[:12]} applied, {migration.checksum[:12]} on disk)",
                )
            )
        elif row.down_checksum is not None and migration.down_checksum != row.down_checksum:
            problems.append(
                Problem(
                    version,
                    "changed",
                    f"{label}'s down file changed after the migration was applied on "
                    f"{row.applied_at:%Y-%m-%d %H:%M} (checksum {row.down_checksum[:12]} "
                    f"recorded, {migration.down_checksum[:12]} on disk): restore it; a down "
                    "that differs from what was reviewed with the up must not run",
                )
            )
    newest = max(applied, default=0)
    problems.extend(
        Problem(
            version,
            "out_of_order",
            f"{migration.label} is pending but numbered below the newest applied migration "
            f"({newest:04d}); renumber it above {newest:04d}",
        )
        for version, migration in sorted(files.items())
        if version not in applied and version < newest
    )
    return problems


def plan_labels(plan: Sequence[Migration]) -> list[str]:
    return [m.label for m in plan]
