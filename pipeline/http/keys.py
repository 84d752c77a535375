"""Which API key a request carries, with PostgreSQL asked as rarely as is safe.

:class:`KeyCache` remembers each presented key's verdict (the active :class:`ApiKey`, or
"no such key") for ``ttl_s`` seconds, so a revoked key stops working within ``ttl_s``
and a busy key costs PostgreSQL one query per ``ttl_s``. Keys are remembered by their
SHA-256, never as text, and never logged. Concurrent requests with the same unknown key
share one query. A key's ``last_used_at`` is stamped at most once per ``touch_interval_s``
(a minute), in the background: a request never waits for it, and a failed stamp is only
logged.

Clocks are injected (``clock``: monotonic seconds) so tests need not sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from pipeline import apikeys
from pipeline.apikeys import ApiKey
from pipeline.errors import DatabaseUnavailableError, classify_database_error

__all__ = ["KeyCache", "presented_key"]

log = logging.getLogger(__name__)

_BEARER: Final = "bearer "


def presented_key(authorization: str | None, api_key_header: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``X-Api-Key``."""
    if authorization and authorization[:7].lower() == _BEARER:
        return authorization[7:].strip() or None
    if api_key_header:
        return api_key_header.strip() or None
    return None


class KeyCache:
    """Authenticate presented keys against ``api_keys`` through ``pool`` (an asyncpg pool),
    remembering verdicts; see the module docstring."""

    def __init__(
        self,
        pool: Any,
        *,
        ttl_s: float,
        touch_interval_s: float = 60.0,
        query_timeout_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._touch_interval_s = touch_interval_s
        self._query_timeout_s = query_timeout_s
        self._max_entries = max_entries
        self._clock = clock
        self._verdicts: dict[bytes, tuple[float, ApiKey | None]] = {}
        self._pending: dict[bytes, asyncio.Future[ApiKey | None]] = {}
        self._touched: dict[str, float] = {}
        self._touches: set[asyncio.Task[None]] = set()
        self.queries = 0
        """Queries sent to PostgreSQL (for tests and the benchmark)."""

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None (malformed, unknown or revoked).

        Returning a key means it was active at most ``ttl_s`` ago. May wait for
        PostgreSQL, at most ``query_timeout_s`` (5 s) including the wait for a pooled
        connection; raises :class:`DatabaseUnavailableError` if it does not answer in
        time (the caller answers 503).
        """
        if apikeys.parse_key(presented) is None:
            return None  # malformed: no need to ask anyone
        digest = apikeys.hash_key(presented)
        now = self._clock()
        cached = self._verdicts.get(digest)
        if cached is not None and cached[0] > now:
            key = cached[1]
        else:
            key = await self._lookup(digest, presented)
        if key is not None:
            self._maybe_touch(key.key_id, now)
        return key

    async def _lookup(self, digest: bytes, presented: str) -> ApiKey | None:
        pending = self._pending.get(digest)
        if pending is not None:
            await asyncio.wait([pending])  # its outcome is ours, whatever it is
            if not pending.cancelled():
                return pending.result()
            return await self._query(presented)  # the asking request went away
        future: asyncio.Future[ApiKey | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            key = await self._query(presented)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else need
            raise
        else:
            future.set_result(key)
            self._remember(digest, key)
            return key
        finally:
            del self._pending[digest]

    async def _query(self, presented: str) -> ApiKey | None:
        self.queries += 1
        try:
            async with asyncio.timeout(self._query_timeout_s):
                async with self._pool.acquire() as conn:
                    return await apikeys.authenticate(conn, presented)
        except TimeoutError as exc:  # PostgreSQL silent (failover, network): not forever
            raise DatabaseUnavailableError(
                f"PostgreSQL did not answer a key check within {self._query_timeout_s:g}s"
            ) from exc
        except Exception as exc:
            mapped = classify_database_error(exc)
            if mapped is None:
                raise
            if mapped.retriable:
                raise DatabaseUnavailableError(str(mapped)) from exc
            raise mapped from exc

    def _remember(self, digest: bytes, key: ApiKey | None) -> None:
        verdicts = self._verdicts
        verdicts.pop(digest, None)  # a refreshed verdict is the newest: evicted last
        if len(verdicts) >= self._max_entries:
            now = self._clock()
            for stale in [d for d, (until, _) in verdicts.items() if until <= now]:
                del verdicts[stale]
            while len(verdicts) >= self._max_entries:  # still full: drop the oldest
                del verdicts[next(iter(verdicts))]
        verdicts[digest] = (self._clock() + self._ttl_s, key)

    def _maybe_touch(self, key_id: str, now: float) -> None:
        last = self._touched.get(key_id)
        if last is not None and now - last < self._touch_interval_s:
            return
        self._touched[key_id] = now
        task = asyncio.create_task(self._touch(key_id), name=f"touch-{key_id}")
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _touch(self, key_id: str) -> None:
        try:
            async with asyncio.timeout(self._query_timeout_s), self._pool.acquire() as conn:
                await apikeys.touch(conn, key_id)
        except TimeoutError:
            log.warning("could not stamp last_used_at of API key %s: no answer", key_id)
        except Exception as exc:
            if classify_database_error(exc) is None:
                log.exception("stamping last_used_at of API key %s failed", key_id)
            else:
                log.warning("could not stamp last_used_at of API key %s: %s", key_id, exc)

    async def close(self) -> None:
        """Wait for the ``last_used_at`` stamps under way."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)
