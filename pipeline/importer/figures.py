"""Counts and sums per event kind and UTC day: what a file holds, what PostgreSQL holds.

The verification of an import compares, for every kind and UTC day (of ``occurred_at``)
present in the files, the figures of :data:`MEASURES`:

=====================  ======================  ==========================================
kind                   table (time column)     measures
=====================  ======================  ==========================================
``api_call``           api_usage (time_window) requests, tokens, cost_usd
``analysis``           ai_analysis (created_at) rows, tokens (tokens_used), cost_usd
``system_log``         system_logs (logged_at) rows
``performance_metric`` performance_metrics     samples, value_sum
                       (time_window)
``audit``              audit_trail             rows (``source = 'event'``: the pipeline's
                       (occurred_at)           own audit rows are not events)
=====================  ======================  ==========================================

:class:`Figures` holds them: :meth:`Figures.add` counts one validated event the way
PostgreSQL stores it. Kinds stored one row per ``(occurred_at, event_id)`` (analysis,
log, audit: the tables' primary keys) count a repeated event once, so the file's figures
keep a set of what they counted (about 100 bytes per such event, not serialised);
aggregated kinds (API calls, metric series) count every event, as the tables do. Costs are
exact (integer 1e-8 USD); metric value sums are doubles, compared to one part in 10^9.

:func:`database_figures` reads the same figures from PostgreSQL for given days, one
statement per kind and day (each reads the partitions of one day, so a long range does not
make one statement run into ``DATABASE_STATEMENT_TIMEOUT_MS``; if one day still does,
:class:`FiguresTimeoutError` names the setting). A kind without an entry in
:data:`MEASURES` (a kind added later) is imported but not verified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from pipeline.contract import Event, EventKind
from pipeline.errors import DatabaseError, DatabaseUnavailableError, classify_database_error

__all__ = [
    "DAY_MS",
    "MEASURES",
    "Figures",
    "FiguresTimeoutError",
    "KindMeasures",
    "Measure",
    "day_iso",
    "values_match",
]

DAY_MS: Final = 86_400_000
_E8: Final = 100_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Number = int | float


@dataclass(frozen=True)
class Measure:
    """One compared figure: its name, the SQL aggregate reading it, its unit (``count``:
    an integer; ``usd``: integer 1e-8 USD, read from a numeric sum; ``float``: a double)."""

    name: str
    sql: str
    unit: Literal["count", "usd", "float"]


@dataclass(frozen=True)
class KindMeasures:
    """What is compared for one kind; ``values(event)`` are the event's contributions, in
    the order of ``measures``. ``row_per_event``: stored once per (occurred_at, event_id)."""

    table: str
    column: str
    measures: tuple[Measure, ...]
    values: Callable[[Any], tuple[Number, ...]]
    row_per_event: bool
    where: str = ""


_ROWS: Final = Measure("rows", "count(*)", "count")

MEASURES: Final[Mapping[EventKind, KindMeasures]] = {
    EventKind.API_CALL: KindMeasures(
        "api_usage",
        "time_window",
        (
            Measure("requests", "sum(request_count)", "count"),
            Measure("tokens", "sum(token_usage)", "count"),
            Measure("cost_usd", "sum(cost)", "usd"),
        ),
        lambda e: (1, e.tokens, e.cost_e8),
        row_per_event=False,
    ),
    EventKind.ANALYSIS: KindMeasures(
        "ai_analysis",
        "created_at",
        (
            _ROWS,
            Measure("tokens", "sum(tokens_used)", "count"),
            Measure("cost_usd", "sum(api_cost)", "usd"),
        ),
        lambda e: (1, e.tokens_used, e.api_cost_e8),
        row_per_event=True,
    ),
    EventKind.SYSTEM_LOG: KindMeasures(
        "system_logs", "logged_at", (_ROWS,), lambda e: (1,), row_per_event=True
    ),
    EventKind.PERFORMANCE_METRIC: KindMeasures(
        "performance_metrics",
        "time_window",
        (
            Measure("samples", "sum(sample_count)", "count"),
            Measure("value_sum", "sum(value_sum)", "float"),
        ),
        lambda e: (1, e.value),
        row_per_event=False,
    ),
    EventKind.AUDIT: KindMeasures(
        "audit_trail",
        "occurred_at",
        (_ROWS,),
        lambda e: (1,),
        row_per_event=True,
        where="source = 'event'",
    ),
}
"""The compared figures of each kind (see the module docstring)."""


def day_iso(day: int) -> str:
    """An epoch day number as ``YYYY-MM-DD``."""
    return (_EPOCH + timedelta(days=day)).date().isoformat()


def values_match(unit: str, a: Number, b: Number) -> bool:
    """Whether two figures agree: exactly, or for doubles to one part in 10^9 (+1e-6)."""
    if unit != "float":
        return a == b
    return abs(a - b) <= 1e-6 + 1e-9 * max(abs(a), abs(b))


def _uuid_int(event_id: str) -> int:
    return int(event_id.replace("-", ""), 16)


@dataclass
class Figures:
    """Figures per (kind, epoch day); see the module docstring."""

    data: dict[tuple[EventKind, int], list[Number]] = field(default_factory=dict)
    _seen: set[int] = field(default_factory=set, repr=False, compare=False)

    def add(self, event: Event) -> bool:
        """Count one validated event; False if it repeats one of a row-per-event kind
        (PostgreSQL stores it once: it is not counted again)."""
        kind = event.kind
        spec = MEASURES.get(kind)
        if spec is None:
            return True
        ms = event.occurred_at_ms
        if spec.row_per_event:
            # One int per event (event_id, kind, occurred_at ms < 2^48): ~80 bytes in the set.
            key = (_uuid_int(event.event_id) << 3 | _KIND_BITS[kind]) << 48 | ms
            if key in self._seen:
                return False
            self._seen.add(key)
        slot = (kind, ms // DAY_MS)
        values = spec.values(event)
        current = self.data.get(slot)
        if current is None:
            self.data[slot] = list(values)
        else:
            for i, v in enumerate(values):
                current[i] += v
        return True

    def days(self) -> dict[EventKind, list[int]]:
        """The days present, per kind, sorted."""
        out: dict[EventKind, set[int]] = {}
        for kind, day in self.data:
            out.setdefault(kind, set()).add(day)
        return {kind: sorted(days) for kind, days in out.items()}

    def get(self, kind: EventKind, day: int) -> list[Number]:
        """The figures of (kind, day); zeros when absent."""
        found = self.data.get((kind, day))
        if found is not None:
            return found
        return [0.0 if m.unit == "float" else 0 for m in MEASURES[kind].measures]

    def to_json(self) -> dict[str, dict[str, list[Number]]]:
        """``{kind: {YYYY-MM-DD: [values]}}`` (the order of the kind's measures)."""
        doc: dict[str, dict[str, list[Number]]] = {}
        for (kind, day), values in sorted(self.data.items()):
            doc.setdefault(kind.value, {})[day_iso(day)] = list(values)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Mapping[str, list[Number]]]) -> Figures:
        """The inverse of :meth:`to_json`."""
        figures = cls()
        for kind, days in doc.items():
            for iso, values in days.items():
                day = (datetime.fromisoformat(iso).replace(tzinfo=UTC) - _EPOCH).days
                figures.data[(EventKind(kind), day)] = list(values)
        return figures


_KIND_BITS: Final = {kind: n for n, kind in enumerate(EventKind)}
_QUERY_CANCELED: Final = "57014"  # statement_timeout (or a cancel request)


class FiguresTimeoutError(DatabaseUnavailableError):
    """Reading one day's figures ran into the statement timeout (SQLSTATE 57014): the
    message names ``DATABASE_STATEMENT_TIMEOUT_MS``."""


async def database_figures(conn: Any, days: Mapping[EventKind, Iterable[int]]) -> Figures:
    """What PostgreSQL holds for ``days`` (per kind), as :class:`Figures`.

    One statement per kind and day (see the module docstring); a day without rows is
    absent. Raises :class:`FiguresTimeoutError` if a statement is cancelled (SQLSTATE
    57014, as classified by :func:`~pipeline.errors.classify_database_error`); other errors
    propagate as they are.
    """
    figures = Figures()
    for kind, wanted in days.items():
        spec = MEASURES.get(kind)
        if spec is None:
            continue
        where = f" AND {spec.where}" if spec.where else ""
        aggregates = ", ".join(f"{m.sql} AS m{i}" for i, m in enumerate(spec.measures))
        sql = (
            f"SELECT {aggregates} FROM {spec.table} "
            f"WHERE {spec.column} >= $1 AND {spec.column} < $2{where}"
        )
        for day in sorted(set(wanted)):
            start = _EPOCH + timedelta(days=day)
            try:
                row = await conn.fetchrow(sql, start, start + timedelta(days=1))
            except Exception as exc:
                error = classify_database_error(exc)
                if isinstance(error, DatabaseError) and error.sqlstate == _QUERY_CANCELED:
                    raise FiguresTimeoutError(
                        f"reading {spec.table}'s figures for {day_iso(day)} was cancelled by "
                        f"PostgreSQL ({error}): raise DATABASE_STATEMENT_TIMEOUT_MS (0 turns "
                        "it off) for the import, and run the same command again (nothing is "
                        "sent twice)",
                        sqlstate=error.sqlstate,
                    ) from exc
                raise
            raw = [row[f"m{i}"] for i in range(len(spec.measures))]
            if all(v is None or v == 0 for v in raw):
                continue  # no rows that day (count 0, sums NULL)
            figures.data[(kind, day)] = [
                _read(m.unit, v) for m, v in zip(spec.measures, raw, strict=True)
            ]
    return figures


def _read(unit: str, value: Any) -> Number:
    if value is None:
        return 0.0 if unit == "float" else 0
    if unit == "usd":
        return int((Decimal(value) * _E8).to_integral_value())
    if unit == "float":
        return float(value)
    return int(value)
