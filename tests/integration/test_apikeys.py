"""API keys (pipeline.apikeys, `pipeline keys`): shown once, stored as a hash only, bound
to an organization, revocable, audited. Against the suite's PostgreSQL, as the writer role
the HTTP servers and operators use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pipeline import apikeys
from pipeline.config import DatabaseConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.asyncio
async def test_a_key_is_stored_as_its_hash_only_and_authenticates_until_revoked(
    pg: asyncpg.Connection,
) -> None:
    await pg.execute("SET ROLE pipeline_writer")
    key, secret = await apikeys.create(pg, "org-7", "billing service")
    assert secret.startswith("evk_") and apikeys.parse_key(secret) == key.key_id
    row = await pg.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key.key_id)
    stored = json.dumps({k: str(v) for k, v in dict(row).items()})
    assert secret not in stored and secret.split("_", 2)[2] not in stored
    assert bytes(row["key_sha256"]) == apikeys.hash_key(secret)

    found = await apikeys.authenticate(pg, secret)
    assert found is not None and found.organization_id == "org-7"
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert await apikeys.authenticate(pg, wrong) is None  # right id, wrong secret
    assert await apikeys.authenticate(pg, "Bearer nonsense") is None
    await apikeys.touch(pg, key.key_id)
    [listed] = await apikeys.list_keys(pg, organization_id="org-7")
    assert listed.last_used_at is not None

    assert await apikeys.revoke(pg, key.key_id)
    assert await apikeys.revoke(pg, key.key_id)  # idempotent
    assert not await apikeys.revoke(pg, "0123456789ab")
    assert await apikeys.authenticate(pg, secret) is None
    assert await apikeys.list_keys(pg, organization_id="org-7") == []
    [revoked] = await apikeys.list_keys(pg, organization_id="org-7", include_revoked=True)
    assert revoked.revoked_at is not None

    await pg.execute("RESET ROLE")
    audit = await pg.fetch(
        "SELECT action, before, after FROM audit_trail WHERE entity_type = 'api_key' "
        "AND entity_id = $1 ORDER BY occurred_at, action",
        key.key_id,
    )
    assert [r["action"] for r in audit] == ["api_key.created", "api_key.revoked"]
    assert all("sha256" not in str(r["after"]) for r in audit)


def keys_cli(database: DatabaseConfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PIPELINE_"))}
    env.update({"PYTHONPATH": str(REPO), "DATABASE_URL": database.url})
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "keys", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_cli_prints_a_key_once_and_never_again(migrated_database: DatabaseConfig) -> None:
    created = keys_cli(migrated_database, "create", "--organization", "acme", "--name", "web")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    key_id = apikeys.parse_key(secret)
    assert key_id is not None, created.stdout
    assert secret not in created.stderr and key_id in created.stderr

    listed = keys_cli(migrated_database, "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    assert [(r["key_id"], r["organization_id"], r["name"]) for r in rows] == [
        (key_id, "acme", "web")
    ]
    assert secret not in listed.stdout
    table = keys_cli(migrated_database, "list")
    assert key_id in table.stdout and secret not in table.stdout

    revoked = keys_cli(migrated_database, "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    missing = keys_cli(migrated_database, "revoke", "0123456789ab")
    assert missing.returncode == 1 and "no key" in missing.stderr
    assert keys_cli(migrated_database, "list", "--format", "json").stdout.strip() == "[]"
    bad = keys_cli(migrated_database, "create", "--organization", "")
    assert bad.returncode == 2 and "organization" in bad.stderr
