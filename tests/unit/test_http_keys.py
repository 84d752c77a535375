"""API keys of HTTP requests (pipeline.http.keys): which key a request presents, and the
KeyCache over a fake asyncpg pool that answers the SQL of pipeline.apikeys, on an
injected clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from pipeline import apikeys
from pipeline.apikeys import ApiKey
from pipeline.errors import DatabaseRefusedError, DatabaseUnavailableError
from pipeline.http.keys import KeyCache, presented_key
from tests.unit.worker_fakes import FakeClock as Clock

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


class FakeDatabase:
    """The ``api_keys`` table, with the two statements KeyCache sends through
    pipeline.apikeys: ``authenticate``'s SELECT and ``touch``'s UPDATE."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.selects = 0
        self.touched: list[str] = []
        self.error: BaseException | None = None
        self.touch_error: BaseException | None = None
        self.gate: asyncio.Event | None = None  # SELECTs wait for it when set
        self.touch_gate: asyncio.Event | None = None

    def add(self, organization_id: str = "acme") -> tuple[str, str]:
        key_id, key = apikeys.new_key()
        self.rows[key_id] = {
            "key_sha256": apikeys.hash_key(key),
            "key_id": key_id,
            "organization_id": organization_id,
            "name": "web",
            "created_at": CREATED,
            "created_by": "test",
            "last_used_at": None,
            "revoked_at": None,
        }
        return key_id, key

    def revoke(self, key_id: str) -> None:
        self.rows[key_id]["revoked_at"] = datetime(2026, 2, 1, tzinfo=UTC)


class FakeConnection:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    async def fetchrow(self, query: str, *args: object) -> dict[str, Any] | None:
        db = self.db
        assert query.startswith("SELECT key_sha256, key_id, organization_id"), query
        assert query.endswith("FROM api_keys WHERE key_id = $1"), query
        db.selects += 1
        if db.gate is not None:
            await db.gate.wait()
        if db.error is not None:
            raise db.error
        (key_id,) = args
        assert isinstance(key_id, str)
        row = db.rows.get(key_id)
        return dict(row) if row is not None else None

    async def execute(self, query: str, *args: object) -> str:
        db = self.db
        assert query == "UPDATE api_keys SET last_used_at = now() WHERE key_id = $1", query
        if db.touch_gate is not None:
            await db.touch_gate.wait()
        if db.touch_error is not None:
            raise db.touch_error
        (key_id,) = args
        assert isinstance(key_id, str)
        db.touched.append(key_id)
        return "UPDATE 1"


class FakePool:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.acquired = 0
        self.refuse: BaseException | None = None  # acquire() itself fails

    def acquire(self) -> AbstractAsyncContextManager[FakeConnection]:
        return self._acquire()

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[FakeConnection]:
        if self.refuse is not None:
            raise self.refuse
        self.acquired += 1
        yield FakeConnection(self.db)


def make_cache(
    db: FakeDatabase | None = None, clock: Clock | None = None, **options: Any
) -> tuple[KeyCache, FakeDatabase, FakePool, Clock]:
    db = db or FakeDatabase()
    pool = FakePool(db)
    clock = clock or Clock()
    options.setdefault("ttl_s", 10.0)
    return KeyCache(pool, clock=clock, **options), db, pool, clock


# --- presented_key --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_a_bearer_key_in_any_case(scheme: str) -> None:
    assert presented_key(f"{scheme} evk_abc", None) == "evk_abc"


def test_the_bearer_key_is_stripped() -> None:
    assert presented_key("Bearer   evk_abc  ", None) == "evk_abc"


def test_bearer_wins_over_x_api_key() -> None:
    assert presented_key("Bearer evk_a", "evk_b") == "evk_a"


def test_x_api_key_is_the_fallback() -> None:
    assert presented_key(None, "evk_b") == "evk_b"
    assert presented_key("", " evk_b ") == "evk_b"
    assert presented_key("Basic dXNlcjpwYXNz", "evk_b") == "evk_b"
    assert presented_key("Bearer", "evk_b") == "evk_b"  # no space: not a bearer key


@pytest.mark.parametrize(
    ("authorization", "api_key"),
    [
        (None, None),
        ("", ""),
        ("Bearer ", None),
        ("Bearer    ", None),
        (None, "   "),
        ("Basic dXNlcjpwYXNz", None),
        ("evk_abc", None),  # a key without the scheme
    ],
)
def test_no_key(authorization: str | None, api_key: str | None) -> None:
    assert presented_key(authorization, api_key) is None


# --- KeyCache -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_active_key_is_its_row() -> None:
    cache, db, _, _ = make_cache()
    key_id, key = db.add("acme")
    found = await cache.authenticate(key)
    assert isinstance(found, ApiKey)
    assert (found.key_id, found.organization_id, found.name) == (key_id, "acme", "web")
    assert cache.queries == db.selects == 1
    await cache.close()


@pytest.mark.asyncio
async def test_a_key_is_cached_within_the_ttl() -> None:
    cache, db, _, clock = make_cache(ttl_s=10.0)
    _, key = db.add()
    first = await cache.authenticate(key)
    for _ in range(20):
        clock.advance(0.49)
        assert await cache.authenticate(key) == first
    assert db.selects == 1
    assert cache.queries == 1
    await cache.close()


@pytest.mark.asyncio
async def test_a_key_is_asked_again_after_the_ttl() -> None:
    cache, db, _, clock = make_cache(ttl_s=10.0)
    _, key = db.add()
    assert await cache.authenticate(key) is not None
    clock.advance(10.0)
    assert await cache.authenticate(key) is not None
    assert db.selects == 2
    clock.advance(9.9)
    assert await cache.authenticate(key) is not None
    assert db.selects == 2
    await cache.close()


@pytest.mark.asyncio
async def test_a_revoked_key_is_refused_once_the_ttl_has_passed() -> None:
    cache, db, _, clock = make_cache(ttl_s=10.0)
    key_id, key = db.add()
    assert await cache.authenticate(key) is not None
    db.revoke(key_id)
    clock.advance(5.0)
    assert await cache.authenticate(key) is not None  # remembered: at most ttl_s stale
    clock.advance(5.0)
    assert await cache.authenticate(key) is None
    clock.advance(1.0)
    assert await cache.authenticate(key) is None
    assert db.selects == 2
    await cache.close()


@pytest.mark.asyncio
async def test_an_unknown_key_is_remembered_too() -> None:
    cache, db, _, clock = make_cache(ttl_s=10.0)
    _, key = apikeys.new_key()
    for _ in range(5):
        assert await cache.authenticate(key) is None
    assert db.selects == 1
    # Created meanwhile: found once the negative verdict expires.
    key_id = apikeys.parse_key(key)
    assert key_id is not None
    db.rows[key_id] = {
        "key_sha256": apikeys.hash_key(key),
        "key_id": key_id,
        "organization_id": "acme",
        "name": "",
        "created_at": CREATED,
        "created_by": "test",
        "last_used_at": None,
        "revoked_at": None,
    }
    assert await cache.authenticate(key) is None
    clock.advance(10.0)
    found = await cache.authenticate(key)
    assert found is not None and found.key_id == key_id
    assert db.selects == 2
    await cache.close()


@pytest.mark.asyncio
async def test_a_wrong_secret_for_a_known_key_id_is_refused() -> None:
    cache, db, _, _ = make_cache()
    key_id, key = db.add()
    _, other = apikeys.new_key()
    forged = f"evk_{key_id}_{other[17:]}"  # a secret may hold '_' too
    assert len(forged) == len(key) and forged != key
    assert await cache.authenticate(forged) is None
    assert await cache.authenticate(key) is not None  # the forged verdict is not the key's
    assert db.selects == 2
    await cache.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "presented",
    ["", "evk_", "nope", "evk_0123456789ab_short", "Bearer evk_x", "EVK_0123456789AB_" + "a" * 43],
)
async def test_a_malformed_key_never_queries(presented: str) -> None:
    cache, db, pool, _ = make_cache()
    assert await cache.authenticate(presented) is None
    assert await cache.authenticate(presented) is None
    assert (db.selects, pool.acquired, cache.queries) == (0, 0, 0)


@pytest.mark.asyncio
async def test_concurrent_lookups_of_one_key_share_one_query() -> None:
    cache, db, _, _ = make_cache()
    _, key = db.add()
    db.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.authenticate(key)) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert db.selects == 1
    db.gate.set()
    found = await asyncio.gather(*tasks)
    assert all(k is not None and k == found[0] for k in found)
    assert cache.queries == db.selects == 1
    await cache.close()


@pytest.mark.asyncio
async def test_concurrent_lookups_of_an_unknown_key_share_one_query() -> None:
    cache, db, _, _ = make_cache()
    _, key = apikeys.new_key()
    db.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.authenticate(key)) for _ in range(10)]
    await asyncio.sleep(0.01)
    db.gate.set()
    assert await asyncio.gather(*tasks) == [None] * 10
    assert db.selects == 1


@pytest.mark.asyncio
async def test_different_keys_do_not_share_a_query() -> None:
    cache, db, _, _ = make_cache()
    keys = [db.add()[1] for _ in range(3)]
    db.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.authenticate(k)) for k in keys]
    await asyncio.sleep(0.01)
    assert db.selects == 3
    db.gate.set()
    found = await asyncio.gather(*tasks)
    assert [k.key_id if k else None for k in found] == [apikeys.parse_key(k) for k in keys]
    await cache.close()


@pytest.mark.asyncio
async def test_when_the_asking_request_goes_away_a_waiter_asks_itself() -> None:
    cache, db, _, _ = make_cache()
    _, key = db.add()
    db.gate = asyncio.Event()
    first = asyncio.create_task(cache.authenticate(key))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.authenticate(key))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    assert db.selects == 2  # the waiter's own query
    db.gate.set()
    assert await second is not None
    assert first.cancelled()
    await cache.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("refused"),
        OSError("network unreachable"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.InterfaceError("connection is closed"),
    ],
)
async def test_a_connection_error_is_database_unavailable(error: BaseException) -> None:
    cache, db, _, _ = make_cache()
    _, key = db.add()
    db.error = error
    with pytest.raises(DatabaseUnavailableError) as caught:
        await cache.authenticate(key)
    assert caught.value.__cause__ is error
    assert caught.value.retriable
    # Nothing is remembered: the next request asks again and gets the key.
    db.error = None
    assert await cache.authenticate(key) is not None
    assert db.selects == 2
    await cache.close()


@pytest.mark.asyncio
async def test_a_pool_that_cannot_connect_is_database_unavailable() -> None:
    cache, db, pool, _ = make_cache()
    _, key = db.add()
    pool.refuse = ConnectionRefusedError("refused")
    with pytest.raises(DatabaseUnavailableError):
        await cache.authenticate(key)


@pytest.mark.asyncio
async def test_concurrent_waiters_share_the_failure() -> None:
    cache, db, _, _ = make_cache()
    _, key = db.add()
    db.gate = asyncio.Event()
    db.error = ConnectionResetError("reset")
    tasks = [asyncio.create_task(cache.authenticate(key)) for _ in range(5)]
    await asyncio.sleep(0.01)
    db.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, DatabaseUnavailableError) for o in outcomes), outcomes
    assert db.selects == 1


@pytest.mark.asyncio
async def test_a_refusal_is_not_unavailability() -> None:
    cache, db, _, _ = make_cache()
    _, key = db.add()
    db.error = asyncpg.exceptions.InsufficientPrivilegeError("permission denied for api_keys")
    with pytest.raises(DatabaseRefusedError):
        await cache.authenticate(key)


@pytest.mark.asyncio
async def test_a_bug_propagates_as_is() -> None:
    cache, db, _, _ = make_cache()
    _, key = db.add()
    db.error = KeyError("organization_id")
    with pytest.raises(KeyError):
        await cache.authenticate(key)


@pytest.mark.asyncio
async def test_last_used_at_is_stamped_at_most_once_per_touch_interval() -> None:
    cache, db, _, clock = make_cache(ttl_s=10.0, touch_interval_s=60.0)
    key_id, key = db.add()
    for _ in range(5):
        assert await cache.authenticate(key) is not None
    await cache.close()
    assert db.touched == [key_id]
    for _ in range(59):
        clock.advance(1.0)
        assert await cache.authenticate(key) is not None
    await cache.close()
    assert db.touched == [key_id]
    clock.advance(1.0)
    assert await cache.authenticate(key) is not None
    assert await cache.authenticate(key) is not None
    await cache.close()
    assert db.touched == [key_id, key_id]


@pytest.mark.asyncio
async def test_each_key_is_stamped_on_its_own() -> None:
    cache, db, _, _ = make_cache()
    a, key_a = db.add()
    b, key_b = db.add()
    await cache.authenticate(key_a)
    await cache.authenticate(key_b)
    await cache.authenticate(key_a)
    await cache.close()
    assert sorted(db.touched) == sorted([a, b])


@pytest.mark.asyncio
async def test_unknown_and_revoked_keys_are_not_stamped() -> None:
    cache, db, _, _ = make_cache()
    key_id, key = db.add()
    db.revoke(key_id)
    assert await cache.authenticate(key) is None
    assert await cache.authenticate(apikeys.new_key()[1]) is None
    await cache.close()
    assert db.touched == []


@pytest.mark.asyncio
async def test_a_request_does_not_wait_for_its_stamp_and_close_does() -> None:
    cache, db, _, _ = make_cache()
    key_id, key = db.add()
    db.touch_gate = asyncio.Event()
    assert await asyncio.wait_for(cache.authenticate(key), 1.0) is not None
    closing = asyncio.create_task(cache.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    assert db.touched == []
    db.touch_gate.set()
    await asyncio.wait_for(closing, 1.0)
    assert db.touched == [key_id]


@pytest.mark.asyncio
async def test_close_with_nothing_under_way_returns() -> None:
    cache, _, _, _ = make_cache()
    await asyncio.wait_for(cache.close(), 1.0)


@pytest.mark.asyncio
async def test_a_failed_stamp_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    cache, db, _, _ = make_cache()
    key_id, key = db.add()
    db.touch_error = ConnectionResetError("reset")
    with caplog.at_level(logging.WARNING, logger="pipeline.http.keys"):
        assert await cache.authenticate(key) is not None
        await cache.close()
    assert db.touched == []
    assert any(key_id in r.getMessage() for r in caplog.records)
    assert not any(key in r.getMessage() for r in caplog.records)  # never the key itself


@pytest.mark.asyncio
async def test_the_cache_is_bounded() -> None:
    cache, db, _, _ = make_cache(max_entries=2)
    keys = [db.add()[1] for _ in range(3)]
    for key in keys:
        assert await cache.authenticate(key) is not None
    assert len(cache._verdicts) == 2
    assert db.selects == 3
    assert await cache.authenticate(keys[2]) is not None  # the newest is still there
    assert db.selects == 3
    assert await cache.authenticate(keys[0]) is not None  # the oldest was dropped
    assert db.selects == 4
    await cache.close()


@pytest.mark.asyncio
async def test_keys_are_remembered_by_their_hash_never_as_text() -> None:
    cache, db, _, _ = make_cache()
    _, key = db.add()
    await cache.authenticate(key)
    assert list(cache._verdicts) == [apikeys.hash_key(key)]
    await cache.close()
