"""The analyst layer: canned reports over the SQL functions of migrations 0003-0006.

The SQL (views, rollups, functions, roles, row-level security) lives in
``sql/migrations``; :mod:`pipeline.analytics.reports` names the reports behind
``pipeline query`` and runs them; :mod:`pipeline.analytics.routing` chooses the server
they run on (a healthy read replica, else the primary). See docs/analysts.md.
"""

from pipeline.analytics.reports import (
    REPORTS,
    AnalyticsError,
    Report,
    ReportResult,
    bind_organization,
    date_range,
    run_report,
)

__all__ = [
    "REPORTS",
    "AnalyticsError",
    "Report",
    "ReportResult",
    "bind_organization",
    "date_range",
    "run_report",
]
