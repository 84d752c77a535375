"""What ``pipeline import`` refuses or reports instead of importing silently wrong: short CSV
rows, unknown CSV columns, a resume across deleted Kafka records, a baseline taken before
earlier traffic was applied, a statement timeout, an unwritable report (no broker, no
database: fakes where PostgreSQL would answer)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline import db
from pipeline.cli import build_parser, main
from pipeline.cli import importer as importer_cli
from pipeline.config import Config, DatabaseConfig, WorkerConfig
from pipeline.contract import Event, EventKind
from pipeline.errors import ConfigError, PipelineError
from pipeline.importer import job
from pipeline.importer.csv_cells import check_columns, known_columns
from pipeline.importer.figures import DAY_MS, FiguresTimeoutError, database_figures
from pipeline.importer.position import FileState, ImportState
from pipeline.importer.records import Reject, classify
from pipeline.importer.scan import scan
from pipeline.importer.sources import Line, Source, SourceError
from pipeline.importer.tail import ImportRetentionError, retention_gaps
from pipeline.importer.verify import Row

NOW_MS = int(time.time() * 1000)
HEADER = ["type", "event_id", "occurred_at", "service", "endpoint", "method", "success",
          "response_time_ms", "tokens", "cost_usd"]  # fmt: skip


def call_row(**cells: str) -> list[str]:
    row = {"type": "api_call", "event_id": str(uuid.uuid4()), "occurred_at": str(NOW_MS - 1000),
           "service": "billing", "endpoint": "/v1/x", "method": "GET", "success": "true",
           "response_time_ms": "2.5", "tokens": "10", "cost_usd": "0.25"}  # fmt: skip
    row.update(cells)
    return [row[name] for name in HEADER]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def decide(line: Line, source: Source) -> Event | Reject:
    return classify(line, None, cells=True, now_ms=NOW_MS, cutoffs={}, tables=str)


# 1. A CSV row must have as many cells as the header.


def test_a_short_or_long_csv_row_is_rejected_with_its_line(tmp_path: Path) -> None:
    full = call_row()
    path = write_csv(
        tmp_path / "calls.csv",
        HEADER,
        [
            full,
            full[:-2],  # tokens and cost_usd missing: not "absent, default 0"
            call_row(tokens="", cost_usd=""),  # empty cells, every one there: valid
            [*call_row(), "extra"],
            call_row(),
        ],
    )
    out = io.BytesIO()
    result = scan([Source(path)], decide, out)
    rejects = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [(r["line"], r["reason"], r["detail"]) for r in rejects] == [
        (3, "malformed_csv", "the row has 8 cells, the header 10"),
        (5, "malformed_csv", "the row has 11 cells, the header 10"),
    ]
    assert rejects[0]["text"] == ",".join(full[:-2])
    (state,) = result.files
    assert state.data_lines == 5 and state.valid == {"api_call": 3} and state.rejected == 2
    day = (NOW_MS - 1000) // DAY_MS
    assert result.figures.get(EventKind.API_CALL, day)[:2] == [3, 20]  # requests, tokens


# 3. Unknown CSV columns are refused before anything is read or sent.


def test_a_column_of_no_field_of_the_kind_is_refused_naming_the_known_ones() -> None:
    columns = [*HEADER[:-2], "token", "cost_usd"]
    with pytest.raises(SourceError) as refused:
        check_columns(Path("calls.csv"), columns, EventKind.API_CALL)
    message = str(refused.value)
    assert "\n" not in message
    assert "calls.csv: unknown CSV column 'token': not a field of api_call" in message
    assert "(known: cost_usd, endpoint, event_id, " in message and " tokens, type, " in message
    check_columns(Path("calls.csv"), HEADER, EventKind.API_CALL)  # every column known


def test_a_file_of_several_kinds_may_have_any_kinds_columns() -> None:
    mixed = [*HEADER, "level", "message", "name", "value", "before"]
    check_columns(Path("mixed.csv"), mixed, None)  # fields of other kinds: fine
    with pytest.raises(SourceError, match=r"columns 'levl', 'tokn': not a field of any event"):
        check_columns(Path("mixed.csv"), [*mixed, "levl", "tokn"], None)
    # With --kind, another kind's field is unknown: the validator would ignore it.
    with pytest.raises(SourceError, match="'level': not a field of api_call"):
        check_columns(Path("calls.csv"), [*HEADER, "level"], EventKind.API_CALL)
    assert known_columns(None) >= known_columns(EventKind.AUDIT) | {"type", "level"}


def test_the_header_is_read_alone(tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "a.csv", HEADER, [call_row()])
    assert Source(plain).columns() == HEADER
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert Source(packed).columns() == HEADER
    (tmp_path / "e.csv").write_text("")
    assert Source(tmp_path / "e.csv").columns() is None
    (tmp_path / "e.jsonl").write_text("{}\n")
    assert Source(tmp_path / "e.jsonl").columns() is None
    (tmp_path / "b.csv").write_text("id,token\n1,2\n")
    with pytest.raises(SourceError, match="no event_id column"):
        Source(tmp_path / "b.csv").columns()


def test_the_command_refuses_an_unknown_column_with_exit_2_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "calls.csv", [*HEADER[:-2], "token", "cost_usd"], [call_row()])
    args = build_parser().parse_args(["import", str(path), "--kind", "api_call", "--quiet"])
    # No broker, no database configured: the header is refused before either is needed.
    assert importer_cli.run(args, Config()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown CSV column 'token'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.csv"]  # no rejects, no position


# 2. A resume across records deleted by retention refuses.

T0, T1 = ("calls", 0), ("calls", 1)


def test_a_resume_is_refused_where_retention_deleted_records_after_the_lower_bound() -> None:
    lower = {T0: 100, T1: 50}
    fences = {T0: 180, T1: 90}
    assert retention_gaps(lower, fences, {T0: 0, T1: 50}) == []  # nothing deleted
    assert retention_gaps(lower, fences, {T0: 100, T1: 12}) == []  # deleted, but before
    assert retention_gaps(lower, fences, {T0: 101, T1: 50}) == [(T0, 100, 101)]
    # Everything up to the fence gone, or the fence is all that is left: still refused.
    assert retention_gaps(lower, fences, {T0: 180, T1: 91}) == [(T0, 100, 180), (T1, 50, 91)]
    # A partition with nothing to read (the earlier run's bound is at the fence) is fine.
    assert retention_gaps({T0: 180}, {T0: 180}, {T0: 180}) == []
    # A partition added since (no lower bound) is read from 0; one not answered is refused.
    assert retention_gaps({}, {T0: 5}, {T0: 3}) == [(T0, 0, 3)]
    assert retention_gaps({T0: 1}, {T0: 5}, {}) == [(T0, 1, 5)]


def test_the_refusal_says_what_happened_and_what_to_do() -> None:
    error = ImportRetentionError([(T0, 100, 180), (T1, 50, 91)])
    message = str(error)
    assert "\n" not in message and isinstance(error, PipelineError)
    assert not isinstance(error, ConfigError) and not error.retriable  # exit 1, not "again"
    assert "retention deleted offsets 100 to 179 of calls partition 0" in message
    assert "(and 1 more partition(s))" in message and "cannot prove" in message
    assert "verify what PostgreSQL holds" in message
    assert "offset 7" in str(ImportRetentionError([(T0, 7, None)]))


# 4. The baseline waits for the workers to apply what the topics held (up to the fences).


class FakeConn:
    """Answers the watermark query (moving ``step`` per poll) and the figure queries."""

    def __init__(self, marks: dict[tuple[str, int], int], step: int, stop: int) -> None:
        self.marks = marks
        self.step = step
        self.stop = stop
        self.figures_read_at: dict[tuple[str, int], int] | None = None
        self.statements: list[tuple[Any, ...]] = []

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        assert "ingest_offsets" in sql
        rows = [{"topic": t, "partition": p, "next_offset": o} for (t, p), o in self.marks.items()]
        for tp in self.marks:
            self.marks[tp] = min(self.marks[tp] + self.step, self.stop)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any]:
        if self.figures_read_at is None:
            self.figures_read_at = dict(self.marks)
        self.statements.append(args)
        return {"m0": 0}

    async def close(self) -> None:
        pass


class Quiet:
    def __init__(self) -> None:
        self.baselines = 0

    def progress(self, total: int | None, label: str, unit: str) -> None:
        return None

    def baseline(self, state: ImportState) -> None:
        self.baselines += 1


def a_state(days: int) -> ImportState:
    figures = {"system_log": {f"2026-01-{d + 1:02d}": [1] for d in range(days)}}
    file = FileState("f", "sha", 1, "jsonl", False, days, {"system_log": days}, 0)
    return ImportState(
        files=[file], kind=None, format=None, chunk_lines=500, max_record_bytes=1000,
        now_ms=NOW_MS, cutoffs={}, figures=figures, reject_file="r", rejects_by_reason={},
    )  # fmt: skip


def baseline_with(
    monkeypatch: pytest.MonkeyPatch, conn: FakeConn, timeout_s: float
) -> tuple[ImportState, Quiet]:
    async def connect(*args: Any, **kwargs: Any) -> FakeConn:
        return conn

    monkeypatch.setattr(db, "connect", connect)
    config = Config(
        database=DatabaseConfig(url="postgresql://x/y"), worker=WorkerConfig(group_id="g")
    )
    options = job.ImportOptions(files=(Path("f"),), verify_timeout_s=timeout_s)
    state, reporter = a_state(3), Quiet()
    fences = {T0: 4, T1: 0}  # partition 1 is empty: nothing to wait for there
    asyncio.run(job._take_baseline(options, config, state, reporter, fences))  # type: ignore[arg-type]
    return state, reporter


def test_the_baseline_is_taken_once_the_workers_reached_the_fences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = FakeConn({T0: 1}, step=2, stop=10)
    state, reporter = baseline_with(monkeypatch, conn, timeout_s=30)
    # Read after the watermark reached the fence's offset (the fence itself need not be).
    assert conn.figures_read_at is not None and conn.figures_read_at[T0] >= 4
    assert len(conn.statements) == 3  # one statement per day (item 5)
    assert state.baseline == {} and state.baseline_at is not None and reporter.baselines == 1


def test_no_baseline_while_the_workers_lag_behind_the_fences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = FakeConn({T0: 1}, step=0, stop=1)
    with pytest.raises(job.ImportNotReadyError) as refused:
        baseline_with(monkeypatch, conn, timeout_s=0.2)
    assert conn.figures_read_at is None
    message = str(refused.value)
    assert "\n" not in message and "group g" in message and "nothing was sent" in message


# 5. Figures are read one day at a time; a statement timeout names the setting.


class Figures5Conn:
    def __init__(self, fail_on: int | None = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.fail_on = fail_on
        self.error = error

    async def fetchrow(self, sql: str, start: Any, end: Any) -> dict[str, Any]:
        self.calls.append((sql, start, end))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            assert self.error is not None
            raise self.error
        if start.day == 2:  # no rows that day
            return {"m0": None, "m1": None, "m2": None}
        return {"m0": 3, "m1": 30, "m2": "0.5"}


def test_database_figures_read_one_day_per_statement() -> None:
    first = 20_454  # 2026-01-01
    conn = Figures5Conn()
    figures = asyncio.run(
        database_figures(conn, {EventKind.API_CALL: [first + 2, first, first + 1]})
    )
    assert len(conn.calls) == 3 and "GROUP BY" not in conn.calls[0][0]
    assert [(c[2] - c[1]).days for c in conn.calls] == [1, 1, 1]
    assert figures.data == {
        (EventKind.API_CALL, first): [3, 30, 50_000_000],
        (EventKind.API_CALL, first + 2): [3, 30, 50_000_000],
    }


def test_a_statement_timeout_names_database_statement_timeout_ms() -> None:
    cancelled = asyncpg.exceptions.QueryCanceledError(
        "canceling statement due to statement timeout"
    )
    conn = Figures5Conn(fail_on=2, error=cancelled)
    with pytest.raises(FiguresTimeoutError) as timed_out:
        asyncio.run(database_figures(conn, {EventKind.SYSTEM_LOG: [20_454, 20_455]}))
    message = str(timed_out.value)
    assert "DATABASE_STATEMENT_TIMEOUT_MS" in message and "2026-01-02" in message
    assert timed_out.value.sqlstate == "57014" and "\n" not in message
    # Another error is not mistaken for a timeout.
    other = asyncpg.exceptions.UndefinedTableError('relation "system_logs" does not exist')
    with pytest.raises(asyncpg.exceptions.UndefinedTableError):
        asyncio.run(database_figures(Figures5Conn(1, other), {EventKind.SYSTEM_LOG: [20_454]}))


# 6. An unwritable --report: one line, exit 1, the import itself is done.


def rows() -> list[Row]:
    return [Row(EventKind.SYSTEM_LOG, 20_454, "rows", "count", 5, 2, 7)]


def test_the_report_is_written_or_a_one_line_error_says_the_import_is_done(
    tmp_path: Path,
) -> None:
    path = tmp_path / "report.json"
    job.write_report(path, rows(), baseline_at="t")
    assert orjson.loads(path.read_bytes())["verified"] is True
    missing = tmp_path / "no-such-dir" / "report.json"
    with pytest.raises(job.ImportReportError) as failed:
        job.write_report(missing, rows(), baseline_at="t")
    message = str(failed.value)
    assert "\n" not in message and str(missing) in message
    assert "the import itself is done" in message
    (tmp_path / "dir.json").mkdir()  # the rename fails: no temporary file is left behind
    with pytest.raises(job.ImportReportError):
        job.write_report(tmp_path / "dir.json", rows(), baseline_at="t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "report.json"]


@pytest.mark.parametrize(
    "error",
    [
        job.ImportReportError("cannot write the report r.json; the import itself is done"),
        ImportRetentionError([(T0, 1, 2)]),
    ],
)
def test_the_command_prints_such_errors_on_one_line_with_exit_1(
    error: PipelineError, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def failing(*args: Any) -> int:
        raise error

    monkeypatch.setattr(importer_cli, "run_import", failing)
    assert main(["import", "x.jsonl", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"pipeline: {error}\n" and "Traceback" not in err
