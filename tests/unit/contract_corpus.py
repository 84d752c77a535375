"""Sample Kafka record values for the wire contract, valid and invalid, for every kind.

Each :class:`Sample` is a whole record value (bytes) with the outcome the validator must
produce at ``NOW_MS``: ``reason`` None means every event in it is valid, otherwise the reason
(and ``index``) of its first rejected event. ``validator_only`` is set, with the rule's name
as listed under "Validator-only rules" in docs/events.md, for samples whose outcome the JSON
Schemas cannot express; the agreement test skips exactly those. ``expect`` lists attribute
values the (single) valid event must have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from pipeline.contract import EventKind, Reason

NOW_MS = 1_790_000_000_000
"""2026-09-21T14:13:20Z, the injected clock of every contract test."""
NOW_ISO = "2026-09-21T14:13:20Z"

API = EventKind.API_CALL
ANALYSIS = EventKind.ANALYSIS
LOG = EventKind.SYSTEM_LOG
METRIC = EventKind.PERFORMANCE_METRIC
AUDIT = EventKind.AUDIT

# Names of the validator-only rules (docs/events.md, "Validator-only rules").
FUTURE = "occurred_at at most 5 minutes ahead"
CALENDAR = "calendar-valid dates"
EPOCH_OFFSET = "not before the epoch after applying the offset"
INTEGRAL_FLOAT = "integers written with a fraction or exponent"
METADATA_SIZE = "metadata at most 16 KiB"
MESSAGE_BYTES = "message at most 8192 UTF-8 bytes"
TOKENS_USED = "tokens_used default"
TOTAL_TIME = "total_processing_time_ms default"
ANALYSIS_ID = "analysis_id default"
BEFORE_AFTER_SIZE = "before and after at most 16 KiB"

EVENT_ID = "0b6f3c1e-8a2d-4c5b-9e7f-1a2b3c4d5e6f"

BASE: dict[EventKind, dict[str, object]] = {
    API: {
        "event_id": EVENT_ID,
        "occurred_at": "2026-09-21T14:00:00.250Z",
        "service": "billing-api",
        "endpoint": "/v1/invoices/{id}",
        "method": "GET",
        "success": True,
        "response_time_ms": 12.5,
    },
    ANALYSIS: {
        "event_id": EVENT_ID,
        "occurred_at": 1_789_999_000_000,
        "model_type": "sentiment",
        "status": "completed",
    },
    LOG: {
        "event_id": EVENT_ID,
        "occurred_at": "2026-09-21T16:00:00+02:00",
        "level": "info",
        "service": "ingest-worker",
        "message": "partition 3 assigned",
    },
    METRIC: {
        "event_id": EVENT_ID,
        "occurred_at": 1_789_999_200_000,
        "name": "queue.depth",
        "value": 42.5,
        "service": "ingest-worker",
    },
    AUDIT: {
        "event_id": EVENT_ID,
        "occurred_at": "2026-09-21T14:00:00Z",
        "actor": "user-1",
        "actor_type": "user",
        "action": "analysis.deleted",
        "entity_type": "analysis",
        "entity_id": "an-42",
    },
}

DROP = object()
"""Use as a field value in :func:`event` to remove the field from the base event."""


def event(kind: EventKind, **changes: object) -> dict[str, object]:
    """The minimal valid event of ``kind`` with ``changes`` applied (DROP removes a key)."""
    result = dict(BASE[kind])
    for key, value in changes.items():
        if value is DROP:
            result.pop(key, None)
        else:
            result[key] = value
    return result


@dataclass(frozen=True)
class Sample:
    name: str
    kind: EventKind
    value: bytes
    reason: Reason | None
    index: int | None = None
    validator_only: str | None = None
    expect: Mapping[str, object] = field(default_factory=dict)


def ok(
    name: str, kind: EventKind, obj: object, *, only: str | None = None, **expect: object
) -> Sample:
    return Sample(name, kind, orjson.dumps(obj), None, None, only, expect)


def bad(
    name: str,
    kind: EventKind,
    obj: object,
    reason: Reason,
    *,
    index: int | None = None,
    only: str | None = None,
) -> Sample:
    return Sample(name, kind, orjson.dumps(obj), reason, index, only)


def raw(name: str, kind: EventKind, value: bytes, reason: Reason) -> Sample:
    return Sample(name, kind, value, reason)


R = Reason
METADATA_FITS = {"k": "x" * (16_384 - len('{"k":""}'))}  # exactly 16384 bytes as JSON
METADATA_OVER = {"k": "x" * (16_385 - len('{"k":""}'))}
MAX_TAGS = {f"k{i:02}" + "t" * 61: "v" * 256 for i in range(16)}  # 16 tags, 64/256 chars

CORPUS: list[Sample] = [
    # --- records as a whole ------------------------------------------------------------
    raw("empty value", API, b"", R.MALFORMED_JSON),
    raw("truncated JSON", API, b'{"event_id": "0b6f', R.MALFORMED_JSON),
    raw("not UTF-8", LOG, b'{"message": "\xff"}', R.MALFORMED_JSON),
    raw("JSON string record", API, b'"hello"', R.NOT_AN_OBJECT),
    raw("JSON number record", ANALYSIS, b"42", R.NOT_AN_OBJECT),
    ok("empty array", API, []),
    ok("array of two", API, [event(API), event(API, event_id=EVENT_ID.replace("0b", "1c"))]),
    bad("array element not an object", API, [event(API), 7, event(API)], R.NOT_AN_OBJECT, index=1),
    bad(
        "array element missing field",
        LOG,
        [event(LOG), event(LOG, level=DROP)],
        R.MISSING_FIELD,
        index=1,
    ),
    # --- api_call: valid -------------------------------------------------------------------
    ok("api minimal", API, event(API), tokens=0, cost_e8=0, user_id=None, status_code=None),
    ok(
        "api full",
        API,
        event(
            API,
            type="api_call",
            user_id="user-1",
            organization_id="org-1",
            status_code=201,
            tokens=42,
            cost_usd=0.00012345,
        ),
        tokens=42,
        cost_e8=12_345,
        status_code=201,
    ),
    ok(
        "api epoch ms",
        API,
        event(API, occurred_at=1_789_999_200_250),
        occurred_at_ms=1_789_999_200_250,
    ),
    ok("api upper-case uuid", API, event(API, event_id=EVENT_ID.upper()), event_id=EVENT_ID),
    ok(
        "api explicit nulls",
        API,
        event(
            API,
            type=None,
            user_id=None,
            organization_id=None,
            status_code=None,
            tokens=None,
            cost_usd=None,
        ),
        tokens=0,
        cost_e8=0,
    ),
    ok("api unknown field ignored", API, event(API, region="eu-west-1", extra={"a": [1]})),
    ok(
        "api integer numbers",
        API,
        event(API, response_time_ms=0, cost_usd=3),
        response_time_ms=0.0,
        cost_e8=300_000_000,
    ),
    ok(
        "api 9 fraction digits, negative offset",
        API,
        event(API, occurred_at="2026-09-21T08:30:00.250999999-05:30"),
        occurred_at_ms=1_789_999_200_250,
    ),
    ok(
        "api upper bounds",
        API,
        event(
            API,
            service="s" * 64,
            endpoint="/" * 256,
            method="M" * 16,
            user_id="u" * 128,
            status_code=599,
            response_time_ms=86_400_000,
            tokens=1_000_000_000,
            cost_usd=1_000_000,
        ),
    ),
    ok("api empty optional string", API, event(API, user_id="")),
    ok("api exactly 5 min ahead", API, event(API, occurred_at=NOW_MS + 300_000)),
    ok("api epoch start", API, event(API, occurred_at="1970-01-01T00:00:00Z"), occurred_at_ms=0),
    # --- api_call: invalid -----------------------------------------------------------------
    bad("api type mismatch", API, event(API, type="analysis"), R.UNKNOWN_EVENT_TYPE),
    bad("api type wrong case", API, event(API, type="API_CALL"), R.UNKNOWN_EVENT_TYPE),
    bad("api event_id missing", API, event(API, event_id=DROP), R.MISSING_FIELD),
    bad("api event_id number", API, event(API, event_id=12345), R.WRONG_TYPE),
    bad("api event_id not a uuid", API, event(API, event_id="not-a-uuid"), R.INVALID_VALUE),
    bad(
        "api event_id without dashes",
        API,
        event(API, event_id=EVENT_ID.replace("-", "")),
        R.INVALID_VALUE,
    ),
    bad("api event_id braced", API, event(API, event_id="{" + EVENT_ID + "}"), R.INVALID_VALUE),
    bad("api occurred_at missing", API, event(API, occurred_at=DROP), R.MISSING_FIELD),
    bad(
        "api occurred_at naive", API, event(API, occurred_at="2026-09-21T14:00:00"), R.INVALID_VALUE
    ),
    bad(
        "api occurred_at space separator",
        API,
        event(API, occurred_at="2026-09-21 14:00:00Z"),
        R.INVALID_VALUE,
    ),
    bad("api occurred_at date only", API, event(API, occurred_at="2026-09-21"), R.INVALID_VALUE),
    bad(
        "api occurred_at offset seconds",
        API,
        event(API, occurred_at="2026-09-21T14:00:00+01:00:30"),
        R.INVALID_VALUE,
    ),
    bad(
        "api occurred_at before 1970",
        API,
        event(API, occurred_at="1969-12-31T23:59:59Z"),
        R.INVALID_VALUE,
    ),
    bad("api occurred_at negative ms", API, event(API, occurred_at=-1), R.INVALID_VALUE),
    bad("api occurred_at boolean", API, event(API, occurred_at=True), R.WRONG_TYPE),
    bad(
        "api occurred_at fractional ms",
        API,
        event(API, occurred_at=1_789_999_200_250.5),
        R.WRONG_TYPE,
    ),
    bad("api occurred_at object", API, event(API, occurred_at={"seconds": 1}), R.WRONG_TYPE),
    bad("api service missing", API, event(API, service=DROP), R.MISSING_FIELD),
    bad("api service null", API, event(API, service=None), R.MISSING_FIELD),
    bad("api service empty", API, event(API, service=""), R.INVALID_VALUE),
    bad("api service too long", API, event(API, service="s" * 65), R.STRING_TOO_LONG),
    bad("api service number", API, event(API, service=5), R.WRONG_TYPE),
    bad("api endpoint too long", API, event(API, endpoint="/" * 257), R.STRING_TOO_LONG),
    bad("api method lower case", API, event(API, method="get"), R.INVALID_VALUE),
    bad("api method empty", API, event(API, method=""), R.INVALID_VALUE),
    bad("api method too long", API, event(API, method="M" * 17), R.STRING_TOO_LONG),
    bad("api method with dash", API, event(API, method="M-SEARCH"), R.INVALID_VALUE),
    bad("api success string", API, event(API, success="true"), R.WRONG_TYPE),
    bad("api success integer", API, event(API, success=1), R.WRONG_TYPE),
    bad("api response_time string", API, event(API, response_time_ms="12"), R.WRONG_TYPE),
    bad("api response_time boolean", API, event(API, response_time_ms=True), R.WRONG_TYPE),
    bad("api response_time negative", API, event(API, response_time_ms=-0.5), R.INVALID_NUMBER),
    bad(
        "api response_time over a day",
        API,
        event(API, response_time_ms=86_400_000.5),
        R.INVALID_VALUE,
    ),
    bad("api response_time missing", API, event(API, response_time_ms=DROP), R.MISSING_FIELD),
    bad("api user_id number", API, event(API, user_id=42), R.WRONG_TYPE),
    bad("api user_id too long", API, event(API, user_id="u" * 129), R.STRING_TOO_LONG),
    bad("api status_code 99", API, event(API, status_code=99), R.INVALID_VALUE),
    bad("api status_code 600", API, event(API, status_code=600), R.INVALID_VALUE),
    bad("api status_code negative", API, event(API, status_code=-200), R.INVALID_VALUE),
    bad("api status_code string", API, event(API, status_code="200"), R.WRONG_TYPE),
    bad("api tokens negative", API, event(API, tokens=-3), R.INVALID_NUMBER),
    bad("api tokens boolean", API, event(API, tokens=True), R.WRONG_TYPE),
    bad("api tokens fraction", API, event(API, tokens=2.5), R.WRONG_TYPE),
    bad("api tokens too many", API, event(API, tokens=1_000_000_001), R.INVALID_VALUE),
    bad("api cost negative", API, event(API, cost_usd=-0.01), R.INVALID_NUMBER),
    bad("api cost too high", API, event(API, cost_usd=1_000_000.01), R.INVALID_VALUE),
    bad("api cost string", API, event(API, cost_usd="0.1"), R.WRONG_TYPE),
    # --- api_call: validator-only --------------------------------------------------------
    bad(
        "api 5 min + 1 ms ahead",
        API,
        event(API, occurred_at=NOW_MS + 300_001),
        R.FUTURE_TIMESTAMP,
        only=FUTURE,
    ),
    bad(
        "api February 30",
        API,
        event(API, occurred_at="2026-02-30T00:00:00Z"),
        R.INVALID_VALUE,
        only=CALENDAR,
    ),
    bad(
        "api before epoch by offset",
        API,
        event(API, occurred_at="1970-01-01T00:30:00+01:00"),
        R.INVALID_VALUE,
        only=EPOCH_OFFSET,
    ),
    bad("api tokens 3.0", API, event(API, tokens=3.0), R.WRONG_TYPE, only=INTEGRAL_FLOAT),
    bad(
        "api occurred_at as float",
        API,
        event(API, occurred_at=1_789_999_200_000.0),
        R.WRONG_TYPE,
        only=INTEGRAL_FLOAT,
    ),
    # --- analysis: valid -----------------------------------------------------------------
    ok(
        "analysis minimal",
        ANALYSIS,
        event(ANALYSIS),
        tokens_used=0,
        processing_attempts=1,
        caching_used=False,
        total_processing_time_ms=None,
        metadata_json=None,
    ),
    ok(
        "analysis tokens_used default",
        ANALYSIS,
        event(ANALYSIS, request_tokens=100, response_tokens=23),
        only=TOKENS_USED,
        tokens_used=123,
    ),
    ok(
        "analysis total time default",
        ANALYSIS,
        event(ANALYSIS, processing_time_ms=250.5, queue_wait_time_ms=49.5),
        only=TOTAL_TIME,
        total_processing_time_ms=300.0,
    ),
    ok(
        "analysis full",
        ANALYSIS,
        event(
            ANALYSIS,
            type="analysis",
            status="fallback",
            user_id="u",
            organization_id="o",
            entry_id="entry-9",
            model_version="2026-09",
            analysis_version="v3",
            request_tokens=10,
            response_tokens=5,
            tokens_used=2_000_000_000,
            api_cost_usd=0.5,
            processing_time_ms=10,
            queue_wait_time_ms=None,
            total_processing_time_ms=86_400_000,
            caching_used=True,
            batch_processed=None,
            fallback_used=True,
            region_processed="eu-west-1",
            processing_attempts=1000,
            error_type="RateLimited",
            metadata={"prompt": {"chars": 1200}, "tags": ["a", "b"]},
        ),
        tokens_used=2_000_000_000,
        api_cost_e8=50_000_000,
        batch_processed=False,
        metadata_json='{"prompt":{"chars":1200},"tags":["a","b"]}',
    ),
    ok("analysis metadata exactly 16 KiB", ANALYSIS, event(ANALYSIS, metadata=METADATA_FITS)),
    # --- analysis: invalid ---------------------------------------------------------------
    bad(
        "analysis type mismatch", ANALYSIS, event(ANALYSIS, type="system_log"), R.UNKNOWN_EVENT_TYPE
    ),
    bad("analysis model_type missing", ANALYSIS, event(ANALYSIS, model_type=DROP), R.MISSING_FIELD),
    bad("analysis status unknown", ANALYSIS, event(ANALYSIS, status="done"), R.INVALID_VALUE),
    bad(
        "analysis status upper case", ANALYSIS, event(ANALYSIS, status="COMPLETED"), R.INVALID_VALUE
    ),
    bad("analysis status number", ANALYSIS, event(ANALYSIS, status=3), R.WRONG_TYPE),
    bad(
        "analysis entry_id too long",
        ANALYSIS,
        event(ANALYSIS, entry_id="e" * 129),
        R.STRING_TOO_LONG,
    ),
    bad(
        "analysis model_version too long",
        ANALYSIS,
        event(ANALYSIS, model_version="v" * 65),
        R.STRING_TOO_LONG,
    ),
    bad(
        "analysis request_tokens negative",
        ANALYSIS,
        event(ANALYSIS, request_tokens=-1),
        R.INVALID_NUMBER,
    ),
    bad(
        "analysis tokens_used too many",
        ANALYSIS,
        event(ANALYSIS, tokens_used=2_000_000_001),
        R.INVALID_VALUE,
    ),
    bad("analysis api_cost string", ANALYSIS, event(ANALYSIS, api_cost_usd="1"), R.WRONG_TYPE),
    bad(
        "analysis processing time negative",
        ANALYSIS,
        event(ANALYSIS, processing_time_ms=-5),
        R.INVALID_NUMBER,
    ),
    bad(
        "analysis attempts zero", ANALYSIS, event(ANALYSIS, processing_attempts=0), R.INVALID_VALUE
    ),
    bad(
        "analysis attempts 1001",
        ANALYSIS,
        event(ANALYSIS, processing_attempts=1001),
        R.INVALID_VALUE,
    ),
    bad(
        "analysis caching_used string", ANALYSIS, event(ANALYSIS, caching_used="yes"), R.WRONG_TYPE
    ),
    bad("analysis metadata array", ANALYSIS, event(ANALYSIS, metadata=[1, 2]), R.WRONG_TYPE),
    bad("analysis metadata string", ANALYSIS, event(ANALYSIS, metadata="{}"), R.WRONG_TYPE),
    # --- analysis: validator-only --------------------------------------------------------
    bad(
        "analysis metadata over 16 KiB",
        ANALYSIS,
        event(ANALYSIS, metadata=METADATA_OVER),
        R.TOO_LARGE,
        only=METADATA_SIZE,
    ),
    bad(
        "analysis attempts 1.0",
        ANALYSIS,
        event(ANALYSIS, processing_attempts=1.0),
        R.WRONG_TYPE,
        only=INTEGRAL_FLOAT,
    ),
    # --- system_log: valid ---------------------------------------------------------------
    ok("log minimal", LOG, event(LOG), occurred_at_ms=1_789_999_200_000, metadata_json=None),
    ok("log empty message", LOG, event(LOG, message="")),
    ok(
        "log with metadata and ids",
        LOG,
        event(
            LOG,
            type="system_log",
            level="error",
            metadata={"trace": "abc"},
            user_id="u",
            session_id="s",
        ),
        metadata_json='{"trace":"abc"}',
    ),
    ok("log 8192 bytes of 4-byte characters", LOG, event(LOG, message="\U0001f600" * 2048)),
    ok("log 8192 ASCII characters", LOG, event(LOG, message="m" * 8192)),
    # --- system_log: invalid -------------------------------------------------------------
    bad("log level upper case", LOG, event(LOG, level="WARN"), R.INVALID_VALUE),
    bad("log level warning", LOG, event(LOG, level="warning"), R.INVALID_VALUE),
    bad("log level missing", LOG, event(LOG, level=DROP), R.MISSING_FIELD),
    bad("log message missing", LOG, event(LOG, message=DROP), R.MISSING_FIELD),
    bad("log message number", LOG, event(LOG, message=5), R.WRONG_TYPE),
    bad(
        "log message 8193 ASCII characters", LOG, event(LOG, message="m" * 8193), R.STRING_TOO_LONG
    ),
    bad("log session_id too long", LOG, event(LOG, session_id="s" * 129), R.STRING_TOO_LONG),
    bad("log service empty", LOG, event(LOG, service=""), R.INVALID_VALUE),
    bad("log type mismatch", LOG, event(LOG, type="api_call"), R.UNKNOWN_EVENT_TYPE),
    # --- system_log: validator-only ------------------------------------------------------
    bad(
        "log message 8193 bytes in 2731 characters",
        LOG,
        event(LOG, message="€" * 2731),
        R.STRING_TOO_LONG,
        only=MESSAGE_BYTES,
    ),
    bad(
        "log metadata over 16 KiB",
        LOG,
        event(LOG, metadata=METADATA_OVER),
        R.TOO_LARGE,
        only=METADATA_SIZE,
    ),
]

CORPUS += [
    # --- analysis: analysis_id and actor -------------------------------------------------
    ok(
        "analysis with analysis_id and actor",
        ANALYSIS,
        event(ANALYSIS, analysis_id="an-42", actor="user-1"),
        analysis_id="an-42",
        actor="user-1",
    ),
    ok(
        "analysis analysis_id default",
        ANALYSIS,
        event(ANALYSIS, event_id=EVENT_ID.upper()),
        only=ANALYSIS_ID,
        analysis_id=EVENT_ID,
        actor=None,
    ),
    ok(
        "analysis analysis_id null",
        ANALYSIS,
        event(ANALYSIS, analysis_id=None, actor=None),
        analysis_id=EVENT_ID,
        actor=None,
    ),
    ok(
        "analysis analysis_id and actor upper bounds",
        ANALYSIS,
        event(ANALYSIS, analysis_id="a" * 128, actor="u" * 256),
        analysis_id="a" * 128,
    ),
    ok("analysis actor empty", ANALYSIS, event(ANALYSIS, actor=""), actor=""),
    bad("analysis analysis_id empty", ANALYSIS, event(ANALYSIS, analysis_id=""), R.INVALID_VALUE),
    bad(
        "analysis analysis_id too long",
        ANALYSIS,
        event(ANALYSIS, analysis_id="a" * 129),
        R.STRING_TOO_LONG,
    ),
    bad("analysis analysis_id number", ANALYSIS, event(ANALYSIS, analysis_id=42), R.WRONG_TYPE),
    bad("analysis actor too long", ANALYSIS, event(ANALYSIS, actor="u" * 257), R.STRING_TOO_LONG),
    bad("analysis actor object", ANALYSIS, event(ANALYSIS, actor={"id": 1}), R.WRONG_TYPE),
    # --- performance_metric: valid -------------------------------------------------------
    ok(
        "metric minimal",
        METRIC,
        event(METRIC),
        value=42.5,
        unit="",
        instance="",
        tags_json="{}",
        occurred_at_ms=1_789_999_200_000,
    ),
    ok(
        "metric full",
        METRIC,
        event(
            METRIC,
            type="performance_metric",
            unit="ms",
            instance="worker-7",
            tags={"region": "eu-west-1", "partition": "3"},
        ),
        unit="ms",
        instance="worker-7",
        tags_json='{"partition":"3","region":"eu-west-1"}',
    ),
    ok(
        "metric tags sorted canonically",
        METRIC,
        event(METRIC, tags={"z": "1", "a": "2", "M": "3", "é": "4"}),
        tags_json='{"M":"3","a":"2","z":"1","é":"4"}',
    ),
    ok(
        "metric explicit nulls",
        METRIC,
        event(METRIC, type=None, unit=None, instance=None, tags=None),
        unit="",
        instance="",
        tags_json="{}",
    ),
    ok("metric empty tags", METRIC, event(METRIC, tags={}), tags_json="{}"),
    ok("metric empty tag value", METRIC, event(METRIC, tags={"k": ""}), tags_json='{"k":""}'),
    ok("metric integer value", METRIC, event(METRIC, value=7), value=7.0),
    ok("metric zero", METRIC, event(METRIC, value=0), value=0.0),
    ok("metric negative value", METRIC, event(METRIC, value=-12.25), value=-12.25),
    ok("metric value 1e15", METRIC, event(METRIC, value=1e15), value=1e15),
    ok("metric value -1e15", METRIC, event(METRIC, value=-1e15), value=-1e15),
    ok(
        "metric integer value 10**15",
        METRIC,
        event(METRIC, value=1_000_000_000_000_000),
        value=1e15,
    ),
    ok(
        "metric upper bounds",
        METRIC,
        event(
            METRIC,
            name="n" * 128,
            service="s" * 64,
            unit="u" * 32,
            instance="i" * 128,
            tags=MAX_TAGS,
        ),
    ),
    # --- performance_metric: invalid -----------------------------------------------------
    bad("metric type mismatch", METRIC, event(METRIC, type="audit"), R.UNKNOWN_EVENT_TYPE),
    bad("metric event_id not a uuid", METRIC, event(METRIC, event_id="m-1"), R.INVALID_VALUE),
    bad(
        "metric occurred_at naive",
        METRIC,
        event(METRIC, occurred_at="2026-09-21T14:00:00"),
        R.INVALID_VALUE,
    ),
    bad("metric name missing", METRIC, event(METRIC, name=DROP), R.MISSING_FIELD),
    bad("metric name empty", METRIC, event(METRIC, name=""), R.INVALID_VALUE),
    bad("metric name too long", METRIC, event(METRIC, name="n" * 129), R.STRING_TOO_LONG),
    bad("metric name number", METRIC, event(METRIC, name=1), R.WRONG_TYPE),
    bad("metric value missing", METRIC, event(METRIC, value=DROP), R.MISSING_FIELD),
    bad("metric value null", METRIC, event(METRIC, value=None), R.MISSING_FIELD),
    bad("metric value string", METRIC, event(METRIC, value="1.5"), R.WRONG_TYPE),
    bad("metric value boolean", METRIC, event(METRIC, value=True), R.WRONG_TYPE),
    bad(
        "metric value over 1e15",
        METRIC,
        event(METRIC, value=1.0000000000000002e15),
        R.INVALID_NUMBER,
    ),
    bad(
        "metric value under -1e15",
        METRIC,
        event(METRIC, value=-1_000_000_000_000_001),
        R.INVALID_NUMBER,
    ),
    bad("metric value 10**19", METRIC, event(METRIC, value=10**19), R.INVALID_NUMBER),
    raw(
        "metric value 1e400",
        METRIC,
        orjson.dumps(event(METRIC, value=0)).replace(b'"value":0', b'"value":1e400'),
        R.MALFORMED_JSON,
    ),
    bad("metric unit too long", METRIC, event(METRIC, unit="u" * 33), R.STRING_TOO_LONG),
    bad("metric unit number", METRIC, event(METRIC, unit=1), R.WRONG_TYPE),
    bad("metric service missing", METRIC, event(METRIC, service=DROP), R.MISSING_FIELD),
    bad("metric service empty", METRIC, event(METRIC, service=""), R.INVALID_VALUE),
    bad("metric service too long", METRIC, event(METRIC, service="s" * 65), R.STRING_TOO_LONG),
    bad("metric instance too long", METRIC, event(METRIC, instance="i" * 129), R.STRING_TOO_LONG),
    bad("metric instance boolean", METRIC, event(METRIC, instance=False), R.WRONG_TYPE),
    bad("metric tags array", METRIC, event(METRIC, tags=[["k", "v"]]), R.WRONG_TYPE),
    bad("metric tags string", METRIC, event(METRIC, tags="k=v"), R.WRONG_TYPE),
    bad(
        "metric 17 tags",
        METRIC,
        event(METRIC, tags={f"k{i}": "v" for i in range(17)}),
        R.INVALID_VALUE,
    ),
    bad("metric tag key empty", METRIC, event(METRIC, tags={"": "v"}), R.INVALID_VALUE),
    bad("metric tag key too long", METRIC, event(METRIC, tags={"k" * 65: "v"}), R.STRING_TOO_LONG),
    bad(
        "metric tag value too long", METRIC, event(METRIC, tags={"k": "v" * 257}), R.STRING_TOO_LONG
    ),
    bad("metric tag value number", METRIC, event(METRIC, tags={"k": 1}), R.WRONG_TYPE),
    bad("metric tag value null", METRIC, event(METRIC, tags={"k": None}), R.WRONG_TYPE),
    bad("metric tag value object", METRIC, event(METRIC, tags={"k": {"a": "b"}}), R.WRONG_TYPE),
    bad(
        "metric array with a bad element",
        METRIC,
        [event(METRIC), event(METRIC, value="x")],
        R.WRONG_TYPE,
        index=1,
    ),
    # --- performance_metric: validator-only ----------------------------------------------
    bad(
        "metric 5 min + 1 ms ahead",
        METRIC,
        event(METRIC, occurred_at=NOW_MS + 300_001),
        R.FUTURE_TIMESTAMP,
        only=FUTURE,
    ),
    bad(
        "metric occurred_at as float",
        METRIC,
        event(METRIC, occurred_at=1_789_999_200_000.0),
        R.WRONG_TYPE,
        only=INTEGRAL_FLOAT,
    ),
    # --- audit: valid ----------------------------------------------------------------------
    ok(
        "audit minimal",
        AUDIT,
        event(AUDIT),
        actor="user-1",
        organization_id=None,
        request_id=None,
        before_json=None,
        after_json=None,
        occurred_at_ms=1_789_999_200_000,
    ),
    ok(
        "audit full",
        AUDIT,
        event(
            AUDIT,
            type="audit",
            actor_type="service",
            organization_id="org-1",
            request_id="req-9",
            before={"status": "completed", "tags": ["a"]},
            after={"status": "deleted"},
        ),
        before_json='{"status":"completed","tags":["a"]}',
        after_json='{"status":"deleted"}',
        organization_id="org-1",
    ),
    ok("audit system actor", AUDIT, event(AUDIT, actor="pipeline_migrator", actor_type="system")),
    ok(
        "audit explicit nulls",
        AUDIT,
        event(AUDIT, type=None, organization_id=None, request_id=None, before=None, after=None),
        before_json=None,
    ),
    ok("audit empty before", AUDIT, event(AUDIT, before={}), before_json="{}"),
    ok(
        "audit upper bounds",
        AUDIT,
        event(
            AUDIT,
            actor="a" * 256,
            action="x" * 128,
            entity_type="t" * 64,
            entity_id="i" * 256,
            organization_id="o" * 128,
            request_id="r" * 128,
        ),
    ),
    ok(
        "audit before and after exactly 16 KiB",
        AUDIT,
        event(AUDIT, before=METADATA_FITS, after=METADATA_FITS),
    ),
    # --- audit: invalid --------------------------------------------------------------------
    bad("audit type mismatch", AUDIT, event(AUDIT, type="system_log"), R.UNKNOWN_EVENT_TYPE),
    bad("audit event_id missing", AUDIT, event(AUDIT, event_id=DROP), R.MISSING_FIELD),
    bad("audit actor missing", AUDIT, event(AUDIT, actor=DROP), R.MISSING_FIELD),
    bad("audit actor null", AUDIT, event(AUDIT, actor=None), R.MISSING_FIELD),
    bad("audit actor empty", AUDIT, event(AUDIT, actor=""), R.INVALID_VALUE),
    bad("audit actor too long", AUDIT, event(AUDIT, actor="a" * 257), R.STRING_TOO_LONG),
    bad("audit actor number", AUDIT, event(AUDIT, actor=7), R.WRONG_TYPE),
    bad("audit actor_type missing", AUDIT, event(AUDIT, actor_type=DROP), R.MISSING_FIELD),
    bad("audit actor_type unknown", AUDIT, event(AUDIT, actor_type="admin"), R.INVALID_VALUE),
    bad("audit actor_type upper case", AUDIT, event(AUDIT, actor_type="USER"), R.INVALID_VALUE),
    bad("audit actor_type number", AUDIT, event(AUDIT, actor_type=1), R.WRONG_TYPE),
    bad("audit action missing", AUDIT, event(AUDIT, action=DROP), R.MISSING_FIELD),
    bad("audit action empty", AUDIT, event(AUDIT, action=""), R.INVALID_VALUE),
    bad("audit action too long", AUDIT, event(AUDIT, action="x" * 129), R.STRING_TOO_LONG),
    bad("audit entity_type missing", AUDIT, event(AUDIT, entity_type=DROP), R.MISSING_FIELD),
    bad("audit entity_type too long", AUDIT, event(AUDIT, entity_type="t" * 65), R.STRING_TOO_LONG),
    bad("audit entity_id missing", AUDIT, event(AUDIT, entity_id=DROP), R.MISSING_FIELD),
    bad("audit entity_id empty", AUDIT, event(AUDIT, entity_id=""), R.INVALID_VALUE),
    bad("audit entity_id too long", AUDIT, event(AUDIT, entity_id="i" * 257), R.STRING_TOO_LONG),
    bad("audit entity_id number", AUDIT, event(AUDIT, entity_id=42), R.WRONG_TYPE),
    bad(
        "audit organization_id too long",
        AUDIT,
        event(AUDIT, organization_id="o" * 129),
        R.STRING_TOO_LONG,
    ),
    bad("audit request_id too long", AUDIT, event(AUDIT, request_id="r" * 129), R.STRING_TOO_LONG),
    bad("audit request_id number", AUDIT, event(AUDIT, request_id=9), R.WRONG_TYPE),
    bad("audit before array", AUDIT, event(AUDIT, before=[1]), R.WRONG_TYPE),
    bad("audit before string", AUDIT, event(AUDIT, before='{"a":1}'), R.WRONG_TYPE),
    bad("audit after number", AUDIT, event(AUDIT, after=1), R.WRONG_TYPE),
    # --- audit: validator-only -------------------------------------------------------------
    bad(
        "audit before over 16 KiB",
        AUDIT,
        event(AUDIT, before=METADATA_OVER),
        R.TOO_LARGE,
        only=BEFORE_AFTER_SIZE,
    ),
    bad(
        "audit after over 16 KiB",
        AUDIT,
        event(AUDIT, after=METADATA_OVER),
        R.TOO_LARGE,
        only=BEFORE_AFTER_SIZE,
    ),
    bad(
        "audit February 30",
        AUDIT,
        event(AUDIT, occurred_at="2026-02-30T12:00:00Z"),
        R.INVALID_VALUE,
        only=CALENDAR,
    ),
]

VALIDATOR_ONLY_RULES = (
    FUTURE,
    CALENDAR,
    EPOCH_OFFSET,
    INTEGRAL_FLOAT,
    METADATA_SIZE,
    MESSAGE_BYTES,
    TOKENS_USED,
    TOTAL_TIME,
    ANALYSIS_ID,
    BEFORE_AFTER_SIZE,
)
