"""The dead-letter tools and ``pipeline demo`` when the broker is down: one line, no
traceback, the documented exit code, within the broker timeout. No broker anywhere: the
"broker" is a loopback port where nothing listens (refused at once), or one that accepts
connections and never answers (a hung broker, a black hole)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Self

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)

import pipeline.cli.demo as demo_cli
import pipeline.deadletters.read as read_module
import pipeline.deadletters.replay as replay_module
from pipeline.cli import build_parser, main
from pipeline.config import KafkaConfig
from pipeline.deadletters import (
    DEFAULT_BROKER_TIMEOUT_S,
    BrokerDownError,
    BrokerRefusedError,
    Filters,
    ReplayIncompleteError,
    execute_replay,
    quiet_client_logs,
    read_topics,
)
from pipeline.deadletters.broker import broker_error, stop_quietly, wait_for_broker
from pipeline.deadletters.read import DeadLetter
from pipeline.deadletters.replay import REPLAYED_FROM_HEADER, plan_replay
from pipeline.embedded import free_port
from pipeline.errors import ConfigError, EmbeddedServiceError, PipelineError
from tests.conftest import REPO

# The pipeline's own variables are cleared so that the developer's environment does not
# leak into these tests (a DATABASE_URL, other topic names).
_SETTINGS = ("KAFKA_", "PIPELINE_", "DATABASE_URL", "ANALYTICS_DATABASE_URL", "PG")
TIMEOUT_S = 1.0
# What a command may take beyond its broker timeout (start-up, the last attempt, stopping
# clients): generous for a loaded CI machine, far below any hang.
SLACK_S = 8.0


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point KAFKA_BOOTSTRAP_SERVERS at ``bootstrap``, everything else unset."""
    for name in list(os.environ):
        if name.startswith(_SETTINGS):
            monkeypatch.delenv(name)

    def point(bootstrap: str) -> None:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)

    return point


@pytest.fixture
def refused() -> str:
    """``host:port`` where nothing listens: connections are refused at once."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def silent() -> Iterator[str]:
    """``host:port`` that accepts connections (the kernel completes them into the
    backlog) and never answers: a hung broker."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def one_error_line(err: str) -> str:
    """The single line on stderr; fails when there are more (aiokafka's own log lines)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- the commands, in process --------------------------------------------------------

DLQ_COMMANDS = [
    ["dlq", "inspect"],
    ["dlq", "inspect", "--format", "json"],
    ["dlq", "replay", "--dry-run"],
    ["dlq", "replay"],
]


@pytest.mark.parametrize("command", DLQ_COMMANDS, ids=" ".join)
def test_a_refused_broker_is_one_line_exit_1_within_the_timeout(
    command: list[str],
    env: Callable[[str], None],
    refused: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env(refused)
    started = time.monotonic()
    code = main([*command, "--broker-timeout", str(TIMEOUT_S)])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1, err
    line = one_error_line(err)
    assert line.startswith(f"pipeline: cannot reach the Kafka broker at {refused}"), line
    assert "KAFKA_BOOTSTRAP_SERVERS" in line and "KafkaConnectionError" in line, line
    assert "--broker-timeout" in line, line
    assert TIMEOUT_S * 0.8 <= elapsed < TIMEOUT_S + SLACK_S  # it retried, then gave up
    if command[1] == "replay":
        assert line.endswith("nothing was replayed"), line
    assert out == ""


@pytest.mark.parametrize("command", DLQ_COMMANDS[::3], ids=" ".join)
def test_a_broker_that_never_answers_gives_up_after_the_timeout(
    command: list[str], env: Callable[[str], None], silent: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env(silent)
    started = time.monotonic()
    code = main([*command, "--broker-timeout", "2"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1, err
    line = one_error_line(err)
    assert f"cannot reach the Kafka broker at {silent}" in line, line
    assert "no answer within 2s" in line and "KAFKA_BOOTSTRAP_SERVERS" in line, line
    assert 1.8 <= elapsed < 2 + SLACK_S  # not aiokafka's 40 s request timeout


def test_aiokafka_log_lines_show_with_log_level_info_only(
    env: Callable[[str], None], refused: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env(refused)
    assert main(["--log-level", "INFO", "dlq", "inspect", "--broker-timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot be reached yet" in err  # our retries
    assert "aiokafka" in err  # and the client's own lines, asked for
    assert err.splitlines()[-1].startswith("pipeline: cannot reach the Kafka broker")
    assert logging.getLogger("aiokafka").level == logging.NOTSET  # left as it was


def test_the_broker_timeout_option(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["dlq", "replay"])
    assert args.broker_timeout == DEFAULT_BROKER_TIMEOUT_S == 15
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["dlq", "inspect", "--broker-timeout", "0.5"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlq", "inspect", "--help"])
    text = capsys.readouterr().out
    assert "--broker-timeout" in text and "default: 15" in text
    assert "exit codes:" in text and "PIPELINE_TOPIC_DEAD_LETTERS" in text


def test_as_an_operator_runs_it_no_traceback_and_one_line(refused: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS)}
    environment.update(PYTHONPATH=str(REPO), KAFKA_BOOTSTRAP_SERVERS=refused)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "dlq", "replay", "--broker-timeout", "1"],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith("pipeline: cannot reach the Kafka broker") and refused in line


# --- classification and the building blocks ------------------------------------------

KAFKA = KafkaConfig(bootstrap_servers=("127.0.0.1:9",))


@pytest.mark.parametrize(
    "exc",
    [
        KafkaConnectionError("Unable to bootstrap"),
        KafkaTimeoutError(),
        NodeNotReadyError("not ready"),
        RequestTimedOutError(),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_transient_errors_mean_the_broker_is_down(exc: Exception) -> None:
    error = broker_error(KAFKA, exc, doing="reading x")
    assert isinstance(error, BrokerDownError) and error.retriable
    assert not isinstance(error, ConfigError)
    assert "127.0.0.1:9" in str(error) and "KAFKA_BOOTSTRAP_SERVERS" in str(error)


def test_other_kafka_errors_mean_the_broker_refuses_the_client() -> None:
    error = broker_error(KAFKA, TopicAuthorizationFailedError(), doing="reading x")
    assert isinstance(error, BrokerRefusedError) and isinstance(error, ConfigError)
    assert "KAFKA_SASL_*" in str(error)


def test_pipeline_errors_pass_and_bugs_are_not_classified() -> None:
    mine = PipelineError("already said")
    assert broker_error(KAFKA, mine, doing="x") is mine
    assert broker_error(KAFKA, ValueError("a bug"), doing="x") is None


@pytest.mark.asyncio
async def test_waiting_for_a_refused_broker_is_bounded(refused: str) -> None:
    kafka = KafkaConfig(bootstrap_servers=(refused,))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerDownError, match="tried for 1s") as raised:
        await wait_for_broker(kafka, timeout_s=1.0, doing="testing")
    assert 0.8 <= loop.time() - started < 1 + SLACK_S
    assert "KafkaConnectionError" in str(raised.value)


class _Client:
    def __init__(self, stop: Callable[[], Awaitable[None]]) -> None:
        self._stop = stop

    async def stop(self) -> None:
        await self._stop()


@pytest.mark.asyncio
async def test_stopping_a_client_never_replaces_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def cancelled_inside() -> None:  # aiokafka's consumer after its broker went away
        raise asyncio.CancelledError

    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def fails() -> None:
        raise KafkaConnectionError("gone")

    monkeypatch.setattr("pipeline.deadletters.broker.STOP_TIMEOUT_S", 0.2)
    for stop in (cancelled_inside, hangs, fails):
        await stop_quietly(_Client(stop), "consumer")  # returns, raises nothing


@pytest.mark.asyncio
async def test_stopping_a_client_lets_a_real_cancellation_through() -> None:
    async def hangs() -> None:
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(stop_quietly(_Client(hangs), "consumer"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_quiet_client_logs() -> None:
    logger = logging.getLogger("aiokafka")
    with quiet_client_logs("WARNING"):
        assert not logger.isEnabledFor(logging.ERROR)
    assert logger.level == logging.NOTSET
    with quiet_client_logs("INFO"):
        assert logger.isEnabledFor(logging.ERROR)


# --- a read the broker leaves in the middle (fake consumer) ---------------------------


class _StalledConsumer:
    """Assigned partitions start behind their end offset and never get a record."""

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        raise asyncio.CancelledError  # as aiokafka's does after its broker went away

    def assign(self, tps: Any) -> None:
        pass

    async def seek_to_beginning(self, *tps: Any) -> None:
        pass

    async def end_offsets(self, tps: Any) -> dict[Any, int]:
        return dict.fromkeys(tps, 10)

    async def getmany(self, timeout_ms: int) -> dict[Any, list[Any]]:
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def position(self, tp: Any) -> int:
        return 3


@pytest.mark.asyncio
async def test_a_broker_gone_in_the_middle_of_a_read_is_reported_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    kafka = KafkaConfig(bootstrap_servers=(refused,))
    answers: list[str] = []

    async def broker(
        kafka: KafkaConfig, *, timeout_s: float, doing: str, waited_s: float = 0
    ) -> None:
        answers.append(doing)
        if len(answers) > 1:  # up at the start, gone when asked again
            await wait_for_broker(kafka, timeout_s=timeout_s, doing=doing, waited_s=waited_s)

    async def partitions(kafka: KafkaConfig, topics: Any, timeout_s: float) -> dict[str, list[int]]:
        return {"dlq": [0, 1]}

    monkeypatch.setattr(read_module, "wait_for_broker", broker)
    monkeypatch.setattr(read_module, "_partitions", partitions)
    monkeypatch.setattr(read_module, "AIOKafkaConsumer", _StalledConsumer)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerDownError) as raised:
        await read_topics(kafka, ["dlq"], idle_s=0.2, broker_timeout_s=1.0)
    assert loop.time() - started < 2 * 1.0 + SLACK_S
    message = str(raised.value)
    assert "while reading dlq (0 record(s) read, dlq partition 0 at offset 3 of 10)" in message
    assert "KAFKA_BOOTSTRAP_SERVERS" in message


# --- a replay the broker leaves in the middle (fake producer) -------------------------


def letter(n: int) -> DeadLetter:
    return DeadLetter(
        key=f"calls/0/{n}", reason="invalid_value", detail="", source_topic="calls",
        source_partition=0, source_offset=n, event_index=None, worker_id="w",
        value=b'{"n": %d}' % n, dlq_partition=0, dlq_offset=n,
    )  # fmt: skip


class _Producer:
    """Acknowledges what ``answer(topic, key, n)`` says: metadata, or an exception; an
    exception *returned* from ``send`` is raised by ``send`` itself (nothing sent)."""

    def __init__(self, answer: Callable[[str, bytes | None, int], Any]) -> None:
        self.answer = answer
        self.sent: list[tuple[str, bytes | None, Any]] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self, topic: str, key: Any = None, value: Any = None, headers: Any = None
    ) -> asyncio.Future[Any]:
        n = len(self.sent)
        outcome = self.answer(topic, key, n)
        if isinstance(outcome, tuple):  # ("raise", exc): refused before sending
            raise outcome[1]
        self.sent.append((topic, key, headers))
        future = asyncio.get_running_loop().create_future()
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(SimpleNamespace(topic=topic, partition=0, offset=n))
        return future


def _use(monkeypatch: pytest.MonkeyPatch, producer: _Producer) -> None:
    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(replay_module, "wait_for_broker", nothing)
    monkeypatch.setattr(replay_module, "ensure_markers_topic", nothing)
    monkeypatch.setattr(replay_module, "AIOKafkaProducer", lambda **options: producer)


def _plan(count: int) -> replay_module.ReplayPlan:
    letters = [letter(n) for n in range(count)]
    return plan_replay("dlq", letters, set(), filters=Filters(), allowed_topics={"calls"})


@pytest.mark.asyncio
async def test_a_broker_gone_in_the_middle_of_a_replay_says_what_was_replayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunks of 4: the first is published and marked; then the broker goes away: the
    # second chunk's copies get no acknowledgement; the third is never sent.
    def answer(topic: str, key: bytes | None, n: int) -> Any:
        return KafkaConnectionError("connection lost") if n >= 8 else None

    producer = _Producer(answer)
    _use(monkeypatch, producer)
    with pytest.raises(ReplayIncompleteError) as raised:
        await execute_replay(KAFKA, _plan(10), operator="t", chunk_size=4)
    error = raised.value
    assert [r.letter.key for r in error.done] == [f"calls/0/{n}" for n in range(4)]
    assert [x.key for x in error.unmarked] == [f"calls/0/{n}" for n in range(4, 8)]
    assert [x.key for x in error.not_sent] == ["calls/0/8", "calls/0/9"]
    assert isinstance(error.__cause__, KafkaConnectionError)
    assert str(error).startswith(
        "replay stopped: 4 of 10 dead letters replayed and marked, 4 possibly published "
        "without their markers"
    )
    assert "2 not replayed" in str(error) and "KAFKA_BOOTSTRAP_SERVERS" in str(error)
    assert producer.stopped
    markers = [key for topic, key, _ in producer.sent if topic == "dlq.replayed"]
    assert markers == [f"calls/0/{n}".encode() for n in range(4)]


@pytest.mark.asyncio
async def test_a_refused_record_leaves_its_acknowledged_neighbours_marked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def answer(topic: str, key: bytes | None, n: int) -> Any:
        return MessageSizeTooLargeError() if n == 1 else None

    producer = _Producer(answer)
    _use(monkeypatch, producer)
    with pytest.raises(ReplayIncompleteError) as raised:
        await execute_replay(KAFKA, _plan(5), operator="t", chunk_size=3)
    error = raised.value
    assert [r.letter.key for r in error.done] == ["calls/0/0", "calls/0/2"]  # marked anyway
    assert error.unmarked == []  # a refusal is not a maybe: a re-run duplicates nothing
    assert [x.key for x in error.not_sent] == ["calls/0/1", "calls/0/3", "calls/0/4"]
    assert "refused a record ([Error 10] MessageSizeTooLargeError)" in str(error)


@pytest.mark.asyncio
async def test_a_send_that_cannot_start_costs_one_timeout_not_one_per_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def answer(topic: str, key: bytes | None, n: int) -> Any:
        calls.append(n)
        return ("raise", KafkaTimeoutError()) if n == 0 else None  # no metadata in time

    _use(monkeypatch, _Producer(answer))
    with pytest.raises(ReplayIncompleteError) as raised:
        await execute_replay(KAFKA, _plan(5), operator="t", chunk_size=5)
    assert calls == [0]
    assert (raised.value.done, raised.value.unmarked, len(raised.value.not_sent)) == ([], [], 5)
    assert str(raised.value).startswith(
        "replay stopped: 0 of 5 dead letters replayed and marked, 5 not replayed"
    )


@pytest.mark.asyncio
async def test_nothing_published_yet_is_the_broker_error_itself(
    monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    kafka = KafkaConfig(bootstrap_servers=(refused,))
    with pytest.raises(BrokerDownError, match=r"nothing was replayed \(3 selected\)"):
        await execute_replay(kafka, _plan(3), operator="t", broker_timeout_s=1.0)


def test_the_command_lists_what_may_be_published_twice(
    monkeypatch: pytest.MonkeyPatch,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    env("127.0.0.1:9")

    async def prepare(*args: Any, **kwargs: Any) -> replay_module.ReplayPlan:
        return _plan(150)

    def answer(topic: str, key: bytes | None, n: int) -> Any:
        return RequestTimedOutError() if n >= 200 else None  # after the first chunk of 100

    monkeypatch.setattr("pipeline.cli.dlq.prepare_replay", prepare)
    _use(monkeypatch, _Producer(answer))
    assert main(["dlq", "replay"]) == 1
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert line.startswith(
        "pipeline: replay stopped: 100 of 150 dead letters replayed and marked, 50 possibly "
        "published without their markers"
    ), line
    assert f"look for {REPLAYED_FROM_HEADER} headers" in line
    assert "0 not replayed" in line and "KAFKA_BOOTSTRAP_SERVERS" in line
    listed = re.findall(r"possibly published without a marker: (\S+)", out)
    assert listed == [f"calls/0/{n}" for n in range(100, 120)]  # the first 20
    assert "... and 30 more" in out
    assert "audit:" not in out  # an interrupted replay is not reported as done


# --- pipeline demo: its embedded broker stops -----------------------------------------


class _FakePostgres:
    url = "postgresql://postgres@/pipeline?host=/nonexistent"

    def __init__(self, data_dir: Path) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass


class _DeadBroker:
    """An embedded broker that died right after starting: nothing listens on its port."""

    fail_start = False

    def __init__(self, *, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kafka_config(self) -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=(self.bootstrap_servers,), idempotent_producer=False)

    def start(self) -> str:
        self.log_path.write_text("tansu broker\npanicked: out of memory\n")
        if self.fail_start:
            raise EmbeddedServiceError(
                f"the Tansu broker exited with code 101 on start (port {self.port})"
            )
        return self.bootstrap_servers

    def stop(self) -> None:
        pass


@pytest.fixture
def kept_logs() -> Iterator[list[str]]:
    """Paths of broker logs the demo kept (removed after the test)."""
    paths: list[str] = []
    yield paths
    for path in paths:
        Path(path).unlink(missing_ok=True)


def test_the_demo_ends_in_one_line_when_its_broker_stops(
    monkeypatch: pytest.MonkeyPatch,
    env: Callable[[str], None],
    refused: str,
    capsys: pytest.CaptureFixture[str],
    kept_logs: list[str],
) -> None:
    env(refused)  # not used by the demo: it says so
    monkeypatch.setattr(demo_cli, "EmbeddedPostgres", _FakePostgres)
    monkeypatch.setattr(demo_cli, "EmbeddedBroker", _DeadBroker)
    started = time.monotonic()
    assert main(["demo", "--events", "10"]) == 1
    assert time.monotonic() - started < 15
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert re.match(
        r"pipeline: the embedded Kafka broker \(127\.0\.0\.1:\d+\) stopped while creating "
        r"topics: the demo cannot go on", line
    ), line  # fmt: skip
    kept = re.search(r"the broker's log: (\S+)\)$", line)
    assert kept is not None, line
    kept_logs.append(kept.group(1))
    assert "panicked: out of memory" in Path(kept.group(1)).read_text()
    assert "KAFKA_BOOTSTRAP_SERVERS from the environment is not used" in out
    assert "==> stopping the broker and PostgreSQL" in out


def test_the_demo_says_when_its_broker_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
    env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
    kept_logs: list[str],
) -> None:
    env("127.0.0.1:9")
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    monkeypatch.setattr(demo_cli, "EmbeddedPostgres", _FakePostgres)
    monkeypatch.setattr(demo_cli, "EmbeddedBroker", _DeadBroker)
    monkeypatch.setattr(_DeadBroker, "fail_start", True)
    assert main(["demo", "--events", "10"]) == 1
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert line.startswith("pipeline: the Tansu broker exited with code 101 on start"), line
    kept = re.search(r"\(kept as (\S+)\)$", line)
    assert kept is not None, line
    kept_logs.append(kept.group(1))
    assert "note:" not in out
