"""The dead-letter tools and ``pipeline demo`` when a real (embedded) broker goes away in
the middle: one line on stderr, no traceback, exit 1, within the broker timeout; a replay
says what was and was not replayed, and running it again is safe.

Each test runs a broker of its own (it stops or freezes it), never the session's.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

import pipeline.cli.dlq as dlq_cli
import pipeline.deadletters.read as read_module
from pipeline.cli import main
from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import EventKind, Reason
from pipeline.deadletters import execute_replay
from pipeline.embedded import EmbeddedBroker
from pipeline.kafka import client_options, ensure_topics
from pipeline.worker.batch import Record, Rejected
from pipeline.worker.deadletter import DeadLetterPublisher
from tests.conftest import REPO, unique_topics

BROKER_TIMEOUT_S = 3.0
SLACK_S = 10.0
_SETTINGS = ("KAFKA_", "PIPELINE_", "DATABASE_URL", "ANALYTICS_DATABASE_URL", "PG")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    own = EmbeddedBroker(log_path=tmp_path / "broker.log")
    own.start()
    try:
        yield own
    finally:
        _signal(own, signal.SIGCONT)  # a frozen broker must be able to stop
        own.stop()


def _signal(broker: EmbeddedBroker, sig: signal.Signals) -> None:
    # Freezing needs the broker's pid: test-only use of EmbeddedBroker's process handle.
    process = broker._process
    if process is not None and process.poll() is None:
        process.send_signal(sig)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the environment for the in-process command: the broker and the topics."""
    for name in list(os.environ):
        if name.startswith(_SETTINGS):
            monkeypatch.delenv(name)

    def point(kafka: KafkaConfig, topics: TopicsConfig) -> None:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap)
        monkeypatch.setenv("KAFKA_IDEMPOTENT_PRODUCER", "false")
        for topic, setting in topics.settings().items():
            monkeypatch.setenv(setting, topic)

    return point


async def _write_letters(kafka: KafkaConfig, topics: TopicsConfig, count: int) -> list[str]:
    """``count`` distinct dead letters of the api-call topic, as a worker writes them;
    their keys in order."""
    await ensure_topics(kafka, [*topics.source_topics, topics.dead_letters], partitions=1)
    source = topics.topic(EventKind.API_CALL)
    items = []
    for offset in range(count):
        record = Record(0, offset, 0, [])
        payload = b'{"event_id": "00000000-0000-4000-8000-%012d"}' % offset
        record.rejected = [Rejected(Reason.MISSING_FIELD, "service: required", None, payload)]
        items.append((record, record.rejected[0]))
    publisher = DeadLetterPublisher(kafka, topics.dead_letters, "test-worker")
    await publisher.start()
    try:
        await publisher.publish(source, items)
    finally:
        await publisher.stop()
    return [f"{source}/0/{offset}" for offset in range(count)]


async def _replayed_from(kafka: KafkaConfig, topic: str) -> Counter[str]:
    """How often each dead-letter key was published to ``topic`` by a replay."""
    consumer = AIOKafkaConsumer(
        topic, **client_options(kafka), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: Counter[str] = Counter()
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.5:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                idle_since = time.monotonic()
                for record in records:
                    seen[dict(record.headers)["x-replayed-from"].decode()] += 1
    finally:
        await consumer.stop()
    return seen


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_replay_the_broker_leaves_says_what_was_replayed_and_a_rerun_is_safe(
    broker: EmbeddedBroker,
    cli_env: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka, topics, chunk = broker.kafka_config(), unique_topics(), 10
    keys = asyncio.run(_write_letters(kafka, topics, 3 * chunk))
    cli_env(kafka, topics)
    frozen = False

    async def freezing_after_the_first_chunk(*args: Any, **kwargs: Any) -> Any:
        show = kwargs.pop("progress")
        seen = 0

        def progress(item: Any) -> None:
            nonlocal seen, frozen
            show(item)
            seen += 1
            if seen == chunk and not frozen:  # the first chunk is published and marked
                _signal(broker, signal.SIGSTOP)
                frozen = True

        return await execute_replay(*args, progress=progress, chunk_size=chunk, **kwargs)

    monkeypatch.setattr(dlq_cli, "execute_replay", freezing_after_the_first_chunk)
    timeout = str(BROKER_TIMEOUT_S)
    started = time.monotonic()
    assert main(["dlq", "replay", "--idle-timeout", "1", "--broker-timeout", timeout]) == 1
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    line = _one_line(err)
    assert line.startswith(
        "pipeline: replay stopped: 10 of 30 dead letters replayed and marked, 10 possibly "
        "published without their markers"
    ), line
    assert "10 not replayed" in line and "KAFKA_BOOTSTRAP_SERVERS" in line, line
    assert elapsed < 1 + 2 * BROKER_TIMEOUT_S + SLACK_S  # the read, then one timeout
    listed = re.findall(r"possibly published without a marker: (\S+)", out)
    assert listed == keys[chunk : 2 * chunk]

    _signal(broker, signal.SIGCONT)  # the broker is back: run the same command again
    monkeypatch.setattr(dlq_cli, "execute_replay", execute_replay)
    assert main(["dlq", "replay", "--idle-timeout", "1"]) == 0
    out, err = capsys.readouterr()
    assert "20 to replay, 10 already replayed (skipped)" in out, out + err
    published = asyncio.run(_replayed_from(kafka, topics.topic(EventKind.API_CALL)))
    assert set(published) == set(keys)
    twice = {key for key, count in published.items() if count > 1}
    assert twice <= set(listed)  # duplicates only where the first run said they could be
    assert all(published[key] == 1 for key in keys[:chunk] + keys[2 * chunk :])


def test_an_inspect_the_broker_leaves_at_the_start_ends_in_one_line(
    broker: EmbeddedBroker,
    cli_env: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka, topics = broker.kafka_config(), unique_topics()
    asyncio.run(_write_letters(kafka, topics, 20))
    cli_env(kafka, topics)

    class TheBrokerStopsOnceReadingStarted(AIOKafkaConsumer):  # type: ignore[misc]
        """Stops the broker once the consumer is connected, before its first request for
        records (later, the embedded broker has already sent everything: a read that
        stalls half way is tested with a fake consumer in tests/unit)."""

        def assign(self, partitions: Any) -> None:
            super().assign(partitions)
            broker.stop()

    monkeypatch.setattr(read_module, "AIOKafkaConsumer", TheBrokerStopsOnceReadingStarted)
    started = time.monotonic()
    code = main(["dlq", "inspect", "--idle-timeout", "1", "--broker-timeout", "3"])
    elapsed = time.monotonic() - started
    line = _one_line(capsys.readouterr().err)
    assert code == 1
    assert line.startswith(f"pipeline: cannot reach the Kafka broker at {kafka.bootstrap}"), line
    assert f"while reading {topics.dead_letters}" in line, line
    assert "(no answer within 3s)" in line and "KAFKA_BOOTSTRAP_SERVERS" in line, line
    assert elapsed < 3 + SLACK_S  # not aiokafka's 40 s request timeout


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the demo's broker in /proc")
def test_the_demo_stops_cleanly_when_its_broker_dies(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS)}
    environment["PYTHONPATH"] = str(REPO)
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with out_path.open("w") as out, err_path.open("w") as err:
        demo = subprocess.Popen(
            [sys.executable, "-u", "-m", "pipeline", "demo", "--events", "400000"],
            env=environment, stdout=out, stderr=err,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while "==> producing" not in out_path.read_text():
                assert demo.poll() is None and time.monotonic() < deadline, out_path.read_text()
                time.sleep(0.05)
            children = _children(demo.pid)
            (tansu,) = [pid for pid, cmd in children if "tansu" in cmd]
            workers = [pid for pid, cmd in children if "pipeline" in cmd and "worker" in cmd]
            assert workers, children
            os.kill(tansu, signal.SIGKILL)
            killed = time.monotonic()
            code = demo.wait(120)
            elapsed = time.monotonic() - killed
        finally:
            if demo.poll() is None:
                demo.kill()
    stdout, stderr = out_path.read_text(), err_path.read_text()
    assert code == 1, stdout + stderr
    assert elapsed < 30, elapsed
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("pipeline:")]
    assert len(errors) == 1 and errors == stderr.strip().splitlines()[-1:], stderr
    assert "the embedded Kafka broker (127.0.0.1:" in errors[0], errors[0]
    assert "stopped while producing the workload" in errors[0], errors[0]
    kept = re.search(r"the broker's log: (\S+)\)$", errors[0])
    assert kept is not None, errors[0]
    Path(kept.group(1)).unlink()
    assert "==> stopping the broker and PostgreSQL" in stdout
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # all stopped
