"""The per-key figures of :class:`~pipeline.workload.totals.ExpectedTotals`, and their units.

- :class:`ApiBucket`: the API calls of one (service, UTC hour);
- :class:`MetricBucket`: the performance-metric samples of one (name, service, UTC hour).

Money is kept in integer units of 1e-8 USD (:func:`usd_e8`, :func:`format_usd`), response
times in integer microseconds and metric values in integer thousandths (:func:`milli`,
:func:`format_milli`), so sums are exact and independent of order; :func:`sums_close`
allows for the rounding of a double-precision sum read back from PostgreSQL.
:func:`occurred_ms` reads a wire ``occurred_at``; :func:`hour_iso` and
:func:`metric_order` are the form and the order of the hours and metric keys in reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

__all__ = [
    "ApiBucket",
    "MetricBucket",
    "format_milli",
    "format_usd",
    "hour_iso",
    "metric_order",
    "milli",
    "occurred_ms",
    "sums_close",
    "usd_e8",
]

_E8: Final = 100_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def occurred_ms(value: object) -> int:
    """A wire ``occurred_at`` (integer epoch ms or ISO-8601 with offset) as epoch ms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return (datetime.fromisoformat(value) - _EPOCH) // _ONE_MS
    raise ValueError(f"not a timestamp: {value!r}")


def usd_e8(value: Decimal | float | int | str) -> int:
    """A USD amount as integer 1e-8 units (floats rounded as the validator does)."""
    if isinstance(value, float):
        return round(value * _E8)
    return int((Decimal(value) * _E8).to_integral_value())


def format_usd(e8: int) -> str:
    """Integer 1e-8 USD units as a plain decimal string with 8 places ("0.00012000")."""
    sign, e8 = ("-", -e8) if e8 < 0 else ("", e8)
    return f"{sign}{e8 // _E8}.{e8 % _E8:08d}"


def format_milli(us: int) -> str:
    """Integer thousandths (µs as ms, or a metric value) as a decimal with 3 places."""
    sign, us = ("-", -us) if us < 0 else ("", us)
    return f"{sign}{us // 1000}.{us % 1000:03d}"


def milli(value: float | int | str | Decimal) -> int:
    """A number as integer thousandths (a float rounded to the nearest)."""
    if isinstance(value, float):
        return round(value * 1000)
    return int((Decimal(value) * 1000).to_integral_value())


def sums_close(a: int, b: int) -> bool:
    """Equal up to the rounding of a double-precision sum: 1 unit plus one part in 10^9."""
    return abs(a - b) <= 1 + max(abs(a), abs(b)) // 1_000_000_000


def hour_iso(hour_ms: int) -> str:
    """An hour's start (epoch ms) as ISO-8601 with a ``+00:00`` offset."""
    return (_EPOCH + timedelta(milliseconds=hour_ms)).isoformat()


def metric_order(key: tuple[str, str, int]) -> tuple[int, str, str]:
    """The report order of (name, service, hour) metric keys: by hour, name, service."""
    return key[2], key[0], key[1]


@dataclass(slots=True)
class ApiBucket:
    """API-call figures of one (service, hour); response times in integer microseconds."""

    requests: int = 0
    successes: int = 0
    errors: int = 0
    tokens: int = 0
    cost_e8: int = 0
    response_time_us: int = 0

    @property
    def cost_usd(self) -> Decimal:
        """The summed cost, exact."""
        return Decimal(format_usd(self.cost_e8))

    @property
    def response_time_ms_sum(self) -> float:
        """The summed response time in milliseconds."""
        return self.response_time_us / 1000.0

    def _json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "tokens": self.tokens,
            "cost_usd": format_usd(self.cost_e8),
            "response_time_ms_sum": format_milli(self.response_time_us),
        }


@dataclass(slots=True)
class MetricBucket:
    """Performance-metric figures of one (name, service, hour); values in integer
    thousandths of the metric's unit."""

    samples: int = 0
    value_milli: int = 0
    min_milli: int = 0
    max_milli: int = 0

    def add(self, milli: int) -> None:
        """Count one sample."""
        if self.samples == 0:
            self.min_milli = self.max_milli = milli
        elif milli < self.min_milli:
            self.min_milli = milli
        elif milli > self.max_milli:
            self.max_milli = milli
        self.samples += 1
        self.value_milli += milli

    def merge(self, samples: int, value_milli: int, min_milli: int, max_milli: int) -> None:
        """Add the figures of another bucket of the same key."""
        if samples == 0:
            return
        if self.samples == 0:
            self.min_milli, self.max_milli = min_milli, max_milli
        else:
            self.min_milli = min(self.min_milli, min_milli)
            self.max_milli = max(self.max_milli, max_milli)
        self.samples += samples
        self.value_milli += value_milli

    @property
    def value_sum(self) -> float:
        """The summed value."""
        return self.value_milli / 1000.0

    def _json(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "value_sum": format_milli(self.value_milli),
            "value_min": format_milli(self.min_milli),
            "value_max": format_milli(self.max_milli),
        }
