"""Failing loudly: a worker that cannot do its job exits non-zero with one line naming the
cause and the setting; nothing it reads can block a partition.

Each test reproduces the failure on the real broker and PostgreSQL first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import DatabaseConfig
from pipeline.contract import EventKind, Reason
from pipeline.kafka import client_options
from pipeline.launch import WorkerProcess
from pipeline.workload import ExpectedTotals, WorkloadSpec, generate
from tests.conftest import PgAdmin
from tests.integration.harness import Pipeline, headers_of
from tests.integration.test_worker_delivery import assert_same

NOW_MS = int(time.time() * 1000)


def worker_with(stack: Pipeline, name: str, **changes: Any) -> WorkerProcess:
    """A worker of ``stack`` whose Config differs by ``changes`` (database=, kafka=, ...)."""
    return stack.start_worker(name, config=dataclasses.replace(stack.config, **changes))


def exit_code(worker: WorkerProcess, timeout_s: float = 60) -> int:
    code = worker.wait(timeout_s)
    return code


@pytest.mark.asyncio
async def test_a_broker_refusing_idempotent_producers_ends_the_worker_with_the_setting(
    stack: Pipeline,
) -> None:
    kafka = dataclasses.replace(stack.kafka, idempotent_producer=True)  # Tansu refuses
    worker = worker_with(stack, "idem", kafka=kafka)
    assert exit_code(worker) == 2, worker.log_tail()
    assert "set KAFKA_IDEMPOTENT_PRODUCER=false" in worker.log_tail(), worker.log_tail()


@pytest.mark.asyncio
async def test_an_unknown_database_or_host_exits_2_naming_the_setting(
    stack: Pipeline, pg_admin: PgAdmin
) -> None:
    unknown_db = DatabaseConfig(url=pg_admin.url_for("no_such_database"))
    unknown_host = DatabaseConfig(
        url="postgresql://pipeline:secret@no-such-host.invalid:5432/events",
        connect_timeout_s=5,
    )
    for name, database in (("nodb", unknown_db), ("nohost", unknown_host)):
        worker = worker_with(stack, name, database=database)
        assert exit_code(worker) == 2, worker.log_tail()
        tail = worker.log_tail()
        assert "DATABASE_URL" in tail and "worker stopped" in tail, tail
        assert "secret" not in tail


def require_password(hba: Path, role: str) -> bool:
    """Make ``role`` log in with a password (the embedded server trusts local logins);
    True when the file changed."""
    rules = hba.read_text()
    if role in rules:
        return False
    first = f"local all {role} scram-sha-256\nhost all {role} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(first + rules)
    return True


@pytest.mark.asyncio
async def test_a_kafka_host_that_does_not_resolve_exits_2_naming_the_setting(
    stack: Pipeline,
) -> None:
    kafka = dataclasses.replace(stack.kafka, bootstrap_servers=("no-such-host.invalid:9092",))
    worker = worker_with(stack, "nokafka", kafka=kafka)
    assert exit_code(worker) == 2, worker.log_tail()
    assert "KAFKA_BOOTSTRAP_SERVERS" in worker.log_tail(), worker.log_tail()


@pytest.mark.asyncio
async def test_a_wrong_password_exits_2_without_printing_it(
    stack: Pipeline, pg_admin: PgAdmin
) -> None:
    if pg_admin.embedded is None:
        pytest.skip("needs the embedded PostgreSQL, whose authentication the test configures")
    conn = await asyncpg.connect(pg_admin.config.url)
    try:
        await conn.execute("DROP ROLE IF EXISTS pw_user")
        await conn.execute("CREATE ROLE pw_user LOGIN PASSWORD 'right-password'")
        if require_password(Path(await conn.fetchval("SHOW hba_file")), "pw_user"):
            await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    url = stack.database.url.replace("postgresql://postgres@", "postgresql://pw_user:wrong-pw@")
    assert "pw_user" in url, url
    worker = worker_with(stack, "badpw", database=DatabaseConfig(url=url))
    assert exit_code(worker) == 2, worker.log_tail()
    tail = worker.log_tail()
    assert "DATABASE_URL" in tail and "wrong-pw" not in tail, tail


@pytest.mark.asyncio
async def test_a_record_larger_than_the_dead_letter_limit_does_not_block_its_partition(
    stack: Pipeline,
) -> None:
    spec = WorkloadSpec(api_calls=2_000, start_ms=NOW_MS, analyses_per_api_call=0)
    items = list(generate(spec))
    expected = ExpectedTotals.of(items)
    garbage = b"\xfe" * (5 * 1024 * 1024)  # 5 MiB, not JSON
    producer = AIOKafkaProducer(**client_options(stack.kafka), max_request_size=8 << 20)
    await producer.start()
    try:
        sent = await (
            await producer.send(stack.topics.topic(EventKind.API_CALL), garbage, partition=0)
        )
    finally:
        await producer.stop()
    stack.acked[(sent.topic, sent.partition)] = sent.offset + 1
    await stack.produce(items)  # later events, on every partition
    stack.start_worker()
    await stack.wait_applied()
    assert_same(expected, await stack.totals(), stack)
    (letter,) = await stack.dead_letters()
    headers = headers_of(letter)
    assert headers["x-reason"] == Reason.MALFORMED_JSON
    assert headers["x-truncated"] == "900000" and len(letter.value) == 900_000
    assert headers["x-original-size"] == str(len(garbage))
    assert headers["x-original-sha256"] == hashlib.sha256(garbage).hexdigest()


@pytest.mark.asyncio
async def test_a_bug_in_a_flush_ends_the_worker_visibly(
    stack: Pipeline, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A programming error is never retried: one CRITICAL line with its traceback, exit 1."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import dataclasses\n"
        "from pipeline import kinds\n"
        "async def broken(conn, rows):\n"
        "    raise ValueError('injected programming error')\n"
        "for kind, spec in list(kinds._BY_KIND.items()):\n"
        "    writer = dataclasses.replace(spec.writer, write=broken)\n"
        "    kinds._BY_KIND[kind] = dataclasses.replace(spec, writer=writer)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(inject))
    worker = stack.start_worker()
    items = list(generate(WorkloadSpec(api_calls=100, start_ms=NOW_MS)))
    await stack.produce(items)
    assert exit_code(worker) == 1, worker.log_tail()
    tail = worker.log_tail(200)
    assert "worker stopped by an unexpected error (a bug): ValueError: injected" in tail, tail
    assert "Traceback" in tail


@pytest.mark.asyncio
async def test_json_logs_are_one_object_per_line(stack: Pipeline) -> None:
    worker = worker_with(stack, "json", log_format="json")
    assert worker.wait_ready(), worker.log_tail()
    await stack.produce(list(generate(WorkloadSpec(api_calls=200, start_ms=NOW_MS))))
    await stack.wait_applied()
    assert worker.stop() == 0
    lines = worker.log_path.read_text().splitlines()
    assert len(lines) > 5
    for line in lines:
        entry = orjson.loads(line)  # every line parses
        assert {"ts", "level", "logger", "message"} <= entry.keys(), line
        assert "\x1b" not in line  # no terminal escape codes
    assert not any("Unclosed" in line for line in lines)
