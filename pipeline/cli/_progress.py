"""A small progress display for long-running commands, on stderr, with no dependency.

On a terminal it is one line redrawn in place (at most every ``redraw_s``)::

    producing [##########----------]  50.0%  115,000/230,000 events  48,210 events/s  ETA 2s

Elsewhere (CI logs, a pipe) it prints a plain line every ``interval_s`` instead, so logs
stay readable. :meth:`Progress.update` is cheap enough to call per record; the display is
throttled by time. :meth:`Progress.finish` prints the final state (and ends the line on a
terminal). Usable as a context manager (finishes on exit).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

__all__ = ["Progress"]

_WIDTH = 20


def _duration(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Progress of ``total`` units (None if unknown) labelled ``label``.

    ``stream`` defaults to ``sys.stderr``; ``tty`` defaults to ``stream.isatty()``;
    ``clock`` is monotonic seconds. Writing never raises for a closed or broken stream.
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "progress",
        unit: str = "items",
        stream: TextIO | None = None,
        tty: bool | None = None,
        redraw_s: float = 0.2,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self._stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self._stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self._every = redraw_s if tty else interval_s
        self._clock = clock
        self._started = clock()
        self._next = self._started + self._every
        self._done = 0
        self._width = 0  # length of the line last drawn (to blank leftovers)
        self._finished = False

    def update(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` units are complete; redraw if it is time."""
        self._done = done
        if total is not None:
            self.total = total
        now = self._clock()
        if now >= self._next:
            self._next = now + self._every
            self._draw(now)

    def finish(self) -> None:
        """Show the final state once (a newline ends the line on a terminal)."""
        if self._finished:
            return
        self._finished = True
        self._draw(self._clock())
        if self.tty:
            self._write("\n")

    def line(self, now: float | None = None) -> str:
        """The text of the current state (without carriage return or newline)."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        parts = [self.label]
        total = self.total
        if total:
            fraction = min(self._done / total, 1.0)
            if self.tty:
                filled = int(fraction * _WIDTH)
                parts.append("[" + "#" * filled + "-" * (_WIDTH - filled) + "]")
            parts.append(f"{fraction * 100:5.1f}%")
            parts.append(f"{self._done:,}/{total:,} {self.unit}")
        else:
            parts.append(f"{self._done:,} {self.unit}")
        parts.append(f"{rate:,.0f} {self.unit}/s")
        if total and 0 < self._done < total and rate > 0:
            parts.append(f"ETA {_duration((total - self._done) / rate)}")
        elif self._finished:
            parts.append(f"in {_duration(elapsed)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            pad = max(self._width - len(text), 0)
            self._width = len(text)
            self._write("\r" + text + " " * pad)
        else:
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # closed or broken stream: progress is optional
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()
