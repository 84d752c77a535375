"""The canned reports and ``pipeline query`` without a database: ranges, validation,
rendering and the command line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from pipeline.analytics import REPORTS, AnalyticsError, ReportResult, date_range, run_report
from pipeline.cli import build_parser
from pipeline.cli.query import _server, render
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError

TODAY = date(2026, 11, 22)
RESULT = ReportResult(
    ("day", "model_type", "analyses", "cost_usd", "rate", "avg_ms"),
    (
        (datetime(2026, 11, 21, tzinfo=UTC), "gpt_4o", 3, Decimal("0.12345678"), 1 / 3, 912.345),
        (datetime(2026, 11, 22, 5, tzinfo=UTC), None, 0, Decimal("0E-8"), None, None),
    ),
)


def test_date_range_is_whole_utc_days_with_to_included() -> None:
    assert date_range(date(2026, 10, 1), date(2026, 10, 31), default_days=7, today=TODAY) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert date_range(None, None, default_days=7, today=TODAY) == (
        datetime(2026, 11, 16, tzinfo=UTC),
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert date_range(None, date(2026, 11, 1), default_days=1, today=TODAY) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
    )
    with pytest.raises(AnalyticsError, match="after"):
        date_range(date(2026, 11, 2), date(2026, 11, 1), default_days=7, today=TODAY)


def test_every_report_takes_the_four_parameters() -> None:
    for name, report in REPORTS.items():
        assert name == report.name and report.description
        assert sorted(set(re.findall(r"\$\d", report.sql))) == ["$1", "$2", "$3", "$4"], name
    assert set(REPORTS) >= {
        "usage-by-service-hour", "cost-by-model", "top-users", "error-rates", "org-usage",
        "cache-hit-rate",
    }  # fmt: skip


def test_run_report_validates_before_touching_the_database() -> None:
    start, end = date_range(None, None, default_days=7, today=TODAY)
    with pytest.raises(AnalyticsError, match="needs --organization"):
        asyncio.run(run_report(None, REPORTS["org-ai-usage"], start=start, end=end))
    with pytest.raises(AnalyticsError, match="--limit"):
        asyncio.run(run_report(None, REPORTS["top-users"], start=start, end=end, limit=0))
    assert issubclass(AnalyticsError, PipelineError)


def test_table_rounds_for_reading() -> None:
    text = render(RESULT, "table")
    lines = text.splitlines()
    assert lines[0].split() == list(RESULT.columns)
    assert lines[2].split() == [
        "2026-11-21", "00:00", "gpt_4o", "3", "0.12345678", "0.3333", "912.3",
    ]  # fmt: skip
    assert render(ReportResult(("a",), ()), "table") == "(no rows)"


def test_csv_keeps_exact_values() -> None:
    rows = list(csv.reader(io.StringIO(render(RESULT, "csv"))))
    assert rows[0] == list(RESULT.columns)
    assert rows[1] == [
        "2026-11-21T00:00:00+00:00", "gpt_4o", "3", "0.12345678", str(1 / 3), "912.345",
    ]  # fmt: skip
    assert rows[2] == ["2026-11-22T05:00:00+00:00", "", "0", "0E-8", "", ""]


def test_json_is_an_array_of_objects_with_exact_amounts() -> None:
    objects = json.loads(render(RESULT, "json"))
    assert objects[0] == {
        "day": "2026-11-21T00:00:00+00:00", "model_type": "gpt_4o", "analyses": 3,
        "cost_usd": "0.12345678", "rate": 1 / 3, "avg_ms": 912.345,
    }  # fmt: skip
    assert objects[1]["model_type"] is None and objects[1]["rate"] is None
    with pytest.raises(AnalyticsError, match="unknown format"):
        render(RESULT, "xml")


def test_command_line() -> None:
    args = build_parser().parse_args(
        ["query", "top-users", "--from", "2026-11-01", "--to", "2026-11-30", "--limit", "5",
         "--organization", "org-007", "--format", "json"]
    )  # fmt: skip
    assert (args.report, args.first, args.last, args.limit) == (
        "top-users", date(2026, 11, 1), date(2026, 11, 30), 5,
    )  # fmt: skip
    assert (args.organization, args.format, args.database_url) == ("org-007", "json", None)
    for bad in (["query", "nope"], ["query", "top-users", "--from", "yesterday"]):
        with pytest.raises(SystemExit) as raised:
            build_parser().parse_args(bad)
        assert raised.value.code == 2


def test_database_url_option_wins_and_is_validated() -> None:
    args = build_parser().parse_args(
        ["query", "error-rates", "--database-url", "postgresql://replica/db"]
    )
    database, described, setting = asyncio.run(_server(args, Config()))
    assert database.url == "postgresql://replica/db" and setting == "--database-url"
    assert described == "replica:5432/db (--database-url)"
    args.database_url = "mysql://replica/db"
    with pytest.raises(ConfigError):
        asyncio.run(_server(args, Config()))
    args.database_url = None
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        asyncio.run(_server(args, Config()))
