"""The event wire contract: what producers send and what the worker accepts.

Public surface (see ``docs/events.md`` for the contract itself):

- :class:`EventKind`, :class:`ApiCall`, :class:`Analysis`, :class:`SystemLog`,
  :class:`PerformanceMetric`, :class:`AuditEvent`, ``Event``: typed events (validated output
  of the worker, and constructors for Python producers); :class:`AnalysisStatus`,
  :class:`LogLevel` and :class:`AuditActorType` are their enums.
- :func:`decode_record`: the worker's hot path, record bytes -> valid events + rejects.
- :func:`validate_event`: validate one decoded object, raising :class:`ContractError`.
- :func:`kind_named`: the kind an event's ``type`` names (where no topic says it).
- :class:`Reason` and ``REASON_DESCRIPTIONS``: the stable dead-letter reason codes.
- :func:`load_schema`: the packaged JSON Schema of a kind.

Reading guide, one job per module:

- ``events``: the event classes of ``api_call``, ``analysis`` and ``system_log``, the
  ``Event`` union, and re-exports of everything below that it does not define.
- ``monitoring_events``: the classes of ``performance_metric`` and ``audit``.
- ``_event_base``: :class:`EventKind` and the helpers behind ``to_wire()`` and ``new()``.
- ``validate``: :func:`decode_record`, :func:`validate_event` and the validators of the first
  three kinds (the hot path).
- ``_validate_monitoring``: the validators of ``performance_metric`` and ``audit``.
- ``_validate_common``: what all validators share (string sharing, slot setters).
- ``_checks``: the complete rule and error for each field type.
- ``reasons``: the reason codes; ``schemas``: the JSON Schemas; ``bench``: a micro-benchmark.

Importing this package does no I/O.
"""

from pipeline.contract._event_base import kind_named
from pipeline.contract.events import (
    Analysis,
    AnalysisStatus,
    ApiCall,
    AuditActorType,
    AuditEvent,
    Event,
    EventKind,
    LogLevel,
    PerformanceMetric,
    SystemLog,
)
from pipeline.contract.reasons import REASON_DESCRIPTIONS, VALIDATOR_REASONS, Reason
from pipeline.contract.schemas import load_schema
from pipeline.contract.validate import ContractError, Invalid, decode_record, validate_event

__all__ = [
    "REASON_DESCRIPTIONS",
    "VALIDATOR_REASONS",
    "Analysis",
    "AnalysisStatus",
    "ApiCall",
    "AuditActorType",
    "AuditEvent",
    "ContractError",
    "Event",
    "EventKind",
    "Invalid",
    "LogLevel",
    "PerformanceMetric",
    "Reason",
    "SystemLog",
    "decode_record",
    "kind_named",
    "load_schema",
    "validate_event",
]
