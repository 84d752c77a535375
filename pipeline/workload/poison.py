"""Poison items: events and records the validator must reject, each with its expected reason.

:func:`poison_items` cycles round-robin over every reason the validator can give an event
of a kind (``VALIDATOR_REASONS``; ``too_large`` only for kinds with a JSON object field:
``metadata``, ``before``/``after``; ``invalid_number`` only for kinds with numeric fields),
and within a reason over a few variants. Record-level reasons (``malformed_json``,
``not_an_object``) are whole record values in :attr:`Item.raw`; the others are a valid
event with exactly one defect in :attr:`Item.event`. ``Item.poison`` is the reason
:func:`pipeline.contract.decode_record` gives it (``now_ms`` = the run start); the unit
tests check this against the validator.

A poison event's ``event_id`` is a version-8 UUID, so it can never equal a generated valid
event's id (those are version 4).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Final

from pipeline.contract import VALIDATOR_REASONS, EventKind, Reason
from pipeline.workload.spec import Item, iso_timestamp

__all__ = ["poison_items", "reasons_for"]

Event = dict[str, object]
Defect = Callable[[Event, int], None]
"""Puts one defect into an event (in place); the int is the run start in epoch ms."""

_V8_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_V8_SET: Final = (8 << 76) | (0x8000 << 48)
# Far enough ahead that a run start some time in the past (a test module's start time, a
# `pipeline produce --start-ms` of last week) still makes it a future_timestamp when the
# worker validates it: the contract allows 5 minutes ahead of *its* clock.
_FUTURE_MS: Final = 400 * 86_400_000
_BIG_METADATA: Final = {"blob": "x" * 17_000}
_MANY_TAGS: Final = {f"t{i}": "v" for i in range(17)}

_RECORDS: Final[dict[Reason, tuple[bytes, ...]]] = {
    Reason.MALFORMED_JSON: (
        b'{"event_id": ',
        b"",
        b"\xff\xfe{}",
        b"{'event_id': 'single quotes'}",
        b'[{"type": "x"}',
        b"NaN",
    ),
    Reason.NOT_AN_OBJECT: (b"42", b'"text"', b"true", b"null", b"3.5"),
}


def _set(field: str, value: object) -> Defect:
    def defect(event: Event, start_ms: int) -> None:
        event[field] = value

    return defect


def _drop(field: str) -> Defect:
    def defect(event: Event, start_ms: int) -> None:
        del event[field]

    return defect


def _tag(key: object, value: object) -> Defect:
    """Adds one (key, value) pair to the event's tags (a fresh object)."""

    def defect(event: Event, start_ms: int) -> None:
        tags = event.get("tags")
        event["tags"] = {**(tags if isinstance(tags, dict) else {}), key: value}

    return defect


def _future(as_iso: bool) -> Defect:
    def defect(event: Event, start_ms: int) -> None:
        ms = start_ms + _FUTURE_MS
        event["occurred_at"] = iso_timestamp(ms) if as_iso else ms

    return defect


_COMMON: Final[dict[Reason, tuple[Defect, ...]]] = {
    Reason.MISSING_FIELD: (_drop("event_id"), _set("occurred_at", None)),
    Reason.WRONG_TYPE: (_set("occurred_at", 1.7e12), _set("event_id", 12345)),
    Reason.INVALID_VALUE: (_set("event_id", "not-a-uuid"), _set("occurred_at", "yesterday")),
    Reason.FUTURE_TIMESTAMP: (_future(False), _future(True)),
}

_DEFECTS: Final[dict[EventKind, dict[Reason, tuple[Defect, ...]]]] = {
    EventKind.API_CALL: {
        Reason.UNKNOWN_EVENT_TYPE: (_set("type", "analysis"), _set("type", "apicall")),
        Reason.MISSING_FIELD: (
            _drop("service"),
            _drop("endpoint"),
            _set("method", None),
            _drop("success"),
            _drop("response_time_ms"),
        ),
        Reason.WRONG_TYPE: (
            _set("tokens", "12"),
            _set("success", "true"),
            _set("response_time_ms", "80"),
            _set("status_code", "200"),
            _set("user_id", 42),
            _set("cost_usd", "0.01"),
        ),
        Reason.STRING_TOO_LONG: (
            _set("service", "s" * 65),
            _set("endpoint", "/" + "e" * 256),
            _set("user_id", "u" * 129),
        ),
        Reason.INVALID_NUMBER: (
            _set("tokens", -5),
            _set("cost_usd", -1.0),
            _set("response_time_ms", -0.5),
        ),
        Reason.INVALID_VALUE: (
            _set("method", "get"),
            _set("status_code", 42),
            _set("service", ""),
            _set("response_time_ms", 90_000_000.0),
            _set("tokens", 2_000_000_000),
        ),
    },
    EventKind.ANALYSIS: {
        Reason.UNKNOWN_EVENT_TYPE: (_set("type", "system_log"), _set("type", "api_call")),
        Reason.MISSING_FIELD: (_drop("model_type"), _set("status", None)),
        Reason.WRONG_TYPE: (
            _set("request_tokens", "12"),
            _set("caching_used", "yes"),
            _set("metadata", [1, 2]),
            _set("api_cost_usd", "0.01"),
            _set("processing_attempts", 1.0),
            _set("analysis_id", 42),
            _set("actor", ["worker-1"]),
        ),
        Reason.STRING_TOO_LONG: (
            _set("model_type", "m" * 65),
            _set("entry_id", "e" * 129),
            _set("region_processed", "r" * 65),
            _set("analysis_id", "a" * 129),
            _set("actor", "w" * 257),
        ),
        Reason.INVALID_NUMBER: (
            _set("request_tokens", -5),
            _set("api_cost_usd", -1.0),
            _set("queue_wait_time_ms", -3.0),
            _set("tokens_used", -1),
        ),
        Reason.INVALID_VALUE: (
            _set("status", "done"),
            _set("processing_attempts", 0),
            _set("model_type", ""),
            _set("analysis_id", ""),
        ),
        Reason.TOO_LARGE: (_set("metadata", _BIG_METADATA),),
    },
    EventKind.SYSTEM_LOG: {
        Reason.UNKNOWN_EVENT_TYPE: (_set("type", "analysis"), _set("type", "log")),
        Reason.MISSING_FIELD: (_drop("message"), _drop("level"), _set("service", None)),
        Reason.WRONG_TYPE: (
            _set("message", 42),
            _set("metadata", "text"),
            _set("level", 3),
            _set("session_id", 7),
        ),
        Reason.STRING_TOO_LONG: (
            _set("message", "m" * 8193),
            _set("message", "é" * 4200),
            _set("service", "s" * 65),
        ),
        Reason.INVALID_VALUE: (
            _set("level", "fatal"),
            _set("service", ""),
        ),
        Reason.TOO_LARGE: (_set("metadata", _BIG_METADATA),),
    },
    EventKind.PERFORMANCE_METRIC: {
        Reason.UNKNOWN_EVENT_TYPE: (_set("type", "audit"), _set("type", "metric")),
        Reason.MISSING_FIELD: (_drop("name"), _set("value", None), _drop("service")),
        Reason.WRONG_TYPE: (
            _set("value", "12.5"),  # JSON has no NaN: a string is the non-number it can carry
            _set("value", True),
            _set("name", 42),
            _set("unit", 1),
            _set("instance", 0),
            _set("tags", ["region", "eu-west-1"]),
            _tag("region", 3),
        ),
        Reason.STRING_TOO_LONG: (
            _set("name", "n" * 129),
            _set("unit", "u" * 33),
            _set("service", "s" * 65),
            _set("instance", "i" * 129),
            _tag("k" * 65, "v"),
            _tag("region", "r" * 257),
        ),
        Reason.INVALID_NUMBER: (
            _set("value", 2e15),
            _set("value", -1e16),
            _set("value", 10**16),
            _set("value", 1e308),
        ),
        Reason.INVALID_VALUE: (
            _set("name", ""),
            _set("service", ""),
            _set("tags", _MANY_TAGS),
            _tag("", "v"),
        ),
    },
    EventKind.AUDIT: {
        Reason.UNKNOWN_EVENT_TYPE: (_set("type", "system_log"), _set("type", "audit_event")),
        Reason.MISSING_FIELD: (
            _drop("actor"),
            _set("actor", None),
            _drop("actor_type"),
            _drop("action"),
            _set("entity_type", None),
            _drop("entity_id"),
        ),
        Reason.WRONG_TYPE: (
            _set("actor", 42),
            _set("actor_type", 1),
            _set("action", ["analysis.deleted"]),
            _set("entity_id", 12345),
            _set("before", "status=completed"),
            _set("after", [1, 2]),
            _set("request_id", 7),
        ),
        Reason.STRING_TOO_LONG: (
            _set("actor", "a" * 257),
            _set("action", "a" * 129),
            _set("entity_type", "e" * 65),
            _set("entity_id", "e" * 257),
            _set("organization_id", "o" * 129),
            _set("request_id", "r" * 129),
        ),
        Reason.INVALID_VALUE: (
            _set("actor_type", "robot"),
            _set("actor", ""),
            _set("action", ""),
            _set("entity_id", ""),
        ),
        Reason.TOO_LARGE: (_set("before", _BIG_METADATA), _set("after", _BIG_METADATA)),
    },
}


def reasons_for(kind: EventKind) -> tuple[Reason, ...]:
    """The reasons :func:`poison_items` cycles through for ``kind``, in that order."""
    event_reasons = _DEFECTS[kind].keys() | _COMMON.keys()
    return tuple(
        r for r in Reason if r in VALIDATOR_REASONS and (r in _RECORDS or r in event_reasons)
    )


def _poison_id(rng: random.Random) -> str:
    h = ((rng.getrandbits(128) & _V8_CLEAR) | _V8_SET).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def poison_items(
    rng: random.Random,
    kind: EventKind,
    n: int,
    *,
    start_ms: int,
    make_valid: Callable[[], dict[str, object]],
) -> Iterator[Item]:
    """Yield ``n`` poison items for the topic of ``kind``, round-robin over its reasons.

    ``make_valid`` builds a valid wire event of ``kind`` (e.g.
    ``EventFactory(rng, start_ms).maker(kind)``); each poison event is one of those with a
    fresh version-8 event_id and one defect. ``start_ms`` is the run start: the validator
    must be run with ``now_ms=start_ms`` for ``future_timestamp`` to be the reason.
    Deterministic for a given RNG state.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    reasons = reasons_for(kind)
    defects = {r: _DEFECTS[kind].get(r, ()) + _COMMON.get(r, ()) for r in reasons}
    for i in range(n):
        reason = reasons[i % len(reasons)]
        variant = i // len(reasons)
        records = _RECORDS.get(reason)
        if records is not None:
            yield Item(kind, None, records[variant % len(records)], reason)
            continue
        event = make_valid()
        event["event_id"] = _poison_id(rng)
        options = defects[reason]
        options[variant % len(options)](event, start_ms)
        yield Item(kind, event, None, reason)
