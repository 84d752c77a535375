"""``pipeline produce`` options, help and configuration errors (no broker involved)."""

from __future__ import annotations

import pytest

from pipeline.cli import build_parser, main


def test_help_lists_the_options_and_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["produce", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--events", "--seed", "--start-ms", "--rate", "--shape", "--invalid-fraction",
        "--late-fraction", "--duplicate-fraction", "--totals", "--create-topics",
        "--no-create-topics", "--partitions", "--quiet", "KAFKA_BOOTSTRAP_SERVERS",
    ):  # fmt: skip
        assert option in text


def test_defaults() -> None:
    args = build_parser().parse_args(["produce"])
    assert (args.events, args.seed, args.start_ms, args.rate) == (10_000, 42, None, None)
    assert (args.shape, args.create_topics, args.partitions, args.quiet) == (
        "batched",
        True,
        8,
        False,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--invalid-fraction", "1.5"],
        ["--late-fraction", "x"],
        ["--events", "-1"],
        ["--rate", "0"],
        ["--shape", "arrays"],
        ["--partitions", "0"],
    ],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["produce", *argv])
    assert exited.value.code == 2
    assert "pipeline produce: error" in capsys.readouterr().err


def test_without_kafka_it_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["produce", "--events", "10"]) == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_a_start_too_early_for_the_workload_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    assert main(["produce", "--start-ms", "1000"]) == 2
    assert "start_ms" in capsys.readouterr().err
