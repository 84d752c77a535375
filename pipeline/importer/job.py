"""One ``pipeline import``, from the files to the verification: the order of the steps.

:func:`run_import` returns the exit code (0 done and verified, 1 mismatch or not applied
in time); errors it does not handle propagate (``ConfigError`` and its subclasses
:class:`~pipeline.importer.sources.SourceError` and
:class:`~pipeline.importer.position.PositionFileError` mean exit 2, other
``PipelineError``\\ s exit 1). What it tells the operator goes through a
:class:`Reporter`; this module prints nothing.

Every run first reads the header of each CSV file and refuses (exit 2) a column that is a
field of no kind the file can hold (:func:`~pipeline.importer.csv_cells.check_columns`).

A first run (no position file yet):

1. lock the first file (``flock``: a second import of it on this host fails at once);
2. with a database configured, read the retention cut-offs (:func:`retention_cutoffs`);
3. **scan** every file (:mod:`pipeline.importer.scan`): the reject file is written anew,
   the figures counted; stop here with ``--dry-run``;
4. save the position file, then **send** (:mod:`pipeline.importer.send`): once the fences
   are written and before the first record, unless ``--no-verify``, wait until the
   workers' watermark reaches the fences (every record already in the target topics is
   applied: earlier traffic for the same days would otherwise land after the baseline
   and count as the import's), then take the **baseline**: PostgreSQL's figures for the
   files' days. The fences' offsets are exact, where a broker's end offsets may not be
   (Tansu under-reports them).

A run with a position file checks that the files (SHA-256) and options are the ones it
records (and takes the baseline the same way if the first run had ``--no-verify`` or
stopped before sending anything), then sends what is left (nothing when it says
``complete``). Then, unless ``--no-verify``: wait until the workers' watermark covers the
import, read PostgreSQL's figures again and compare (:mod:`pipeline.importer.verify`);
``--report`` writes the comparison (:class:`ImportReportError` if it cannot: the import
itself is done).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from pipeline import db
from pipeline.config import Config, DatabaseConfig
from pipeline.contract import Event, EventKind
from pipeline.errors import PipelineError, classify_database_error
from pipeline.importer import position
from pipeline.importer.csv_cells import check_columns
from pipeline.importer.figures import Figures, database_figures
from pipeline.importer.position import ImportState, PositionFileError
from pipeline.importer.records import Reject, classify
from pipeline.importer.scan import ScanResult, scan
from pipeline.importer.send import SendReport, send_all
from pipeline.importer.sources import Format, Line, Source, SourceError
from pipeline.importer.verify import Row, compare, report_json, retention_cutoffs, wait_applied
from pipeline.kinds import spec_of
from pipeline.producer import DEFAULT_MAX_RECORD_BYTES

__all__ = [
    "ImportBusyError",
    "ImportNotReadyError",
    "ImportOptions",
    "ImportReportError",
    "ImportStoppedError",
    "Progressing",
    "Reporter",
    "run_import",
    "write_report",
]


class ImportBusyError(PipelineError):
    """Another import of the same file is running on this host."""

    retriable = True


class ImportStoppedError(PipelineError):
    """The import stopped (the position file could not be written); run it again."""

    retriable = True


class ImportNotReadyError(PipelineError):
    """The workers did not apply the target topics' earlier records in time, so the
    baseline could not be taken; nothing was sent: run the same command again."""

    retriable = True


class ImportReportError(PipelineError):
    """The ``--report`` file could not be written; the import itself is done."""


class Progressing(Protocol):
    def update(self, done: int, total: int | None = None) -> None: ...
    def finish(self) -> None: ...


class Reporter(Protocol):
    """What the command shows; see :mod:`pipeline.cli.importer`."""

    def progress(self, total: int | None, label: str, unit: str) -> Progressing | None: ...
    def scanned(self, state: ImportState, scan: ScanResult, *, dry_run: bool) -> None: ...
    def resuming(self, state: ImportState) -> None: ...
    def baseline(self, state: ImportState) -> None: ...
    def sent(self, state: ImportState, report: SendReport | None) -> None: ...
    def not_applied(self, state: ImportState, group: str, timeout_s: float) -> None: ...
    def verified(self, state: ImportState, rows: list[Row]) -> None: ...


@dataclass(frozen=True)
class ImportOptions:
    """The command's options (see ``pipeline import --help``)."""

    files: tuple[Path, ...]
    kind: EventKind | None = None
    format: Format | None = None
    reject_file: Path | None = None
    position_file: Path | None = None
    verify: bool = True
    verify_timeout_s: float = 600.0
    dry_run: bool = False
    chunk_lines: int = 500
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    report: Path | None = None

    @property
    def position_path(self) -> Path:
        first = self.files[0]
        return self.position_file or first.with_name(first.name + ".position.json")

    @property
    def reject_path(self) -> Path:
        first = self.files[0]
        return self.reject_file or first.with_name(first.name + ".rejects.jsonl")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImportBusyError(
                f"another `pipeline import` of {path} is running on this host; wait for it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _classifier(
    kind: EventKind | None, now_ms: int, cutoffs: dict[EventKind, int]
) -> Callable[[Line, Source], Event | Reject]:
    def table(k: EventKind) -> str:
        return spec_of(k).writer.table

    def decide(line: Line, source: Source) -> Event | Reject:
        return classify(
            line, kind, cells=source.format == "csv", now_ms=now_ms, cutoffs=cutoffs, tables=table
        )

    return decide


async def _connected(database: DatabaseConfig, work: Callable[[Any], Any]) -> Any:
    """Run ``work(connection)``; PostgreSQL's errors become the pipeline's (classified)."""
    conn = await db.connect(database, application_name="pipeline-import")
    try:
        return await work(conn)
    except Exception as exc:
        error = classify_database_error(exc)
        if error is None or error is exc:
            raise
        raise error from exc
    finally:
        await conn.close()


def _saver(path: Path, state: ImportState) -> Callable[[], None]:
    def save() -> None:
        try:
            position.save(path, state)
        except OSError as exc:
            raise ImportStoppedError(
                f"cannot write the position file {path} ({exc}); the import stopped at its "
                "last checkpoint: fix the cause and run the same command again"
            ) from exc

    return save


def _check_headers(sources: list[Source], kind: EventKind | None) -> None:
    for source in sources:
        columns = source.columns()
        if columns is not None:
            check_columns(source.path, columns, kind)


async def run_import(options: ImportOptions, config: Config, reporter: Reporter) -> int:
    """Run (or resume, or verify again) the import of ``options.files``."""
    sources = [Source(path, options.format) for path in options.files]
    _check_headers(sources, options.kind)  # before anything is read, locked or sent
    if not options.dry_run:
        config.require_kafka()  # before a long scan, not after
    with _locked(sources[0].path):
        state = position.load(options.position_path)
        if state is None:
            state = await _first_run(options, config, sources, reporter)
            if state is None:
                return 0
        else:
            _check_resume(options, state, sources)
            reporter.resuming(state)
            if options.dry_run:
                return 0
        save = _saver(options.position_path, state)
        need_baseline = options.verify and state.baseline is None and not state.lower_bounds
        if need_baseline and not state.valid_events:
            # Nothing to send, no day to read: no traffic to wait for either.
            await _take_baseline(options, config, state, reporter, None)
            save()
        if not state.complete:
            if state.valid_events:
                cutoffs = {EventKind(k): v for k, v in state.cutoffs.items()}
                base = state.events_sent  # a resumed run shows (and times) what is left
                bars: list[Progressing | None] = []

                def sending(done: int) -> None:
                    if not bars:  # made at the first record, after the baseline's display
                        bars.append(
                            reporter.progress(state.valid_events - base, "importing", "events")
                        )
                    bar = bars[0]
                    if bar is not None:
                        bar.update(done - base)

                async def baseline(fences: Mapping[tuple[str, int], int]) -> None:
                    await _take_baseline(options, config, state, reporter, fences)

                try:
                    report: SendReport | None = await send_all(
                        config.require_kafka(),
                        config.topics,
                        state,
                        sources,
                        _classifier(_kind(state.kind), state.now_ms, cutoffs),
                        save=save,
                        progress=sending,
                        before_send=baseline if need_baseline else None,
                    )
                finally:
                    if bars and bars[0] is not None:
                        bars[0].finish()
            else:
                report = None
            state.complete = True
            save()
            reporter.sent(state, report)
        if not options.verify:
            return 0
        return await _verify(options, config, state, reporter)


def _kind(value: str | None) -> EventKind | None:
    return None if value is None else EventKind(value)


async def _first_run(
    options: ImportOptions, config: Config, sources: list[Source], reporter: Reporter
) -> ImportState | None:
    database = config.database
    if options.verify and not options.dry_run:
        database = config.require_database()
    cutoffs: dict[EventKind, int] = {}
    if database is not None:
        cutoffs = await _connected(database, lambda c: retention_cutoffs(c, list(EventKind)))
    now_ms = time.time_ns() // 1_000_000
    decide = _classifier(options.kind, now_ms, cutoffs)
    bar = reporter.progress(sum(s.size for s in sources), "scanning", "bytes")
    try:
        with options.reject_path.open("wb") as rejects:
            result = scan(sources, decide, rejects, progress=None if bar is None else bar.update)
    except OSError as exc:
        raise SourceError(f"cannot write the reject file {options.reject_path}: {exc}") from exc
    finally:
        if bar is not None:
            bar.finish()
    shas = [f.sha256 for f in result.files]
    if len(set(shas)) != len(shas):
        raise SourceError("the same file (same contents) is given twice: import it once")
    state = ImportState(
        files=result.files,
        kind=None if options.kind is None else options.kind.value,
        format=options.format,
        chunk_lines=options.chunk_lines,
        max_record_bytes=options.max_record_bytes,
        now_ms=now_ms,
        cutoffs={k.value: v for k, v in cutoffs.items()},
        figures=result.figures.to_json(),
        reject_file=str(options.reject_path),
        rejects_by_reason=dict(result.rejects_by_reason.most_common()),
    )
    if options.dry_run:
        reporter.scanned(state, result, dry_run=True)
        return None
    try:
        position.save(options.position_path, state)
    except OSError as exc:
        raise PositionFileError(
            f"cannot write the position file {options.position_path}: {exc}"
        ) from exc
    reporter.scanned(state, result, dry_run=False)
    return state


async def _wait_watermarks(
    conn: Any,
    reporter: Reporter,
    label: str,
    group: str,
    targets: Mapping[tuple[str, int], int],
    timeout_s: float,
) -> bool:
    """Wait (with progress) until ``group``'s watermark reaches ``targets``; False on
    timeout."""
    bar = reporter.progress(None, label, "records")
    base: list[int] = []

    def applying(done: int, total: int) -> None:
        # Offsets below the first reading were applied before: count from there.
        if not base:
            base.append(done)
        if bar is not None:
            bar.update(done - base[0], total - base[0])

    try:
        return await wait_applied(conn, group, targets, timeout_s=timeout_s, progress=applying)
    finally:
        if bar is not None:
            bar.finish()


async def _take_baseline(
    options: ImportOptions,
    config: Config,
    state: ImportState,
    reporter: Reporter,
    fences: Mapping[tuple[str, int], int] | None,
) -> None:
    """PostgreSQL's figures for the files' days, before anything is sent, once the workers
    applied every record before ``fences`` (the offsets of this run's fences: everything
    in the target topics when it started). Raises :class:`ImportNotReadyError` if they do
    not within ``--verify-timeout-s``."""
    database = config.require_database()
    group = config.worker.group_id
    days = Figures.from_json(state.figures).days()

    async def work(conn: Any) -> Figures:
        if fences and not await _wait_watermarks(
            conn, reporter, "catching up", group, fences, options.verify_timeout_s
        ):
            raise ImportNotReadyError(
                f"the workers of group {group} have not applied the records already in the "
                f"target topics within {options.verify_timeout_s:g}s, and the baseline must "
                "wait for them (they may be for the same days); nothing was sent: start the "
                "workers or let them catch up, then run the same command again"
            )
        return await database_figures(conn, days)

    baseline = await _connected(database, work)
    state.baseline = baseline.to_json()
    state.baseline_at = datetime.now(UTC).isoformat(timespec="seconds")
    reporter.baseline(state)


def _check_resume(options: ImportOptions, state: ImportState, sources: list[Source]) -> None:
    kind = None if options.kind is None else options.kind.value
    shas = [s.digest() for s in sources]
    why = state.mismatch(shas, kind, options.format, options.chunk_lines)
    if why is not None:
        raise PositionFileError(
            f"the position file {options.position_path} cannot be used for this import: "
            f"{why}. Run the command it was started with, or pass another --position-file"
        )


async def _verify(
    options: ImportOptions, config: Config, state: ImportState, reporter: Reporter
) -> int:
    database = config.require_database()
    group = config.worker.group_id
    figures = Figures.from_json(state.figures)
    days = figures.days()

    async def work(conn: Any) -> Figures | None:
        if not await _wait_watermarks(
            conn, reporter, "applying", group, state.targets, options.verify_timeout_s
        ):
            return None
        return await database_figures(conn, days)

    after = await _connected(database, work)
    if after is None:
        reporter.not_applied(state, group, options.verify_timeout_s)
        return 1
    before = Figures.from_json(state.baseline) if state.baseline is not None else Figures()
    rows = compare(figures, before, after)
    reporter.verified(state, rows)
    if options.report is not None:
        write_report(options.report, rows, baseline_at=state.baseline_at)
    return 0 if all(r.ok for r in rows) else 1


def write_report(path: Path, rows: list[Row], *, baseline_at: str | None) -> None:
    """Write the verification as JSON to ``path`` (atomically: a temporary file renamed).

    Raises :class:`ImportReportError` (one line: the import itself is done) if it cannot.
    """
    doc = report_json(rows, baseline_at=baseline_at)
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ImportReportError(
            f"cannot write the report {path} ({exc.strerror or exc}); the import itself is "
            "done and its verification is shown above: run the same command again with a "
            "writable --report to write it (nothing is sent again)"
        ) from exc
