"""The ``pipeline`` command as an operator runs it: a real process, real PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import DatabaseConfig
from pipeline.migrations.files import discover
from tests.conftest import REPO, SQL_DIR

MIGRATIONS = discover(SQL_DIR)

EXTERNAL = (
    "DATABASE_URL", "PGHOST", "PGDATABASE", "PGPORT", "PGUSER", "PGPASSWORD",
    "KAFKA_BOOTSTRAP_SERVERS", "PIPELINE_MIGRATIONS_DIR",
)  # fmt: skip


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        [], ["migrate"], ["migrate", "up"], ["migrate", "down"], ["migrate", "status"],
        ["migrate", "verify"], ["migrate", "new"], ["partitions"], ["partitions", "ensure"],
        ["partitions", "prune"], ["partitions", "stats"], ["demo"], ["worker"],
        ["produce"], ["dlq"], ["query"], ["db"], ["db", "health"], ["import"],
    ],
)  # fmt: skip
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: pipeline" in result.stdout


def test_missing_database_is_a_clear_configuration_error() -> None:
    result = run("migrate", "status")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr and "Traceback" not in result.stderr


def test_invalid_setting_names_the_variable() -> None:
    result = run("migrate", "status", env={"DATABASE_URL": "mysql://x", "PIPELINE_WEB_PORT": "1"})
    assert result.returncode == 2
    assert "DATABASE_URL must start with postgresql://" in result.stderr


@pytest.mark.asyncio
async def test_migrate_and_partitions_commands(
    fresh_database: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": fresh_database.url}
    dry = run("migrate", "up", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would apply 0001_core (one transaction)" in dry.stdout

    status = run("migrate", "status", env=env)
    assert status.returncode == 0 and status.stdout.count("pending") == len(MIGRATIONS)

    up = run("migrate", "up", env=env)
    assert up.returncode == 0, up.stderr
    assert "applied 0001_core" in up.stdout and "applied 0002_event_tables" in up.stdout
    assert run("migrate", "up", env=env).stdout.strip() == "schema is up to date"
    assert "match their files" in run("migrate", "verify", env=env).stdout

    ensure = run("partitions", "ensure", env=env)
    # Already existing: the current month of audit_trail (migration 0009 recorded itself).
    created = re.search(r"(\d+) partitions created, 1 already existed", ensure.stdout)
    assert ensure.returncode == 0 and created, ensure.stdout
    again = run("partitions", "ensure", env=env)
    assert f"0 partitions created, {int(created[1]) + 1} already existed" in again.stdout
    stats = run("partitions", "stats", env=env)
    assert stats.returncode == 0 and "api_usage_p" in stats.stdout
    assert "nothing to prune" in run("partitions", "prune", "--dry-run", env=env).stdout

    # An edited applied migration: verify and up fail with exit code 1 and say why.
    copy = tmp_path / "migrations"
    copy.mkdir()
    for f in SQL_DIR.iterdir():
        (copy / f.name).write_text(f.read_text())
    (copy / "0002_event_tables.up.sql").write_text("-- rewritten\n")
    drift_env = {**env, "PIPELINE_MIGRATIONS_DIR": str(copy)}
    verify = run("migrate", "verify", env=drift_env)
    assert verify.returncode == 1 and "0002_event_tables changed" in verify.stdout
    blocked = run("migrate", "up", env=drift_env)
    assert blocked.returncode == 1 and "nothing was run" in blocked.stderr
    assert run("migrate", "status", env=drift_env).returncode == 1

    new = run("migrate", "new", "add_thing", env=drift_env)
    next_version = MIGRATIONS[-1].version + 1
    assert new.returncode == 0 and (copy / f"{next_version:04d}_add_thing.up.sql").exists()

    down = run("migrate", "down", "--to", "0", env=env)
    assert down.returncode == 0 and "rolled back 0001_core" in down.stdout


def test_demo_runs_the_whole_pipeline_and_verifies_it() -> None:
    result = run("demo", "--events", "5000", "--workers", "2", timeout=600)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "applied 0002_event_tables" in out
    assert (
        "api-calls, analysis-events, system-logs, performance-metrics, audit-events, "
        "ingest-dlq (8 partitions each)"
    ) in out
    assert "Top users by API cost:" in out
    assert "AI models by cost:" in out
    assert "verification: OK, PostgreSQL holds exactly what the generator produced" in out
    verdict = out[out.index("verification: OK") :]
    for figure in ("analyses in", "state changes", "metric samples in", "audit events"):
        assert figure in verdict, verdict
    assert "stopping the broker and PostgreSQL" in out
