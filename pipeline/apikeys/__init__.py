"""API keys for HTTP ingestion: created, listed, revoked and checked (issue 16).

A key looks like ``evk_<key_id>_<secret>``: ``key_id`` is 12 hex characters (public: it
names the key in lists, logs and the audit trail), ``secret`` 43 URL-safe characters
(256 random bits). PostgreSQL stores only the SHA-256 of the whole key (migration 0012):
whoever reads the table cannot use a key, and a key is shown once, by :func:`create`.

The calls, on a connection the caller holds (asyncpg):

- :func:`create` returns ``(ApiKey, key)``; the key is never stored nor logged.
- :func:`list_keys` returns :class:`ApiKey` rows (no secrets exist to return).
- :func:`revoke` marks a key revoked (idempotent); False if no such key.
- :func:`authenticate` returns the :class:`ApiKey` of a presented key, or None when it is
  malformed, unknown, revoked or does not match (the hash is compared in constant time).
  It never raises for what a client sends; database errors propagate.

Creation and revocation are recorded in ``audit_trail`` by the table's trigger.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "ApiKey",
    "authenticate",
    "create",
    "hash_key",
    "list_keys",
    "parse_key",
    "redact",
    "revoke",
]

PREFIX = "evk_"
_KEY = re.compile(r"^evk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_IN_TEXT = re.compile(r"evk_(?:([0-9a-f]{12})_)?[A-Za-z0-9_-]*")


def redact(text: str) -> str:
    """``text`` with every key (or anything that starts like one) replaced by
    ``evk_<key_id>_***``: the public id stays, for whoever reads the log."""
    if PREFIX not in text:
        return text
    return _IN_TEXT.sub(lambda m: f"evk_{m.group(1)}_***" if m.group(1) else "evk_***", text)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's row, without anything secret."""

    key_id: str
    organization_id: str
    name: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_key() -> tuple[str, str]:
    """A fresh (key_id, key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(presented: str) -> str | None:
    """The key_id of a well-formed key, else None."""
    match = _KEY.match(presented)
    return match.group(1) if match else None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


_COLUMNS = "key_id, organization_id, name, created_at, created_by, last_used_at, revoked_at"


def _row(row: Any) -> ApiKey:
    return ApiKey(**{name: row[name] for name in _COLUMNS.split(", ")})


async def create(conn: Any, organization_id: str, name: str = "") -> tuple[ApiKey, str]:
    """Create a key for ``organization_id``; return its row and the key (shown once).

    Raises ``ValueError`` for an empty or too long organization or name.
    """
    if not organization_id or len(organization_id) > 128:
        raise ValueError("the organization must be 1 to 128 characters")
    if len(name) > 200:
        raise ValueError("the name must be at most 200 characters")
    key_id, key = new_key()
    row = await conn.fetchrow(
        f"INSERT INTO api_keys (key_id, key_sha256, organization_id, name) "
        f"VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}",
        key_id,
        hash_key(key),
        organization_id,
        name,
    )
    return _row(row), key


async def list_keys(
    conn: Any, *, organization_id: str | None = None, include_revoked: bool = False
) -> list[ApiKey]:
    """Keys, newest first; only active ones unless ``include_revoked``."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_keys "
        "WHERE ($1::text IS NULL OR organization_id = $1) AND ($2 OR revoked_at IS NULL) "
        "ORDER BY created_at DESC, key_id",
        organization_id,
        include_revoked,
    )
    return [_row(r) for r in rows]


async def revoke(conn: Any, key_id: str) -> bool:
    """Revoke ``key_id`` (a revoked key stays revoked, with its first revocation time).
    Returns False when no such key exists."""
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()), "
        "revoked_by = coalesce(revoked_by, session_user) WHERE key_id = $1",
        key_id,
    )
    return bool(status.endswith(" 1"))


async def authenticate(conn: Any, presented: str) -> ApiKey | None:
    """The active key ``presented`` is, or None (see the module docstring)."""
    key_id = parse_key(presented)
    if key_id is None:
        return None
    row = await conn.fetchrow(
        f"SELECT key_sha256, {_COLUMNS} FROM api_keys WHERE key_id = $1", key_id
    )
    if row is None or not hmac.compare_digest(bytes(row["key_sha256"]), hash_key(presented)):
        return None
    key = _row(row)
    return key if key.active else None


async def touch(conn: Any, key_id: str) -> None:
    """Record that ``key_id`` was used now (callers do this at most once a minute)."""
    await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = $1", key_id)
