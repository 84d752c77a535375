"""The exact totals a workload produced, to compare with what PostgreSQL ends up holding.

:class:`ExpectedTotals` folds :class:`~pipeline.workload.spec.Item`\\ s (valid ones into
the figures, poison ones into invalid counts):

- API calls per (service, UTC hour of occurred_at): requests, successes, errors, tokens,
  cost and the sum of response_time_ms (what ``api_usage`` holds, summed over the other
  key columns);
- analysis state changes: rows (one per distinct event_id: a re-emitted duplicate is
  counted once), tokens_used, api cost, rows per model_type (``ai_analysis``); analyses:
  distinct ``analysis_id`` values and how many are in each CURRENT status, the status of
  their latest change by (occurred_at, status rank, event_id) (``analysis_lifecycle``);
- system logs: rows (distinct event_ids);
- performance metrics per (name, service, UTC hour): samples, value sum, min and max (what
  ``performance_metrics`` holds, summed over instance, unit and tags; an aggregate, so a
  re-sent event would count twice there and here), and raw sample rows (distinct event_ids,
  ``performance_samples``);
- audit events: rows (distinct event_ids) in all and per action (``audit_trail`` rows of
  source ``event``);
- invalid items per (kind, reason).

Money is kept in integer units of 1e-8 USD, response times in integer microseconds and
metric values in integer thousandths (every generated value has at most 8, 3 and 3
decimals), so sums are exact and independent of order. The same class holds figures read
back from PostgreSQL (:meth:`add_api_bucket`, :meth:`add_metric_bucket` and the public
fields), and :meth:`compare` lists the differences.

The buckets (:class:`ApiBucket`, :class:`MetricBucket`) and the unit conversions
(:func:`usd_e8`, :func:`format_usd`, :func:`occurred_ms`) live in
:mod:`pipeline.workload.buckets`, the JSON form (:meth:`to_json`, :meth:`from_json`) in
:mod:`pipeline.workload.totals_json`; all are importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from pipeline.contract import EventKind, Reason
from pipeline.workload import totals_json
from pipeline.workload.buckets import (
    ApiBucket,
    MetricBucket,
    format_usd,
    hour_iso,
    metric_order,
    milli,
    occurred_ms,
    sums_close,
    usd_e8,
)
from pipeline.workload.spec import HOUR_MS, Item

__all__ = ["ApiBucket", "ExpectedTotals", "MetricBucket", "format_usd", "occurred_ms", "usd_e8"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_STATUS_RANK: Final[Mapping[str, int]] = {
    "queued": 0,
    "processing": 1,
    "fallback": 2,
    "failed": 3,
    "completed": 4,
}
"""The order of analysis statuses at equal occurred_at (then event_id decides)."""


@dataclass(slots=True)
class ExpectedTotals:
    """Totals of a workload run; see the module docstring. Start empty and :meth:`add`."""

    api: dict[tuple[str, int], ApiBucket] = field(default_factory=dict)
    """(service, hour start in epoch ms) -> bucket."""
    analysis_rows: int = 0
    """Distinct analysis events (state changes): ``ai_analysis`` rows."""
    analysis_tokens_used: int = 0
    analysis_cost_e8: int = 0
    analysis_by_model: dict[str, int] = field(default_factory=dict)
    analyses: int = 0
    """Distinct analysis_ids: ``analysis_lifecycle`` rows."""
    analysis_by_status: dict[str, int] = field(default_factory=dict)
    """Analyses per current status (of their latest state change)."""
    system_log_rows: int = 0
    metrics: dict[tuple[str, str, int], MetricBucket] = field(default_factory=dict)
    """(name, service, hour start in epoch ms) -> bucket."""
    metric_sample_rows: int = 0
    """Distinct performance-metric events: ``performance_samples`` rows."""
    audit_rows: int = 0
    audit_by_action: dict[str, int] = field(default_factory=dict)
    invalid: dict[tuple[EventKind, Reason], int] = field(default_factory=dict)
    _seen: dict[EventKind, set[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """event_ids already counted, per kind stored once per event_id (not serialised)."""
    _latest: dict[str, tuple[int, int, str, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """analysis_id -> (occurred_at ms, status rank, event_id, status) of its latest change
    (not serialised)."""

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

        Events of the kinds PostgreSQL stores once per event_id (all but API calls) are
        counted once per event_id; performance metrics also feed the hourly aggregate,
        which (like ``performance_metrics``) counts every event it is given.
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
        if kind == EventKind.PERFORMANCE_METRIC:
            ms = occurred_ms(event["occurred_at"])
            key3 = (str(event["name"]), str(event["service"]), ms - ms % HOUR_MS)
            metric = self.metrics.get(key3)
            if metric is None:
                metric = self.metrics[key3] = MetricBucket()
            metric.add(milli(_number(event["value"])))
        seen = self._seen.get(kind)
        if seen is None:
            seen = self._seen[kind] = set()
        event_id = str(event["event_id"])
        if event_id in seen:
            return
        seen.add(event_id)
        if kind == EventKind.ANALYSIS:
            self._add_analysis(event, event_id)
        elif kind == EventKind.SYSTEM_LOG:
            self.system_log_rows += 1
        elif kind == EventKind.PERFORMANCE_METRIC:
            self.metric_sample_rows += 1
        else:
            self.audit_rows += 1
            action = str(event["action"])
            self.audit_by_action[action] = self.audit_by_action.get(action, 0) + 1

    def _add_analysis(self, event: Mapping[str, object], event_id: str) -> None:
        self.analysis_rows += 1
        tokens_used = event.get("tokens_used")
        if not isinstance(tokens_used, int):  # the contract's default
            tokens_used = _int(event.get("request_tokens")) + _int(event.get("response_tokens"))
        self.analysis_tokens_used += tokens_used
        self.analysis_cost_e8 += usd_e8(_number(event.get("api_cost_usd")))
        model = str(event["model_type"])
        self.analysis_by_model[model] = self.analysis_by_model.get(model, 0) + 1
        analysis_id = event.get("analysis_id")
        if analysis_id is None:  # the contract's default
            analysis_id = event_id
        status = str(event["status"])
        change = (occurred_ms(event["occurred_at"]), _STATUS_RANK[status], event_id, status)
        by_status = self.analysis_by_status
        latest = self._latest.get(str(analysis_id))
        if latest is None:
            self.analyses += 1
        elif change > latest:
            old = latest[3]
            by_status[old] -= 1
            if not by_status[old]:
                del by_status[old]
        else:
            return
        self._latest[str(analysis_id)] = change
        by_status[status] = by_status.get(status, 0) + 1

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

    def add_metric_bucket(
        self,
        name: str,
        service: str,
        hour: int | datetime,
        *,
        samples: int,
        value_sum: float,
        value_min: float,
        value_max: float,
    ) -> None:
        """Add figures read back from PostgreSQL to the metric bucket of (name, service,
        hour): ``value_sum`` the double-precision sum, ``value_min``/``value_max`` the
        extremes. Merges with what the bucket holds (rows of several instances, units or tag
        sets may be fed in)."""
        if isinstance(hour, datetime):
            hour = (hour - _EPOCH) // _ONE_MS
        bucket = self.metrics.setdefault((name, service, hour - hour % HOUR_MS), MetricBucket())
        bucket.merge(samples, milli(value_sum), milli(value_min), milli(value_max))

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
    def metric_samples(self) -> int:
        """All performance-metric samples aggregated (the sum of the buckets' samples)."""
        return sum(b.samples for b in self.metrics.values())

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

        Empty when they agree. Response-time and metric value sums may differ by rounding
        of a double-precision sum (1 µs or 0.001 plus one part in 10^9); everything else
        must be equal. ``include_invalid=False`` skips the invalid counts (PostgreSQL does
        not hold them).
        """
        diffs: list[str] = []
        for key in sorted(self.api.keys() | other.api.keys(), key=lambda k: (k[1], k[0])):
            where = f"api_call {key[0]} {hour_iso(key[1])}"
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
                if name == "response_time_ms_sum" and sums_close(
                    mine.response_time_us, theirs.response_time_us
                ):
                    continue
                if value != actual[name]:
                    diffs.append(f"{where}: {name} expected {value}, got {actual[name]}")
        for mkey in sorted(self.metrics.keys() | other.metrics.keys(), key=metric_order):
            where = f"performance_metric {mkey[0]} {mkey[1]} {hour_iso(mkey[2])}"
            mb, tb = self.metrics.get(mkey), other.metrics.get(mkey)
            if tb is None:
                assert mb is not None
                diffs.append(f"{where}: missing (expected {mb.samples} samples)")
                continue
            if mb is None:
                diffs.append(f"{where}: unexpected bucket ({tb.samples} samples)")
                continue
            expected, actual = mb._json(), tb._json()
            for name, value in expected.items():
                if name == "value_sum" and sums_close(mb.value_milli, tb.value_milli):
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
            ("analyses (distinct analysis_id)", self.analyses, other.analyses),
            ("system_log rows", self.system_log_rows, other.system_log_rows),
            ("performance_metric sample rows", self.metric_sample_rows, other.metric_sample_rows),
            ("audit rows", self.audit_rows, other.audit_rows),
        )
        for label, want, got in scalars:
            if want != got:
                diffs.append(f"{label}: expected {want}, got {got}")
        diffs += _diff_counts(
            "analysis model_type", self.analysis_by_model, other.analysis_by_model
        )
        diffs += _diff_counts(
            "analysis current status", self.analysis_by_status, other.analysis_by_status
        )
        diffs += _diff_counts("audit action", self.audit_by_action, other.audit_by_action)
        if include_invalid:
            diffs += _diff_counts(
                "invalid",
                {f"{k.value} {r.value}": n for (k, r), n in self.invalid.items()},
                {f"{k.value} {r.value}": n for (k, r), n in other.invalid.items()},
            )
        return diffs

    def to_json(self) -> bytes:
        """Indented JSON with a stable key order; decimals as strings, hours as ISO-8601
        (:func:`pipeline.workload.totals_json.dump`).

        The ``summary`` section is informative only: :meth:`from_json` ignores it.
        """
        return totals_json.dump(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> ExpectedTotals:
        """Parse :meth:`to_json` output. The result knows no event_ids nor the latest state
        change of each analysis: adding items to it cannot recognise duplicates of items
        counted before serialisation."""
        return totals_json.load(cls, data)


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
