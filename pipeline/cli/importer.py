"""``pipeline import``: bring existing events in from files, resumable and verified.

The work is :func:`pipeline.importer.run_import`; this module parses the options and
shows what happens (:class:`_Console`, the :class:`~pipeline.importer.Reporter`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.cli._common import format_table
from pipeline.cli._progress import Progress
from pipeline.config import Config
from pipeline.contract import EventKind
from pipeline.importer import ImportOptions, run_import
from pipeline.importer.figures import day_iso, values_match
from pipeline.importer.position import ImportState, PositionFileError
from pipeline.importer.scan import ScanResult
from pipeline.importer.send import SendReport
from pipeline.importer.sources import FORMATS, SourceError
from pipeline.importer.verify import Row, format_value

# Above this many (kind, day, measure) rows, the report shows totals per kind and the
# rows that differ (--report writes them all).
_FULL_TABLE_ROWS = 60
_LIST_LINES = 20

_DESCRIPTION = """\
Import existing events from files: JSON Lines (one event object per line) or CSV (a header
row naming the fields; nested objects as JSON text; an empty cell is an absent field),
either optionally gzip-compressed. Every line goes through the contract's validation
(docs/events.md); valid events are produced to their kind's topic, so the workers apply
them exactly once like live traffic; invalid lines go to the reject file with their line
number and reason. The kind is --kind for every line, or each line's "type" field.

The import is resumable: the position file records what the broker acknowledged, and
running the same command again after an interruption (Ctrl-C, a crash, a broker outage)
neither skips nor repeats anything; run again after it finished, it only verifies again.
At the end it waits until the workers (group PIPELINE_GROUP_ID) have applied everything,
then compares counts and sums per kind and UTC day in the files with what PostgreSQL
gained for those days since the import started. The runbook, with the migration from an
existing table, is docs/operations.md, "Importing existing data"."""

_EPILOG = """\
environment:
  KAFKA_BOOTSTRAP_SERVERS  the cluster (required)
  DATABASE_URL             PostgreSQL (required unless --no-verify; with it, lines older
                           than their table's retention are rejected up front)
  PIPELINE_GROUP_ID        the workers whose progress verification waits for
  PIPELINE_TOPIC_*         topic names, as the workers have them

examples:
  pipeline import calls.jsonl.gz --kind api_call
  pipeline import export.csv --dry-run        # validate only: rejects, figures
  pipeline import a.jsonl b.jsonl --position-file import.pos --report verify.json

exit codes: 0 imported and verified (with --no-verify: imported), 1 verification
mismatch, not applied within --verify-timeout-s, or a failure (run the same command again
to resume; the message says when it cannot), 2 bad option, unreadable file, a CSV column
that is no field of the kind(s), or a position file of another import"""


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "import",
        help="import events from JSON Lines or CSV files (resumable, verified)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="files to import")
    parser.add_argument(
        "--kind",
        choices=[k.value for k in EventKind],
        help="the kind of every line (default: each line's type field)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="the files' format (default: from the name: .jsonl/.ndjson/.json or .csv, "
        "optionally .gz)",
    )
    parser.add_argument(
        "--reject-file",
        type=Path,
        metavar="F",
        help="where invalid lines go, as JSON Lines (default: FILE.rejects.jsonl, FILE the "
        "first file); written anew by the first run",
    )
    parser.add_argument(
        "--position-file",
        type=Path,
        metavar="F",
        help="where progress is kept (default: FILE.position.json); keep it until the "
        "import is verified, and never reuse it for another import",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not wait for the workers nor compare with PostgreSQL (no baseline is taken)",
    )
    parser.add_argument(
        "--verify-timeout-s",
        type=_seconds,
        default=600.0,
        metavar="N",
        help="how long to wait for the workers to apply the import (default: 600)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="also write the verification, every kind, day and measure, as JSON here",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only validate: write the reject file and show the figures; send nothing",
    )
    parser.add_argument(
        "--record-events",
        type=_positive_int,
        default=500,
        metavar="N",
        help="lines per chunk = events per record at most (default: 500); fixed for an "
        "import once started",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    """The handler: returns the exit code."""
    options = ImportOptions(
        files=tuple(args.files),
        kind=None if args.kind is None else EventKind(args.kind),
        format=args.format,
        reject_file=args.reject_file,
        position_file=args.position_file,
        verify=args.verify,
        verify_timeout_s=args.verify_timeout_s,
        dry_run=args.dry_run,
        chunk_lines=args.record_events,
        report=args.report,
    )
    try:
        code = asyncio.run(run_import(options, config, _Console(quiet=args.quiet)))
    except (SourceError, PositionFileError) as exc:
        print(f"pipeline import: error: {exc}", file=sys.stderr)
        return 2
    if code == 0 and not args.verify and not args.dry_run:
        print(
            "not verified (--no-verify): run the same command without it to wait for the "
            "workers and compare (nothing is sent again)"
        )
    return code


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in counts.items() if n)


class _Console:
    """Prints the import's steps on stdout and progress on stderr."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet

    def progress(self, total: int | None, label: str, unit: str) -> Progress | None:
        return None if self.quiet else Progress(total, label=label, unit=unit)

    def scanned(self, state: ImportState, scan: ScanResult, *, dry_run: bool) -> None:
        valid: dict[str, int] = {}
        for f in state.files:
            for kind, n in f.valid.items():
                valid[kind] = valid.get(kind, 0) + n
        lines = sum(f.data_lines for f in state.files)
        print(
            f"scanned {len(state.files)} file(s): {lines:,} lines, {state.valid_events:,} valid "
            f"events ({_kinds(valid) or 'none'}), {state.rejected:,} rejected"
        )
        if scan.repeated:
            print(
                f"{scan.repeated:,} valid events repeat an earlier one (same event_id and "
                "occurred_at, of a kind stored once per event): expected once in PostgreSQL"
            )
        if state.rejected:
            reasons = ", ".join(f"{r} {n:,}" for r, n in state.rejects_by_reason.items())
            print(f"rejected lines by reason: {reasons}; each is in {state.reject_file}")
            for text in scan.first_rejects:
                print(f"  {text}")
            if state.rejected > len(scan.first_rejects):
                print(f"  ... and {state.rejected - len(scan.first_rejects):,} more")
        if dry_run:
            print("dry run: nothing sent, no position file written")

    def baseline(self, state: ImportState) -> None:
        days = {day for kind_days in state.figures.values() for day in kind_days}
        print(
            f"baseline: PostgreSQL's figures for {len(days)} day(s) taken, after the workers "
            "applied what the target topics already held"
        )

    def resuming(self, state: ImportState) -> None:
        where = next((f for f in state.files if not f.done), None)
        if state.complete:
            print(
                "position file: every record was sent and acknowledged (import started "
                f"{state.started_at})"
            )
        elif where is None:
            print("position file: every file was sent; finishing")
        else:
            print(
                f"resuming: {state.events_sent:,} of {state.valid_events:,} events acknowledged; "
                f"{where.path} from line {where.next_line:,}"
            )
        if state.rejected:
            print(f"{state.rejected:,} lines were rejected: see {state.reject_file}")

    def sent(self, state: ImportState, report: SendReport | None) -> None:
        if report is None:
            print(f"sent: {state.events_sent:,} events in {state.records_sent:,} records")
            return
        line = f"sent {report.events:,} events in {report.records:,} records"
        if report.skipped_records:
            line += (
                f"; {report.skipped_records:,} records ({report.skipped_events:,} events) of "
                "the interrupted run were already in Kafka and were not sent again"
            )
        print(line)

    def not_applied(self, state: ImportState, group: str, timeout_s: float) -> None:
        print(
            f"NOT VERIFIED: the workers of group {group} have not applied the import within "
            f"{timeout_s:g}s; are they running? Run the same command again to wait and verify "
            "(nothing is sent twice)"
        )

    def verified(self, state: ImportState, rows: list[Row]) -> None:
        if state.baseline is None:
            print(
                "note: no baseline was taken (the import started with --no-verify): the files "
                "are compared with everything PostgreSQL holds for their days"
            )
        bad = [r for r in rows if not r.ok]
        headers = ["kind", "day", "measure", "file", "PostgreSQL gained", ""]
        if len(rows) <= _FULL_TABLE_ROWS:
            print(format_table(headers, [_cells(r) for r in rows]))
        else:
            print(format_table(headers[:1] + headers[2:], _totals(rows)))
            if bad:
                print("\nfigures that differ:")
                print(format_table(headers, [_cells(r) for r in bad[:_LIST_LINES]]))
                if len(bad) > _LIST_LINES:
                    print(f"  ... and {len(bad) - _LIST_LINES} more (--report lists them all)")
        days = len({r.day for r in rows})
        if bad:
            print(
                f"MISMATCH: {len(bad)} figure(s) differ: PostgreSQL did not gain what the files "
                "hold. Less: events it already held before the import (analyses, logs, audit "
                "events are stored once) or that the workers dead-lettered (`pipeline dlq "
                "inspect`); more: something else wrote to the same days since the baseline"
            )
        else:
            print(f"verified: PostgreSQL gained exactly what the files hold ({days} day(s))")


def _cells(row: Row) -> Sequence[object]:
    mark = "ok" if row.ok else "DIFFERS"
    return (row.kind.value, day_iso(row.day), row.measure, format_value(row.unit, row.file),
            format_value(row.unit, row.gained), mark)  # fmt: skip


def _totals(rows: list[Row]) -> list[Sequence[object]]:
    sums: dict[tuple[str, str, str], list[float]] = {}
    ok: dict[tuple[str, str, str], bool] = {}
    for r in rows:
        key = (r.kind.value, r.measure, r.unit)
        acc = sums.setdefault(key, [0, 0])
        acc[0] += r.file
        acc[1] += r.gained
        ok[key] = ok.get(key, True) and r.ok
    out: list[Sequence[object]] = []
    for (kind, measure, unit), (file, gained) in sums.items():
        same = ok[(kind, measure, unit)] and values_match(unit, file, gained)
        out.append((kind, f"{measure} (all days)", format_value(unit, file),
                    format_value(unit, gained), "ok" if same else "DIFFERS"))  # fmt: skip
    return out
