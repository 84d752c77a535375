"""``pipeline query REPORT``: canned analyst reports as a table, CSV or JSON.

The reports are :data:`pipeline.analytics.reports.REPORTS`; this module parses the
options, chooses the server (``--database-url`` as given, else a healthy read replica of
``ANALYTICS_DATABASE_URL`` checked right now, else the primary ``DATABASE_URL``: see
:mod:`pipeline.analytics.routing`), opens one read-only session, binds it to
``--organization`` and prints the rows. ``--verbose`` says on stderr which server answered
and why; the output itself is the same wherever it came from. Dates are whole UTC days,
both inclusive.

Rendering is pure (:func:`render`): ``table`` rounds floats for reading, ``csv`` keeps
every value exactly as PostgreSQL returned it, ``json`` is an array of objects whose USD
amounts (``numeric``) are strings so that no digit is lost, timestamps ISO 8601.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import json
import sys
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
from pipeline.analytics.routing import ReplicaRouter, server_label
from pipeline.cli._common import format_table
from pipeline.config import Config, DatabaseConfig
from pipeline.db import connect

FORMATS = ("table", "csv", "json")


def register(commands: Any) -> None:
    listing = "\n".join(f"  {name:22} {r.description}" for name, r in REPORTS.items())
    parser = commands.add_parser(
        "query",
        help="run a canned analyst report (cost, usage, reliability)",
        description=(
            "Run a canned report over the analyst functions (docs/analysts.md).\n"
            "Read-only. It reads from the first healthy read replica listed in\n"
            "ANALYTICS_DATABASE_URL (reachable, in recovery, replayed up to the primary's\n"
            "WAL position or replay lag under ANALYTICS_MAX_LAG_S), else from DATABASE_URL\n"
            "with a warning; --database-url reads from that server, unchecked (with the\n"
            "DATABASE_* timeouts). Row-level security applies to the login:\n"
            "an organization-bound analyst must give --organization.\n"
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
        help="read from this server, no replica check (default: a healthy replica of "
        "ANALYTICS_DATABASE_URL, else DATABASE_URL)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="say on stderr which server answered and why",
    )
    parser.set_defaults(handler=_query)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


async def _server(args: argparse.Namespace, config: Config) -> tuple[DatabaseConfig, str, str]:
    """The server to read from, a description of it and the setting it came from:
    --database-url as given, else the route of a :class:`ReplicaRouter` over
    ANALYTICS_DATABASE_URL and DATABASE_URL (checked now: the primary's WAL position,
    then each replica)."""
    if args.database_url:
        configured = config.database or next(iter(config.analytics.replicas), None)
        explicit = (
            dataclasses.replace(configured, url=args.database_url)
            if configured is not None
            else DatabaseConfig(url=args.database_url)
        )  # the configured timeouts, whichever server
        return explicit, f"{server_label(explicit)} (--database-url)", "--database-url"
    primary = config.database if config.analytics.replicas else config.require_database()
    route = await ReplicaRouter(config.analytics, primary).choose()
    setting = "ANALYTICS_DATABASE_URL" if route.target == "replica" else "DATABASE_URL"
    return route.database, route.describe(), setting


def _query(args: argparse.Namespace, config: Config) -> int:
    report = REPORTS[args.report]
    start, end = date_range(
        args.first, args.last, default_days=report.default_days, today=datetime.now(UTC).date()
    )

    async def work() -> tuple[ReportResult, str]:
        database, described, setting = await _server(args, config)
        conn = await connect(database, application_name="pipeline-query", setting=setting)
        try:
            await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            await bind_organization(conn, args.organization)
            result = await run_report(
                conn, report, start=start, end=end, organization=args.organization,
                limit=args.limit,
            )  # fmt: skip
        finally:
            await conn.close()
        return result, described

    result, described = asyncio.run(work())
    if args.verbose:
        print(f"pipeline query: answered by {described}", file=sys.stderr)
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
