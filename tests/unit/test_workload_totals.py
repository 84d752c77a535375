"""ExpectedTotals: equal to totals computed independently from the decoded records."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from pipeline.contract import (
    Analysis,
    ApiCall,
    AuditEvent,
    EventKind,
    PerformanceMetric,
    Reason,
    SystemLog,
    decode_record,
)
from pipeline.workload import (
    ApiBucket,
    ExpectedTotals,
    Item,
    MetricBucket,
    WorkloadSpec,
    generate,
    occurred_ms,
    pack_stream,
)

START = 1_767_225_600_000
HOUR = 3_600_000
RANK = {"queued": 0, "processing": 1, "fallback": 2, "failed": 3, "completed": 4}


@pytest.fixture(scope="module")
def run() -> tuple[WorkloadSpec, list[Item], ExpectedTotals]:
    spec = WorkloadSpec(
        api_calls=20_000,
        start_ms=START,
        invalid_fraction=0.02,
        late_fraction=0.05,
        duplicate_fraction=0.2,
    )
    items = list(generate(spec))
    return spec, items, ExpectedTotals.of(items)


def test_totals_equal_independent_count_of_decoded_records(
    run: tuple[WorkloadSpec, list[Item], ExpectedTotals],
) -> None:
    spec, items, expected = run
    buckets: dict[tuple[str, int], list[float]] = {}
    analyses: dict[str, Analysis] = {}
    logs: set[str] = set()
    series: dict[tuple[str, str, int], list[float]] = {}
    samples: set[str] = set()
    audits: dict[str, AuditEvent] = {}
    invalid: Counter[tuple[EventKind, Reason]] = Counter()
    for record in pack_stream(items, "batched"):
        valid, rejected = decode_record(record.kind, record.value, now_ms=spec.start_ms)
        invalid.update((record.kind, bad.reason) for bad, _ in rejected)
        for event in valid:
            if isinstance(event, ApiCall):
                hour = event.occurred_at_ms // HOUR * HOUR
                b = buckets.setdefault((event.service, hour), [0, 0, 0, 0, 0, 0.0])
                b[0] += 1
                b[1 if event.success else 2] += 1
                b[3] += event.tokens
                b[4] += event.cost_e8
                b[5] += event.response_time_ms
            elif isinstance(event, Analysis):
                analyses[event.event_id] = event
            elif isinstance(event, PerformanceMetric):
                hour = event.occurred_at_ms // HOUR * HOUR
                m = series.setdefault((event.name, event.service, hour), [])
                m.append(event.value)  # an aggregate: every event counts
                samples.add(event.event_id)
            elif isinstance(event, AuditEvent):
                audits[event.event_id] = event
            else:
                assert isinstance(event, SystemLog)
                logs.add(event.event_id)
    # The current state of each analysis: its latest change, whatever the arrival order.
    current: dict[str, Analysis] = {}
    for a in analyses.values():
        assert a.analysis_id is not None
        held = current.get(a.analysis_id)
        order = (a.occurred_at_ms, RANK[a.status.value], a.event_id)
        if held is None or order > (held.occurred_at_ms, RANK[held.status.value], held.event_id):
            current[a.analysis_id] = a

    actual = ExpectedTotals()
    for (service, hour), b in buckets.items():
        actual.add_api_bucket(
            service,
            datetime.fromtimestamp(hour / 1000, UTC),
            requests=int(b[0]),
            successes=int(b[1]),
            errors=int(b[2]),
            tokens=int(b[3]),
            cost_usd=Decimal(int(b[4])).scaleb(-8),
            response_time_ms_sum=b[5],
        )
    actual.analysis_rows = len(analyses)
    actual.analysis_tokens_used = sum(a.tokens_used for a in analyses.values())
    actual.analysis_cost_e8 = sum(a.api_cost_e8 for a in analyses.values())
    actual.analysis_by_model = dict(Counter(a.model_type for a in analyses.values()))
    actual.analyses = len(current)
    actual.analysis_by_status = dict(Counter(a.status.value for a in current.values()))
    actual.system_log_rows = len(logs)
    for (name, service, hour), values in series.items():
        actual.add_metric_bucket(
            name,
            service,
            hour,
            samples=len(values),
            value_sum=sum(values),
            value_min=min(values),
            value_max=max(values),
        )
    actual.metric_sample_rows = len(samples)
    actual.audit_rows = len(audits)
    actual.audit_by_action = dict(Counter(a.action for a in audits.values()))
    actual.invalid = dict(invalid)

    assert expected.compare(actual) == []
    assert expected.api_requests == spec.api_calls
    assert expected.analysis_rows == spec.analysis_events  # duplicates counted once
    assert expected.analyses == spec.analyses
    # The earlier state changes arrive after the final one but never replace it.
    assert set(expected.analysis_by_status) == {"completed", "failed", "fallback"}
    assert expected.system_log_rows == spec.logs
    assert expected.metric_sample_rows == expected.metric_samples == spec.metrics
    assert expected.audit_rows == spec.audits
    assert sum(expected.audit_by_action.values()) == spec.audits
    assert expected.invalid_by_kind == {k: n for k, n in spec.poison_per_kind().items() if n}
    assert sum(expected.invalid_by_reason.values()) == spec.poison
    assert expected.api_cost_usd == sum(
        (
            Decimal(str(i.event["cost_usd"]))
            for i in items
            if i.kind is EventKind.API_CALL and i.poison is None and i.event
        ),
        Decimal(0),
    )


def test_duplicates_counted_once() -> None:
    spec = WorkloadSpec(api_calls=2000, start_ms=START, duplicate_fraction=1.0)
    items = list(generate(spec))
    assert sum(i.kind is EventKind.ANALYSIS for i in items) == (
        2 * spec.analyses + spec.lifecycle_changes
    )
    totals = ExpectedTotals.of(items)
    single = ExpectedTotals.of(
        {i.event["event_id"]: i for i in items if i.event is not None}.values()
    )
    assert totals.analysis_rows == spec.analysis_events
    assert totals.analyses == spec.analyses
    assert totals == single


def analysis(event_id: int, status: str, at: object, analysis_id: str | None = "a-1") -> Item:
    event: dict[str, object] = {
        "type": "analysis",
        "event_id": f"00000000-0000-4000-8000-{event_id:012d}",
        "occurred_at": at,
        "model_type": "gpt_4o",
        "status": status,
        "tokens_used": 10 if status in ("completed", "failed", "fallback") else 0,
    }
    if analysis_id is not None:
        event["analysis_id"] = analysis_id
    return Item(EventKind.ANALYSIS, event)


@pytest.mark.parametrize(
    "order",
    [(0, 1, 2), (2, 1, 0), (2, 0, 1), (1, 2, 0)],
)
def test_current_status_is_the_latest_change_whatever_the_arrival_order(
    order: tuple[int, int, int],
) -> None:
    changes = [
        analysis(1, "queued", 1000),
        analysis(2, "processing", "1970-01-01T00:00:02+00:00"),
        analysis(3, "failed", 3000),
    ]
    totals = ExpectedTotals.of(changes[i] for i in order)
    assert (totals.analyses, totals.analysis_rows) == (1, 3)
    assert totals.analysis_by_status == {"failed": 1}
    assert totals.analysis_tokens_used == 10
    assert totals.analysis_by_model == {"gpt_4o": 3}


def test_status_rank_then_event_id_break_ties() -> None:
    # All at the same time: the rank decides (queued < processing < fallback < failed < ...
    totals = ExpectedTotals.of(
        [analysis(5, "completed", 1000), analysis(9, "queued", 1000), analysis(7, "failed", 1000)]
    )
    assert totals.analysis_by_status == {"completed": 1}
    totals = ExpectedTotals.of([analysis(9, "fallback", 1000), analysis(8, "failed", 1000)])
    assert totals.analysis_by_status == {"failed": 1}
    # ... then the event_id: the greater one is the latest.
    totals = ExpectedTotals.of([analysis(9, "failed", 1000), analysis(8, "failed", 1000)])
    assert totals.analysis_by_status == {"failed": 1}
    assert totals._latest["a-1"][2].endswith("9")
    # A repeated event is counted once; an event without analysis_id is its own analysis.
    totals = ExpectedTotals.of(
        [
            analysis(1, "completed", 1000),
            analysis(1, "completed", 1000),
            analysis(2, "queued", 500, analysis_id=None),
        ]
    )
    assert (totals.analyses, totals.analysis_rows) == (2, 2)
    assert totals.analysis_by_status == {"completed": 1, "queued": 1}


def metric(event_id: int, value: float, at: int, name: str = "queue.depth") -> Item:
    event: dict[str, object] = {
        "type": "performance_metric",
        "event_id": f"00000000-0000-4000-8000-{event_id:012d}",
        "occurred_at": at,
        "name": name,
        "value": value,
        "unit": "1",
        "service": "auth",
    }
    return Item(EventKind.PERFORMANCE_METRIC, event)


def test_metric_buckets_are_exact_and_aggregate_every_event() -> None:
    hour = occurred_ms("2026-01-01T10:00:00+00:00")
    totals = ExpectedTotals.of(
        [
            metric(1, 0.1, hour),
            metric(2, 0.2, hour + 5),
            metric(3, -1.5, hour + HOUR - 1),
            metric(3, -1.5, hour + HOUR - 1),  # the same event again: aggregated twice
            metric(4, 7.0, hour + HOUR),
            metric(5, 1e12, hour, name="worker.rss"),
        ]
    )
    assert totals.metrics[("queue.depth", "auth", hour)] == MetricBucket(4, -2700, -1500, 200)
    assert totals.metrics[("queue.depth", "auth", hour + HOUR)] == MetricBucket(1, 7000, 7000, 7000)
    assert totals.metrics[("worker.rss", "auth", hour)].value_sum == 1e12
    assert totals.metric_samples == 6
    assert totals.metric_sample_rows == 5  # raw samples: once per event_id


def test_add_metric_bucket_merges_rows_of_one_key() -> None:
    totals = ExpectedTotals()
    when = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    totals.add_metric_bucket(
        "m", "auth", when, samples=2, value_sum=0.30000000000000004, value_min=0.1, value_max=0.2
    )
    totals.add_metric_bucket(
        "m", "auth", when, samples=1, value_sum=-3.0, value_min=-3.0, value_max=-3.0
    )
    hour = occurred_ms("2026-01-01T10:00:00+00:00")
    assert totals.metrics == {("m", "auth", hour): MetricBucket(3, -2700, -3000, 200)}


def test_iso_timestamps_use_their_own_hour() -> None:
    def call(at: object) -> Item:
        event: dict[str, object] = {
            "type": "api_call",
            "event_id": "00000000-0000-4000-8000-000000000000",
            "occurred_at": at,
            "service": "auth",
            "endpoint": "/v1/auth/login",
            "method": "GET",
            "success": True,
            "response_time_ms": 1.5,
            "tokens": 3,
            "cost_usd": 0.000006,
        }
        return Item(EventKind.API_CALL, event)

    hour = occurred_ms("2026-01-01T10:00:00+00:00")
    totals = ExpectedTotals.of(
        [
            call("2026-01-01T10:59:59.999+00:00"),
            call("2026-01-01T12:30:00.000+02:00"),  # 10:30 UTC
            call(hour),
            call("2026-01-01T11:00:00Z"),
        ]
    )
    assert totals.api[("auth", hour)] == ApiBucket(3, 3, 0, 9, 1800, 4500)
    assert totals.api[("auth", hour + HOUR)].requests == 1


def test_json_round_trip(run: tuple[WorkloadSpec, list[Item], ExpectedTotals]) -> None:
    _, _, expected = run
    data = expected.to_json()
    assert data == expected.to_json()
    assert b'\n  "api_call": [\n' in data  # indented, human-readable
    doc = orjson.loads(data)
    assert list(doc) == [
        "format",
        "summary",
        "api_call",
        "analysis",
        "system_log",
        "performance_metric",
        "audit",
        "invalid",
    ]
    assert doc["format"] == 2
    assert doc["summary"]["analyses"] == expected.analyses
    series = doc["performance_metric"]["series"]
    assert series and all(isinstance(row["value_sum"], str) for row in series)
    assert sum(row["samples"] for row in series) == expected.metric_samples
    assert doc["audit"]["rows"] == expected.audit_rows
    assert "by_current_status" in doc["analysis"]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00\+00:00", b["hour"]) for b in doc["api_call"]
    )
    assert isinstance(doc["analysis"]["api_cost_usd"], str)
    back = ExpectedTotals.from_json(data)
    assert back == expected
    assert back.to_json() == data
    assert expected.compare(back) == []


def test_from_json_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unsupported totals format"):
        ExpectedTotals.from_json(b'{"format": 99}')


def test_compare_reports_differences(run: tuple[WorkloadSpec, list[Item], ExpectedTotals]) -> None:
    _, _, expected = run
    actual = ExpectedTotals.from_json(expected.to_json())
    key = sorted(actual.api)[0]
    actual.api[key].cost_e8 += 1
    diffs = expected.compare(actual)
    assert len(diffs) == 1
    assert key[0] in diffs[0]
    assert "cost_usd expected" in diffs[0]

    actual = ExpectedTotals.from_json(expected.to_json())
    actual.api[key].response_time_us += 1  # within rounding of a double sum
    assert expected.compare(actual) == []
    actual.api[key].response_time_us += 5000
    assert "response_time_ms_sum" in expected.compare(actual)[0]

    actual = ExpectedTotals.from_json(expected.to_json())
    mkey = sorted(actual.metrics)[0]
    actual.metrics[mkey].value_milli += 1  # within rounding of a double sum
    assert expected.compare(actual) == []
    actual.metrics[mkey].value_milli += 10
    actual.metrics[mkey].max_milli += 1
    diffs = expected.compare(actual)
    assert len(diffs) == 2
    assert all(d.startswith(f"performance_metric {mkey[0]} {mkey[1]} ") for d in diffs)
    assert "value_sum expected" in diffs[0]
    assert "value_max expected" in diffs[1]

    actual = ExpectedTotals.from_json(expected.to_json())
    del actual.api[key]
    actual.api[("nosuch", key[1])] = ApiBucket(requests=1)
    del actual.metrics[mkey]
    actual.metrics[("nosuch", "auth", mkey[2])] = MetricBucket(1, 0, 0, 0)
    actual.analysis_rows += 1
    actual.analyses -= 1
    actual.analysis_by_status["completed"] -= 1
    actual.analysis_by_status["queued"] = 1
    actual.metric_sample_rows += 1
    actual.audit_rows += 1
    actual.audit_by_action["member.invited"] += 1
    actual.invalid = {}
    diffs = expected.compare(actual)
    assert any("missing (expected" in d and d.startswith("api_call") for d in diffs)
    assert any("unexpected bucket" in d and d.startswith("api_call") for d in diffs)
    assert any("missing (expected" in d and d.startswith("performance_metric") for d in diffs)
    assert any("unexpected bucket" in d and d.startswith("performance_metric") for d in diffs)
    assert any(d.startswith("analysis rows: expected") for d in diffs)
    assert any(d.startswith("analyses (distinct analysis_id): expected") for d in diffs)
    assert any(d.startswith("analysis current status completed: expected") for d in diffs)
    assert any(d.startswith("analysis current status queued: expected 0, got 1") for d in diffs)
    assert any(d.startswith("performance_metric sample rows: expected") for d in diffs)
    assert any(d.startswith("audit rows: expected") for d in diffs)
    assert any(d.startswith("audit action member.invited: expected") for d in diffs)
    assert any(d.startswith("invalid api_call malformed_json") for d in diffs)
    assert not any(d.startswith("invalid") for d in expected.compare(actual, include_invalid=False))
