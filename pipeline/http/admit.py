"""Deciding each event of a request: accepted (encoded for its topic) or rejected, and why.

:func:`admit` runs the workers' own contract code (:func:`pipeline.contract.validate_event`)
on every event, after two checks that only an HTTP request needs:

- the kind comes from the event's ``type`` (:func:`pipeline.contract.kind_named`), since no
  topic says it;
- **organization binding**: the key's organization is the only one its requests may write.
  A kind with an ``organization_id`` field gets the key's when the event has none; an
  event naming another organization is rejected ``organization_mismatch`` (kinds without
  the field too, so a client's mistake is never silently dropped).

Accepted events are encoded as the producer SDK encodes them
(``orjson.dumps(event.to_wire())``) and grouped by kind, each with its position in the
request. Pure computation: no I/O, never raises for bad data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Final

import orjson

from pipeline.contract import ContractError, EventKind, Reason, kind_named, validate_event
from pipeline.http.body import BadLine
from pipeline.kinds import KINDS

__all__ = ["ORGANIZATION_MISMATCH", "Admission", "Rejected", "admit"]

ORGANIZATION_MISMATCH: Final = "organization_mismatch"
"""The reason code of an event naming an organization other than its key's."""

# Kinds whose events carry an organization (the others are not per-organization data).
_ORG_KINDS: Final = frozenset(
    spec.kind for spec in KINDS if "organization_id" in {f.name for f in fields(spec.event)}
)
# A contract detail starts with the field it is about ("tokens: must be >= 0, got -3",
# "tags.Region: must be a string"); a map key may hold any character but ":" and spaces.
_FIELD: Final = re.compile(r"([a-z_][^\s:]*):")
_NOT_FIELDS: Final = frozenset({"event", "record"})


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why one event is not accepted: a reason code, the field at fault (None when no
    single field is) and a one-line detail."""

    reason: str
    field: str | None
    detail: str


@dataclass(slots=True)
class Admission:
    """The decision on every event of a request.

    ``results[i]`` is the i-th event's: its :class:`EventKind` when accepted, else a
    :class:`Rejected`. ``encoded[kind]`` lists ``(i, bytes)`` of the accepted events of
    ``kind`` in request order.
    """

    results: list[EventKind | Rejected]
    encoded: dict[EventKind, list[tuple[int, bytes]]] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(len(v) for v in self.encoded.values())


def _field_of(detail: str) -> str | None:
    match = _FIELD.match(detail)
    if match is None or match.group(1) in _NOT_FIELDS:
        return None
    return match.group(1)


def _decide(item: object, organization_id: str, now_ms: int) -> tuple[EventKind, bytes] | Rejected:
    if type(item) is not dict:
        if isinstance(item, BadLine):
            return Rejected(Reason.MALFORMED_JSON.value, None, item.detail)
        return Rejected(Reason.NOT_AN_OBJECT.value, None, "an event must be a JSON object")
    kind = kind_named(item.get("type"))
    if kind is None:
        return Rejected(
            Reason.UNKNOWN_EVENT_TYPE.value,
            "type",
            f"type: {item.get('type')!r} is not an event kind (one of {', '.join(EventKind)})",
        )
    org = item.get("organization_id")
    if org is None:
        if kind in _ORG_KINDS:
            item["organization_id"] = organization_id
    elif org != organization_id:
        return Rejected(
            ORGANIZATION_MISMATCH,
            "organization_id",
            f"organization_id: {org!r} is not the organization of this API key",
        )
    try:
        event = validate_event(kind, item, now_ms=now_ms)
    except ContractError as exc:
        return Rejected(exc.reason.value, _field_of(exc.detail), exc.detail)
    return kind, orjson.dumps(event.to_wire())


def admit(items: list[object], *, organization_id: str, now_ms: int) -> Admission:
    """Decide every item of a request (see the module docstring); ``now_ms`` is the clock
    that ``future_timestamp`` is judged by. Items that are dicts may be modified (the
    organization filled in)."""
    admission = Admission(results=[])
    results = admission.results
    encoded = admission.encoded
    for index, item in enumerate(items):
        decided = _decide(item, organization_id, now_ms)
        if type(decided) is Rejected:
            results.append(decided)
        else:
            kind, data = decided  # type: ignore[misc]
            results.append(kind)
            bucket = encoded.get(kind)
            if bucket is None:
                bucket = encoded[kind] = []
            bucket.append((index, data))
    return admission
