"""What every event class shares: :class:`EventKind` and the helpers behind the properties,
``to_wire()`` and ``new()`` of :mod:`pipeline.contract.events` and
:mod:`pipeline.contract.monitoring_events`.

A module of its own so that both of those import it and neither imports the other's classes
at run time (``events`` re-exports the monitoring kinds for the ``Event`` union). Import
:class:`EventKind` from :mod:`pipeline.contract` or :mod:`pipeline.contract.events`.
"""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from pipeline.contract.events import Event

__all__ = ["EventKind"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_E8 = 100_000_000


class EventKind(StrEnum):
    """The event kinds; each has its own topic and its own JSON Schema."""

    API_CALL = "api_call"
    ANALYSIS = "analysis"
    SYSTEM_LOG = "system_log"
    PERFORMANCE_METRIC = "performance_metric"
    AUDIT = "audit"


_KINDS_BY_NAME: Final[dict[str, EventKind]] = {kind.value: kind for kind in EventKind}


def kind_named(name: object) -> EventKind | None:
    """The kind whose wire name (an event's ``type``) is ``name``; None for anything else.

    Where the kind comes from the event itself rather than its topic (``pipeline import``,
    ``pipeline http``), this picks the validator and the topic."""
    return _KINDS_BY_NAME.get(name) if isinstance(name, str) else None


def _usd(e8: int) -> Decimal:
    return Decimal(e8).scaleb(-8)


def _wire_usd(e8: int) -> float:
    return round(e8 / _E8, 8)


def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _metadata(metadata_json: str | None) -> dict[str, Any] | None:
    if metadata_json is None:
        return None
    value: dict[str, Any] = orjson.loads(metadata_json)
    return value


def _to_wire(event: Event) -> dict[str, object]:
    """``"type"`` then every field under its wire name: ``occurred_at_ms`` as ``occurred_at``,
    ``*_e8`` as ``*_usd`` (a float with 8 decimals), ``*_json`` as the object it holds
    (``metadata_json`` as ``metadata``, ``tags_json`` as ``tags``), enum members as their
    string values."""
    wire: dict[str, object] = {"type": event.kind.value}
    for f in fields(event):
        value = getattr(event, f.name)
        if f.name == "occurred_at_ms":
            wire["occurred_at"] = value
        elif f.name.endswith("_e8"):
            wire[f.name.removesuffix("_e8") + "_usd"] = _wire_usd(value)
        elif f.name.endswith("_json"):
            wire[f.name.removesuffix("_json")] = _metadata(value)
        else:
            wire[f.name] = value.value if isinstance(value, StrEnum) else value
    return wire


def _wire_common(
    kind: EventKind,
    event_id: str | uuid.UUID | None,
    occurred_at: datetime | int | None,
    now: datetime | None,
) -> tuple[dict[str, object], int]:
    """The ``type``/``event_id``/``occurred_at`` part of a wire object, and ``now_ms``."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    now_ms = (now - _EPOCH) // timedelta(milliseconds=1)
    if occurred_at is None:
        occurred_at = now_ms
    wire_time: object = (
        occurred_at.isoformat(timespec="microseconds")
        if isinstance(occurred_at, datetime)
        else occurred_at
    )
    wire_id = str(uuid.uuid4()) if event_id is None else str(event_id)
    return {"type": kind.value, "event_id": wire_id, "occurred_at": wire_time}, now_ms


def _checked(kind: EventKind, wire: dict[str, object], now_ms: int) -> Event:
    from pipeline.contract.validate import validate_event  # events <- validate import cycle

    return validate_event(kind, wire, now_ms=now_ms)
