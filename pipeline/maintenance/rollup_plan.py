"""The SQL of the rollup job: for each base table, which rollups to recompute, in which
order, and the statement that recomputes each (see :mod:`pipeline.maintenance.rollups` for
why recomputing whole units keeps them exact).

:data:`PLAN` maps a source (``api_usage`` or ``ai_analysis``) to its steps, in order; each
rollup is computed from the base table or from a rollup of an earlier step. A step's
statement takes one parameter, ``$1``: the units to recompute (``timestamptz[]``), the
batch's days or its hours as :attr:`Step.units` says, and returns the rows it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

API_MEASURES = (
    "request_count", "success_count", "error_count", "token_usage", "cost",
    "response_time_ms_sum", "response_time_ms_max", "latency_le_50", "latency_le_100",
    "latency_le_250", "latency_le_500", "latency_le_1000", "latency_le_2500",
    "latency_le_5000", "latency_gt_5000",
)  # fmt: skip
AI_MEASURES = (
    "analyses", "completed_count", "failed_count", "fallback_count", "cache_hit_count",
    "batch_count", "processing_attempts", "request_tokens", "response_tokens", "tokens_used",
    "cost", "processing_time_ms_sum", "processing_time_ms_count", "processing_time_ms_max",
    "queue_wait_time_ms_sum", "queue_wait_time_ms_count", "total_processing_time_ms_sum",
    "total_processing_time_ms_count",
)  # fmt: skip
API_DETAIL = ("service", "endpoint", "method", "user_id", "organization_id")
AI_DETAIL = ("organization_id", "user_id", "model_type", "model_version", "region_processed")
API_SUMMARY = ("organization_id", "service")
AI_SUMMARY = ("organization_id", "model_type")
AI_USER = ("organization_id", "user_id")
# What the per-user rollups (migration 0011) keep: enough to rank users by AI cost.
AI_USER_MEASURES = ("analyses", "tokens_used", "cost")
# What the per-organization rollups (migration 0011) keep: organization_usage_summary's.
ORG = ("organization_id",)
API_ORG_MEASURES = ("request_count", "error_count", "cost")
AI_ORG_MEASURES = ("analyses", "failed_count", "cost")


@dataclass(frozen=True)
class Step:
    """Recompute ``table`` for the batch's ``units`` with ``statement``."""

    table: str
    statement: str
    units: Literal["days", "hours"]


def _sums(alias: str, measures: tuple[str, ...]) -> str:
    """``sum(a.m) AS m`` for each measure (``max`` for the ``*_max`` ones)."""
    return ",\n       ".join(
        f"{'max' if m.endswith('_max') else 'sum'}({alias}.{m}) AS {m}" for m in measures
    )


def _replace(table: str, keys: tuple[str, ...], measures: tuple[str, ...], fresh: str) -> str:
    """One statement that makes the rows of ``table`` for the units in ``$1`` equal to
    ``fresh`` (their aggregate from the level below): it deletes the rows whose key is no
    longer in ``fresh``, inserts new keys and updates only rows whose measures changed.
    Rows that did not change are not written, so refreshing today every few minutes does
    not rewrite (and bloat) all of today's rows. Keys are compared as ``ROW(...)::text``,
    which tells NULL from '' and can be hashed. Returns the number of rows written."""
    columns = ", ".join(("time_window", *keys, *measures))
    key_row = ", ".join(keys)
    return f"""
WITH fresh AS MATERIALIZED ({fresh}),
gone AS (
    DELETE FROM {table} r
    WHERE r.time_window = ANY($1::timestamptz[])
      AND NOT EXISTS (SELECT 1 FROM fresh f
                      WHERE f.time_window = r.time_window
                        AND ROW({", ".join(f"f.{k}" for k in keys)})::text
                            = ROW({", ".join(f"r.{k}" for k in keys)})::text)
    RETURNING 1
), written AS (
    INSERT INTO {table} AS r ({columns})
    SELECT {columns} FROM fresh
    ON CONFLICT (time_window, {key_row}) DO UPDATE SET
        {", ".join(f"{m} = excluded.{m}" for m in measures)}
    WHERE ({", ".join(f"r.{m}" for m in measures)})
          IS DISTINCT FROM ({", ".join(f"excluded.{m}" for m in measures)})
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written)
"""


def _daily(table: str, source: str, keys: tuple[str, ...], measures: tuple[str, ...]) -> Step:
    """``table``'s days from the hourly rows of ``source`` (a table keyed by hour)."""
    key_list = ", ".join(f"u.{k}" for k in keys)
    fresh = f"""
        SELECT d.day AS time_window, {key_list}, {_sums("u", measures)}
        FROM unnest($1::timestamptz[]) AS d(day)
        JOIN {source} u
          ON u.time_window >= d.day AND u.time_window < d.day + interval '24 hours'
        GROUP BY d.day, {key_list}"""
    return Step(table, _replace(table, keys, measures, fresh), "days")


def _hourly(table: str, source: str, keys: tuple[str, ...], measures: tuple[str, ...]) -> Step:
    """``table``'s hours from the finer hourly rows of ``source``."""
    key_list = ", ".join(f"u.{k}" for k in keys)
    fresh = f"""
        SELECT u.time_window, {key_list}, {_sums("u", measures)}
        FROM {source} u
        WHERE u.time_window = ANY($1::timestamptz[])
        GROUP BY u.time_window, {key_list}"""
    return Step(table, _replace(table, keys, measures, fresh), "hours")


def _hourly_from_analyses() -> Step:
    """``ai_analysis_hourly``'s hours from the raw analyses (one fact row per analysis)."""
    key_list = ", ".join(f"f.{k}" for k in AI_DETAIL)
    fresh = f"""
        SELECT h.hour AS time_window, {key_list}, {_sums("f", AI_MEASURES)}
        FROM unnest($1::timestamptz[]) AS h(hour)
        CROSS JOIN LATERAL ai_analysis_as_facts(h.hour, h.hour + interval '1 hour') f
        GROUP BY h.hour, {key_list}"""
    return Step(
        "ai_analysis_hourly", _replace("ai_analysis_hourly", AI_DETAIL, AI_MEASURES, fresh), "hours"
    )


def _monthly(table: str, source: str, keys: tuple[str, ...], measures: tuple[str, ...]) -> Step:
    """``table``'s months (``time_window`` = the UTC month's start) holding the batch's days,
    from the daily rows of ``source``: the whole month is recomputed, so the result does
    not depend on which of its days the batch holds."""
    months = (
        "ARRAY(SELECT DISTINCT date_trunc('month', d, 'UTC') FROM unnest($1::timestamptz[]) AS d)"
    )
    key_list = ", ".join(f"u.{k}" for k in keys)
    fresh = f"""
        SELECT m.month AS time_window, {key_list}, {_sums("u", measures)}
        FROM unnest({months}) AS m(month)
        JOIN {source} u
          ON u.time_window >= m.month
         AND u.time_window < (m.month AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC'
        GROUP BY m.month, {key_list}"""
    statement = _replace(table, keys, measures, fresh).replace(
        "r.time_window = ANY($1::timestamptz[])", f"r.time_window = ANY({months})"
    )
    return Step(table, statement, "days")


PLAN: dict[str, tuple[Step, ...]] = {
    "api_usage": (
        _daily("api_usage_daily", "api_usage", API_DETAIL, API_MEASURES),
        _hourly("api_usage_summary_hourly", "api_usage", API_SUMMARY, API_MEASURES),
        _daily("api_usage_summary_daily", "api_usage_summary_hourly", API_SUMMARY, API_MEASURES),
        _hourly("api_usage_org_hourly", "api_usage_summary_hourly", ORG, API_ORG_MEASURES),
        _daily("api_usage_org_daily", "api_usage_org_hourly", ORG, API_ORG_MEASURES),
    ),
    "ai_analysis": (
        _hourly_from_analyses(),
        _daily("ai_analysis_daily", "ai_analysis_hourly", AI_DETAIL, AI_MEASURES),
        _hourly("ai_analysis_summary_hourly", "ai_analysis_hourly", AI_SUMMARY, AI_MEASURES),
        _daily("ai_analysis_summary_daily", "ai_analysis_summary_hourly", AI_SUMMARY, AI_MEASURES),
        _hourly("ai_analysis_user_hourly", "ai_analysis_hourly", AI_USER, AI_USER_MEASURES),
        _daily("ai_analysis_user_daily", "ai_analysis_user_hourly", AI_USER, AI_USER_MEASURES),
        _monthly("ai_analysis_user_monthly", "ai_analysis_user_daily", AI_USER, AI_USER_MEASURES),
        _hourly("ai_analysis_org_hourly", "ai_analysis_summary_hourly", ORG, AI_ORG_MEASURES),
        _daily("ai_analysis_org_daily", "ai_analysis_org_hourly", ORG, AI_ORG_MEASURES),
    ),
}
