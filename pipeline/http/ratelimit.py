"""Per-key rate limits: a token bucket of events for each API key.

A bucket holds at most ``burst`` tokens and refills ``rate`` tokens a second, continuously.
A request takes one token per event, all or nothing: :meth:`RateLimiter.take` either takes
them and returns 0, or takes none and returns how many seconds until they would be there
(the ``Retry-After``). Clock injected (monotonic seconds). With ``rate`` 0 there is no
limit. Buckets of keys unseen for a while are dropped (a full bucket is the same as none).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets of ``burst`` events refilled at ``rate`` events/s, one per key."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._swept = clock()

    def take(self, key: str, events: int) -> float:
        """Take ``events`` tokens from ``key``'s bucket: 0.0 if taken, else the seconds to
        wait before the same request would pass (nothing is taken then)."""
        if not self._rate or events <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens >= events:
            self._buckets[key] = (tokens - events, now)
            self._sweep(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (events - tokens) / self._rate

    def _sweep(self, now: float) -> None:
        full_after = self._burst / self._rate  # an untouched bucket is full again by then
        if now - self._swept < full_after or now - self._swept < 60.0:
            return
        self._swept = now
        for key in [k for k, (_, at) in self._buckets.items() if now - at >= full_after]:
            del self._buckets[key]
