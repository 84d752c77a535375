"""Canned analyst reports: the SQL behind ``pipeline query`` and how its rows are printed.

Each :class:`Report` is one statement over the analyst functions of migration 0005, with
four parameters: ``$1``/``$2`` the half-open UTC range ``[start, end)``, ``$3`` an
organization (``NULL`` = every organization the session may see) and ``$4`` a row limit
(``NULL`` = the report's own). The statements only read, so they run on a read replica.

Row-level security decides what a session sees: :func:`bind_organization` binds the session
to an organization (``set_analyst_organization``) and refuses, with
:class:`AnalyticsError`, a session that row-level security would leave empty (an analyst
login not allowed to use that organization, or an unbound analyst), so that an empty
report always means "no data", never "not allowed".

Nothing here prints: ``pipeline/cli/query.py`` renders a :class:`ReportResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pipeline.errors import PipelineError, raised_as


class AnalyticsError(PipelineError):
    """A report cannot be run as asked (bad range, missing organization, not allowed)."""


@dataclass(frozen=True)
class Report:
    """A canned report: ``sql`` takes ($1 start, $2 end, $3 organization, $4 limit)."""

    name: str
    description: str
    sql: str
    default_days: int = 7
    needs_organization: bool = False


@dataclass(frozen=True)
class ReportResult:
    """Column names and rows of a report, in the order the SQL returned them."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def _report(*args: Any, **kwargs: Any) -> tuple[str, Report]:
    report = Report(*args, **kwargs)
    return report.name, report


REPORTS: dict[str, Report] = dict(
    [
        _report(
            "usage-by-service-hour",
            "API requests, errors, latency, tokens and cost per service and UTC hour",
            "SELECT * FROM api_usage_by_service_hour($1, $2, $3) LIMIT $4",
            default_days=1,
        ),
        _report(
            "error-rates",
            "API requests, error rate and latency (avg, p50/p95/p99 estimates) per service",
            "SELECT * FROM service_error_rates($1, $2, $3) LIMIT $4",
        ),
        _report(
            "cost-by-model",
            "AI analyses, tokens and cost per model, with each model's share of the cost",
            "SELECT * FROM ai_cost_by_model($1, $2, $3) LIMIT $4",
        ),
        _report(
            "top-users",
            "the users with the highest AI cost (default 10)",
            "SELECT * FROM top_users_by_ai_cost($1, $2, coalesce($4, 10)::int, $3)",
        ),
        _report(
            "cache-hit-rate",
            "share of AI analyses served from cache, per model and in total",
            "SELECT * FROM ai_cache_hit_rate($1, $2, $3) LIMIT $4",
        ),
        _report(
            "org-usage",
            "per organization: API requests, errors and cost, AI analyses and cost, total",
            "SELECT * FROM organization_usage_summary($1, $2) "
            "WHERE $3::text IS NULL OR organization_id = $3 LIMIT $4",
        ),
        _report(
            "org-ai-usage",
            "one organization's AI usage per model and version: cost, failures, cache hits",
            "SELECT * FROM organization_ai_usage($3, $1, $2) LIMIT $4",
            needs_organization=True,
        ),
        _report(
            "org-api-usage",
            "one organization's API usage per service: requests, errors, cost, latency",
            "SELECT * FROM organization_api_usage($3, $1, $2) LIMIT $4",
            needs_organization=True,
        ),
    ]
)


def date_range(
    first: date | None, last: date | None, *, default_days: int, today: date
) -> tuple[datetime, datetime]:
    """The UTC range ``[first 00:00, last + 1 day 00:00)`` covering whole days, both
    inclusive. ``last`` defaults to ``today``, ``first`` to ``default_days`` days ending
    with ``last``. Raises :class:`AnalyticsError` if ``first`` is after ``last``."""
    end_day = last or today
    start_day = first or end_day - timedelta(days=default_days - 1)
    if start_day > end_day:
        raise AnalyticsError(f"--from {start_day} is after --to {end_day}")
    return (
        datetime.combine(start_day, time(), tzinfo=UTC),
        datetime.combine(end_day + timedelta(days=1), time(), tzinfo=UTC),
    )


_BIND = """
SELECT set_analyst_organization($1) AS bound,
       NOT r.rolsuper AND NOT r.rolbypassrls
       AND pg_has_role(current_user, 'pipeline_analyst', 'USAGE')
       AND NOT pg_has_role(current_user, 'pipeline_analyst_all', 'USAGE') AS restricted
FROM pg_roles r
WHERE r.rolname = current_user
"""

_CURRENT = """
SELECT analyst_organization() AS bound,
       NOT r.rolsuper AND NOT r.rolbypassrls
       AND pg_has_role(current_user, 'pipeline_analyst', 'USAGE')
       AND NOT pg_has_role(current_user, 'pipeline_analyst_all', 'USAGE') AS restricted
FROM pg_roles r
WHERE r.rolname = current_user
"""


async def bind_organization(conn: Any, organization: str | None) -> str | None:
    """Bind the session to ``organization`` (or keep its current binding when ``None``);
    return the organization the session is bound to, if any.

    Raises :class:`AnalyticsError` when the session is an organization-bound analyst
    (``pipeline_analyst`` without ``pipeline_analyst_all``) that may not use
    ``organization`` or is bound to none: its reports would be empty.
    """
    try:
        if organization is not None:
            row = await conn.fetchrow(_BIND, organization)
        else:
            row = await conn.fetchrow(_CURRENT)
    except Exception as exc:
        raise raised_as(exc) from exc
    bound: str | None = row["bound"] if row else None
    if row is not None and row["restricted"] and bound is None:
        if organization is None:
            raise AnalyticsError(
                "this login is an organization-bound analyst: give --organization ORG"
            )
        raise AnalyticsError(
            f"this login may not read organization {organization!r}: an administrator "
            "adds it to analyst_scopes (see docs/analysts.md)"
        )
    return bound


async def run_report(
    conn: Any,
    report: Report,
    *,
    start: datetime,
    end: datetime,
    organization: str | None = None,
    limit: int | None = None,
) -> ReportResult:
    """Run ``report`` over ``[start, end)`` and return its rows.

    Raises :class:`AnalyticsError` if the report needs an organization and none is given
    or ``limit`` is not positive, and a classified ``PipelineError`` for database errors.
    """
    if report.needs_organization and organization is None:
        raise AnalyticsError(f"report {report.name} needs --organization ORG")
    if limit is not None and limit < 1:
        raise AnalyticsError(f"--limit must be at least 1, got {limit}")
    try:
        statement = await conn.prepare(report.sql)
        records = await statement.fetch(start, end, organization, limit)
        columns = tuple(a.name for a in statement.get_attributes())
    except Exception as exc:
        raise raised_as(exc) from exc
    return ReportResult(columns, tuple(tuple(r.values()) for r in records))
