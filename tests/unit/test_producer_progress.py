"""The CLI progress display: one redrawn line on a terminal, periodic plain lines elsewhere."""

from __future__ import annotations

import io

from pipeline.cli._progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_one_line_is_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(1000, label="producing", unit="events", stream=out, tty=True, clock=clock)
    clock.now = 0.1
    progress.update(100)  # too soon after start: not drawn
    assert out.getvalue() == ""
    clock.now = 1.0
    progress.update(500)
    clock.now = 2.0
    progress.update(1000)
    progress.finish()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    frames = text.strip("\n").split("\r")[1:]
    assert "[##########----------]" in frames[0] and "50.0%" in frames[0]
    assert "500/1,000 events" in frames[0] and "500 events/s" in frames[0]
    assert "ETA 1s" in frames[0]
    assert "100.0%" in frames[-1] and "in 2s" in frames[-1]


def test_elsewhere_it_prints_a_plain_line_per_interval() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(None, label="copying", stream=out, tty=False, interval_s=10, clock=clock)
    for second in range(1, 31):
        clock.now = float(second)
        progress.update(second * 10)
    progress.finish()
    progress.finish()  # only once
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # at 10 s, 20 s, 30 s and the final line
    assert lines[0] == "copying  100 items  10 items/s"
    assert "\r" not in out.getvalue() and "[" not in out.getvalue()
    assert lines[-1].endswith("in 30s")


def test_a_closed_stream_does_not_break_the_command() -> None:
    out = io.StringIO()
    progress = Progress(10, stream=out, tty=True)
    out.close()
    progress.finish()


def test_the_context_manager_finishes() -> None:
    out = io.StringIO()
    with Progress(3, stream=out, tty=False) as progress:
        progress.update(3)
    assert "100.0%" in out.getvalue()
