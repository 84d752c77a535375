"""The event kinds as typed, immutable Python objects.

Each class is both what :func:`pipeline.contract.validate.decode_record` returns for a valid
event and what a Python service builds to produce one:

- The dataclass constructor stores exactly what it is given and checks nothing (it is on the
  worker's hot path). Build events for producing with the ``new()`` classmethods instead:
  they fill ``event_id`` (a random UUID) and ``occurred_at`` (now), apply the contract's
  defaults and run the validator, raising :class:`~pipeline.contract.validate.ContractError`.
- ``to_wire()`` returns the JSON object of the wire contract (``occurred_at`` as integer epoch
  milliseconds, ``"type"`` included); ``orjson.dumps(event.to_wire())`` is a valid Kafka
  record value, and ``validate_event(kind, event.to_wire(), now_ms=...)`` gives back an equal
  object.

Units are in the names: ``_ms`` milliseconds, ``_e8`` integer multiples of 1e-8 USD (money is
carried as integers so that sums are exact; the ``*_usd`` properties give a ``Decimal``).
Every ``*_json`` field holds the compact JSON text of the wire field without the suffix
(``metadata_json`` of ``metadata``, ``tags_json`` of ``tags``, ``before_json`` of ``before``),
ready for a ``jsonb`` column.

This module defines :class:`ApiCall`, :class:`Analysis`, :class:`SystemLog`, their enums and
the ``Event`` union. The monitoring kinds (:class:`PerformanceMetric`, :class:`AuditEvent`,
:class:`AuditActorType`) are defined in :mod:`pipeline.contract.monitoring_events`, and
:class:`EventKind` with the helpers every class shares in :mod:`pipeline.contract._event_base`;
all of them are re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, TypeAlias

from pipeline.contract._event_base import (
    EventKind,
    _checked,
    _dt,
    _metadata,
    _to_wire,
    _usd,
    _wire_common,
)
from pipeline.contract.monitoring_events import AuditActorType, AuditEvent, PerformanceMetric

__all__ = [
    "Analysis",
    "AnalysisStatus",
    "ApiCall",
    "AuditActorType",
    "AuditEvent",
    "Event",
    "EventKind",
    "LogLevel",
    "PerformanceMetric",
    "SystemLog",
]


class AnalysisStatus(StrEnum):
    """Allowed values of ``analysis.status``."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    FALLBACK = "fallback"


class LogLevel(StrEnum):
    """Allowed values of ``system_log.level``."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One API call, counted into hourly usage buckets (topic ``api-calls``)."""

    kind: ClassVar[EventKind] = EventKind.API_CALL

    event_id: str
    occurred_at_ms: int
    service: str
    endpoint: str
    method: str
    success: bool
    response_time_ms: float
    user_id: str | None = None
    organization_id: str | None = None
    status_code: int | None = None
    tokens: int = 0
    cost_e8: int = 0

    @property
    def cost_usd(self) -> Decimal:
        """``cost_e8`` as an exact ``Decimal`` amount of USD."""
        return _usd(self.cost_e8)

    @property
    def occurred_at(self) -> datetime:
        """``occurred_at_ms`` as an aware UTC datetime."""
        return _dt(self.occurred_at_ms)

    def to_wire(self) -> dict[str, object]:
        """The contract's JSON object for this event (see the module docstring)."""
        return _to_wire(self)

    @classmethod
    def new(
        cls,
        *,
        service: str,
        endpoint: str,
        method: str,
        success: bool,
        response_time_ms: float,
        user_id: str | None = None,
        organization_id: str | None = None,
        status_code: int | None = None,
        tokens: int = 0,
        cost_usd: float | Decimal = 0,
        event_id: str | uuid.UUID | None = None,
        occurred_at: datetime | int | None = None,
        now: datetime | None = None,
    ) -> ApiCall:
        """A validated event; ``occurred_at`` defaults to ``now`` (default: the clock).

        Raises :class:`~pipeline.contract.validate.ContractError` if a value breaks the
        contract.
        """
        wire, now_ms = _wire_common(cls.kind, event_id, occurred_at, now)
        wire.update(
            service=service,
            endpoint=endpoint,
            method=method,
            success=success,
            response_time_ms=response_time_ms,
            user_id=user_id,
            organization_id=organization_id,
            status_code=status_code,
            tokens=tokens,
            cost_usd=float(cost_usd) if isinstance(cost_usd, Decimal) else cost_usd,
        )
        event = _checked(cls.kind, wire, now_ms)
        assert isinstance(event, cls)
        return event


@dataclass(frozen=True, slots=True)
class Analysis:
    """One AI analysis state change (topic ``analysis-events``); stored once per event_id and
    folded into the current state of its ``analysis_id`` (the event_id when not sent)."""

    kind: ClassVar[EventKind] = EventKind.ANALYSIS

    event_id: str
    occurred_at_ms: int
    model_type: str
    status: AnalysisStatus
    user_id: str | None = None
    organization_id: str | None = None
    entry_id: str | None = None
    model_version: str | None = None
    analysis_version: str | None = None
    request_tokens: int = 0
    response_tokens: int = 0
    tokens_used: int = 0
    api_cost_e8: int = 0
    processing_time_ms: float | None = None
    queue_wait_time_ms: float | None = None
    total_processing_time_ms: float | None = None
    caching_used: bool = False
    batch_processed: bool = False
    fallback_used: bool = False
    region_processed: str | None = None
    processing_attempts: int = 1
    error_type: str | None = None
    metadata_json: str | None = None
    analysis_id: str | None = None
    actor: str | None = None

    @property
    def api_cost_usd(self) -> Decimal:
        """``api_cost_e8`` as an exact ``Decimal`` amount of USD."""
        return _usd(self.api_cost_e8)

    @property
    def occurred_at(self) -> datetime:
        """``occurred_at_ms`` as an aware UTC datetime."""
        return _dt(self.occurred_at_ms)

    @property
    def metadata(self) -> dict[str, Any] | None:
        """``metadata_json`` parsed (a new dict on every access)."""
        return _metadata(self.metadata_json)

    def to_wire(self) -> dict[str, object]:
        """The contract's JSON object for this event (see the module docstring)."""
        return _to_wire(self)

    @classmethod
    def new(
        cls,
        *,
        model_type: str,
        status: AnalysisStatus | str,
        user_id: str | None = None,
        organization_id: str | None = None,
        entry_id: str | None = None,
        model_version: str | None = None,
        analysis_version: str | None = None,
        request_tokens: int = 0,
        response_tokens: int = 0,
        tokens_used: int | None = None,
        api_cost_usd: float | Decimal = 0,
        processing_time_ms: float | None = None,
        queue_wait_time_ms: float | None = None,
        total_processing_time_ms: float | None = None,
        caching_used: bool = False,
        batch_processed: bool = False,
        fallback_used: bool = False,
        region_processed: str | None = None,
        processing_attempts: int = 1,
        error_type: str | None = None,
        metadata: Mapping[str, object] | None = None,
        analysis_id: str | None = None,
        actor: str | None = None,
        event_id: str | uuid.UUID | None = None,
        occurred_at: datetime | int | None = None,
        now: datetime | None = None,
    ) -> Analysis:
        """A validated event with the contract's defaults (``tokens_used`` = request +
        response tokens, ``total_processing_time_ms`` = processing + queue wait when both are
        given, ``analysis_id`` = ``event_id``). Pass the same ``analysis_id`` to every state
        change of one analysis. Raises :class:`~pipeline.contract.validate.ContractError`."""
        wire, now_ms = _wire_common(cls.kind, event_id, occurred_at, now)
        wire.update(
            model_type=model_type,
            status=status,
            user_id=user_id,
            organization_id=organization_id,
            entry_id=entry_id,
            model_version=model_version,
            analysis_version=analysis_version,
            request_tokens=request_tokens,
            response_tokens=response_tokens,
            tokens_used=tokens_used,
            api_cost_usd=float(api_cost_usd) if isinstance(api_cost_usd, Decimal) else api_cost_usd,
            processing_time_ms=processing_time_ms,
            queue_wait_time_ms=queue_wait_time_ms,
            total_processing_time_ms=total_processing_time_ms,
            caching_used=caching_used,
            batch_processed=batch_processed,
            fallback_used=fallback_used,
            region_processed=region_processed,
            processing_attempts=processing_attempts,
            error_type=error_type,
            metadata=None if metadata is None else dict(metadata),
            analysis_id=analysis_id,
            actor=actor,
        )
        event = _checked(cls.kind, wire, now_ms)
        assert isinstance(event, cls)
        return event


@dataclass(frozen=True, slots=True)
class SystemLog:
    """One log line from a service (topic ``system-logs``); stored once per event_id."""

    kind: ClassVar[EventKind] = EventKind.SYSTEM_LOG

    event_id: str
    occurred_at_ms: int
    level: LogLevel
    service: str
    message: str
    metadata_json: str | None = None
    user_id: str | None = None
    session_id: str | None = None

    @property
    def occurred_at(self) -> datetime:
        """``occurred_at_ms`` as an aware UTC datetime."""
        return _dt(self.occurred_at_ms)

    @property
    def metadata(self) -> dict[str, Any] | None:
        """``metadata_json`` parsed (a new dict on every access)."""
        return _metadata(self.metadata_json)

    def to_wire(self) -> dict[str, object]:
        """The contract's JSON object for this event (see the module docstring)."""
        return _to_wire(self)

    @classmethod
    def new(
        cls,
        *,
        level: LogLevel | str,
        service: str,
        message: str,
        metadata: Mapping[str, object] | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        event_id: str | uuid.UUID | None = None,
        occurred_at: datetime | int | None = None,
        now: datetime | None = None,
    ) -> SystemLog:
        """A validated event; raises :class:`~pipeline.contract.validate.ContractError`."""
        wire, now_ms = _wire_common(cls.kind, event_id, occurred_at, now)
        wire.update(
            level=level,
            service=service,
            message=message,
            metadata=None if metadata is None else dict(metadata),
            user_id=user_id,
            session_id=session_id,
        )
        event = _checked(cls.kind, wire, now_ms)
        assert isinstance(event, cls)
        return event


Event: TypeAlias = ApiCall | Analysis | SystemLog | PerformanceMetric | AuditEvent
"""Any validated event."""
