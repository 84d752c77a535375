"""Keys never reach a log line: pipeline.apikeys.redact and the server's log filter."""

from __future__ import annotations

import logging

import pytest

from pipeline import apikeys
from pipeline.errors import DatabaseUnavailableError
from pipeline.http.keys import KeyCache
from pipeline.http.server import _REDACT_KEYS


def test_redact_keeps_the_key_id_and_drops_the_secret() -> None:
    key_id, key = apikeys.new_key()
    text = f"Invalid header value: 'Authorization: Bearer {key}\\x00'"
    redacted = apikeys.redact(text)
    assert key not in redacted and key.split("_", 2)[2] not in redacted
    assert f"evk_{key_id}_***" in redacted
    assert apikeys.redact("evk_not-a-key here") == "evk_*** here"
    assert apikeys.redact("nothing to hide") == "nothing to hide"


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    _, key = apikeys.new_key()
    record = logging.LogRecord("aiohttp.server", logging.ERROR, "f", 1, "bad: %s", (key,), None)
    assert _REDACT_KEYS.filter(record)
    assert key not in record.getMessage() and "evk_" in record.getMessage()
    try:
        raise ValueError(f"Authorization: Bearer {key}")
    except ValueError as exc:
        info = (type(exc), exc, exc.__traceback__)
    record = logging.LogRecord("aiohttp.server", logging.ERROR, "f", 1, "Error", (), info)
    assert _REDACT_KEYS.filter(record)
    assert record.exc_info is None
    assert key not in record.getMessage() and "ValueError" in record.getMessage()


class _SilentPool:
    """A pool whose connections never come (PostgreSQL silent after a failover)."""

    def acquire(self) -> _SilentPool:
        return self

    async def __aenter__(self) -> None:
        import asyncio

        await asyncio.sleep(3600)

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.asyncio
async def test_a_key_check_gives_up_when_postgresql_is_silent() -> None:
    _, key = apikeys.new_key()
    cache = KeyCache(_SilentPool(), ttl_s=10.0, query_timeout_s=0.05)
    with pytest.raises(DatabaseUnavailableError, match="did not answer"):
        await cache.authenticate(key)
