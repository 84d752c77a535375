"""What a health check returns: findings with a severity, and optional detail rows.

Pure data, no I/O: the checks build these, :mod:`pipeline.dbhealth.render` prints them.

- :class:`Finding`: one observation. ``severity`` is ``ok`` (nothing to do), ``warn``
  (worth a look, does not fail the cron check) or ``action`` (someone must act: exit 1).
  ``what`` is one line naming the object and the figure; ``why`` says why it matters and
  on what evidence; ``recommendation`` is the concrete next step, with the SQL or command
  to run (empty for ``ok``). ``subject`` names the object (index, table, pid, setting) for
  machine consumers of the JSON.
- :class:`CheckResult`: one check's findings (at least one: a check with nothing to report
  says so with an ``ok`` finding) and its detail table (e.g. scans per index).
- :class:`Report`: every check, plus where and when; ``exit_code`` is 1 when any finding
  needs action, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pipeline.config import DatabaseConfig
from pipeline.dbhealth.thresholds import REPLICATION_LAG_WARN_S


class Severity(StrEnum):
    OK = "ok"
    WARN = "warn"
    ACTION = "action"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.OK: 0, Severity.WARN: 1, Severity.ACTION: 2}


def worst(severities: Any) -> Severity:
    """The most severe of ``severities`` (``ok`` when there are none)."""
    return max(severities, key=lambda s: s.rank, default=Severity.OK)


@dataclass(frozen=True)
class Finding:
    severity: Severity
    what: str
    why: str = ""
    recommendation: str = ""
    subject: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity.value,
            "subject": self.subject,
            "what": self.what,
            "why": self.why,
            "recommendation": self.recommendation,
        }


# How a detail column's values are shown in the table output (JSON keeps raw values):
# text as is, count an integer, bytes as KiB/MiB/GiB, ratio as a percentage, seconds as a
# duration, time as a UTC timestamp ("never" when missing).
COLUMN_KINDS = ("text", "count", "bytes", "ratio", "seconds", "time")


@dataclass(frozen=True)
class Column:
    """``name`` is the JSON key (snake_case, with its unit when it has one); ``label`` the
    table header (default: the name with spaces)."""

    name: str
    kind: str = "text"
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}")

    @property
    def header(self) -> str:
        return self.label or self.name.replace("_", " ")


Value = str | int | float | bool | datetime | None


@dataclass(frozen=True)
class Details:
    """Rows behind a check's findings, e.g. every index with its scans and size."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[Value, ...], ...]
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [c.name for c in self.columns],
            "rows": [
                {c.name: _json_value(v) for c, v in zip(self.columns, row, strict=True)}
                for row in self.rows
            ],
        }


@dataclass(frozen=True)
class CheckResult:
    name: str
    title: str
    findings: tuple[Finding, ...]
    details: tuple[Details, ...] = ()

    @property
    def severity(self) -> Severity:
        return worst(f.severity for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "severity": self.severity.value,
            "findings": [f.to_dict() for f in self.findings],
            "details": [d.to_dict() for d in self.details],
        }


@dataclass(frozen=True)
class Report:
    database: str  # the URL with its password redacted
    server_version: str
    checked_at: datetime
    checks: tuple[CheckResult, ...] = field(default=())

    @property
    def severity(self) -> Severity:
        return worst(c.severity for c in self.checks)

    @property
    def exit_code(self) -> int:
        """1 when something needs action, else 0 (warnings do not fail a cron check)."""
        return 1 if self.severity is Severity.ACTION else 0

    def counts(self) -> dict[str, int]:
        """How many findings of each severity."""
        out = {s.value: 0 for s in Severity}
        for check in self.checks:
            for f in check.findings:
                out[f.severity.value] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "server_version": self.server_version,
            "checked_at": self.checked_at.isoformat(),
            "severity": self.severity.value,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }


def _json_value(value: Value) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class Context:
    """What every check may need to know about the server (read once per run) and about
    the configuration."""

    now: datetime
    # When this database's statistics were last reset (None: since it was created).
    stats_reset: datetime | None
    block_size: int = 8192
    login: str = ""  # current_user: the login the checks run as (for GRANT advice)
    monitor: bool = False  # the login has pg_monitor's privileges
    # Replay lag from which a standby is worth a look: ANALYTICS_MAX_LAG_S, where analyst
    # reads leave a replica.
    replication_lag_warn_s: float = REPLICATION_LAG_WARN_S
    # The primary, when the server checked may be one of its standbys (--database-url
    # with DATABASE_URL set): a standby's lag is then judged against the primary's WAL
    # position, read within primary_timeout_s (ANALYTICS_CHECK_TIMEOUT_S).
    primary: DatabaseConfig | None = None
    primary_timeout_s: float = 2.0

    def stats_since(self) -> str:
        if self.stats_reset is None:
            return "since the statistics began (no reset recorded)"
        return f"since the statistics were reset at {self.stats_reset:%Y-%m-%d %H:%M} UTC"
