"""Poison items agree with the real validator; every valid item validates."""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
import pytest

from pipeline.contract import (
    VALIDATOR_REASONS,
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
    EventFactory,
    ExpectedTotals,
    Item,
    WorkloadSpec,
    generate,
    occurred_ms,
    pack,
    poison_items,
    reasons_for,
)

START = 1_767_225_600_000
ROUNDS = 12
"""Rounds of every reason that reach every variant of every reason (checked below)."""


def poison_of(kind: EventKind, n: int, seed: int = 7) -> list[Item]:
    rng = random.Random(seed)
    factory = EventFactory(rng, START)
    return list(poison_items(rng, kind, n, start_ms=START, make_valid=factory.maker(kind)))


def record_value(item: Item) -> bytes:
    return item.raw if item.raw is not None else orjson.dumps(item.event)


def test_reasons_cover_every_validator_reason() -> None:
    no_number = VALIDATOR_REASONS - {Reason.INVALID_NUMBER}
    no_object = VALIDATOR_REASONS - {Reason.TOO_LARGE}
    assert set(reasons_for(EventKind.API_CALL)) == no_object
    assert set(reasons_for(EventKind.ANALYSIS)) == VALIDATOR_REASONS
    assert set(reasons_for(EventKind.SYSTEM_LOG)) == no_number
    assert set(reasons_for(EventKind.PERFORMANCE_METRIC)) == no_object  # tags cannot be too large
    assert set(reasons_for(EventKind.AUDIT)) == no_number  # no numeric field
    covered = {r for kind in EventKind for r in reasons_for(kind)}
    assert covered == VALIDATOR_REASONS


def test_rounds_reach_every_variant() -> None:
    from pipeline.workload import poison

    for kind in EventKind:
        for reason in reasons_for(kind):
            variants = poison._DEFECTS[kind].get(reason, ()) + poison._COMMON.get(reason, ())
            assert len(variants) <= ROUNDS, (kind, reason)


@pytest.mark.parametrize("kind", list(EventKind))
def test_round_robin_covers_all_reasons(kind: EventKind) -> None:
    reasons = reasons_for(kind)
    items = poison_of(kind, len(reasons))
    assert [i.poison for i in items] == list(reasons)
    assert all(i.kind is kind for i in items)
    for item in items:
        is_record = item.poison in (Reason.MALFORMED_JSON, Reason.NOT_AN_OBJECT)
        assert (item.raw is not None) is is_record
        assert (item.event is not None) is not is_record


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize("validated_after_ms", [0, 20 * 60_000, 7 * 86_400_000])
def test_validator_gives_the_expected_reason(kind: EventKind, validated_after_ms: int) -> None:
    """Also when the worker validates long after the run's start (a test module's start
    time minutes old, a --start-ms of last week): a future_timestamp defect must stay in
    the future of the validator's clock, or the totals count it as valid."""
    items = poison_of(kind, ROUNDS * len(reasons_for(kind)))
    for item in items:
        now = START + validated_after_ms
        valid, invalid = decode_record(kind, record_value(item), now_ms=now)
        assert valid == []
        assert len(invalid) == 1, item
        assert invalid[0][0].reason == item.poison, (item, invalid[0][0].detail)


@pytest.mark.parametrize("kind", list(EventKind))
def test_poison_events_inside_an_array_are_rejected_alone(kind: EventKind) -> None:
    rng = random.Random(3)
    factory = EventFactory(rng, START)
    make = factory.maker(kind)
    items: list[Item] = []
    for poison in poison_of(kind, 3 * len(reasons_for(kind))):
        items += [Item(kind, make()), poison]
    for record in pack(items, "batched"):
        valid, invalid = decode_record(kind, record.value, now_ms=START)
        assert len(valid) + len(invalid) == record.events
        assert len(invalid) == record.poison


def variants(kind: EventKind, reason: Reason) -> list[dict[str, object]]:
    reasons = reasons_for(kind)
    items = poison_of(kind, ROUNDS * len(reasons))
    return [i.event for i in items if i.poison is reason and i.event is not None]


def test_audit_without_actor_is_missing_field() -> None:
    events = variants(EventKind.AUDIT, Reason.MISSING_FIELD)
    assert any("actor" not in e for e in events)
    assert any("actor" in e and e["actor"] is None for e in events)


def test_metric_value_defects() -> None:
    numbers = variants(EventKind.PERFORMANCE_METRIC, Reason.INVALID_NUMBER)
    values = [e["value"] for e in numbers]
    assert all(isinstance(v, int | float) and abs(v) > 1e15 for v in values)
    assert any(isinstance(v, int) for v in values) and any(v < 0 for v in values)  # type: ignore[operator]
    wrong = variants(EventKind.PERFORMANCE_METRIC, Reason.WRONG_TYPE)
    assert any(isinstance(e["value"], str) for e in wrong)  # JSON cannot carry NaN


def test_poison_never_reaches_the_totals() -> None:
    for kind in EventKind:
        items = poison_of(kind, 2 * len(reasons_for(kind)))
        totals = ExpectedTotals.of(items)
        assert sum(totals.invalid.values()) == len(items)
        assert totals.invalid_by_kind == {kind: len(items)}
        empty = ExpectedTotals(invalid=totals.invalid)
        assert totals == empty


def test_generated_stream_agrees_with_validator() -> None:
    spec = WorkloadSpec(
        api_calls=10_000,
        start_ms=START,
        invalid_fraction=0.1,
        late_fraction=0.05,
        duplicate_fraction=0.05,
    )
    seen = set()
    for item in generate(spec):
        valid, invalid = decode_record(item.kind, record_value(item), now_ms=spec.start_ms)
        if item.poison is not None:
            assert valid == []
            assert [i.reason for i, _ in invalid] == [item.poison]
            seen.add((item.kind, item.poison))
            continue
        assert invalid == [], (item, invalid)
        assert len(valid) == 1
        event, wire = valid[0], item.event
        assert wire is not None
        assert event.kind is item.kind
        assert event.event_id == wire["event_id"]
        assert event.occurred_at_ms == occurred_ms(wire["occurred_at"])
        # Every field is in the wire object, with the value the validator keeps.
        assert event.to_wire() == {**wire, "occurred_at": event.occurred_at_ms}
        if isinstance(event, ApiCall):
            assert event.cost_usd == Decimal(str(wire["cost_usd"]))
        elif isinstance(event, Analysis):
            assert event.api_cost_usd == Decimal(str(wire["api_cost_usd"]))
            assert event.analysis_id == wire["analysis_id"] != event.event_id
        elif isinstance(event, PerformanceMetric):
            assert event.value == wire["value"]
            assert event.tags == wire["tags"]
        elif isinstance(event, AuditEvent):
            assert event.actor_type.value == wire["actor_type"]
        else:
            assert isinstance(event, SystemLog)
    assert seen == {(kind, r) for kind in EventKind for r in reasons_for(kind)}


def test_poison_items_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        poison_of(EventKind.API_CALL, -1)
