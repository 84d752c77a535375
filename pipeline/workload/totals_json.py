"""The JSON form of :class:`~pipeline.workload.totals.ExpectedTotals` (format 2).

:func:`dump` is :meth:`ExpectedTotals.to_json <pipeline.workload.totals.ExpectedTotals.to_json>`
and :func:`load` :meth:`ExpectedTotals.from_json
<pipeline.workload.totals.ExpectedTotals.from_json>`: indented JSON with a stable key order,
decimals as strings (exact), hours as ISO-8601. One section per kind (``api_call`` and
``performance_metric`` list their buckets by hour), ``invalid`` counts per kind and reason,
and a ``summary`` that is informative only (:func:`load` ignores it). What is not
serialised: the event_ids counted and the latest state change of each analysis.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson

from pipeline.contract import EventKind, Reason
from pipeline.workload.buckets import (
    ApiBucket,
    MetricBucket,
    format_usd,
    hour_iso,
    metric_order,
    milli,
    usd_e8,
)

if TYPE_CHECKING:
    from pipeline.workload.totals import ExpectedTotals

__all__ = ["FORMAT", "dump", "load"]

FORMAT: Final = 2
"""The ``format`` field: bumped when a change would make older files read differently."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def dump(totals: ExpectedTotals) -> bytes:
    """``totals`` as indented JSON (see the module docstring)."""
    keys = sorted(totals.api, key=lambda k: (k[1], k[0]))
    invalid: dict[str, dict[str, int]] = {}
    for kind in EventKind:
        counts = {r.value: totals.invalid[(kind, r)] for r in Reason if (kind, r) in totals.invalid}
        if counts:
            invalid[kind.value] = counts
    doc = {
        "format": FORMAT,
        "summary": {
            "api_calls": totals.api_requests,
            "api_cost_usd": str(totals.api_cost_usd),
            "analyses": totals.analyses,
            "analysis_events": totals.analysis_rows,
            "system_logs": totals.system_log_rows,
            "performance_metrics": totals.metric_sample_rows,
            "audit_events": totals.audit_rows,
            "invalid": sum(totals.invalid.values()),
        },
        "api_call": [
            {"hour": hour_iso(hour), "service": service, **totals.api[(service, hour)]._json()}
            for service, hour in keys
        ],
        "analysis": {
            "rows": totals.analysis_rows,
            "tokens_used": totals.analysis_tokens_used,
            "api_cost_usd": format_usd(totals.analysis_cost_e8),
            "by_model_type": dict(sorted(totals.analysis_by_model.items())),
            "analyses": totals.analyses,
            "by_current_status": dict(sorted(totals.analysis_by_status.items())),
        },
        "system_log": {"rows": totals.system_log_rows},
        "performance_metric": {
            "sample_rows": totals.metric_sample_rows,
            "series": [
                {
                    "hour": hour_iso(hour),
                    "name": name,
                    "service": service,
                    **totals.metrics[(name, service, hour)]._json(),
                }
                for name, service, hour in sorted(totals.metrics, key=metric_order)
            ],
        },
        "audit": {
            "rows": totals.audit_rows,
            "by_action": dict(sorted(totals.audit_by_action.items())),
        },
        "invalid": invalid,
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def load(cls: type[ExpectedTotals], data: bytes | str) -> ExpectedTotals:
    """A new ``cls`` holding the totals :func:`dump` wrote in ``data``.

    :raises ValueError: ``data`` is of another format.
    """
    doc: dict[str, Any] = orjson.loads(data)
    if doc.get("format") != FORMAT:
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
            response_time_us=milli(row["response_time_ms_sum"]),
        )
    analysis = doc["analysis"]
    totals.analysis_rows = analysis["rows"]
    totals.analysis_tokens_used = analysis["tokens_used"]
    totals.analysis_cost_e8 = usd_e8(analysis["api_cost_usd"])
    totals.analysis_by_model = dict(analysis["by_model_type"])
    totals.analyses = analysis["analyses"]
    totals.analysis_by_status = dict(analysis["by_current_status"])
    totals.system_log_rows = doc["system_log"]["rows"]
    metric = doc["performance_metric"]
    totals.metric_sample_rows = metric["sample_rows"]
    for row in metric["series"]:
        hour = (datetime.fromisoformat(row["hour"]) - _EPOCH) // _ONE_MS
        totals.metrics[(row["name"], row["service"], hour)] = MetricBucket(
            samples=row["samples"],
            value_milli=milli(row["value_sum"]),
            min_milli=milli(row["value_min"]),
            max_milli=milli(row["value_max"]),
        )
    totals.audit_rows = doc["audit"]["rows"]
    totals.audit_by_action = dict(doc["audit"]["by_action"])
    for kind, counts in doc["invalid"].items():
        for reason, n in counts.items():
            totals.invalid[(EventKind(kind), Reason(reason))] = n
    return totals
