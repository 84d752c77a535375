"""Row-level security: an analyst bound to organization A reads nothing of B by any
documented path (tables, rollups, views, functions, ``pipeline query``), binding is
limited by analyst_scopes, and the roles have only the privileges they need.

The embedded server's user is a superuser, which bypasses row-level security, so these
tests SET ROLE to the analyst role, or connect as a login role created for the test.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from pipeline.config import DatabaseConfig
from pipeline.maintenance.rollups import refresh_rollups
from tests.conftest import REPO
from tests.integration.test_analytics_functions import END, START, at, load_known
from tests.integration.test_analytics_rollups import NOW, analysis, write_analyses

TABLES = [
    "api_usage", "ai_analysis", "api_usage_daily", "api_usage_summary_hourly",
    "api_usage_summary_daily", "ai_analysis_hourly", "ai_analysis_daily",
    "ai_analysis_summary_hourly", "ai_analysis_summary_daily", "api_usage_hourly_stats",
    "api_usage_daily_stats", "ai_analysis_daily_stats", "ai_analysis_user_hourly",
    "ai_analysis_user_daily", "ai_analysis_user_monthly", "api_usage_org_hourly",
    "api_usage_org_daily", "ai_analysis_org_hourly", "ai_analysis_org_daily",
]  # fmt: skip

# Every documented function, called for both organizations' whole range: the organization
# column (or what identifies it) of every row returned.
FUNCTIONS = [
    "SELECT organization_id FROM ai_usage_facts($1, $2)",
    "SELECT organization_id FROM ai_usage_summary_facts($1, $2)",
    "SELECT organization_id FROM ai_user_facts($1, $2)",
    "SELECT organization_id FROM api_org_facts($1, $2)",
    "SELECT organization_id FROM ai_org_facts($1, $2)",
    "SELECT organization_id FROM api_usage_facts($1, $2)",
    "SELECT organization_id FROM api_usage_summary_facts($1, $2)",
    "SELECT organization_id FROM top_users_by_ai_cost($1, $2, 100)",
    "SELECT organization_id FROM organization_usage_summary($1, $2)",
]

# Functions asked explicitly about organization B, or about a user of B: nothing.
ASKING_FOR_B = [
    "SELECT * FROM user_ai_cost('user-3', $1, $2)",
    "SELECT * FROM organization_ai_usage('org-b', $1, $2)",
    "SELECT * FROM organization_api_usage('org-b', $1, $2)",
    "SELECT * FROM ai_cost_by_model($1, $2, 'org-b')",
    "SELECT * FROM top_users_by_ai_cost($1, $2, 10, 'org-b')",
    "SELECT * FROM ai_cache_hit_rate($1, $2, 'org-b') WHERE analyses > 0",
    "SELECT * FROM service_error_rates($1, $2, 'org-b')",
    "SELECT * FROM api_usage_by_service_hour($1, $2, 'org-b')",
]


async def load(conn: Any) -> None:
    """The known data set, refreshed, plus one queued (not yet rolled up) analysis of B."""
    await load_known(conn)
    await refresh_rollups(conn, now=NOW)
    await write_analyses(conn, [analysis(at(START, 12, 0), user="user-3", org="org-b")])
    await conn.execute("INSERT INTO analyst_scopes VALUES ('pipeline_analyst', 'org-a')")


async def visible_organizations(conn: Any) -> dict[str, set[str | None]]:
    seen = {}
    for relation in TABLES:
        seen[relation] = {
            r[0] for r in await conn.fetch(f"SELECT DISTINCT organization_id FROM {relation}")
        }
    for sql in FUNCTIONS:
        seen[sql] = {r[0] for r in await conn.fetch(sql, START, END)}
    return seen


@pytest.mark.asyncio
async def test_an_analyst_bound_to_a_sees_only_a(pg: asyncpg.Connection) -> None:
    await load(pg)
    everything = await visible_organizations(pg)  # superuser: both
    assert all({"org-a", "org-b"} <= orgs for orgs in everything.values())

    await pg.execute("SET ROLE pipeline_analyst")
    assert await pg.fetchval("SELECT set_analyst_organization('org-a')") == "org-a"
    assert await visible_organizations(pg) == {key: {"org-a"} for key in everything}
    for sql in ASKING_FOR_B:
        assert await pg.fetch(sql, START, END) == [], sql
    # Aggregates without an organization filter count A's rows only.
    errors = await pg.fetch("SELECT service, requests FROM service_error_rates($1, $2)", START, END)
    assert [(r["service"], r["requests"]) for r in errors] == [("auth", 4), ("search", 2)]
    total = await pg.fetchval("SELECT sum(cost_usd) FROM ai_cost_by_model($1, $2)", START, END)
    assert str(total) == "0.65000000"


@pytest.mark.asyncio
async def test_the_rollup_queue_shows_an_analyst_only_its_own_organizations_activity(
    pg: asyncpg.Connection,
) -> None:
    """No side channel: when other organizations wrote, and how much the refresh did."""
    await load(pg)  # leaves one analysis of org-b queued
    queued = await pg.fetch("SELECT source, organization_id FROM rollup_pending")
    assert [tuple(r) for r in queued] == [("ai_analysis", "org-b")]
    await pg.execute(
        "SELECT rollup_requeue('api_usage', $1::timestamptz, $1 + interval '1 hour')", START
    )

    await pg.execute("SET ROLE pipeline_analyst")
    await pg.fetchval("SELECT set_analyst_organization('org-a')")
    visible = await pg.fetch("SELECT source, organization_id FROM rollup_pending")
    assert [tuple(r) for r in visible] == [("api_usage", None)]  # a requeue concerns all
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg.fetch("SELECT * FROM rollup_state")
    await pg.execute("RESET ROLE")

    await pg.execute("SET ROLE pipeline_analyst_all")
    assert await pg.fetchval("SELECT count(*) FROM rollup_pending") == 2
    await pg.fetch("SELECT * FROM rollup_state")
    await pg.execute("RESET ROLE")


@pytest.mark.asyncio
async def test_binding_is_limited_by_analyst_scopes(pg: asyncpg.Connection) -> None:
    await load(pg)
    await pg.execute("SET ROLE pipeline_analyst")
    # Setting the variable by hand to an organization the login may not use: nothing.
    await pg.execute("SET app.organization_id = 'org-b'")
    assert await pg.fetchval("SELECT analyst_organization()") is None
    for relation in TABLES:
        assert await pg.fetchval(f"SELECT count(*) FROM {relation}") == 0, relation
    assert await pg.fetchval("SELECT set_analyst_organization('org-b')") is None
    # Unbound: nothing either.
    await pg.execute("RESET app.organization_id")
    assert await pg.fetchval("SELECT count(*) FROM ai_analysis") == 0
    # '*' lets a trusted front end bind each session to any one organization.
    await pg.execute("RESET ROLE")
    await pg.execute("INSERT INTO analyst_scopes VALUES ('pipeline_analyst', '*')")
    await pg.execute("SET ROLE pipeline_analyst")
    assert await pg.fetchval("SELECT set_analyst_organization('org-b')") == "org-b"
    assert {r[0] for r in await pg.fetch("SELECT DISTINCT organization_id FROM ai_analysis")} == {
        "org-b"
    }


@pytest.mark.asyncio
async def test_roles_have_only_what_they_need(pg: asyncpg.Connection) -> None:
    await load(pg)
    await pg.execute("SET ROLE pipeline_analyst_all")  # every organization, no binding
    assert await visible_organizations(pg) == await _as_superuser(pg, visible_organizations)
    await pg.execute("RESET ROLE")

    for role in ("pipeline_analyst", "pipeline_analyst_all"):
        await pg.execute(f"SET ROLE {role}")
        for sql in (
            "SELECT * FROM system_logs",
            "SELECT * FROM ingest_offsets",
            "SELECT * FROM analyst_scopes",
            f"SELECT * FROM ai_analysis_p{START:%Y%m%d}",  # a partition, bypassing the parent
            "INSERT INTO analyst_scopes VALUES ('x', '*')",
            "DELETE FROM api_usage",
            "INSERT INTO rollup_pending (source, unit_start) VALUES ('api_usage', now())",
            "SELECT * FROM ensure_partition('api_usage', now())",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await pg.execute(sql)
        await pg.execute("RESET ROLE")

    await pg.execute("SET ROLE pipeline_writer")
    for sql in (
        "SELECT * FROM analyst_scopes",
        "DELETE FROM api_usage",
        "SELECT * FROM system_logs",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pg.execute(sql)
    await pg.execute("RESET ROLE")

    # The only SECURITY DEFINER functions: none returns tenant rows.
    definers = await pg.fetch(
        "SELECT proname FROM pg_proc WHERE prosecdef "
        "AND pronamespace = current_schema()::regnamespace ORDER BY 1"
    )
    assert [r[0] for r in definers] == [
        "analyst_organization", "ensure_partition", "pipeline_audit",
    ]  # fmt: skip
    views = await pg.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'v' "
        "AND relnamespace = current_schema()::regnamespace "
        "AND NOT coalesce('security_invoker=true' = ANY(reloptions), false)"
    )
    assert [r[0] for r in views] == ["partition_ranges"]  # not readable by analysts


async def _as_superuser(conn: Any, read: Any) -> Any:
    role = await conn.fetchval("SELECT current_user")
    await conn.execute("RESET ROLE")
    try:
        return await read(conn)
    finally:
        await conn.execute(f"SET ROLE {role}")


@pytest_asyncio.fixture
async def analyst_login(
    pg: asyncpg.Connection, migrated_database: DatabaseConfig
) -> AsyncIterator[str]:
    """A login role (cluster-wide: dropped afterwards) in pipeline_analyst, allowed to use
    org-a only; yields its connection URL to the test's database."""
    name = f"analyst_{secrets.token_hex(6)}"
    password = secrets.token_hex(12)
    await pg.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE pipeline_analyst")
    try:
        await pg.execute("INSERT INTO analyst_scopes VALUES ($1, 'org-a')", name)
        parts = urlsplit(migrated_database.url)
        host = parts.netloc.rsplit("@", 1)[-1]
        yield urlunsplit(parts._replace(netloc=f"{name}:{quote(password)}@{host}"))
    finally:
        await pg.execute(f"DROP ROLE IF EXISTS {name}")


def run_query(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "query", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.asyncio
async def test_pipeline_query_as_an_analyst_login(
    pg: asyncpg.Connection, analyst_login: str
) -> None:
    await load_known(pg)
    await refresh_rollups(pg, now=NOW)
    dates = ["--from", "2026-11-20", "--to", "2026-11-22"]

    own = run_query("org-usage", "--organization", "org-a", "--format", "csv",
                    "--database-url", analyst_login, *dates)  # fmt: skip
    assert own.returncode == 0, own.stderr
    lines = own.stdout.splitlines()
    assert lines[0].startswith("organization_id,api_requests")
    assert [line.split(",")[0] for line in lines[1:]] == ["org-a"]

    top = run_query("top-users", "--organization", "org-a", "--format", "json",
                    "--database-url", analyst_login, *dates)  # fmt: skip
    assert top.returncode == 0, top.stderr
    assert '"org-b"' not in top.stdout and '"user-1"' in top.stdout

    # Another organization: refused with a clear message, not an empty report.
    other = run_query("org-ai-usage", "--organization", "org-b", "--database-url", analyst_login,
                      *dates)  # fmt: skip
    assert other.returncode == 1
    assert "may not read organization 'org-b'" in other.stderr

    unbound = run_query("error-rates", "--database-url", analyst_login, *dates)
    assert unbound.returncode == 1 and "--organization" in unbound.stderr

    # The same login in SQL: setting the variable by hand does not get it in.
    conn = await asyncpg.connect(analyst_login)
    try:
        await conn.execute("SET app.organization_id = 'org-b'")
        assert await conn.fetchval("SELECT count(*) FROM api_usage") == 0
        await conn.execute("SET app.organization_id = 'org-a'")
        assert await conn.fetchval("SELECT count(*) FROM api_usage") == 2
    finally:
        await conn.close()
