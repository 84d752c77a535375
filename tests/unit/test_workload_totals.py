"""ExpectedTotals: equal to totals computed independently from the decoded records."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from pipeline.contract import Analysis, ApiCall, EventKind, Reason, SystemLog, decode_record
from pipeline.workload import (
    ApiBucket,
    ExpectedTotals,
    Item,
    WorkloadSpec,
    generate,
    occurred_ms,
    pack_stream,
)

START = 1_767_225_600_000
HOUR = 3_600_000


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
            else:
                assert isinstance(event, SystemLog)
                logs.add(event.event_id)

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
    actual.system_log_rows = len(logs)
    actual.invalid = dict(invalid)

    assert expected.compare(actual) == []
    assert expected.api_requests == spec.api_calls
    assert expected.analysis_rows == spec.analyses  # duplicates counted once
    assert expected.system_log_rows == spec.logs
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
    assert sum(i.kind is EventKind.ANALYSIS for i in items) == 2 * spec.analyses
    totals = ExpectedTotals.of(items)
    single = ExpectedTotals.of(
        {i.event["event_id"]: i for i in items if i.event is not None}.values()
    )
    assert totals.analysis_rows == spec.analyses
    assert totals == single


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
    assert list(doc) == ["format", "summary", "api_call", "analysis", "system_log", "invalid"]
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
    del actual.api[key]
    actual.api[("nosuch", key[1])] = ApiBucket(requests=1)
    actual.analysis_rows += 1
    actual.invalid = {}
    diffs = expected.compare(actual)
    assert any("missing" in d for d in diffs)
    assert any("unexpected bucket" in d for d in diffs)
    assert any(d.startswith("analysis rows: expected") for d in diffs)
    assert any(d.startswith("invalid api_call malformed_json") for d in diffs)
    assert not any(d.startswith("invalid") for d in expected.compare(actual, include_invalid=False))
