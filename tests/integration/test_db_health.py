"""``pipeline db health`` against a real PostgreSQL: the command as cron runs it, and the
checks on known conditions (an unused index, a missing future partition, a duplicate
index, partitions past retention, pg_stat_statements absent, a local index of one
partition), as a pg_monitor login (with and without migration 0010's grant; bloat hidden
from it), and identifiers quoted as the server quotes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from pipeline import dbhealth
from pipeline.config import DatabaseConfig
from pipeline.dbhealth import bloat, coverage, indexes
from pipeline.dbhealth._text import ident
from pipeline.dbhealth.model import Context, Report, Severity
from pipeline.maintenance import partitions
from tests.conftest import REPO, unique_name

EXTERNAL = (
    "DATABASE_URL", "PGHOST", "PGDATABASE", "PGPORT", "PGUSER", "PGPASSWORD",
    "ANALYTICS_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS",
)  # fmt: skip
ROWS = 20_000  # over UNUSED_INDEX_MIN_TABLE_ACTIVITY


def health(*args: str, url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
    env["PYTHONPATH"] = str(REPO)
    if url is not None:
        env["DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "db", "health", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def findings(data: dict[str, Any], check: str) -> list[dict[str, str]]:
    (found,) = [c for c in data["checks"] if c["name"] == check]
    result: list[dict[str, str]] = found["findings"]
    return result


async def make_unused_index(conn: asyncpg.Connection) -> None:
    """A table written 20,000 times whose secondary index was never scanned."""
    await conn.execute("CREATE TABLE health_probe (id bigint PRIMARY KEY, kind int NOT NULL)")
    await conn.execute(
        f"INSERT INTO health_probe SELECT g, g % 7 FROM generate_series(1, {ROWS}) g"
    )
    await conn.execute("CREATE INDEX health_probe_kind ON health_probe (kind)")
    # Statistics reach the shared counters when the backend next goes idle; force it.
    await conn.execute("SELECT pg_stat_force_next_flush()")


async def drop_tomorrows_partition(conn: asyncpg.Connection, table: str) -> str:
    name: str = await conn.fetchval(
        "SELECT partition_name FROM partition_ranges "
        "WHERE parent_table = $1 AND range_start = "
        "(SELECT range_start FROM partition_bounds('day', now() + interval '1 day'))",
        table,
    )
    await conn.execute(f"DROP TABLE {name}")
    return name


@pytest.mark.asyncio
async def test_unused_index_and_missing_future_partition_are_reported_and_exit_1(
    pg: asyncpg.Connection, migrated_database: DatabaseConfig
) -> None:
    await partitions.ensure(pg)
    dropped = await drop_tomorrows_partition(pg, "system_logs")
    await make_unused_index(pg)

    result = health("--format", "json", url=migrated_database.url)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["exit_code"] == 1 and data["severity"] == "action"

    [missing] = [f for f in findings(data, "partitions") if f["subject"] == "system_logs"]
    assert missing["severity"] == "action"
    assert missing["what"] == "system_logs: no partition for the next day (0 ahead, premake 7)"
    assert missing["recommendation"].startswith("pipeline partitions ensure")
    other_tables = [f for f in findings(data, "partitions") if f["subject"] != "system_logs"]
    assert other_tables == []  # every other table is covered

    [unused] = [f for f in findings(data, "indexes") if f["subject"] == "public.health_probe_kind"]
    assert unused["severity"] == "warn"
    assert unused["what"].startswith("public.health_probe_kind on health_probe (")
    assert unused["what"].endswith(") was never scanned")
    assert "DROP INDEX CONCURRENTLY public.health_probe_kind;" in unused["recommendation"]
    assert "CREATE INDEX health_probe_kind ON public.health_probe" in unused["recommendation"]
    # Its primary key was never scanned either, but it enforces uniqueness.
    assert not [f for f in findings(data, "indexes") if f["subject"] == "public.health_probe_pkey"]
    (usage,) = next(c for c in data["checks"] if c["name"] == "indexes")["details"]
    [row] = [r for r in usage["rows"] if r["index"] == "public.health_probe_kind"]
    assert row["scans"] == 0 and row["size_bytes"] > 0

    table = health(url=migrated_database.url)  # the default format, as cron mails it
    assert table.returncode == 1, table.stderr
    assert "ACTION  system_logs: no partition for the next day" in table.stdout
    assert "WARN  public.health_probe_kind on health_probe" in table.stdout
    assert f"{dropped}" not in table.stdout  # it is gone: reported as missing, not listed
    assert table.stdout.rstrip().endswith("(exit 1)")


@pytest.mark.asyncio
async def test_a_fresh_database_with_its_partitions_is_healthy(
    pg: asyncpg.Connection, migrated_database: DatabaseConfig
) -> None:
    # A migrated database has no partition yet (but the audit trail's current month, made
    # by migration 0009's own audit row): that needs action until `partitions ensure`.
    before = health("--format", "json", url=migrated_database.url)
    assert before.returncode == 1, before.stderr
    assert {f["severity"] for f in findings(json.loads(before.stdout), "partitions")} == {"action"}

    await partitions.ensure(pg)
    result = health("--format", "json", url=migrated_database.url)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["exit_code"] == 0 and data["counts"]["action"] == 0
    assert [c["name"] for c in data["checks"]] == [name for name, _, _ in dbhealth.CHECKS]
    assert findings(data, "partitions")[0]["severity"] == "ok"
    assert findings(data, "indexes")[0]["severity"] == "ok"  # too little activity to judge


@pytest.mark.asyncio
async def test_without_pg_stat_statements_it_says_how_to_enable_it(
    pg: asyncpg.Connection, migrated_database: DatabaseConfig
) -> None:
    assert await pg.fetchval(
        "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
    ) == 0  # fmt: skip
    preloaded = await pg.fetchval("SELECT current_setting('shared_preload_libraries')")
    report = await dbhealth.run(pg, database="test")
    [check] = [c for c in report.checks if c.name == "statements"]
    [finding] = check.findings
    assert finding.severity is Severity.WARN and finding.subject == "pg_stat_statements"
    assert "CREATE EXTENSION pg_stat_statements;" in finding.recommendation
    if "pg_stat_statements" not in preloaded:  # the embedded server: not preloaded
        assert finding.what == "pg_stat_statements is not enabled"
        assert "shared_preload_libraries" in finding.recommendation
        assert "restart PostgreSQL" in finding.recommendation


@pytest.mark.asyncio
async def test_duplicate_index_on_a_partitioned_table(pg: asyncpg.Connection) -> None:
    await partitions.ensure(pg)
    await pg.execute("CREATE INDEX system_logs_level_time_copy ON system_logs (level, logged_at)")
    stats = await indexes.fetch(pg)
    [(keep, others)] = indexes.find_duplicates(stats)
    assert keep.name == "public.system_logs_level_time"
    assert [o.name for o in others] == ["public.system_logs_level_time_copy"]
    assert others[0].partitioned and others[0].partitions == 11  # 3 back, today, 7 ahead
    assert indexes.drop_statement(others[0]) == "DROP INDEX public.system_logs_level_time_copy;"
    # The down recreates it on every partition, not on the parent only.
    assert others[0].restore == (
        "CREATE INDEX system_logs_level_time_copy ON public.system_logs "
        "USING btree (level, logged_at);"
    )


@pytest.mark.asyncio
async def test_partitions_past_retention_are_a_warning(pg: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    await partitions.ensure(pg, now=now - timedelta(days=30))  # system_logs keep 14 days
    await partitions.ensure(pg, now=now)
    checks = ((coverage.NAME, coverage.TITLE, coverage.run),)
    report: Report = await dbhealth.run(pg, database="test", now=now, checks=checks)
    by_subject = {f.subject: f for f in report.checks[0].findings}
    logs = by_subject["system_logs"]
    assert logs.severity is Severity.WARN and "past retention" in logs.what
    assert "pipeline partitions prune" in logs.recommendation
    assert report.exit_code == 0  # nothing missing ahead: prune not running is not urgent


def test_unreachable_and_refused_databases_are_one_line_errors(
    migrated_database: DatabaseConfig, tmp_path: Any
) -> None:
    unreachable = health(url=f"postgresql://nobody@/db?host={tmp_path}")
    assert unreachable.returncode == 1
    assert "DATABASE_URL" in unreachable.stderr and "Traceback" not in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1

    wrong_db = migrated_database.url.replace("/t_", "/no_such_", 1)
    refused = health("--database-url", wrong_db, url=None)
    assert refused.returncode == 2, refused.stderr
    assert "DATABASE_URL" in refused.stderr and "Traceback" not in refused.stderr

    missing = health(url=None)
    assert missing.returncode == 2 and "DATABASE_URL" in missing.stderr

    usage = health("--format", "csv", url=None)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


@pytest.mark.parametrize("command", [["db", "--help"], ["db", "health", "--help"]])
def test_help(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *command],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "usage: pipeline db" in result.stdout


def as_login(url: str, login: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


@pytest_asyncio.fixture
async def monitor(pg: asyncpg.Connection) -> AsyncIterator[str]:
    """A monitoring login as docs/operations.md creates it (IN ROLE pg_monitor); roles are
    cluster-wide, so its name is the test's own and it is dropped afterwards."""
    name = unique_name("monitor")
    await pg.execute(f"CREATE ROLE {name} LOGIN IN ROLE pg_monitor")
    try:
        yield name
    finally:
        await pg.execute(f"DROP OWNED BY {name}")
        await pg.execute(f"DROP ROLE {name}")


@pytest.mark.asyncio
async def test_a_pg_monitor_login_runs_every_check(
    pg: asyncpg.Connection, migrated_database: DatabaseConfig, monitor: str
) -> None:
    await partitions.ensure(pg)
    url = as_login(migrated_database.url, monitor)
    result = health("--format", "json", url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert findings(data, "partitions")[0]["severity"] == "ok"  # migration 0010's grant
    assert [f["subject"] for f in findings(data, "sessions")] == [""]  # it sees every session

    # Without the grant (a schema not yet migrated to 0010): the exact GRANT to run.
    await pg.execute("REVOKE SELECT ON partition_policies, partition_ranges FROM pg_monitor")
    denied = health("--format", "json", url=url)
    assert denied.returncode == 1, denied.stderr
    [finding] = findings(json.loads(denied.stdout), "partitions")
    assert finding["severity"] == "action" and "permission denied" in finding["what"]
    assert finding["recommendation"].splitlines() == [
        "as the schema owner (a member of pipeline_migrator): "
        "GRANT SELECT ON partition_policies, partition_ranges TO pg_monitor;",
        "  (migration 0010 grants exactly this: pipeline migrate up)",
    ]


@pytest.mark.asyncio
async def test_bloat_hidden_from_a_pg_monitor_login_warns_instead_of_ok(
    pg: asyncpg.Connection,
    migrated_database: DatabaseConfig,
    monitor: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_unused_index(pg)
    await pg.execute("ANALYZE health_probe")
    monkeypatch.setattr(bloat, "BLOAT_MIN_BYTES", 0)  # estimate even this small table
    ctx = Context(now=datetime.now(UTC), stats_reset=None)
    owner = await bloat.measure(pg, ctx)
    assert {"public.health_probe", "public.health_probe_kind"} <= {
        b.name for b in owner.estimates
    }  # fmt: skip

    conn = await asyncpg.connect(as_login(migrated_database.url, monitor))
    try:
        hidden = await bloat.measure(conn, ctx)
    finally:
        await conn.close()
    assert hidden.estimates == [] and hidden.hidden >= 3  # table, primary key, index
    [finding], _ = bloat.check(hidden)
    assert finding.severity is Severity.WARN and "cannot see" in finding.what


@pytest.mark.asyncio
async def test_a_local_index_of_one_partition_is_judged_by_that_partition(
    pg: asyncpg.Connection,
) -> None:
    await pg.execute("CREATE TABLE health_parts (id bigint, kind int) PARTITION BY RANGE (id)")
    await pg.execute(
        "CREATE TABLE health_parts_a PARTITION OF health_parts FOR VALUES FROM (0) TO (1000000)"
    )
    await pg.execute(
        "CREATE TABLE health_parts_b PARTITION OF health_parts "
        "FOR VALUES FROM (1000000) TO (2000000)"
    )
    await pg.execute("CREATE INDEX health_parts_a_kind ON health_parts_a (kind)")  # local
    await pg.execute("CREATE INDEX health_parts_b_kind ON health_parts_b (kind)")  # local
    await pg.execute(f"INSERT INTO health_parts SELECT g, g % 7 FROM generate_series(1, {ROWS}) g")
    await pg.execute("SELECT pg_stat_force_next_flush()")
    stats = {s.name: s for s in await indexes.fetch(pg)}
    busy, quiet = stats["public.health_parts_a_kind"], stats["public.health_parts_b_kind"]
    assert (busy.table, busy.partitioned) == ("health_parts_a", False)
    assert ROWS <= busy.table_activity < ROWS + 10  # its own partition's rows (and scans)
    assert quiet.table_activity < 10
    assert [s.name for s in indexes.find_unused(stats.values())] == [
        "public.health_parts_a_kind"
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_ident_quotes_exactly_as_quote_ident(pg: asyncpg.Connection) -> None:
    names = [r[0] for r in await pg.fetch("SELECT word FROM pg_get_keywords()")]
    names += ["events", "Events", "my table", 'a"b', "_x1", "1abc", "é", "abort"]
    rows = await pg.fetch("SELECT n, quote_ident(n) AS q FROM unnest($1::text[]) n", names)
    assert [(r["n"], ident(r["n"])) for r in rows] == [(r["n"], r["q"]) for r in rows]
