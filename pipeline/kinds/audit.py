"""Audit events: one row per event in the append-only ``audit_trail``.

Inserted with ``ON CONFLICT DO NOTHING`` on ``event_id`` (a producer's duplicate is
stored once), which needs no UPDATE privilege: the workers' role may only insert and
read, and triggers refuse UPDATE, DELETE and TRUNCATE for every role (migration 0009).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pipeline.contract import AuditEvent, Event, EventKind
from pipeline.kinds.spec import KindSpec
from pipeline.worker.writes import EPOCH_MS, Staged, Writer

__all__ = ["AUDIT", "SPEC", "audit_rows"]

AUDIT = Staged(
    "pipeline_stage_audit_trail",
    (
        ("ms", "bigint"), ("event_id", "uuid"), ("actor", "text"), ("actor_type", "text"),
        ("action", "text"), ("entity_type", "text"), ("entity_id", "text"),
        ("org_id", "text"), ("request_id", "text"), ("before", "jsonb"), ("after", "jsonb"),
    ),
    f"""
INSERT INTO audit_trail (
    occurred_at, event_id, actor, actor_type, action, entity_type, entity_id,
    organization_id, request_id, before, after)
SELECT {EPOCH_MS.format("t.ms")}, t.event_id, t.actor, t.actor_type, t.action,
       t.entity_type, t.entity_id, t.org_id, t.request_id, t.before, t.after
FROM {{stage}} AS t
ON CONFLICT (occurred_at, event_id) DO NOTHING
""",
)  # fmt: skip


def audit_rows(events: Sequence[AuditEvent]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`AUDIT`."""
    return [
        (e.occurred_at_ms, e.event_id, e.actor, str(e.actor_type), e.action, e.entity_type,
         e.entity_id, e.organization_id, e.request_id, e.before_json, e.after_json)
        for e in events
    ]  # fmt: skip


def _prepare(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return audit_rows([e for e in events if isinstance(e, AuditEvent)])


SPEC: Final = KindSpec(
    kind=EventKind.AUDIT,
    event=AuditEvent,
    topic="audit-events",
    topic_setting="PIPELINE_TOPIC_AUDIT",
    writer=Writer("audit_trail", _prepare, AUDIT.write),
)
