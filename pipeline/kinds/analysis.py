"""AI analyses: one row per state change in ``ai_analysis``, and the current state of each
analysis in ``analysis_lifecycle``.

Both statements read the same staged rows inside the flush transaction. The lifecycle
upsert merges each analysis's changes into its ``modification_history`` with the SQL
function ``analysis_history_merge`` (a set union by ``event_id``, sorted), and a trigger
derives the current status, ``created_by`` and ``modified_by`` from the merged history, so
the row is the same whatever order and however often the changes arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pipeline.contract import Analysis, Event, EventKind
from pipeline.kinds.spec import KindSpec
from pipeline.worker.writes import EPOCH_MS, Staged, Writer

__all__ = ["ANALYSES", "LIFECYCLE", "SPEC", "analysis_rows", "insert_analyses"]

# Every change of the batch is merged into its analysis's history. The SELECT builds each
# analysis's history of this batch already normalised (one entry per event_id, sorted by
# (at_ms, status rank, event_id) as analysis_history_merge sorts), so a new analysis costs
# no merge; an existing one merges in the ON CONFLICT branch. The trigger
# analysis_lifecycle_derive (migration 0009) then sets status, status_at, first_seen_at,
# change_count, model_type, created_by and modified_by from the ends of the history: the
# values given for them here are only placeholders for the NOT NULL columns. Grouped and
# ordered by analysis_id: one row per analysis per statement, locked in key order (no
# deadlocks between sub-flushes).
LIFECYCLE = f"""
INSERT INTO analysis_lifecycle AS l (
    analysis_id, organization_id, user_id, model_type, status, status_at, first_seen_at,
    change_count, modification_history)
SELECT d.analysis_id, min(d.org_id), min(d.user_id), min(d.model_type), min(d.status),
       {EPOCH_MS.format("min(d.ms)")}, {EPOCH_MS.format("min(d.ms)")}, count(*),
       jsonb_agg(d.entry ORDER BY d.ms, analysis_status_rank(d.status),
                                  d.event_id::text COLLATE "C")
FROM (SELECT DISTINCT ON (e.analysis_id, e.event_id) e.*
      FROM (SELECT t.analysis_id, t.event_id, t.ms, t.status, t.org_id, t.user_id,
                   t.model_type,
                   jsonb_build_object('event_id', t.event_id, 'at_ms', t.ms,
                                      'status', t.status, 'actor', t.actor,
                                      'model_type', t.model_type) AS entry
            FROM {{stage}} AS t) AS e
      -- The copy analysis_history_merge would keep of a repeated event_id.
      ORDER BY e.analysis_id, e.event_id, e.ms, analysis_status_rank(e.status),
               e.entry) AS d
GROUP BY d.analysis_id
ORDER BY d.analysis_id
ON CONFLICT (analysis_id) DO UPDATE SET
    modification_history = analysis_history_merge(l.modification_history,
                                                  excluded.modification_history),
    organization_id = coalesce(l.organization_id, excluded.organization_id),
    user_id = coalesce(l.user_id, excluded.user_id),
    updated_at = now()
"""

ANALYSES = Staged(
    "pipeline_stage_ai_analysis",
    (
        ("ms", "bigint"), ("event_id", "uuid"), ("user_id", "text"), ("org_id", "text"),
        ("entry_id", "text"), ("status", "text"), ("model_type", "text"),
        ("model_version", "text"), ("analysis_version", "text"), ("request_tokens", "int"),
        ("response_tokens", "int"), ("tokens_used", "bigint"), ("cost_e8", "bigint"),
        ("processing_ms", "float8"), ("queue_ms", "float8"), ("total_ms", "float8"),
        ("caching", "bool"), ("batch", "bool"), ("region", "text"), ("attempts", "int"),
        ("fallback", "bool"), ("error_type", "text"), ("metadata", "jsonb"),
        ("analysis_id", "text"), ("actor", "text"),
    ),
    f"""
INSERT INTO ai_analysis (
    created_at, event_id, user_id, organization_id, entry_id, status, model_type,
    model_version, analysis_version, request_tokens, response_tokens, tokens_used, api_cost,
    processing_time_ms, queue_wait_time_ms, total_processing_time_ms, caching_used,
    batch_processed, region_processed, processing_attempts, fallback_used, error_type,
    metadata, analysis_id)
SELECT {EPOCH_MS.format("t.ms")}, t.event_id, t.user_id, t.org_id, t.entry_id, t.status,
       t.model_type, t.model_version, t.analysis_version, t.request_tokens,
       t.response_tokens, t.tokens_used, t.cost_e8 * 0.00000001, t.processing_ms,
       t.queue_ms, t.total_ms, t.caching, t.batch, t.region, t.attempts, t.fallback,
       t.error_type, t.metadata, t.analysis_id
FROM {{stage}} AS t
ON CONFLICT (created_at, event_id) DO NOTHING
""",
    then=(LIFECYCLE,),
)  # fmt: skip


def analysis_rows(events: Sequence[Analysis]) -> list[tuple[Any, ...]]:
    """The staged rows of :data:`ANALYSES`."""
    return [
        (
            e.occurred_at_ms, e.event_id, e.user_id, e.organization_id, e.entry_id,
            str(e.status), e.model_type, e.model_version, e.analysis_version,
            e.request_tokens, e.response_tokens, e.tokens_used, e.api_cost_e8,
            e.processing_time_ms, e.queue_wait_time_ms, e.total_processing_time_ms,
            e.caching_used, e.batch_processed, e.region_processed, e.processing_attempts,
            e.fallback_used, e.error_type, e.metadata_json, e.analysis_id or e.event_id,
            e.actor,
        )
        for e in events
    ]  # fmt: skip


async def insert_analyses(conn: Any, events: Sequence[Analysis]) -> int:
    """Insert analysis rows and merge them into the lifecycle table; return how many rows
    were new in ai_analysis (duplicates are ignored)."""
    return await ANALYSES.write(conn, analysis_rows(events))


def _prepare(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    return analysis_rows([e for e in events if isinstance(e, Analysis)])


SPEC: Final = KindSpec(
    kind=EventKind.ANALYSIS,
    event=Analysis,
    topic="analysis-events",
    topic_setting="PIPELINE_TOPIC_ANALYSES",
    writer=Writer("ai_analysis", _prepare, ANALYSES.write),
)
