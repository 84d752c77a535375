"""The exact totals a workload produced, to compare with what PostgreSQL ends up holding.

:class:`ExpectedTotals` folds :class:`~pipeline.workload.spec.Item`\\ s (valid ones into
the figures, poison ones into invalid counts):

- API calls per (service, UTC hour of occurred_at): requests, successes, errors, tokens,
  cost and the sum of response_time_ms (what ``api_usage`` holds, summed over the other
  key columns);
- analyses: rows (one per distinct event_id: a re-emitted duplicate is counted once),
  tokens_used, api cost, rows per model_type; system logs: rows (distinct event_ids);
- invalid items per (kind, reason).

Money is kept in integer units of 1e-8 USD and response times in integer microseconds
(every generated value has at most 8 and 3 decimals), so sums are exact and independent of
order. The same class holds figures read back from PostgreSQL (:meth:`add_api_bucket` and
the public fields), and :meth:`compare` lists the differences.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from pipeline.contract import EventKind, Reason
from pipeline.workload.spec import HOUR_MS, Item

__all__ = ["ApiBucket", "ExpectedTotals", "format_usd", "occurred_ms", "usd_e8"]

_E8: Final = 100_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_FORMAT: Final = 1


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


def _format_us(us: int) -> str:
    sign, us = ("-", -us) if us < 0 else ("", us)
    return f"{sign}{us // 1000}.{us % 1000:03d}"


def _hour_iso(hour_ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=hour_ms)).isoformat()


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
            "response_time_ms_sum": _format_us(self.response_time_us),
        }


@dataclass(slots=True)
class ExpectedTotals:
    """Totals of a workload run; see the module docstring. Start empty and :meth:`add`."""

    api: dict[tuple[str, int], ApiBucket] = field(default_factory=dict)
    """(service, hour start in epoch ms) -> bucket."""
    analysis_rows: int = 0
    analysis_tokens_used: int = 0
    analysis_cost_e8: int = 0
    analysis_by_model: dict[str, int] = field(default_factory=dict)
    system_log_rows: int = 0
    invalid: dict[tuple[EventKind, Reason], int] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    """event_ids of analyses and logs already counted (not serialised)."""

    @classmethod
    def of(cls, items: Iterable[Item]) -> ExpectedTotals:
        """The totals of ``items``."""
        totals = cls()
        totals.add_all(items)
        return totals

    def add_all(self, items: Iterable[Item]) -> None:
        """:meth:`add` every item."""
        add = self.add
        for item in items:
            add(item)

    def add(self, item: Item) -> None:
        """Count one generated item (a valid event, or a poison item by its reason).

        Analyses and logs are counted once per event_id, as PostgreSQL stores them.
        """
        if item.poison is not None or item.event is None:
            key = (item.kind, item.poison or Reason.MALFORMED_JSON)
            self.invalid[key] = self.invalid.get(key, 0) + 1
            return
        event = item.event
        kind = item.kind
        if kind == EventKind.API_CALL:
            ms = occurred_ms(event["occurred_at"])
            key2 = (str(event["service"]), ms - ms % HOUR_MS)
            bucket = self.api.get(key2)
            if bucket is None:
                bucket = self.api[key2] = ApiBucket()
            bucket.requests += 1
            if event["success"]:
                bucket.successes += 1
            else:
                bucket.errors += 1
            bucket.tokens += _int(event.get("tokens"))
            bucket.cost_e8 += usd_e8(_number(event.get("cost_usd")))
            bucket.response_time_us += round(_number(event["response_time_ms"]) * 1000)
            return
        event_id = str(event["event_id"])
        if event_id in self._seen:
            return
        self._seen.add(event_id)
        if kind == EventKind.ANALYSIS:
            self.analysis_rows += 1
            tokens_used = event.get("tokens_used")
            if not isinstance(tokens_used, int):  # the contract's default
                tokens_used = _int(event.get("request_tokens")) + _int(event.get("response_tokens"))
            self.analysis_tokens_used += tokens_used
            self.analysis_cost_e8 += usd_e8(_number(event.get("api_cost_usd")))
            model = str(event["model_type"])
            self.analysis_by_model[model] = self.analysis_by_model.get(model, 0) + 1
        else:
            self.system_log_rows += 1

    def add_api_bucket(
        self,
        service: str,
        hour: int | datetime,
        *,
        requests: int,
        successes: int,
        errors: int,
        tokens: int,
        cost_usd: Decimal | int | str,
        response_time_ms_sum: float,
    ) -> None:
        """Add figures read back from PostgreSQL to the bucket of (service, hour).

        ``hour`` is the bucket's start (epoch ms or an aware datetime); ``cost_usd`` a
        ``numeric`` read as Decimal; ``response_time_ms_sum`` the double-precision sum.
        Adds to what the bucket holds, so rows of several endpoints/users may be fed in.
        """
        if isinstance(hour, datetime):
            hour = (hour - _EPOCH) // _ONE_MS
        bucket = self.api.setdefault((service, hour - hour % HOUR_MS), ApiBucket())
        bucket.requests += requests
        bucket.successes += successes
        bucket.errors += errors
        bucket.tokens += tokens
        bucket.cost_e8 += usd_e8(cost_usd)
        bucket.response_time_us += round(response_time_ms_sum * 1000)

    @property
    def api_requests(self) -> int:
        """All API calls counted."""
        return sum(b.requests for b in self.api.values())

    @property
    def api_cost_usd(self) -> Decimal:
        """The cost of all API calls, exact."""
        return Decimal(format_usd(sum(b.cost_e8 for b in self.api.values())))

    @property
    def analysis_cost_usd(self) -> Decimal:
        """The api_cost of all (distinct) analyses, exact."""
        return Decimal(format_usd(self.analysis_cost_e8))

    @property
    def invalid_by_reason(self) -> dict[Reason, int]:
        """Invalid items per reason, all kinds together."""
        out: dict[Reason, int] = {}
        for (_, reason), n in self.invalid.items():
            out[reason] = out.get(reason, 0) + n
        return out

    @property
    def invalid_by_kind(self) -> dict[EventKind, int]:
        """Invalid items per kind, all reasons together."""
        out: dict[EventKind, int] = {}
        for (kind, _), n in self.invalid.items():
            out[kind] = out.get(kind, 0) + n
        return out

    def compare(self, other: ExpectedTotals, *, include_invalid: bool = True) -> list[str]:
        """Human-readable differences between these (expected) totals and ``other`` (actual).

        Empty when they agree. Response-time sums may differ by rounding of a
        double-precision sum (1 µs plus one part in 10^9); everything else must be equal.
        ``include_invalid=False`` skips the invalid counts (PostgreSQL does not hold them).
        """
        diffs: list[str] = []
        for key in sorted(self.api.keys() | other.api.keys(), key=lambda k: (k[1], k[0])):
            where = f"api_call {key[0]} {_hour_iso(key[1])}"
            mine, theirs = self.api.get(key), other.api.get(key)
            if theirs is None:
                assert mine is not None
                diffs.append(f"{where}: missing (expected {mine.requests} requests)")
                continue
            if mine is None:
                diffs.append(f"{where}: unexpected bucket ({theirs.requests} requests)")
                continue
            expected, actual = mine._json(), theirs._json()
            for name, value in expected.items():
                if name == "response_time_ms_sum":
                    a, b = mine.response_time_us, theirs.response_time_us
                    if abs(a - b) <= 1 + max(abs(a), abs(b)) // 1_000_000_000:
                        continue
                if value != actual[name]:
                    diffs.append(f"{where}: {name} expected {value}, got {actual[name]}")
        scalars: tuple[tuple[str, object, object], ...] = (
            ("analysis rows", self.analysis_rows, other.analysis_rows),
            ("analysis tokens_used", self.analysis_tokens_used, other.analysis_tokens_used),
            (
                "analysis api_cost_usd",
                format_usd(self.analysis_cost_e8),
                format_usd(other.analysis_cost_e8),
            ),
            ("system_log rows", self.system_log_rows, other.system_log_rows),
        )
        for label, want, got in scalars:
            if want != got:
                diffs.append(f"{label}: expected {want}, got {got}")
        diffs += _diff_counts(
            "analysis model_type", self.analysis_by_model, other.analysis_by_model
        )
        if include_invalid:
            diffs += _diff_counts(
                "invalid",
                {f"{k.value} {r.value}": n for (k, r), n in self.invalid.items()},
                {f"{k.value} {r.value}": n for (k, r), n in other.invalid.items()},
            )
        return diffs

    def to_json(self) -> bytes:
        """Indented JSON with a stable key order; decimals as strings, hours as ISO-8601.

        The ``summary`` section is informative only: :meth:`from_json` ignores it.
        """
        keys = sorted(self.api, key=lambda k: (k[1], k[0]))
        invalid: dict[str, dict[str, int]] = {}
        for kind in EventKind:
            counts = {r.value: self.invalid[(kind, r)] for r in Reason if (kind, r) in self.invalid}
            if counts:
                invalid[kind.value] = counts
        doc = {
            "format": _FORMAT,
            "summary": {
                "api_calls": self.api_requests,
                "api_cost_usd": str(self.api_cost_usd),
                "analyses": self.analysis_rows,
                "system_logs": self.system_log_rows,
                "invalid": sum(self.invalid.values()),
            },
            "api_call": [
                {"hour": _hour_iso(hour), "service": service, **self.api[(service, hour)]._json()}
                for service, hour in keys
            ],
            "analysis": {
                "rows": self.analysis_rows,
                "tokens_used": self.analysis_tokens_used,
                "api_cost_usd": format_usd(self.analysis_cost_e8),
                "by_model_type": dict(sorted(self.analysis_by_model.items())),
            },
            "system_log": {"rows": self.system_log_rows},
            "invalid": invalid,
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_json(cls, data: bytes | str) -> ExpectedTotals:
        """Parse :meth:`to_json` output. The result knows no event_ids: adding items to it
        cannot recognise duplicates of items counted before serialisation."""
        doc: dict[str, Any] = orjson.loads(data)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unsupported totals format {doc.get('format')!r}")
        totals = cls()
        for row in doc["api_call"]:
            hour = (datetime.fromisoformat(row["hour"]) - _EPOCH) // _ONE_MS
            totals.api[(row["service"], hour)] = ApiBucket(
                requests=row["requests"],
                successes=row["successes"],
                errors=row["errors"],
                tokens=row["tokens"],
                cost_e8=usd_e8(row["cost_usd"]),
                response_time_us=int(Decimal(row["response_time_ms_sum"]) * 1000),
            )
        analysis = doc["analysis"]
        totals.analysis_rows = analysis["rows"]
        totals.analysis_tokens_used = analysis["tokens_used"]
        totals.analysis_cost_e8 = usd_e8(analysis["api_cost_usd"])
        totals.analysis_by_model = dict(analysis["by_model_type"])
        totals.system_log_rows = doc["system_log"]["rows"]
        for kind, counts in doc["invalid"].items():
            for reason, n in counts.items():
                totals.invalid[(EventKind(kind), Reason(reason))] = n
        return totals


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _diff_counts(what: str, expected: Mapping[str, int], actual: Mapping[str, int]) -> list[str]:
    return [
        f"{what} {key}: expected {expected.get(key, 0)}, got {actual.get(key, 0)}"
        for key in sorted(expected.keys() | actual.keys())
        if expected.get(key, 0) != actual.get(key, 0)
    ]
