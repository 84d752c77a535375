"""Verifying an import against PostgreSQL, and the retention cut-offs that decide what can be.

The figures of the files (:class:`~pipeline.importer.figures.Figures`, per kind and UTC
day) are compared with what PostgreSQL **gained** for those days: its figures after the
workers applied the import minus the **baseline**, its figures for the same days taken
before the first record was sent (kept in the position file). So rows PostgreSQL already
held for those days do not count; but anything else written to them *during* the import
(live traffic for the same days, another import) does, and shows as a mismatch: import
days that receive no other traffic (see docs/operations.md, "Importing existing data").

:func:`wait_applied` first waits until the workers' watermark (``ingest_offsets`` of the
group) covers every acknowledged record of the import; :func:`compare` lists one
:class:`Row` per kind, day and measure; :func:`report_json` is the form ``--report``
writes.

:func:`retention_cutoffs` reads, per kind, the first ``occurred_at`` its table keeps
(``partition_policies``: the start of the oldest range not wholly beyond retention, an
hour from now): older events would be dead-lettered ``beyond_retention`` by the workers, so
the importer rejects them up front and the verification can be exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pipeline.contract import EventKind
from pipeline.importer.figures import MEASURES, Figures, Number, day_iso, values_match
from pipeline.kinds import spec_of
from pipeline.verify import wait_for_watermarks

__all__ = ["Row", "compare", "report_json", "retention_cutoffs", "wait_applied"]

RETENTION_MARGIN: Final = "1 hour"
"""Events that leave retention within this margin are rejected too: they could expire
before the workers apply them."""


@dataclass(frozen=True)
class Row:
    """One compared figure: ``file`` and what PostgreSQL ``gained`` (``after - before``)."""

    kind: EventKind
    day: int
    measure: str
    unit: str
    file: Number
    before: Number
    after: Number

    @property
    def gained(self) -> Number:
        return self.after - self.before

    @property
    def ok(self) -> bool:
        return values_match(self.unit, self.file, self.gained)


async def retention_cutoffs(conn: Any, kinds: Iterable[EventKind]) -> dict[EventKind, int]:
    """Per kind, the first epoch ms its table keeps (kinds without a policy are absent)."""
    tables = {spec_of(kind).writer.table: kind for kind in kinds}
    rows = await conn.fetch(
        "SELECT parent_table, (extract(epoch FROM partition_keep_from(parent_table, "
        f"now() + interval '{RETENTION_MARGIN}')) * 1000)::bigint AS keep_from "
        "FROM partition_policies WHERE parent_table = ANY($1::text[])",
        list(tables),
    )
    return {tables[r["parent_table"]]: int(r["keep_from"]) for r in rows}


async def wait_applied(
    conn: Any,
    group: str,
    targets: Mapping[tuple[str, int], int],
    *,
    timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> bool:
    """Wait until ``group``'s watermark covers ``targets``; False on timeout."""
    return await wait_for_watermarks(
        conn, group, targets, timeout_s=timeout_s, progress=progress, poll_s=0.5
    )


def compare(file: Figures, before: Figures, after: Figures) -> list[Row]:
    """One row per kind (with measures), day of the file, and measure, in order."""
    rows: list[Row] = []
    for kind, days in sorted(file.days().items(), key=lambda kv: list(EventKind).index(kv[0])):
        measures = MEASURES[kind].measures
        for day in days:
            values = zip(file.get(kind, day), before.get(kind, day), after.get(kind, day),
                         strict=True)  # fmt: skip
            for measure, (f, b, a) in zip(measures, values, strict=True):
                rows.append(Row(kind, day, measure.name, measure.unit, f, b, a))
    return rows


def _plain(unit: str, value: Number) -> object:
    if unit == "usd":
        sign, value = ("-", -int(value)) if value < 0 else ("", int(value))
        return f"{sign}{value // 100_000_000}.{value % 100_000_000:08d}"
    return value


def format_value(unit: str, value: Number) -> str:
    """A figure for display: USD with 8 decimals, doubles with up to 6."""
    if unit == "float":
        return f"{value:,.6f}".rstrip("0").rstrip(".")
    plain = _plain(unit, value)
    return f"{plain:,}" if isinstance(plain, int) else str(plain)


def report_json(rows: Iterable[Row], *, baseline_at: str | None) -> dict[str, Any]:
    """The verification as a JSON document (``--report``)."""
    listed = list(rows)
    return {
        "verified": all(r.ok for r in listed),
        "baseline_at": baseline_at,
        "rows": [
            {
                "kind": r.kind.value,
                "day": day_iso(r.day),
                "measure": r.measure,
                "file": _plain(r.unit, r.file),
                "postgresql_before": _plain(r.unit, r.before),
                "postgresql_after": _plain(r.unit, r.after),
                "postgresql_gained": _plain(r.unit, r.gained),
                "ok": r.ok,
            }
            for r in listed
        ],
    }
