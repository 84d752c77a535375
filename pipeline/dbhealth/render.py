"""A :class:`~pipeline.dbhealth.model.Report` as text for people or JSON for machines.

``table``: a header line, then per check its title and worst severity, each finding
(``why`` and ``do`` lines under the ones that are not ok), and its detail tables (at most
:data:`TABLE_ROWS` rows each: ``--format json`` has them all); a summary line last.
``json``: :meth:`Report.to_dict` (``severity``, ``exit_code``, ``counts``, and per check
its findings and details with raw values: bytes as integers, ratios 0..1, durations in
seconds, times ISO 8601).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.dbhealth._text import duration, percent, size
from pipeline.dbhealth.model import Column, Details, Finding, Report, Severity, Value

FORMATS = ("table", "json")
TABLE_ROWS = 20
WIDTH = 100  # the why lines are wrapped to this; SQL never is
_LABEL = {Severity.OK: "ok", Severity.WARN: "WARN", Severity.ACTION: "ACTION"}
_INDENT = "    "


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=1)
    if fmt == "table":
        return render_table(report)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def render_table(report: Report) -> str:
    lines = [
        f"Database health of {report.database} (PostgreSQL {report.server_version}) at "
        f"{report.checked_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    ]
    for check in report.checks:
        lines += ["", f"== {check.title}: {_LABEL[check.severity]}"]
        for group in _runs(check.findings):
            lines += [_what(f) for f in group[:-1]]
            lines += render_finding(group[-1])
        for details in check.details:
            if details.rows:
                lines += ["", *(_INDENT + line for line in render_details(details))]
    counts = report.counts()
    lines += [
        "",
        f"{counts['action']} need action, {counts['warn']} warnings, {counts['ok']} ok "
        f"(exit {report.exit_code})",
    ]
    return "\n".join(lines)


def _runs(findings: Sequence[Finding]) -> list[list[Finding]]:
    """Consecutive findings with the same severity, why and recommendation, grouped: the
    table prints their "what" lines, then the shared why and do once."""
    runs: list[list[Finding]] = []
    for f in findings:
        last = runs[-1][-1] if runs else None
        if last and (last.severity, last.why, last.recommendation) == (
            f.severity, f.why, f.recommendation,
        ):  # fmt: skip
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def _what(f: Finding) -> str:
    return f"{_LABEL[f.severity]:>6}  {f.what}"


def render_finding(f: Finding) -> list[str]:
    """A finding's lines: what, then its why (wrapped) and what to do (as written: SQL)."""
    lines = [_what(f)]
    pad = " " * 8
    if f.why:
        lines += textwrap.wrap(
            f.why, WIDTH, initial_indent=f"{pad}why: ", subsequent_indent=f"{pad}     "
        )
    if f.recommendation:
        first, *rest = f.recommendation.splitlines()
        lines.append(f"{pad}do:  {first}")
        lines += [f"{pad}     {line}" for line in rest]
    return lines


def render_details(d: Details) -> list[str]:
    rows = d.rows[:TABLE_ROWS]
    lines = [f"{d.title}:"] if d.title else []
    lines += _format_table(
        [c.header for c in d.columns],
        [[cell(c, v) for c, v in zip(d.columns, row, strict=True)] for row in rows],
        [c.kind not in ("text", "time") for c in d.columns],
    )
    if len(d.rows) > TABLE_ROWS:
        lines.append(f"... {len(d.rows) - TABLE_ROWS} more (--format json lists them all)")
    return lines


def cell(column: Column, value: Value) -> str:
    """One detail value as the table shows it."""
    if value is None:
        return "-"
    kind = column.kind
    if kind == "bytes" and isinstance(value, int):
        return size(value)
    if kind == "ratio" and isinstance(value, int | float):
        return percent(value)
    if kind == "seconds" and isinstance(value, int | float):
        return duration(value)
    if kind == "count" and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M}"
    return str(value)


def _format_table(headers: list[str], rows: list[list[str]], right: list[bool]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    out = []
    for n, row in enumerate([headers, *rows]):
        parts = [
            v.rjust(w) if right[i] and n else v.ljust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
