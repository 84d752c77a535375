"""The monitoring event kinds: :class:`PerformanceMetric` (topic ``performance-metrics``) and
:class:`AuditEvent` (topic ``audit-events``), with their enum :class:`AuditActorType`.

They follow the conventions of :mod:`pipeline.contract.events` (the constructor checks
nothing, ``new()`` validates, ``to_wire()`` gives the wire object; units and ``*_json`` fields
as described there), which re-exports all three names and includes both classes in its
``Event`` union; import them from there or from :mod:`pipeline.contract`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

import orjson

from pipeline.contract._event_base import (
    EventKind,
    _checked,
    _dt,
    _metadata,
    _to_wire,
    _wire_common,
)

__all__ = ["AuditActorType", "AuditEvent", "PerformanceMetric"]


class AuditActorType(StrEnum):
    """Allowed values of ``audit.actor_type``."""

    USER = "user"
    SERVICE = "service"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class PerformanceMetric:
    """One measurement of a named series, aggregated per hour and series; the raw samples are
    also kept for a few days, once per event_id.

    A series is (``name``, ``service``, ``instance``, ``unit``, ``tags``). ``tags_json`` is
    the compact JSON of the ``tags`` object with its keys sorted, so equal tag sets have equal
    text. ``unit`` has no default here only because the required ``service`` follows it; the
    validator and :meth:`new` give ``""`` for a missing unit.
    """

    kind: ClassVar[EventKind] = EventKind.PERFORMANCE_METRIC

    event_id: str
    occurred_at_ms: int
    name: str
    value: float
    unit: str
    service: str
    instance: str = ""
    tags_json: str = "{}"

    @property
    def occurred_at(self) -> datetime:
        """``occurred_at_ms`` as an aware UTC datetime."""
        return _dt(self.occurred_at_ms)

    @property
    def tags(self) -> dict[str, str]:
        """``tags_json`` parsed (a new dict on every access)."""
        value: dict[str, str] = orjson.loads(self.tags_json)
        return value

    def to_wire(self) -> dict[str, object]:
        """The contract's JSON object for this event (see the module docstring)."""
        return _to_wire(self)

    @classmethod
    def new(
        cls,
        *,
        name: str,
        value: float,
        service: str,
        unit: str | None = None,
        instance: str | None = None,
        tags: Mapping[str, str] | None = None,
        event_id: str | uuid.UUID | None = None,
        occurred_at: datetime | int | None = None,
        now: datetime | None = None,
    ) -> PerformanceMetric:
        """A validated event (``unit`` and ``instance`` default to ``""``, ``tags`` to no
        tags); raises :class:`~pipeline.contract.validate.ContractError`."""
        wire, now_ms = _wire_common(cls.kind, event_id, occurred_at, now)
        wire.update(
            name=name,
            value=value,
            unit=unit,
            service=service,
            instance=instance,
            tags=None if tags is None else dict(tags),
        )
        event = _checked(cls.kind, wire, now_ms)
        assert isinstance(event, cls)
        return event


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Who did what to which entity; appended to the audit trail once per event_id and never
    changed.

    ``before_json`` / ``after_json`` are the compact JSON of the ``before`` / ``after``
    objects (the entity's state around the action), None when not sent.
    """

    kind: ClassVar[EventKind] = EventKind.AUDIT

    event_id: str
    occurred_at_ms: int
    actor: str
    actor_type: AuditActorType
    action: str
    entity_type: str
    entity_id: str
    organization_id: str | None = None
    request_id: str | None = None
    before_json: str | None = None
    after_json: str | None = None

    @property
    def occurred_at(self) -> datetime:
        """``occurred_at_ms`` as an aware UTC datetime."""
        return _dt(self.occurred_at_ms)

    @property
    def before(self) -> dict[str, Any] | None:
        """``before_json`` parsed (a new dict on every access)."""
        return _metadata(self.before_json)

    @property
    def after(self) -> dict[str, Any] | None:
        """``after_json`` parsed (a new dict on every access)."""
        return _metadata(self.after_json)

    def to_wire(self) -> dict[str, object]:
        """The contract's JSON object for this event (see the module docstring)."""
        return _to_wire(self)

    @classmethod
    def new(
        cls,
        *,
        actor: str,
        actor_type: AuditActorType | str,
        action: str,
        entity_type: str,
        entity_id: str,
        organization_id: str | None = None,
        request_id: str | None = None,
        before: Mapping[str, object] | None = None,
        after: Mapping[str, object] | None = None,
        event_id: str | uuid.UUID | None = None,
        occurred_at: datetime | int | None = None,
        now: datetime | None = None,
    ) -> AuditEvent:
        """A validated event; raises :class:`~pipeline.contract.validate.ContractError`."""
        wire, now_ms = _wire_common(cls.kind, event_id, occurred_at, now)
        wire.update(
            actor=actor,
            actor_type=actor_type,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            organization_id=organization_id,
            request_id=request_id,
            before=None if before is None else dict(before),
            after=None if after is None else dict(after),
        )
        event = _checked(cls.kind, wire, now_ms)
        assert isinstance(event, cls)
        return event
