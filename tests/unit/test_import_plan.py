"""Deciding lines, cutting records, counting figures and keeping positions (no I/O but files)."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from pipeline.contract import Event, EventKind, validate_event
from pipeline.importer.figures import DAY_MS, Figures, values_match
from pipeline.importer.position import FileState, ImportState, PositionFileError, load, save
from pipeline.importer.records import Chunk, Reject, chunks, classify
from pipeline.importer.scan import scan
from pipeline.importer.sources import Line, Source
from pipeline.importer.verify import compare, report_json

NOW_MS = int(time.time() * 1000)


def call(**fields: object) -> dict[str, object]:
    event: dict[str, object] = {
        "type": "api_call", "event_id": str(uuid.uuid4()), "occurred_at": NOW_MS - 1000,
        "service": "billing", "endpoint": "/v1/x", "method": "GET", "success": True,
        "response_time_ms": 2.5, "tokens": 10, "cost_usd": 0.25,
    }  # fmt: skip
    event.update(fields)
    return event


def log(**fields: object) -> dict[str, object]:
    event: dict[str, object] = {
        "type": "system_log", "event_id": str(uuid.uuid4()), "occurred_at": NOW_MS - 1000,
        "level": "info", "service": "billing", "message": "m",
    }  # fmt: skip
    event.update(fields)
    return event


def decide(
    line: Line,
    source: Source | None = None,
    *,
    kind: EventKind | None = None,
    cutoffs: dict[EventKind, int] | None = None,
) -> Event | Reject:
    cells = source is not None and source.format == "csv"
    return classify(
        line, kind, cells=cells, now_ms=NOW_MS, cutoffs=cutoffs or {},
        tables=lambda k: f"table of {k.value}",
    )  # fmt: skip


def event(line: Line, kind: EventKind | None = None) -> Event:
    decided = decide(line, kind=kind)
    assert not isinstance(decided, Reject), decided
    return decided


def line(value: object, number: int = 1) -> Line:
    return Line(number - 1, number, value, None, b"")


def test_the_kind_comes_from_the_option_or_the_type_field() -> None:
    assert event(line(call())).kind == EventKind.API_CALL
    untyped = call()
    del untyped["type"]
    assert decide(line(untyped)) == Reject(
        "unknown_event_type", "no type field, and no --kind given"
    )
    assert event(line(untyped), EventKind.API_CALL).kind == EventKind.API_CALL
    unknown = decide(line(call(type="gauge")))
    assert isinstance(unknown, Reject) and unknown.reason == "unknown_event_type"
    assert "'gauge' is not an event kind" in unknown.detail
    # --kind given and a type that disagrees: the contract's own rejection.
    other = decide(line(log()), kind=EventKind.API_CALL)
    assert isinstance(other, Reject) and other.reason == "unknown_event_type"


def test_contract_errors_and_retention_become_rejects() -> None:
    missing = decide(line(call(service=None)))
    assert missing == Reject("missing_field", "service: required")
    assert isinstance(decide(line(call(tokens="3"))), Reject)
    future = decide(line(call(occurred_at=NOW_MS + 3_600_000)))
    assert isinstance(future, Reject) and future.reason == "future_timestamp"
    cutoffs = {EventKind.API_CALL: NOW_MS - DAY_MS}
    old = decide(line(call(occurred_at=NOW_MS - 2 * DAY_MS)), cutoffs=cutoffs)
    assert isinstance(old, Reject) and old.reason == "beyond_retention"
    assert "table of api_call" in old.detail
    assert not isinstance(decide(line(call()), cutoffs=cutoffs), Reject)
    assert decide(Line(0, 1, None, ("malformed_json", "x"), b"")) == Reject("malformed_json", "x")


def write_jsonl(path: Path, events: Sequence[object]) -> Source:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return Source(path)


def test_chunks_are_aligned_deterministic_and_keyed(tmp_path: Path) -> None:
    events: list[dict[str, object]] = [log() if n % 3 == 0 else call() for n in range(23)]
    events[4] = {"type": "api_call"}  # a rejected line still occupies its place
    source = write_jsonl(tmp_path / "e.jsonl", events)

    def cut(start: int = 0, max_bytes: int = 1_048_576) -> list[Chunk]:
        cutter = chunks(
            source, "sha", start=start, chunk_lines=10, max_record_bytes=max_bytes,
            classify_line=decide,
        )  # fmt: skip
        return list(cutter)

    first = cut()
    assert [(c.first_ordinal, c.end_ordinal, c.first_line, c.last_line) for c in first] == [
        (0, 10, 1, 10), (10, 20, 11, 20), (20, 30, 21, 23),
    ]  # fmt: skip
    records = first[0].records
    assert [(r.kind, r.key, r.events) for r in records] == [
        (EventKind.API_CALL, "sha:1:0", 5), (EventKind.SYSTEM_LOG, "sha:1:1", 4),
    ]  # fmt: skip
    calls = [e["event_id"] for e in events[:10] if e["type"] == "api_call" and "service" in e]
    assert [e["event_id"] for e in orjson.loads(records[0].value)] == calls
    assert cut() == first  # the same records, byte for byte
    assert cut(start=10) == first[1:]
    with pytest.raises(ValueError, match="multiple"):
        cut(start=5)
    small = cut(max_bytes=700)[0].records
    assert all(len(r.value) <= 700 for r in small)
    assert sum(r.events for r in small) == 9
    assert [r.key for r in small] == [f"sha:1:{n}" for n in range(len(small))]


def test_figures_count_like_postgresql_stores() -> None:
    figures = Figures()
    repeated = log()

    def add(event: dict[str, object]) -> bool:
        kind = EventKind(str(event["type"]))
        return figures.add(validate_event(kind, event, now_ms=NOW_MS))

    same_call = call()
    assert add(same_call) and add(same_call)  # API calls add up: both count
    assert add(repeated) and not add(repeated)  # a log is stored once
    assert add(dict(repeated, occurred_at=NOW_MS - DAY_MS))  # another row: another time
    day = (NOW_MS - 1000) // DAY_MS
    assert figures.get(EventKind.API_CALL, day) == [2, 20, 50_000_000]
    assert figures.get(EventKind.SYSTEM_LOG, day) == [1]
    assert figures.get(EventKind.AUDIT, day) == [0]
    days = figures.days()
    assert days[EventKind.SYSTEM_LOG] == sorted({day, (NOW_MS - DAY_MS) // DAY_MS})
    assert Figures.from_json(orjson.loads(orjson.dumps(figures.to_json()))).data == figures.data


def test_values_match_exactly_except_doubles() -> None:
    assert values_match("count", 3, 3) and not values_match("usd", 1, 2)
    assert values_match("float", 1e12, 1e12 + 1e-3)
    assert not values_match("float", 1.0, 1.001)


def test_compare_lists_what_postgresql_gained() -> None:
    file, before, after = Figures(), Figures(), Figures()
    file.data[(EventKind.SYSTEM_LOG, 100)] = [5]
    file.data[(EventKind.API_CALL, 100)] = [2, 20, 50]
    before.data[(EventKind.SYSTEM_LOG, 100)] = [7]
    after.data[(EventKind.SYSTEM_LOG, 100)] = [12]
    after.data[(EventKind.API_CALL, 100)] = [2, 20, 49]
    rows = compare(file, before, after)
    assert [(r.kind.value, r.measure, r.gained, r.ok) for r in rows] == [
        ("api_call", "requests", 2, True), ("api_call", "tokens", 20, True),
        ("api_call", "cost_usd", 49, False), ("system_log", "rows", 5, True),
    ]  # fmt: skip
    doc = report_json(rows, baseline_at="t")
    assert doc["verified"] is False
    assert doc["rows"][2]["file"] == "0.00000050" and doc["rows"][2]["day"] == "1970-04-11"


def state_of(shas: list[str]) -> ImportState:
    files = [FileState(f"f{n}", sha, 1, "jsonl", False, 3, {"api_call": 3}, 0)
             for n, sha in enumerate(shas)]  # fmt: skip
    return ImportState(
        files=files, kind=None, format=None, chunk_lines=500, max_record_bytes=1000,
        now_ms=NOW_MS, cutoffs={"api_call": 5}, figures={"api_call": {"2026-01-01": [1, 2, 3]}},
        reject_file="r.jsonl", rejects_by_reason={"missing_field": 2},
    )  # fmt: skip


def test_the_position_file_round_trips_atomically(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    assert load(path) is None
    state = state_of(["a", "b"])
    state.lower_bounds = {("calls", 0): 5, ("calls", 1): 7}
    state.targets = {("calls", 1): 9}
    state.landed = {"a:11:0": ("calls", 1, 8)}
    state.files[0].next_ordinal, state.files[0].next_line = 10, 11
    save(path, state)
    save(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left
    loaded = load(path)
    assert loaded is not None
    assert loaded.to_json().split(b'"updated_at"')[0] == state.to_json().split(b'"updated_at"')[0]
    assert loaded.files == state.files and loaded.landed == state.landed
    assert loaded.lower_bounds == state.lower_bounds and loaded.rejected == 2
    path.write_text("{}")
    with pytest.raises(PositionFileError, match="not one `pipeline import` wrote"):
        load(path)


def test_a_position_file_belongs_to_one_import() -> None:
    state = state_of(["a", "b"])
    assert state.mismatch(["a", "b"], None, None, 500) is None
    assert "another set of files" in str(state.mismatch(["b", "a"], None, None, 500))
    assert "--kind" in str(state.mismatch(["a", "b"], "audit", None, 500))
    assert "--format" in str(state.mismatch(["a", "b"], None, "csv", 500))
    assert "--record-events 500" in str(state.mismatch(["a", "b"], None, None, 50))


def test_scan_writes_each_reject_and_counts_the_rest(tmp_path: Path) -> None:
    events: list[object] = [call(), call(service=None), log(), "not an object", log(level="x")]
    source = write_jsonl(tmp_path / "e.jsonl", events)
    out = io.BytesIO()
    seen: list[int] = []
    result = scan([source], decide, out, progress=seen.append)
    rejects = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "missing_field"), (4, "not_an_object"), (5, "invalid_value"),
    ]  # fmt: skip
    assert (
        rejects[0]["file"] == "e.jsonl" and rejects[0]["text"] == orjson.dumps(events[1]).decode()
    )
    (state,) = result.files
    assert state.data_lines == 5 and state.rejected == 3
    assert state.valid == {"api_call": 1, "system_log": 1}
    assert state.sha256 == source.digest()
    assert result.first_rejects[0] == "e.jsonl:2: missing_field: service: required"
    assert seen[-1] == source.size


def test_the_command_is_registered_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["import", "a.csv", "b.jsonl.gz", "--kind", "audit", "--no-verify"])
    assert args.files == [Path("a.csv"), Path("b.jsonl.gz")] and args.kind == "audit"
    assert args.verify is False and args.record_events == 500 and args.verify_timeout_s == 600
    with pytest.raises(SystemExit) as usage:
        parser.parse_args(["import", "a.csv", "--record-events", "0"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as shown:
        parser.parse_args(["import", "--help"])
    assert shown.value.code == 0
    help_text = capsys.readouterr().out
    assert "exit codes: 0 imported and verified" in help_text and "--position-file" in help_text
