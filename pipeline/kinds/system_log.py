"""Application logs: one row per event in ``system_logs``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pipeline.contract import Event, EventKind, SystemLog
from pipeline.kinds.spec import KindSpec
from pipeline.worker.writes import EPOCH_MS, Staged, Writer

__all__ = ["LOGS", "SPEC", "insert_logs", "log_rows"]

LOGS = Staged(
    "pipeline_stage_system_logs",
    (
        ("ms", "bigint"), ("event_id", "uuid"), ("level", "text"), ("service", "text"),
        ("message", "text"), ("metadata", "jsonb"), ("user_id", "text"),
        ("session_id", "text"),
    ),
    f"""
INSERT INTO system_logs (
    logged_at, event_id, level, service, message, metadata, user_id, session_id)
SELECT {EPOCH_MS.format("t.ms")}, t.event_id, t.level, t.service, t.message, t.metadata,
       t.user_id, t.session_id
FROM {{stage}} AS t
ON CONFLICT (logged_at, event_id) DO NOTHING
""",
)  # fmt: skip


def log_rows(events: Sequence[SystemLog]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`LOGS`."""
    return [
        (e.occurred_at_ms, e.event_id, str(e.level), e.service, e.message, e.metadata_json,
         e.user_id, e.session_id)
        for e in events
    ]  # fmt: skip


async def insert_logs(conn: Any, events: Sequence[SystemLog]) -> int:
    """Insert log rows; return how many were new (duplicates are ignored)."""
    return await LOGS.write(conn, log_rows(events))


def _prepare(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return log_rows([e for e in events if isinstance(e, SystemLog)])


SPEC: Final = KindSpec(
    kind=EventKind.SYSTEM_LOG,
    event=SystemLog,
    topic="system-logs",
    topic_setting="PIPELINE_TOPIC_LOGS",
    writer=Writer("system_logs", _prepare, LOGS.write),
)
