"""The wire contract's validator, typed events and reason codes (pipeline.contract)."""

from __future__ import annotations

import dataclasses
import math
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType

import orjson
import pytest

from pipeline.contract import (
    REASON_DESCRIPTIONS,
    VALIDATOR_REASONS,
    Analysis,
    AnalysisStatus,
    ApiCall,
    ContractError,
    Event,
    EventKind,
    Invalid,
    LogLevel,
    Reason,
    SystemLog,
    decode_record,
    load_schema,
    validate_event,
)
from tests.unit.contract_corpus import (
    ANALYSIS,
    API,
    CORPUS,
    DROP,
    EVENT_ID,
    LOG,
    METADATA_FITS,
    METADATA_OVER,
    NOW_MS,
    event,
)

NOW = datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def reason_of(kind: EventKind, obj: object) -> Reason:
    with pytest.raises(ContractError) as caught:
        validate_event(kind, obj, now_ms=NOW_MS)
    return caught.value.reason


def test_now_constants_agree() -> None:
    assert (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) == NOW_MS


def test_reason_values_are_the_stable_codes() -> None:
    assert [r.value for r in Reason] == [
        "malformed_json",
        "not_an_object",
        "unknown_event_type",
        "missing_field",
        "wrong_type",
        "string_too_long",
        "invalid_number",
        "invalid_value",
        "future_timestamp",
        "too_large",
        "beyond_retention",
        "rejected_by_database",
    ]
    assert set(REASON_DESCRIPTIONS) == set(Reason)
    assert all(text and "\n" not in text for text in REASON_DESCRIPTIONS.values())


def test_every_validator_reason_is_produced() -> None:
    produced: set[Reason] = set()
    for sample in CORPUS:
        _, invalid = decode_record(sample.kind, sample.value, now_ms=NOW_MS)
        produced.update(inv.reason for inv, _ in invalid)
    produced.add(reason_of(API, event(API, response_time_ms=math.nan)))
    expected = set(Reason) - {Reason.BEYOND_RETENTION, Reason.REJECTED_BY_DATABASE}
    assert produced == expected == VALIDATOR_REASONS


def test_api_call_defaults() -> None:
    call = validate_event(API, event(API), now_ms=NOW_MS)
    assert isinstance(call, ApiCall)
    assert (call.tokens, call.cost_e8, call.cost_usd) == (0, 0, Decimal(0))
    assert (call.user_id, call.organization_id, call.status_code) == (None, None, None)


def test_analysis_defaults() -> None:
    got = validate_event(
        ANALYSIS,
        event(ANALYSIS, request_tokens=7, response_tokens=5, processing_time_ms=10.5),
        now_ms=NOW_MS,
    )
    assert isinstance(got, Analysis)
    assert got.tokens_used == 12
    assert got.total_processing_time_ms is None  # queue wait missing: no sum
    assert got.processing_attempts == 1
    assert (got.caching_used, got.batch_processed, got.fallback_used) == (False, False, False)
    assert (got.api_cost_e8, got.metadata_json, got.status) == (0, None, AnalysisStatus.COMPLETED)
    both = validate_event(
        ANALYSIS,
        event(ANALYSIS, processing_time_ms=10.5, queue_wait_time_ms=4, tokens_used=99),
        now_ms=NOW_MS,
    )
    assert isinstance(both, Analysis)
    assert both.total_processing_time_ms == 14.5
    assert both.tokens_used == 99  # an explicit value is kept as sent


@pytest.mark.parametrize(
    "occurred_at",
    [
        1_789_999_200_250,
        "2026-09-21T14:00:00.250Z",
        "2026-09-21T15:00:00.250+01:00",
        "2026-09-21T08:30:00.2509-05:30",
        "2026-09-22T13:59:00.250999999+23:59",
    ],
)
def test_iso_with_offset_and_epoch_ms_give_the_same_instant(occurred_at: object) -> None:
    call = validate_event(API, event(API, occurred_at=occurred_at), now_ms=NOW_MS)
    assert call.occurred_at_ms == 1_789_999_200_250
    assert call.occurred_at == datetime(2026, 9, 21, 14, 0, 0, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "naive", ["2026-09-21T14:00:00", "2026-09-21T14:00:00.250", "2026-09-21T14:00"]
)
def test_naive_iso_is_rejected(naive: str) -> None:
    assert reason_of(API, event(API, occurred_at=naive)) is Reason.INVALID_VALUE


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (API, "tokens"),
        (API, "status_code"),
        (API, "occurred_at"),
        (API, "response_time_ms"),
        (API, "cost_usd"),
        (ANALYSIS, "processing_attempts"),
        (ANALYSIS, "tokens_used"),
        (ANALYSIS, "api_cost_usd"),
    ],
)
def test_bool_is_not_a_number(kind: EventKind, field: str) -> None:
    assert reason_of(kind, event(kind, **{field: True})) is Reason.WRONG_TYPE
    assert reason_of(kind, event(kind, **{field: False})) is Reason.WRONG_TYPE


def test_integer_fields_reject_integral_floats() -> None:
    assert reason_of(API, event(API, tokens=3.0)) is Reason.WRONG_TYPE
    assert reason_of(API, event(API, status_code=200.0)) is Reason.WRONG_TYPE


def test_future_limit_is_five_minutes_inclusive() -> None:
    limit = NOW_MS + 300_000
    assert validate_event(API, event(API, occurred_at=limit), now_ms=NOW_MS).occurred_at_ms == limit
    assert reason_of(API, event(API, occurred_at=limit + 1)) is Reason.FUTURE_TIMESTAMP
    iso_limit = "2026-09-21T14:18:20Z"
    assert validate_event(API, event(API, occurred_at=iso_limit), now_ms=NOW_MS)
    late = "2026-09-21T16:18:20.001+02:00"
    assert reason_of(ANALYSIS, event(ANALYSIS, occurred_at=late)) is Reason.FUTURE_TIMESTAMP
    with pytest.raises(ContractError) as caught:
        validate_event(LOG, event(LOG, occurred_at=limit + 1), now_ms=NOW_MS)
    assert caught.value.detail == "occurred_at: 300001 ms ahead of now, at most 300000 ms allowed"


def test_array_record_keeps_good_events_and_reports_the_bad_index() -> None:
    good = [event(LOG, event_id=str(uuid.UUID(int=i))) for i in range(4)]
    broken = event(LOG, level="fatal")
    value = orjson.dumps([good[0], good[1], broken, good[2], good[3]])
    events, invalid = decode_record(LOG, value, now_ms=NOW_MS)
    assert [e.event_id for e in events] == [g["event_id"] for g in good]
    assert len(invalid) == 1
    rejected, raw = invalid[0]
    assert rejected == Invalid(Reason.INVALID_VALUE, rejected.detail, 2)
    assert rejected.detail.startswith("level: must be one of debug, info, warn, error")
    assert raw == broken


def test_single_object_record_reports_index_none_and_the_decoded_object() -> None:
    obj = event(API, tokens=-3)
    events, invalid = decode_record(API, orjson.dumps(obj), now_ms=NOW_MS)
    assert events == []
    assert invalid == [
        (Invalid(Reason.INVALID_NUMBER, "tokens: must be an integer >= 0, got -3", None), obj)
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, Reason.MALFORMED_JSON),
        (b"", Reason.MALFORMED_JSON),
        (b"{", Reason.MALFORMED_JSON),
        (b"[1, 2", Reason.MALFORMED_JSON),
        (b"NaN", Reason.MALFORMED_JSON),
        (b"null", Reason.NOT_AN_OBJECT),
        (b"true", Reason.NOT_AN_OBJECT),
        (b'"text"', Reason.NOT_AN_OBJECT),
    ],
)
def test_record_level_failures_return_the_raw_value(value: bytes | None, reason: Reason) -> None:
    events, invalid = decode_record(ANALYSIS, value, now_ms=NOW_MS)
    assert events == []
    assert len(invalid) == 1
    rejected, raw = invalid[0]
    assert (rejected.reason, rejected.index) == (reason, None)
    assert raw is value


def test_empty_array_is_a_valid_record_without_events() -> None:
    assert decode_record(API, b"[]", now_ms=NOW_MS) == ([], [])


def test_type_field_is_optional_and_must_match_the_topic() -> None:
    assert validate_event(API, event(API, type="api_call"), now_ms=NOW_MS)
    assert validate_event(API, event(API, type=None), now_ms=NOW_MS)
    assert reason_of(API, event(API, type="system_log")) is Reason.UNKNOWN_EVENT_TYPE
    assert reason_of(API, event(API, type=1)) is Reason.UNKNOWN_EVENT_TYPE


@pytest.mark.parametrize("kind", list(EventKind))
def test_event_id_is_normalised_to_lower_case(kind: EventKind) -> None:
    got = validate_event(kind, event(kind, event_id=EVENT_ID.upper()), now_ms=NOW_MS)
    assert got.event_id == EVENT_ID
    assert reason_of(kind, event(kind, event_id=EVENT_ID[:-1] + "g")) is Reason.INVALID_VALUE
    assert reason_of(kind, event(kind, event_id="-" * 36)) is Reason.INVALID_VALUE


@pytest.mark.parametrize("kind", [ANALYSIS, LOG])
def test_metadata_size_limit(kind: EventKind) -> None:
    fits = validate_event(kind, event(kind, metadata=METADATA_FITS), now_ms=NOW_MS)
    assert isinstance(fits, Analysis | SystemLog)
    assert fits.metadata_json is not None
    assert len(fits.metadata_json.encode()) == 16_384
    assert fits.metadata == METADATA_FITS
    assert reason_of(kind, event(kind, metadata=METADATA_OVER)) is Reason.TOO_LARGE
    assert reason_of(kind, event(kind, metadata={1: "non-string key"})) is Reason.WRONG_TYPE


def test_message_limit_counts_utf8_bytes() -> None:
    euro = "€"  # 3 bytes in UTF-8
    fits = euro * 2730 + "ab"  # 8192 bytes, 2732 characters
    log = validate_event(LOG, event(LOG, message=fits), now_ms=NOW_MS)
    assert isinstance(log, SystemLog)
    assert log.message == fits
    assert reason_of(LOG, event(LOG, message=fits + "c")) is Reason.STRING_TOO_LONG
    assert reason_of(LOG, event(LOG, message="😀" * 2049)) is Reason.STRING_TOO_LONG
    assert reason_of(LOG, event(LOG, message="\ud800" * 3000)) is Reason.INVALID_VALUE


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_invalid_number(bad: float) -> None:
    assert reason_of(API, event(API, response_time_ms=bad)) is Reason.INVALID_NUMBER
    assert reason_of(API, event(API, cost_usd=bad)) is Reason.INVALID_NUMBER
    assert reason_of(ANALYSIS, event(ANALYSIS, queue_wait_time_ms=bad)) is Reason.INVALID_NUMBER


def test_details_name_the_field() -> None:
    cases = {
        "service: required": event(API, service=DROP),
        "service: must be a string, got integer": event(API, service=3),
        "service: must not be empty": event(API, service=""),
        "service: at most 64 characters, got 65": event(API, service="s" * 65),
        "response_time_ms: must be >= 0, got -1.5": event(API, response_time_ms=-1.5),
        "status_code: must be an integer <= 599, got 600": event(API, status_code=600),
        "type: this topic carries 'api_call' events, got 'analysis'": event(API, type="analysis"),
    }
    for detail, obj in cases.items():
        with pytest.raises(ContractError) as caught:
            validate_event(API, obj, now_ms=NOW_MS)
        assert caught.value.detail == detail


def test_contract_error_is_a_value_error_and_pickles() -> None:
    error = ContractError(Reason.WRONG_TYPE, "tokens: must be an integer, got string")
    assert isinstance(error, ValueError)
    assert str(error) == "wrong_type: tokens: must be an integer, got string"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail) == (error.reason, error.detail)


def test_validate_event_rejects_non_objects_and_accepts_mappings() -> None:
    assert reason_of(API, [event(API)]) is Reason.NOT_AN_OBJECT
    assert reason_of(API, "{}") is Reason.NOT_AN_OBJECT
    assert validate_event(API, MappingProxyType(event(API)), now_ms=NOW_MS)


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        decode_record("metrics", b"{}", now_ms=NOW_MS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown event kind"):
        load_schema("metrics")


def test_fast_path_builds_the_same_object_as_the_constructor() -> None:
    wire = event(API, user_id="u", organization_id="o", status_code=204, tokens=9, cost_usd=0.1)
    call = validate_event(API, wire, now_ms=NOW_MS)
    expected = ApiCall(
        EVENT_ID,
        1_789_999_200_250,
        "billing-api",
        "/v1/invoices/{id}",
        "GET",
        True,
        12.5,
        "u",
        "o",
        204,
        9,
        10_000_000,
    )
    assert call == expected
    assert hash(call) == hash(expected)
    assert type(call) is ApiCall
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.tokens = 1  # type: ignore[misc]
    assert dataclasses.replace(call, tokens=1).tokens == 1


def test_python_subclasses_are_normalised() -> None:
    class Method(StrEnum):
        GET = "GET"

    call = validate_event(
        API, event(API, method=Method.GET, status_code=HTTPStatus.CREATED), now_ms=NOW_MS
    )
    assert isinstance(call, ApiCall)
    assert type(call.method) is str
    assert type(call.status_code) is int
    assert call.status_code == 201


@pytest.mark.parametrize(
    ("cost", "e8", "usd"),
    [
        (0.1, 10_000_000, "0.10000000"),
        (0.00001234567, 1235, "0.00001235"),
        (1_000_000, 10**14, "1000000"),
    ],
)
def test_cost_is_exact_integer_units(cost: float, e8: int, usd: str) -> None:
    call = validate_event(API, event(API, cost_usd=cost), now_ms=NOW_MS)
    assert isinstance(call, ApiCall)
    assert call.cost_e8 == e8
    assert call.cost_usd == Decimal(usd)


def test_to_wire_round_trips_for_every_kind() -> None:
    events: list[Event] = [
        ApiCall.new(
            service="svc",
            endpoint="/v1/x",
            method="POST",
            success=False,
            response_time_ms=3,
            status_code=500,
            tokens=10,
            cost_usd=Decimal("0.12345678"),
            user_id="u",
            now=NOW,
        ),
        Analysis.new(
            model_type="summary",
            status=AnalysisStatus.FAILED,
            request_tokens=3,
            response_tokens=4,
            api_cost_usd=12.5,
            processing_time_ms=1.5,
            queue_wait_time_ms=2,
            metadata={"a": [1, {"b": None}]},
            error_type="Timeout",
            occurred_at=datetime(2026, 9, 21, 16, 0, tzinfo=timezone(timedelta(hours=2))),
            now=NOW,
        ),
        SystemLog.new(level=LogLevel.WARN, service="svc", message="disk 91% full", now=NOW),
    ]
    for built in events:
        wire = built.to_wire()
        assert wire["type"] == built.kind.value
        assert isinstance(wire["occurred_at"], int)
        again = validate_event(built.kind, orjson.loads(orjson.dumps(wire)), now_ms=NOW_MS)
        assert again == built
    api, analysis, _ = events
    assert isinstance(api, ApiCall) and isinstance(analysis, Analysis)
    assert api.to_wire()["cost_usd"] == 0.12345678
    assert api.cost_e8 == 12_345_678
    assert (analysis.tokens_used, analysis.total_processing_time_ms) == (7, 3.5)
    assert analysis.occurred_at_ms == NOW_MS - 800_000


def test_new_fills_event_id_and_occurred_at() -> None:
    log = SystemLog.new(level="info", service="s", message="m", now=NOW)
    assert log.occurred_at_ms == NOW_MS
    assert uuid.UUID(log.event_id).version == 4
    assert log.event_id == log.event_id.lower()
    assert log.level is LogLevel.INFO
    fresh = SystemLog.new(level="info", service="s", message="m")  # the real clock
    assert abs(fresh.occurred_at.timestamp() - datetime.now(UTC).timestamp()) < 60
    with pytest.raises(ContractError) as caught:
        SystemLog.new(level="info", service="s", message="m", occurred_at=datetime(2026, 1, 1))
    assert caught.value.reason is Reason.INVALID_VALUE  # naive datetime
    with pytest.raises(ContractError):
        ApiCall.new(service="", endpoint="/", method="GET", success=True, response_time_ms=1)


def test_large_cost_round_trip_is_exact() -> None:
    for e8 in (1, 99_999_999, 12_345_678_901_234, 10**14 - 1, 10**14):
        call = ApiCall(EVENT_ID, NOW_MS, "s", "/", "GET", True, 1.0, cost_e8=e8)
        again = validate_event(API, orjson.loads(orjson.dumps(call.to_wire())), now_ms=NOW_MS)
        assert isinstance(again, ApiCall)
        assert again.cost_e8 == e8


def test_load_schema_returns_a_fresh_copy() -> None:
    first = load_schema(EventKind.ANALYSIS)
    first["title"] = "changed"
    assert load_schema("analysis")["title"] != "changed"


def test_docs_list_every_reason_and_dead_letter_header() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for reason in Reason:
        assert f"`{reason.value}`" in text, reason
    for header in (
        "x-reason",
        "x-detail",
        "x-source-topic",
        "x-source-partition",
        "x-source-offset",
        "x-event-index",
        "x-worker-id",
    ):
        assert f"`{header}`" in text, header
    for kind in EventKind:
        assert f"pipeline/contract/schemas/{kind.value}.schema.json" in text
