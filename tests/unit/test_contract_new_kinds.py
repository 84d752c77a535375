"""The performance_metric and audit kinds, and analysis_id / actor of analysis events."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from types import MappingProxyType

import orjson
import pytest
from jsonschema import Draft202012Validator

from pipeline.contract import (
    Analysis,
    AnalysisStatus,
    AuditActorType,
    AuditEvent,
    ContractError,
    Event,
    EventKind,
    PerformanceMetric,
    Reason,
    decode_record,
    load_schema,
    validate_event,
)
from tests.unit.contract_corpus import (
    ANALYSIS,
    AUDIT,
    CORPUS,
    DROP,
    EVENT_ID,
    METADATA_FITS,
    METADATA_OVER,
    METRIC,
    NOW_MS,
    event,
)

NOW = datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC)
R = Reason


def reason_of(kind: EventKind, obj: object) -> Reason:
    with pytest.raises(ContractError) as caught:
        validate_event(kind, obj, now_ms=NOW_MS)
    return caught.value.reason


def detail_of(kind: EventKind, obj: object) -> str:
    with pytest.raises(ContractError) as caught:
        validate_event(kind, obj, now_ms=NOW_MS)
    return caught.value.detail


def metric(**changes: object) -> PerformanceMetric:
    got = validate_event(METRIC, event(METRIC, **changes), now_ms=NOW_MS)
    assert isinstance(got, PerformanceMetric)
    return got


def audit(**changes: object) -> AuditEvent:
    got = validate_event(AUDIT, event(AUDIT, **changes), now_ms=NOW_MS)
    assert isinstance(got, AuditEvent)
    return got


def analysis(**changes: object) -> Analysis:
    got = validate_event(ANALYSIS, event(ANALYSIS, **changes), now_ms=NOW_MS)
    assert isinstance(got, Analysis)
    return got


def test_kind_values() -> None:
    assert EventKind.PERFORMANCE_METRIC.value == "performance_metric"
    assert EventKind.AUDIT.value == "audit"
    assert [t.value for t in AuditActorType] == ["user", "service", "system"]
    assert PerformanceMetric.kind is EventKind.PERFORMANCE_METRIC
    assert AuditEvent.kind is EventKind.AUDIT


def test_field_order_is_the_spec() -> None:
    names = [f.name for f in dataclasses.fields(PerformanceMetric)]
    assert names == [
        "event_id",
        "occurred_at_ms",
        "name",
        "value",
        "unit",
        "service",
        "instance",
        "tags_json",
    ]
    assert [f.name for f in dataclasses.fields(AuditEvent)] == [
        "event_id",
        "occurred_at_ms",
        "actor",
        "actor_type",
        "action",
        "entity_type",
        "entity_id",
        "organization_id",
        "request_id",
        "before_json",
        "after_json",
    ]
    assert [f.name for f in dataclasses.fields(Analysis)][-3:] == [
        "metadata_json",
        "analysis_id",
        "actor",
    ]


# --- performance_metric ---------------------------------------------------------------------


def test_metric_defaults_and_normalised_types() -> None:
    got = metric(value=7)
    assert got.value == 7.0
    assert type(got.value) is float
    assert (got.unit, got.instance, got.tags_json, got.tags) == ("", "", "{}", {})
    assert got.occurred_at == datetime(2026, 9, 21, 14, 0, tzinfo=UTC)


def test_metric_fast_path_builds_the_same_object_as_the_constructor() -> None:
    got = metric(unit="ms", instance="w-1", tags={"b": "2", "a": "1"})
    expected = PerformanceMetric(
        EVENT_ID, 1_789_999_200_000, "queue.depth", 42.5, "ms", "ingest-worker", "w-1",
        '{"a":"1","b":"2"}',
    )  # fmt: skip
    assert got == expected
    assert hash(got) == hash(expected)
    assert type(got) is PerformanceMetric
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.value = 1.0  # type: ignore[misc]
    assert dataclasses.replace(got, value=1.0).value == 1.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_metric_non_finite_value_is_invalid_number(value: float) -> None:
    assert reason_of(METRIC, event(METRIC, value=value)) is R.INVALID_NUMBER
    assert detail_of(METRIC, event(METRIC, value=value)).startswith("value: must be a finite")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (1e15, True),
        (-1e15, True),
        (10**15, True),
        (-(10**15), True),
        (math.nextafter(1e15, math.inf), False),
        (math.nextafter(-1e15, -math.inf), False),
        (10**15 + 1, False),
        (-(10**15) - 1, False),
        (10**400, False),
        (1.7976931348623157e308, False),
        (5e-324, True),
        (-0.0, True),
    ],
)
def test_metric_value_bound_is_1e15_either_sign(value: float, ok: bool) -> None:
    if ok:
        assert metric(value=value).value == float(value)
    else:
        assert reason_of(METRIC, event(METRIC, value=value)) is R.INVALID_NUMBER


def test_metric_value_details() -> None:
    assert detail_of(METRIC, event(METRIC, value=2e15)) == (
        "value: must be between -1e+15 and 1e+15, got 2000000000000000.0"
    )
    assert detail_of(METRIC, event(METRIC, value=DROP)) == "value: required"
    assert detail_of(METRIC, event(METRIC, value="1")) == "value: must be a number, got string"


def test_metric_tags_are_canonical() -> None:
    first = metric(tags={"region": "eu", "host": "a", "az": "1"})
    second = metric(tags={"az": "1", "host": "a", "region": "eu"})
    assert first.tags_json == second.tags_json == '{"az":"1","host":"a","region":"eu"}'
    assert first == second
    assert first.tags == {"az": "1", "host": "a", "region": "eu"}
    assert list(first.tags) == ["az", "host", "region"]


def test_metric_tags_accept_any_mapping_and_str_subclasses() -> None:
    class Region(StrEnum):
        EU = "eu"

    got = metric(tags=MappingProxyType({Region.EU: Region.EU}))
    assert got.tags_json == '{"eu":"eu"}'


@pytest.mark.parametrize(
    ("tags", "reason", "detail"),
    [
        ([], R.WRONG_TYPE, "tags: must be an object of strings, got array"),
        ("a=b", R.WRONG_TYPE, "tags: must be an object of strings, got string"),
        ({f"k{i}": "" for i in range(17)}, R.INVALID_VALUE, "tags: at most 16 tags, got 17"),
        ({"": "v"}, R.INVALID_VALUE, "tags: a key must not be empty"),
        ({"k" * 65: "v"}, R.STRING_TOO_LONG, "tags: a key is at most 64 characters, got 65"),
        ({"k": "v" * 257}, R.STRING_TOO_LONG, "tags.k: at most 256 characters, got 257"),
        ({"k": 1}, R.WRONG_TYPE, "tags.k: must be a string, got integer"),
        ({"k": None}, R.WRONG_TYPE, "tags.k: must be a string, got null"),
        ({"k": ["v"]}, R.WRONG_TYPE, "tags.k: must be a string, got array"),
        ({1: "v"}, R.WRONG_TYPE, "tags key: must be a string, got integer"),
        ({"k": "\ud800"}, R.INVALID_VALUE, "tags: not encodable as UTF-8 (lone surrogate)"),
    ],
)
def test_metric_tag_violations(tags: object, reason: Reason, detail: str) -> None:
    with pytest.raises(ContractError) as caught:
        validate_event(METRIC, event(METRIC, tags=tags), now_ms=NOW_MS)
    assert (caught.value.reason, caught.value.detail) == (reason, detail)


def test_metric_tags_boundaries() -> None:
    sixteen = {f"{i:02}" + "k" * 62: "v" * 256 for i in range(16)}
    got = metric(tags=sixteen)
    assert got.tags == dict(sorted(sixteen.items()))
    assert metric(tags={"k": ""}).tags == {"k": ""}


def test_metric_python_subclasses_are_normalised() -> None:
    class Name(StrEnum):
        DEPTH = "queue.depth"

    class Level(IntEnum):
        HIGH = 3

    got = metric(name=Name.DEPTH, value=Level.HIGH, unit=Name.DEPTH)
    assert type(got.name) is str
    assert type(got.unit) is str
    assert type(got.value) is float
    assert got.value == 3.0


# --- audit ------------------------------------------------------------------------------------


def test_audit_minimal_and_enum() -> None:
    got = audit(actor_type="system")
    assert got.actor_type is AuditActorType.SYSTEM
    assert (got.organization_id, got.request_id) == (None, None)
    assert (got.before_json, got.after_json, got.before, got.after) == (None, None, None, None)


def test_missing_actor_is_missing_field() -> None:
    with pytest.raises(ContractError) as caught:
        validate_event(AUDIT, event(AUDIT, actor=DROP), now_ms=NOW_MS)
    assert (caught.value.reason, caught.value.detail) == (R.MISSING_FIELD, "actor: required")
    assert reason_of(AUDIT, event(AUDIT, actor=None)) is R.MISSING_FIELD


def test_audit_actor_type_detail() -> None:
    assert detail_of(AUDIT, event(AUDIT, actor_type="admin")) == (
        "actor_type: must be one of user, service, system, got 'admin'"
    )


@pytest.mark.parametrize("side", ["before", "after"])
def test_audit_before_after_are_objects_of_at_most_16_kib(side: str) -> None:
    fits = audit(**{side: METADATA_FITS})
    text = getattr(fits, f"{side}_json")
    assert isinstance(text, str)
    assert len(text.encode()) == 16_384
    assert getattr(fits, side) == METADATA_FITS
    assert reason_of(AUDIT, event(AUDIT, **{side: METADATA_OVER})) is R.TOO_LARGE
    assert detail_of(AUDIT, event(AUDIT, **{side: METADATA_OVER})) == (
        f"{side}: at most 16384 bytes as JSON, got 16385"
    )
    wrong_types: tuple[object, ...] = ([], "{}", 1, True)
    for wrong in wrong_types:
        assert reason_of(AUDIT, event(AUDIT, **{side: wrong})) is R.WRONG_TYPE
    assert reason_of(AUDIT, event(AUDIT, **{side: {1: "x"}})) is R.WRONG_TYPE
    assert getattr(audit(**{side: {}}), f"{side}_json") == "{}"


def test_audit_future_timestamp() -> None:
    assert reason_of(AUDIT, event(AUDIT, occurred_at=NOW_MS + 300_001)) is R.FUTURE_TIMESTAMP
    assert audit(occurred_at=NOW_MS + 300_000).occurred_at_ms == NOW_MS + 300_000


# --- analysis_id and actor --------------------------------------------------------------------


def test_analysis_id_defaults_to_the_event_id() -> None:
    got = analysis(event_id=EVENT_ID.upper())
    assert got.analysis_id == got.event_id == EVENT_ID
    assert got.actor is None
    assert analysis(analysis_id=None).analysis_id == EVENT_ID


def test_analysis_id_and_actor_are_kept() -> None:
    got = analysis(analysis_id="an-1", actor="user-7")
    assert (got.analysis_id, got.actor) == ("an-1", "user-7")
    assert analysis(actor="").actor == ""
    assert detail_of(ANALYSIS, event(ANALYSIS, analysis_id="")) == "analysis_id: must not be empty"
    assert reason_of(ANALYSIS, event(ANALYSIS, analysis_id="a" * 129)) is R.STRING_TOO_LONG
    assert reason_of(ANALYSIS, event(ANALYSIS, analysis_id=1)) is R.WRONG_TYPE
    assert reason_of(ANALYSIS, event(ANALYSIS, actor="u" * 257)) is R.STRING_TOO_LONG


def test_positional_analysis_construction_still_works() -> None:
    """The new fields are appended with defaults: old positional calls keep their meaning."""
    old = Analysis(EVENT_ID, NOW_MS, "m", AnalysisStatus.QUEUED)
    assert (old.analysis_id, old.actor, old.metadata_json) == (None, None, None)
    full = Analysis(
        EVENT_ID, NOW_MS, "m", AnalysisStatus.QUEUED, None, None, None, None, None, 0, 0, 0, 0,
        None, None, None, False, False, False, None, 1, None, '{"a":1}',
    )  # fmt: skip
    assert (full.metadata_json, full.analysis_id, full.actor) == ('{"a":1}', None, None)


def test_analysis_new_takes_analysis_id_and_actor() -> None:
    first = Analysis.new(model_type="m", status="queued", actor="user-1", now=NOW)
    assert first.analysis_id == first.event_id
    later = Analysis.new(
        model_type="m", status="completed", analysis_id=first.analysis_id, actor="svc", now=NOW
    )
    assert later.analysis_id == first.event_id != later.event_id
    assert later.actor == "svc"


# --- new() and to_wire() ------------------------------------------------------------------------


def _built() -> list[Event]:
    return [
        PerformanceMetric.new(
            name="queue.depth",
            value=17,
            service="ingest-worker",
            unit="1",
            instance="worker-3",
            tags={"topic": "api-calls", "partition": "3"},
            now=NOW,
        ),
        PerformanceMetric.new(name="cpu", value=-0.5, service="s", now=NOW),
        AuditEvent.new(
            actor="user-1",
            actor_type=AuditActorType.USER,
            action="analysis.deleted",
            entity_type="analysis",
            entity_id="an-42",
            organization_id="org-1",
            request_id="req-1",
            before={"status": "completed", "n": [1, 2.5, None]},
            after={},
            occurred_at=datetime(2026, 9, 21, 16, 0, 0, 123_000, timezone(timedelta(hours=2))),
            now=NOW,
        ),
        AuditEvent.new(
            actor="pipeline",
            actor_type="system",
            action="partition.created",
            entity_type="partition",
            entity_id="audit_trail_p2026_09",
            now=NOW,
        ),
        Analysis.new(
            model_type="summary",
            status=AnalysisStatus.PROCESSING,
            analysis_id="an-42",
            actor="worker-1",
            now=NOW,
        ),
        Analysis.new(model_type="summary", status="queued", now=NOW),
    ]


@pytest.mark.parametrize("built", _built(), ids=lambda e: type(e).__name__)
def test_to_wire_round_trips(built: Event) -> None:
    wire = built.to_wire()
    assert wire["type"] == built.kind.value
    assert isinstance(wire["occurred_at"], int)
    assert not [key for key in wire if key.endswith("_json") or key == "occurred_at_ms"]
    assert validate_event(built.kind, wire, now_ms=NOW_MS) == built
    value = orjson.dumps(wire)
    assert validate_event(built.kind, orjson.loads(value), now_ms=NOW_MS) == built
    assert decode_record(built.kind, value, now_ms=NOW_MS) == ([built], [])
    schema = Draft202012Validator(load_schema(built.kind))
    assert schema.is_valid(orjson.loads(value)), list(schema.iter_errors(orjson.loads(value)))


def test_to_wire_wire_names() -> None:
    metric_event, _, audit_event, bare_audit, *_ = _built()
    wire = metric_event.to_wire()
    assert wire["tags"] == {"partition": "3", "topic": "api-calls"}
    assert (wire["unit"], wire["instance"], wire["value"]) == ("1", "worker-3", 17.0)
    audit_wire = audit_event.to_wire()
    assert audit_wire["before"] == {"status": "completed", "n": [1, 2.5, None]}
    assert audit_wire["after"] == {}
    assert audit_wire["actor_type"] == "user"
    assert audit_event.occurred_at_ms == NOW_MS - 800_000 + 123
    assert (bare_audit.to_wire()["before"], bare_audit.to_wire()["after"]) == (None, None)


def test_new_validates() -> None:
    with pytest.raises(ContractError) as caught:
        PerformanceMetric.new(name="x", value=math.nan, service="s")
    assert caught.value.reason is R.INVALID_NUMBER
    with pytest.raises(ContractError) as caught:
        PerformanceMetric.new(name="x", value=1, service="s", tags={"k": "v" * 257})
    assert caught.value.reason is R.STRING_TOO_LONG
    with pytest.raises(ContractError) as caught:
        AuditEvent.new(actor="", actor_type="user", action="a", entity_type="t", entity_id="i")
    assert caught.value.reason is R.INVALID_VALUE
    with pytest.raises(ContractError) as caught:
        AuditEvent.new(actor="a", actor_type="robot", action="a", entity_type="t", entity_id="i")
    assert caught.value.reason is R.INVALID_VALUE
    with pytest.raises(ContractError) as caught:
        Analysis.new(model_type="m", status="queued", analysis_id="")
    assert caught.value.reason is R.INVALID_VALUE
    fresh = PerformanceMetric.new(name="x", value=1, service="s")  # the real clock
    assert abs(fresh.occurred_at.timestamp() - datetime.now(UTC).timestamp()) < 60


# --- coverage of the corpus ---------------------------------------------------------------------


def _corpus_reasons(kind: EventKind) -> set[Reason]:
    reasons: set[Reason] = set()
    for sample in CORPUS:
        if sample.kind is kind and sample.reason is not None:
            _, invalid = decode_record(kind, sample.value, now_ms=NOW_MS)
            reasons.update(inv.reason for inv, _ in invalid)
    return reasons


def test_corpus_covers_every_reason_of_the_new_validators() -> None:
    event_level = {
        R.UNKNOWN_EVENT_TYPE,
        R.MISSING_FIELD,
        R.WRONG_TYPE,
        R.STRING_TOO_LONG,
        R.INVALID_VALUE,
        R.FUTURE_TIMESTAMP,
    }
    assert _corpus_reasons(METRIC) >= event_level | {R.INVALID_NUMBER}
    assert _corpus_reasons(AUDIT) >= (event_level - {R.FUTURE_TIMESTAMP}) | {R.TOO_LARGE}
    analysis_new = [
        s for s in CORPUS if s.kind is ANALYSIS and ("analysis_id" in s.name or "actor" in s.name)
    ]
    assert {s.reason for s in analysis_new} == {
        None,
        R.INVALID_VALUE,
        R.STRING_TOO_LONG,
        R.WRONG_TYPE,
    }
