"""``pipeline query REPORT``: canned analyst reports as a table, CSV or JSON.

The reports are :data:`pipeline.analytics.reports.REPORTS`; this module parses the
options, opens one read-only session (a read replica is fine: ``--database-url``), binds
it to ``--organization`` and prints the rows. Dates are whole UTC days, both inclusive.

Rendering is pure (:func:`render`): ``table`` rounds floats for reading, ``csv`` keeps
every value exactly as PostgreSQL returned it, ``json`` is an array of objects whose USD
amounts (``numeric``) are strings so that no digit is lost, timestamps ISO 8601.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pipeline.analytics.reports import (
    REPORTS,
    AnalyticsError,
    ReportResult,
    bind_organization,
    date_range,
    run_report,
)
from pipeline.cli._common import format_table, run_with_connection
from pipeline.config import Config, DatabaseConfig

FORMATS = ("table", "csv", "json")


def register(commands: Any) -> None:
    listing = "\n".join(f"  {name:22} {r.description}" for name, r in REPORTS.items())
    parser = commands.add_parser(
        "query",
        help="run a canned analyst report (cost, usage, reliability)",
        description=(
            "Run a canned report over the analyst functions (docs/analysts.md).\n"
            "Read-only: --database-url may point at a read replica. Row-level security\n"
            "applies to the login: an organization-bound analyst must give --organization.\n"
            "Dates are whole UTC days; --to is included."
        ),
        epilog=f"reports:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("report", choices=list(REPORTS), metavar="REPORT", help="see below")
    parser.add_argument(
        "--from",
        dest="first",
        type=_date,
        metavar="DATE",
        help="first UTC day, YYYY-MM-DD (default: the report's usual span before --to)",
    )
    parser.add_argument(
        "--to", dest="last", type=_date, metavar="DATE", help="last UTC day, inclusive (today)"
    )
    parser.add_argument("--organization", metavar="ORG", help="only this organization")
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL to read from (default: ANALYTICS_DATABASE_URL, else DATABASE_URL)",
    )
    parser.set_defaults(handler=_query)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _database(args: argparse.Namespace, config: Config) -> DatabaseConfig:
    """--database-url, else ANALYTICS_DATABASE_URL, else the configured database."""
    if args.database_url:
        return DatabaseConfig(url=args.database_url)
    return config.analytics_database or config.require_database()


def _query(args: argparse.Namespace, config: Config) -> int:
    report = REPORTS[args.report]
    start, end = date_range(
        args.first, args.last, default_days=report.default_days, today=datetime.now(UTC).date()
    )

    async def work(conn: Any) -> ReportResult:
        await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        await bind_organization(conn, args.organization)
        return await run_report(
            conn, report, start=start, end=end, organization=args.organization, limit=args.limit
        )

    result = run_with_connection(_database(args, config), work, application_name="pipeline-query")
    print(render(result, args.format), end="" if args.format == "csv" else "\n")
    return 0


def render(result: ReportResult, fmt: str) -> str:
    """The rows of ``result`` as ``table``, ``csv`` or ``json`` text."""
    if fmt == "table":
        if not result.rows:
            return "(no rows)"
        return format_table(result.columns, [_for_table(row) for row in result.rows])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_text(v) for v in row] for row in result.rows)
        return out.getvalue()
    if fmt == "json":
        objects = [
            dict(zip(result.columns, (_json(v) for v in row), strict=True)) for row in result.rows
        ]
        return json.dumps(objects, indent=1)
    raise AnalyticsError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _for_table(row: Sequence[Any]) -> list[Any]:
    """Floats rounded for reading (rates to 4 decimals, larger values to 0.1), datetimes as
    ``YYYY-MM-DD HH:MM`` UTC, the rest as is."""
    out: list[Any] = []
    for v in row:
        if isinstance(v, float):
            out.append(round(v, 4) if abs(v) < 1 else round(v, 1))
        elif isinstance(v, datetime):
            out.append(v.astimezone(UTC).strftime("%Y-%m-%d %H:%M"))
        else:
            out.append(v)
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _json(value: Any) -> Any:
    if isinstance(value, Decimal | datetime):
        return _text(value)
    return value
