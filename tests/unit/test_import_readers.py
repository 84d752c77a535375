"""Reading import files (JSON Lines, CSV, gzip) and typing CSV cells (no broker, no database)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.contract import EventKind, validate_event
from pipeline.importer.csv_cells import CellError, field_types, typed_row
from pipeline.importer.sources import Source, SourceError, detect_format
from pipeline.workload import WorkloadSpec, generate

NOW_MS = int(time.time() * 1000)


def lines_of(source: Source, skip: int = 0) -> list[tuple[int, int, object, Any]]:
    return [(x.ordinal, x.number, x.value, x.error) for x in source.lines(skip=skip)]


def test_jsonl_lines_are_numbered_as_in_the_file_and_blank_ones_skipped(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    data = b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\r\n{bad\n[1]\n  \n{"a": 3}'
    path.write_bytes(data)
    source = Source(path)
    got = lines_of(source)
    assert [(o, n) for o, n, _, _ in got] == [(0, 1), (1, 3), (2, 4), (3, 5), (4, 7)]
    assert got[0][2] == {"a": 1} and got[1][2] == {"a": 2} and got[4][2] == {"a": 3}
    assert got[2][3] is not None and got[2][3][0] == "malformed_json"
    assert got[3][3] == ("not_an_object", "a line must be one JSON object, got an array")
    assert source.sha256 == hashlib.sha256(data).hexdigest()
    assert source.bytes_read == len(data) == source.size
    assert source.digest() == source.sha256


def test_skipped_lines_are_not_decoded(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_bytes(b"{bad\n{bad\n{}\n")
    got = lines_of(Source(path), skip=2)
    assert got == [(0, 1, None, None), (1, 2, None, None), (2, 3, {}, None)]


def test_gzip_is_recognised_by_its_bytes_and_hashed_as_stored(tmp_path: Path) -> None:
    plain = b'{"a": 1}\n{"a": 2}\n'
    packed = gzip.compress(plain)
    path = tmp_path / "e.jsonl"  # no .gz: the magic bytes decide
    path.write_bytes(packed)
    source = Source(path)
    assert source.gzip and source.format == "jsonl"
    assert [v for _, _, v, _ in lines_of(source)] == [{"a": 1}, {"a": 2}]
    assert source.sha256 == hashlib.sha256(packed).hexdigest()
    assert source.bytes_read == len(packed)


def test_gzip_csv_is_read_and_hashed_too(tmp_path: Path) -> None:
    packed = gzip.compress(b"event_id,level\na,info\nb,warn\n")
    path = tmp_path / "logs.csv.gz"
    path.write_bytes(packed)
    source = Source(path)
    assert source.format == "csv" and source.gzip
    assert [v for _, _, v, _ in lines_of(source)] == [
        {"event_id": "a", "level": "info"}, {"event_id": "b", "level": "warn"},
    ]  # fmt: skip
    assert source.sha256 == hashlib.sha256(packed).hexdigest()


def test_a_truncated_gzip_file_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-20])
    with pytest.raises(SourceError, match=r"truncated|cannot read"):
        lines_of(Source(path))


def test_format_comes_from_the_name_or_the_option(tmp_path: Path) -> None:
    assert detect_format(Path("x.csv.gz")) == "csv"
    assert detect_format(Path("x.NDJSON")) == "jsonl"
    assert detect_format(Path("x.json.gz")) == "jsonl"
    assert detect_format(Path("x.txt")) is None
    path = tmp_path / "events.txt"
    path.write_text("event_id\n")
    with pytest.raises(SourceError, match="--format"):
        Source(path)
    assert Source(path, "csv").format == "csv"
    with pytest.raises(SourceError, match="cannot read"):
        Source(tmp_path / "missing.csv")


def test_csv_rows_keep_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(
        b"\xef\xbb\xbfevent_id,message,level\n"
        b'a,"two\nlines",info\n'
        b"\n"
        b"b,short\n"
        b"c,x,info,extra\n"
        b"d,\xff\xfe,info\n"
        b"e,last,warn\n"
    )
    got = lines_of(Source(path))
    assert [(o, n) for o, n, _, _ in got] == [(0, 2), (1, 5), (2, 6), (3, 7), (4, 8)]
    assert got[0][2] == {"event_id": "a", "message": "two\nlines", "level": "info"}
    # A short row is not imported with defaults for its missing cells: it is rejected.
    assert got[1][2] is None and got[1][3] == ("malformed_csv", "the row has 2 cells, the header 3")
    assert got[2][3] == ("malformed_csv", "the row has 4 cells, the header 3")
    assert got[3][3] == ("malformed_csv", "the row is not valid UTF-8")
    assert got[4][2] == {"event_id": "e", "message": "last", "level": "warn"}


def test_a_csv_header_must_name_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("id,message\n1,x\n")
    with pytest.raises(SourceError, match="no event_id column"):
        lines_of(Source(path))
    path.write_text("event_id,message,message\n1,x,y\n")
    with pytest.raises(SourceError, match="every column once"):
        lines_of(Source(path))
    path.write_text("")
    assert lines_of(Source(path)) == []


def test_field_types_come_from_the_json_schemas() -> None:
    types, empty_ok = field_types(EventKind.API_CALL)
    assert types["tokens"] == "integer" and types["status_code"] == "integer"
    assert types["cost_usd"] == "number" and types["response_time_ms"] == "number"
    assert types["success"] == "boolean" and types["occurred_at"] == "timestamp"
    assert types["event_id"] == "string" and types["method"] == "string"
    assert empty_ok == frozenset()
    types, empty_ok = field_types(EventKind.SYSTEM_LOG)
    assert types["metadata"] == "object" and empty_ok == {"message"}
    assert field_types(EventKind.PERFORMANCE_METRIC)[0]["tags"] == "object"
    assert field_types(EventKind.AUDIT)[0]["before"] == "object"


def test_cells_are_typed_per_field() -> None:
    row = typed_row(
        EventKind.API_CALL,
        {
            "occurred_at": "1789999200123", "success": "T", "tokens": "42", "status_code": "",
            "cost_usd": "0.00012345", "response_time_ms": "1e3", "user_id": "007",
            "extra": "12",
        },
    )  # fmt: skip
    assert row == {
        "occurred_at": 1789999200123, "success": True, "tokens": 42, "cost_usd": 0.00012345,
        "response_time_ms": 1000.0, "user_id": "007", "extra": "12",
    }  # fmt: skip
    odd = typed_row(
        EventKind.API_CALL,
        {"occurred_at": "2026-09-21T14:00:00Z", "success": "yes", "tokens": "3.5",
         "response_time_ms": "1_000", "cost_usd": "nan"},
    )  # fmt: skip
    assert odd["occurred_at"] == "2026-09-21T14:00:00Z"
    assert odd["success"] == "yes" and odd["tokens"] == 3.5 and odd["response_time_ms"] == "1_000"
    assert isinstance(odd["cost_usd"], float) and math.isnan(odd["cost_usd"])
    log = typed_row(EventKind.SYSTEM_LOG, {"message": "", "metadata": '{"a": [1]}', "user_id": ""})
    assert log == {"message": "", "metadata": {"a": [1]}}
    with pytest.raises(CellError, match="metadata: not valid JSON") as caught:
        typed_row(EventKind.SYSTEM_LOG, {"metadata": "{oops"})
    assert caught.value.reason == "malformed_json"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def test_a_csv_row_validates_to_the_same_event_as_its_json() -> None:
    spec = WorkloadSpec(seed=9, api_calls=400, start_ms=NOW_MS, duplicate_fraction=0.1)
    items = [i for i in generate(spec) if i.event is not None]
    assert {i.kind for i in items} == set(EventKind)
    for item in items:
        assert item.event is not None
        out = io.StringIO()
        csv.writer(out).writerow([_cell(v) for v in item.event.values()])
        cells = next(csv.reader(io.StringIO(out.getvalue())))
        row = typed_row(item.kind, dict(zip(item.event, cells, strict=True)))
        expected = validate_event(item.kind, item.event, now_ms=NOW_MS)
        assert validate_event(item.kind, row, now_ms=NOW_MS) == expected
