"""Deciding each event of an HTTP request (pipeline.http.admit): accepted events encoded as
the producer SDK encodes them, rejections with the contract's reason and field, and the
organization binding of an API key."""

from __future__ import annotations

import copy
import random

import orjson
import pytest

from pipeline.contract import EventKind, Reason, validate_event
from pipeline.http.admit import ORGANIZATION_MISMATCH, Rejected, _field_of, admit
from pipeline.http.body import BadLine
from pipeline.workload import EventFactory

NOW_MS = 1_790_000_000_000
ORG = "acme"
ORG_KINDS = (EventKind.API_CALL, EventKind.ANALYSIS, EventKind.AUDIT)
ORGLESS_KINDS = (EventKind.SYSTEM_LOG, EventKind.PERFORMANCE_METRIC)


def factory(seed: int = 7) -> EventFactory:
    return EventFactory(random.Random(seed), NOW_MS)


def valid(kind: EventKind, seed: int = 7, **changes: object) -> dict[str, object]:
    """A valid wire event of ``kind`` (``type`` included), without ``organization_id``."""
    event = factory(seed).maker(kind)()
    event.pop("organization_id", None)
    event.update(changes)
    return event


def expected_bytes(kind: EventKind, event: dict[str, object]) -> bytes:
    return orjson.dumps(validate_event(kind, copy.deepcopy(event), now_ms=NOW_MS).to_wire())


def decide_one(item: object, organization_id: str = ORG) -> EventKind | Rejected:
    admission = admit([item], organization_id=organization_id, now_ms=NOW_MS)
    assert len(admission.results) == 1
    return admission.results[0]


def rejected(item: object, organization_id: str = ORG) -> Rejected:
    result = decide_one(item, organization_id)
    assert isinstance(result, Rejected), result
    return result


def test_the_factory_maker_covers_every_kind() -> None:
    for kind in EventKind:
        assert valid(kind)["type"] == kind.value


@pytest.mark.parametrize("kind", list(EventKind))
def test_an_accepted_event_is_encoded_as_the_producer_sdk_encodes_it(kind: EventKind) -> None:
    event = valid(kind)
    if kind in ORG_KINDS:
        event["organization_id"] = ORG
    want = expected_bytes(kind, event)
    admission = admit([copy.deepcopy(event)], organization_id=ORG, now_ms=NOW_MS)
    assert admission.results == [kind]
    assert admission.encoded == {kind: [(0, want)]}
    assert admission.accepted == 1


def test_an_iso_timestamp_is_accepted_and_normalised_like_the_sdk() -> None:
    event = valid(EventKind.SYSTEM_LOG, occurred_at="2026-09-21T09:00:07.780+00:00")
    admission = admit([copy.deepcopy(event)], organization_id=ORG, now_ms=NOW_MS)
    assert admission.encoded[EventKind.SYSTEM_LOG] == [
        (0, expected_bytes(EventKind.SYSTEM_LOG, event))
    ]


@pytest.mark.parametrize("kind", list(EventKind))
def test_the_kind_comes_from_the_type(kind: EventKind) -> None:
    assert decide_one(valid(kind)) is kind


@pytest.mark.parametrize("name", ["nope", "API_CALL", "api-call", "", " api_call", 1, True, None])
def test_an_unknown_type_is_rejected_on_the_type_field(name: object) -> None:
    result = rejected(valid(EventKind.API_CALL, type=name))
    assert result.reason == Reason.UNKNOWN_EVENT_TYPE
    assert result.field == "type"
    assert result.detail.startswith("type: ")


def test_a_missing_type_is_rejected_on_the_type_field() -> None:
    event = valid(EventKind.API_CALL)
    del event["type"]
    result = rejected(event)
    assert result.reason == Reason.UNKNOWN_EVENT_TYPE
    assert result.field == "type"


@pytest.mark.parametrize("kind", ORG_KINDS)
@pytest.mark.parametrize("absent", ["missing", "null"])
def test_the_key_organization_is_filled_in_when_absent(kind: EventKind, absent: str) -> None:
    event = valid(kind)
    if absent == "null":
        event["organization_id"] = None
    admission = admit([event], organization_id=ORG, now_ms=NOW_MS)
    assert admission.results == [kind]
    assert event["organization_id"] == ORG  # the item itself is filled in (documented)
    [(position, data)] = admission.encoded[kind]
    assert position == 0
    assert orjson.loads(data)["organization_id"] == ORG
    assert data == expected_bytes(kind, event)


@pytest.mark.parametrize("kind", ORG_KINDS)
def test_the_key_organization_is_accepted_as_is(kind: EventKind) -> None:
    event = valid(kind, organization_id=ORG)
    admission = admit([copy.deepcopy(event)], organization_id=ORG, now_ms=NOW_MS)
    assert admission.encoded[kind] == [(0, expected_bytes(kind, event))]


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize("other", ["globex", "", "ACME", "acme ", 42, ["acme"], {"id": "acme"}])
def test_another_organization_is_rejected_for_every_kind(kind: EventKind, other: object) -> None:
    result = rejected(valid(kind, organization_id=other))
    assert result.reason == ORGANIZATION_MISMATCH == "organization_mismatch"
    assert result.field == "organization_id"
    assert result.detail.startswith("organization_id: ")
    assert repr(other) in result.detail


@pytest.mark.parametrize("kind", ORGLESS_KINDS)
def test_the_key_organization_is_accepted_for_kinds_without_the_field(kind: EventKind) -> None:
    event = valid(kind, organization_id=ORG)
    admission = admit([copy.deepcopy(event)], organization_id=ORG, now_ms=NOW_MS)
    assert admission.results == [kind]
    [(_, data)] = admission.encoded[kind]
    assert "organization_id" not in orjson.loads(data)  # ignored, as unknown fields are
    del event["organization_id"]
    assert data == expected_bytes(kind, event)


@pytest.mark.parametrize("kind", ORGLESS_KINDS)
@pytest.mark.parametrize("absent", ["missing", "null"])
def test_nothing_is_filled_in_for_kinds_without_the_field(kind: EventKind, absent: str) -> None:
    event = valid(kind)
    if absent == "null":
        event["organization_id"] = None
    before = copy.deepcopy(event)
    admission = admit([event], organization_id=ORG, now_ms=NOW_MS)
    assert admission.results == [kind]
    assert event == before


def test_the_organization_check_comes_before_the_contract() -> None:
    result = rejected(valid(EventKind.API_CALL, organization_id="globex", tokens=-3))
    assert result.reason == ORGANIZATION_MISMATCH


@pytest.mark.parametrize("kind", list(EventKind))
def test_a_missing_event_id_is_rejected_on_that_field(kind: EventKind) -> None:
    event = valid(kind)
    del event["event_id"]
    result = rejected(event)
    assert result.reason == Reason.MISSING_FIELD
    assert result.field == "event_id"
    assert result.detail == "event_id: required"


@pytest.mark.parametrize(
    ("kind", "changes", "reason", "field"),
    [
        (EventKind.API_CALL, {"tokens": -3}, Reason.INVALID_NUMBER, "tokens"),
        (EventKind.API_CALL, {"method": "get"}, Reason.INVALID_VALUE, "method"),
        (EventKind.API_CALL, {"success": "yes"}, Reason.WRONG_TYPE, "success"),
        (EventKind.API_CALL, {"event_id": "nope"}, Reason.INVALID_VALUE, "event_id"),
        (EventKind.SYSTEM_LOG, {"metadata": [1]}, Reason.WRONG_TYPE, "metadata"),
        (EventKind.SYSTEM_LOG, {"level": "loud"}, Reason.INVALID_VALUE, "level"),
        (EventKind.PERFORMANCE_METRIC, {"tags": {"k": 5}}, Reason.WRONG_TYPE, "tags.k"),
        (EventKind.PERFORMANCE_METRIC, {"tags": {"": "x"}}, Reason.INVALID_VALUE, "tags"),
        (
            EventKind.SYSTEM_LOG,
            {"occurred_at": NOW_MS + 3_600_000},
            Reason.FUTURE_TIMESTAMP,
            "occurred_at",
        ),
    ],
)
def test_a_contract_failure_names_its_field(
    kind: EventKind, changes: dict[str, object], reason: Reason, field: str
) -> None:
    event = valid(kind)
    event.update(changes)
    result = rejected(event)
    assert result.reason == reason
    assert result.field == field
    assert result.detail.startswith(f"{field}: ")


def test_the_future_is_judged_by_now_ms() -> None:
    event = valid(EventKind.SYSTEM_LOG, occurred_at=NOW_MS + 3_600_000)
    later = admit([event], organization_id=ORG, now_ms=NOW_MS + 3_600_000)
    assert later.results == [EventKind.SYSTEM_LOG]


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        ("tokens: must be >= 0, got -3", "tokens"),
        ("event_id: required", "event_id"),
        ("tags.region: must be a string, got integer", "tags.region"),
        ("event: must be an object, got array", None),
        ("event 3: must be an object, got array", None),
        ("record: not valid JSON", None),
        ("a value without a field", None),
        ("Tokens: upper case is no field", None),
        ("", None),
    ],
)
def test_the_field_is_the_start_of_the_detail(detail: str, field: str | None) -> None:
    assert _field_of(detail) == field


def test_a_bad_tag_value_under_a_capitalised_key_still_names_a_field() -> None:
    result = rejected(valid(EventKind.PERFORMANCE_METRIC, tags={"Region": 5}))
    assert result.reason == Reason.WRONG_TYPE
    assert result.field in ("tags.Region", "tags")


def test_a_bad_ndjson_line_is_malformed_json_without_a_field() -> None:
    result = rejected(BadLine("line 2: not valid JSON: unexpected character"))
    assert result == Rejected(
        Reason.MALFORMED_JSON.value, None, "line 2: not valid JSON: unexpected character"
    )


@pytest.mark.parametrize("item", [None, 1, 1.5, "x", True, [], [{"type": "api_call"}]])
def test_an_element_that_is_not_an_object_has_no_field(item: object) -> None:
    result = rejected(item)
    assert result.reason == Reason.NOT_AN_OBJECT
    assert result.field is None


def test_positions_and_grouping_by_kind_follow_the_request() -> None:
    f = factory(3)

    def fresh(kind: EventKind) -> dict[str, object]:
        event = f.maker(kind)()
        event.pop("organization_id", None)
        return event

    items: list[object] = [
        fresh(EventKind.API_CALL),  # 0
        fresh(EventKind.SYSTEM_LOG),  # 1
        BadLine("line 3: not valid JSON"),  # 2
        fresh(EventKind.API_CALL),  # 3
        {"type": "nope"},  # 4
        fresh(EventKind.AUDIT),  # 5
        dict(fresh(EventKind.ANALYSIS), organization_id="globex"),  # 6
        fresh(EventKind.SYSTEM_LOG),  # 7
        dict(fresh(EventKind.API_CALL), tokens=-1),  # 8
        fresh(EventKind.API_CALL),  # 9
    ]
    snapshot = copy.deepcopy(items)
    admission = admit(items, organization_id=ORG, now_ms=NOW_MS)
    kinds = [r if isinstance(r, EventKind) else None for r in admission.results]
    assert kinds == [
        EventKind.API_CALL,
        EventKind.SYSTEM_LOG,
        None,
        EventKind.API_CALL,
        None,
        EventKind.AUDIT,
        None,
        EventKind.SYSTEM_LOG,
        None,
        EventKind.API_CALL,
    ]
    reasons = [r.reason for r in admission.results if isinstance(r, Rejected)]
    assert reasons == [
        "malformed_json",
        "unknown_event_type",
        "organization_mismatch",
        "invalid_number",
    ]
    assert {k: [p for p, _ in v] for k, v in admission.encoded.items()} == {
        EventKind.API_CALL: [0, 3, 9],
        EventKind.SYSTEM_LOG: [1, 7],
        EventKind.AUDIT: [5],
    }
    assert list(admission.encoded) == [EventKind.API_CALL, EventKind.SYSTEM_LOG, EventKind.AUDIT]
    assert admission.accepted == 6
    for kind, pairs in admission.encoded.items():
        for position, data in pairs:
            event = snapshot[position]
            assert isinstance(event, dict)
            if kind in ORG_KINDS:
                event["organization_id"] = ORG
            assert data == expected_bytes(kind, event)


def test_nothing_to_decide() -> None:
    admission = admit([], organization_id=ORG, now_ms=NOW_MS)
    assert admission.results == []
    assert admission.encoded == {}
    assert admission.accepted == 0


def test_odd_data_never_raises() -> None:
    items: list[object] = [
        {"type": "api_call", "organization_id": None},
        {"type": "audit", "organization_id": {"nested": [1, 2]}},
        {"type": "analysis", "event_id": ["x"], "occurred_at": {"a": 1}},
        {"type": "performance_metric", "value": float("nan")},
        {"type": "system_log", "occurred_at": 10**40, "event_id": None},
        {"type": ["api_call"]},
        {"type": {"a": 1}},
    ]
    admission = admit(items, organization_id=ORG, now_ms=NOW_MS)
    assert len(admission.results) == len(items)
    assert all(isinstance(r, Rejected) for r in admission.results)
    assert admission.encoded == {}
