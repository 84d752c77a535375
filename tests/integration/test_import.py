"""``pipeline import`` as an operator runs it: a real process, a real worker, exact totals."""

from __future__ import annotations

import asyncio
import csv
import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
import pytest

from pipeline.contract import EventKind
from pipeline.importer.position import load
from pipeline.workload import ExpectedTotals, Item, WorkloadSpec, generate
from tests.conftest import REPO
from tests.integration.harness import Pipeline

NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000
MONITORING = (EventKind.SYSTEM_LOG, EventKind.PERFORMANCE_METRIC, EventKind.AUDIT)


def import_env(stack: Pipeline, **extra: str) -> dict[str, str]:
    prefixes = ("KAFKA_", "PIPELINE_", "DATABASE_", "PG", "ANALYTICS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(stack.config.to_env())
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_import(
    stack: Pipeline, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "import", *map(str, args)],
        env=import_env(stack, **(env or {})), capture_output=True, text=True, timeout=240,
        check=False, cwd=stack.tmp,
    )  # fmt: skip


def write_jsonl(path: Path, events: Iterable[object], *, compress: bool = False) -> None:
    data = b"".join(orjson.dumps(e) + b"\n" for e in events)
    path.write_bytes(gzip.compress(data) if compress else data)


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def write_csv(path: Path, events: Sequence[dict[str, object]]) -> None:
    columns: list[str] = []
    for event in events:
        columns += [name for name in event if name not in columns]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for event in events:
            writer.writerow([cell(event.get(name)) for name in columns])


def valid_items(api_calls: int, seed: int, **fractions: float) -> list[Item]:
    spec = WorkloadSpec(seed=seed, api_calls=api_calls, start_ms=NOW_MS, **fractions)
    return [item for item in generate(spec) if item.event is not None]


def events_of(items: Iterable[Item], *kinds: EventKind) -> list[dict[str, object]]:
    return [dict(i.event) for i in items if i.event is not None and i.kind in kinds]


async def assert_totals(stack: Pipeline, items: list[Item]) -> None:
    differences = ExpectedTotals.of(items).compare(await stack.totals(), include_invalid=False)
    assert differences == [], "\n".join(differences[:20]) + "\n" + stack.logs()


def check(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert result.returncode == code, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


@pytest.mark.asyncio
async def test_jsonl_csv_and_gzip_files_give_exact_totals(stack: Pipeline) -> None:
    items = valid_items(1_500, seed=3, late_fraction=0.1, duplicate_fraction=0.2)
    calls = stack.tmp / "calls.jsonl.gz"  # api calls and analyses, kind from "type"
    write_jsonl(calls, events_of(items, EventKind.API_CALL, EventKind.ANALYSIS), compress=True)
    monitoring = stack.tmp / "monitoring.csv"  # logs, metrics, audit: a "type" column
    write_csv(monitoring, events_of(items, *MONITORING))
    stack.start_worker()

    out = check(run_import(stack, calls, monitoring, "--report", "report.json"))
    assert "0 rejected" in out and "verified: PostgreSQL gained exactly" in out
    await assert_totals(stack, items)
    report = orjson.loads((stack.tmp / "report.json").read_bytes())
    assert report["verified"] is True
    assert {r["kind"] for r in report["rows"]} == {k.value for k in EventKind}
    assert len({r["day"] for r in report["rows"]}) > 1  # late calls: several days

    # Run again: the position file says everything was sent; it only verifies again.
    out = check(run_import(stack, calls, monitoring))
    assert "every record was sent and acknowledged" in out and "verified" in out
    await assert_totals(stack, items)


CRASH = """\
import asyncio, os
from pipeline.importer import send

sent_chunk = send._Sender.send_chunk


async def send_chunk(self, chunk):
    await sent_chunk(self, chunk)
    if self.records >= {records}:  # crash with records acknowledged, the position behind
        await asyncio.gather(*(future for future, _ in self.pending))
        with open("crashed-after", "w") as f:
            f.write(str(self.records))
        os._exit(86)


send._Sender.send_chunk = send_chunk
"""


@pytest.mark.asyncio
async def test_an_import_interrupted_after_acknowledgements_resumes_exactly(
    stack: Pipeline,
) -> None:
    items = valid_items(2_500, seed=11, late_fraction=0.05)
    path = stack.tmp / "mixed.jsonl"
    write_jsonl(path, events_of(items, *EventKind))
    stack.start_worker()
    inject = stack.tmp / "inject"
    inject.mkdir()
    # Chunks of 50 lines make up to 5 records (one per kind): 20 chunks, then a checkpoint.
    (inject / "sitecustomize.py").write_text(CRASH.format(records=150))
    args = (path, "--record-events", "50")

    result = run_import(stack, *args, env={"PYTHONPATH": f"{inject}{os.pathsep}{REPO}"})
    assert result.returncode == 86, result.stderr
    crashed_after = int((stack.tmp / "crashed-after").read_text())
    state = load(stack.tmp / "mixed.jsonl.position.json")
    assert state is not None and not state.complete
    # A checkpoint happened, and records were acknowledged after it: the crash window.
    assert 1 < state.files[0].next_line < state.files[0].data_lines
    assert 0 < state.records_sent < crashed_after

    out = check(run_import(stack, *args))
    skipped = crashed_after - state.records_sent
    assert f"; {skipped} records" in out and "were not sent again" in out, out
    assert "verified: PostgreSQL gained exactly" in out
    await assert_totals(stack, items)


@pytest.mark.asyncio
async def test_an_import_killed_at_any_moment_resumes_exactly(stack: Pipeline) -> None:
    items = [i for i in valid_items(3_000, seed=5) if i.kind == EventKind.API_CALL]
    path = stack.tmp / "calls.csv"
    write_csv(path, events_of(items, EventKind.API_CALL))
    stack.start_worker()
    args = ["--kind", "api_call", "--record-events", "10", "--no-verify", "--quiet"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "import", str(path), *args,
        env=import_env(stack), cwd=stack.tmp,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    position = stack.tmp / "calls.csv.position.json"
    deadline = time.monotonic() + 120
    try:
        # SIGKILL as soon as a checkpoint moved the position: records are in flight.
        while time.monotonic() < deadline and process.returncode is None:
            state = load(position) if position.exists() else None
            if state is not None and state.files[0].next_line > 1:
                break
            await asyncio.sleep(0.02)
        assert process.returncode is None, "the import ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        await asyncio.wait_for(process.wait(), timeout=30)
    out = check(run_import(stack, path, "--kind", "api_call", "--record-events", "10"))
    assert "verified: PostgreSQL gained exactly" in out
    await assert_totals(stack, items)


def _bad_lines() -> tuple[list[bytes], dict[int, str]]:
    """A JSON Lines file of logs with bad lines at known places: line -> reason."""

    def log(**fields: object) -> bytes:
        event: dict[str, object] = {
            "type": "system_log", "event_id": str(uuid.uuid4()), "occurred_at": NOW_MS - 60_000,
            "level": "info", "service": "billing", "message": "ok",
        }  # fmt: skip
        event.update(fields)
        return orjson.dumps({k: v for k, v in event.items() if v is not None})

    lines = [log() for _ in range(30)]
    bad = {
        3: b'{"type": "system_log", "event_id": ',
        7: log(service=None),
        11: log(level="loud"),
        13: b"[1, 2]",
        17: log(type="gauge"),
        19: log(occurred_at=NOW_MS + 3_600_000),
        23: log(occurred_at=NOW_MS - 30 * DAY_MS),  # system_logs keep 14 days
        29: log(message=12),
    }
    reasons = {
        3: "malformed_json", 7: "missing_field", 11: "invalid_value", 13: "not_an_object",
        17: "unknown_event_type", 19: "future_timestamp", 23: "beyond_retention",
        29: "wrong_type",
    }  # fmt: skip
    for number, text in bad.items():
        lines[number - 1] = text
    return lines, reasons


@pytest.mark.asyncio
async def test_a_file_with_bad_lines_reports_each_and_imports_the_rest(stack: Pipeline) -> None:
    lines, reasons = _bad_lines()
    path = stack.tmp / "logs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    stack.start_worker()

    out = check(run_import(stack, path, "--reject-file", "bad.jsonl"))
    assert f"{len(lines) - len(reasons)} valid events" in out
    assert f"{len(reasons)} rejected" in out and "verified: PostgreSQL gained exactly" in out
    rejects = [orjson.loads(line) for line in (stack.tmp / "bad.jsonl").read_bytes().splitlines()]
    assert {r["line"]: r["reason"] for r in rejects} == reasons
    for r in rejects:
        assert r["file"] == "logs.jsonl" and r["detail"]
        assert r["text"] == lines[r["line"] - 1].decode()
        assert f"logs.jsonl:{r['line']}: {r['reason']}: " in out
    conn = await stack.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM system_logs") == 30 - len(reasons)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_verification_waits_for_the_workers_and_fails_on_a_mismatch(
    stack: Pipeline,
) -> None:
    items = [i for i in valid_items(300, seed=2) if i.kind == EventKind.AUDIT]
    path = stack.tmp / "audit.csv"
    audit = events_of(items, EventKind.AUDIT)
    write_csv(path, audit)

    # No worker yet: the import is sent but cannot be verified.
    out = check(run_import(stack, path, "--kind", "audit", "--verify-timeout-s", "2"), 1)
    assert "NOT VERIFIED" in out

    stack.start_worker()
    out = check(run_import(stack, path, "--kind", "audit"))
    assert "verified: PostgreSQL gained exactly" in out
    await assert_totals(stack, items)

    # Something else writes an audit event for the same day: the figures no longer match.
    conn = await stack.connect()
    try:
        await conn.execute(
            "INSERT INTO audit_trail (occurred_at, event_id, actor, actor_type, action, "
            "entity_type, entity_id) VALUES (to_timestamp($1 / 1000.0), $2, 'x', 'user', "
            "'a.b', 'e', '1')",
            audit[0]["occurred_at"],
            uuid.uuid4(),
        )
    finally:
        await conn.close()
    out = check(run_import(stack, path, "--kind", "audit"), 1)
    assert "MISMATCH" in out and "DIFFERS" in out


@pytest.mark.asyncio
async def test_csv_rows_and_columns_that_do_not_match_the_header_are_not_imported(
    stack: Pipeline,
) -> None:
    items = [i for i in valid_items(200, seed=7) if i.kind == EventKind.API_CALL]
    path = stack.tmp / "calls.csv"
    write_csv(path, events_of(items, EventKind.API_CALL))
    with path.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))

    # A misspelt column: refused before anything is read or sent.
    typo = stack.tmp / "typo.csv"
    with typo.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["token" if c == "tokens" else c for c in header], *rows])
    result = run_import(stack, typo, "--kind", "api_call")
    check(result, 2)
    assert "unknown CSV column 'token': not a field of api_call" in result.stderr
    assert not (stack.tmp / "typo.csv.position.json").exists()

    # A short row (its last two cells cut): rejected with its line, not imported with
    # defaults; the rest is imported and verified.
    rows[3] = rows[3][:-2]
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    stack.start_worker()
    out = check(run_import(stack, path, "--kind", "api_call", "--reject-file", "bad.jsonl"))
    assert "1 rejected" in out and "verified: PostgreSQL gained exactly" in out
    (reject,) = [orjson.loads(x) for x in (stack.tmp / "bad.jsonl").read_bytes().splitlines()]
    assert reject["line"] == 5 and reject["reason"] == "malformed_csv"
    assert reject["detail"] == f"the row has {len(header) - 2} cells, the header {len(header)}"
    await assert_totals(stack, items[:3] + items[4:])
