"""The migration runner against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest

from pipeline.config import DatabaseConfig
from pipeline.errors import LockTimeoutError, MigrationDriftError, MigrationError
from pipeline.migrations.files import discover
from pipeline.migrations.runner import LOCK_KEY, MigrationRunner
from tests.conftest import REPO, SQL_DIR

ALL = [m.version for m in discover(SQL_DIR)]
LABELS = [m.label for m in discover(SQL_DIR)]

SCHEMA_FINGERPRINT = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' '
       || is_nullable || ' ' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' ' || md5(p.prosrc) || ' ' || p.provolatile::text
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'view ' || viewname || ' ' || md5(definition) FROM pg_views WHERE schemaname = 'public'
UNION ALL
SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' '
       || coalesce(pg_get_expr(c.relpartbound, c.oid), '') || ' '
       || coalesce(obj_description(c.oid, 'pg_class'), '')
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'row partition_policies ' || p::text FROM partition_policies p
"""


async def fingerprint(conn: asyncpg.Connection) -> list[str]:
    has_policies = await conn.fetchval("SELECT to_regclass('partition_policies') IS NOT NULL")
    query = SCHEMA_FINGERPRINT if has_policies else SCHEMA_FINGERPRINT.rsplit("UNION ALL", 1)[0]
    return sorted(r[0] for r in await conn.fetch(query))


def runner(conn: asyncpg.Connection, directory: Path = SQL_DIR, **kw: object) -> MigrationRunner:
    return MigrationRunner(conn, directory, applied_by="tests", **kw)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_up_down_up_gives_the_same_schema(fresh_database: DatabaseConfig) -> None:
    conn = await asyncpg.connect(fresh_database.url)
    try:
        empty = await fingerprint(conn)
        applied = await runner(conn).up()
        assert [m.version for m in applied] == ALL
        first = await fingerprint(conn)
        assert any("api_usage" in line for line in first)

        rolled_back = await runner(conn).down(to=0)
        assert [m.version for m in rolled_back] == ALL[::-1]
        after_down = await fingerprint(conn)
        # Only the runner's own history table remains.
        assert [line for line in after_down if "schema_migrations" not in line] == empty

        await runner(conn).up()
        assert await fingerprint(conn) == first
        assert await runner(conn).up() == []  # nothing pending: a no-op
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_history_records_checksum_duration_and_operator(
    fresh_database: DatabaseConfig,
) -> None:
    conn = await asyncpg.connect(fresh_database.url)
    try:
        plan = await runner(conn).up()
        rows = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in plan]
        assert [r["checksum"] for r in rows] == [m.checksum for m in plan]
        assert all(r["applied_by"] == "tests" and r["duration_ms"] >= 0 for r in rows)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_down_steps_and_to(fresh_database: DatabaseConfig) -> None:
    newest, previous = ALL[-1], ALL[-2]
    conn = await asyncpg.connect(fresh_database.url)
    try:
        await runner(conn).up()
        assert [m.version for m in await runner(conn).down()] == [newest]
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == previous
        assert [m.version for m in await runner(conn).up(to=previous)] == []
        assert [m.version for m in await runner(conn).up()] == [newest]
        assert [m.version for m in await runner(conn).down(steps=2, dry_run=True)] == [
            newest,
            previous,
        ]
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(ALL)
        assert [m.version for m in await runner(conn).down(to=1)] == ALL[:0:-1]
        assert await conn.fetchval("SELECT to_regclass('api_usage')") is None
        with pytest.raises(MigrationError):
            await runner(conn).down(to=0, steps=1)
    finally:
        await conn.close()


def copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(SQL_DIR, target)
    return target


@pytest.mark.asyncio
async def test_edited_applied_migration_is_detected_and_blocks_up(
    fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    directory = copy_migrations(tmp_path)
    conn = await asyncpg.connect(fresh_database.url)
    try:
        await runner(conn, directory).up(to=1)
        assert await runner(conn, directory).verify() == []
        edited = directory / "0001_core.up.sql"
        edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
        problems = await runner(conn, directory).verify()
        assert [(p.version, p.kind) for p in problems] == [(1, "changed")]
        with pytest.raises(MigrationDriftError, match="0001_core changed"):
            await runner(conn, directory).up()
        with pytest.raises(MigrationDriftError):
            await runner(conn, directory).up(dry_run=True)
        assert await conn.fetchval("SELECT to_regclass('api_usage')") is None  # nothing ran

        # CRLF line endings are not an edit.
        original = (SQL_DIR / "0001_core.up.sql").read_text()
        edited.write_bytes(original.replace("\n", "\r\n").encode())
        assert await runner(conn, directory).verify() == []
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_a_changed_down_file_of_an_applied_migration_is_refused(
    fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    directory = copy_migrations(tmp_path)
    conn = await asyncpg.connect(fresh_database.url)
    try:
        await runner(conn, directory).up(to=2)
        down = directory / "0002_event_tables.down.sql"
        down.write_text(down.read_text() + "\nDROP TABLE ingest_offsets;\n")
        problems = await runner(conn, directory).verify()
        assert [(p.version, p.kind) for p in problems] == [(2, "changed")]
        assert "down file changed" in problems[0].message
        states = {r.version: r.state for r in await runner(conn, directory).status()}
        assert states[2] == "changed"
        with pytest.raises(MigrationDriftError, match="down file changed"):
            await runner(conn, directory).down()
        assert await conn.fetchval("SELECT to_regclass('api_usage')") is not None  # not run
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_history_from_before_down_checksums_adopts_them_on_the_next_up(
    fresh_database: DatabaseConfig,
) -> None:
    conn = await asyncpg.connect(fresh_database.url)
    try:
        await runner(conn).up(to=1)
        await conn.execute("UPDATE schema_migrations SET down_checksum = NULL")
        assert await runner(conn).verify() == []  # unknown: nothing to compare yet
        await runner(conn).up(to=2)
        recorded = await conn.fetchval(
            "SELECT down_checksum FROM schema_migrations WHERE version = 1"
        )
        assert recorded == discover(SQL_DIR)[0].down_checksum
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_missing_and_out_of_order_files_are_detected(
    fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    directory = copy_migrations(tmp_path)
    conn = await asyncpg.connect(fresh_database.url)
    try:
        await runner(conn, directory).up()
        (directory / "0002_event_tables.up.sql").unlink()
        (directory / "0002_event_tables.down.sql").unlink()
        (directory / "0001_late.up.sql").write_text("SELECT 1;")
        (directory / "0001_late.down.sql").write_text("SELECT 1;")
        with pytest.raises(MigrationError, match="more than one migration"):
            await runner(conn, directory).verify()
        (directory / "0001_late.up.sql").unlink()
        (directory / "0001_late.down.sql").unlink()
        problems = await runner(conn, directory).verify()
        assert [(p.version, p.kind) for p in problems] == [(2, "missing")]
        status = {r.version: r.state for r in await runner(conn, directory).status()}
        assert status == {v: "missing" if v == 2 else "applied" for v in ALL}
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_failing_migration_is_rolled_back_and_not_recorded(
    fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    directory = copy_migrations(tmp_path)
    (directory / "9999_broken.up.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT 1 / 0;\n"
    )
    (directory / "9999_broken.down.sql").write_text("DROP TABLE half_done;\n")
    conn = await asyncpg.connect(fresh_database.url)
    try:
        with pytest.raises(MigrationError, match="9999_broken up failed and was rolled back"):
            await runner(conn, directory).up()
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == ALL[-1]
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_no_transaction_pragma_allows_create_index_concurrently(
    fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    directory = copy_migrations(tmp_path)
    (directory / "9990_plain_table.up.sql").write_text(
        "CREATE TABLE lookups (id int PRIMARY KEY, label text);\n"
    )
    (directory / "9990_plain_table.down.sql").write_text("DROP TABLE lookups;\n")
    (directory / "9991_lookup_index.up.sql").write_text(
        "-- pipeline:no-transaction\n"
        "-- Concurrent builds cannot run inside a transaction block.\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS lookups_label ON lookups (label);\n"
        "COMMENT ON INDEX lookups_label IS 'built; concurrently';\n"
    )
    (directory / "9991_lookup_index.down.sql").write_text(
        "-- pipeline:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS lookups_label;\n"
    )
    conn = await asyncpg.connect(fresh_database.url)
    try:
        await runner(conn, directory).up()
        assert await conn.fetchval("SELECT to_regclass('lookups_label')") is not None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 9991
        await runner(conn, directory).down()
        assert await conn.fetchval("SELECT to_regclass('lookups_label')") is None

        # Without the pragma the same file fails (and nothing is recorded).
        text = (directory / "9991_lookup_index.up.sql").read_text()
        (directory / "9991_lookup_index.up.sql").write_text(text.split("\n", 1)[1])
        with pytest.raises(MigrationError, match="9991_lookup_index"):
            await runner(conn, directory).up()
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 9990
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_lock_wait_is_bounded(fresh_database: DatabaseConfig) -> None:
    holder = await asyncpg.connect(fresh_database.url)
    conn = await asyncpg.connect(fresh_database.url)
    lines: list[str] = []
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        slow = runner(conn, lock_timeout_s=0.5, report=lines.append)
        with pytest.raises(LockTimeoutError) as raised:
            await slow.up()
        assert raised.value.retriable
        assert lines == ["waiting for another migration runner to finish..."]
        await holder.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        assert [m.version for m in await slow.up()] == ALL
    finally:
        await holder.close()
        await conn.close()


@pytest.mark.asyncio
async def test_three_processes_apply_each_migration_exactly_once(
    fresh_database: DatabaseConfig,
) -> None:
    env = {**os.environ, "DATABASE_URL": fresh_database.url, "PYTHONPATH": str(REPO)}
    for name in ("PGHOST", "PGDATABASE"):
        env.pop(name, None)
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline",
            "migrate",
            "up",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [await p.communicate() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    applied_lines = [
        line
        for out, _ in outputs
        for line in out.decode().splitlines()
        if line.startswith("applied ")
    ]
    assert sorted(line.split()[1] for line in applied_lines) == LABELS
    conn = await asyncpg.connect(fresh_database.url)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        assert [r["version"] for r in versions] == ALL
    finally:
        await conn.close()
