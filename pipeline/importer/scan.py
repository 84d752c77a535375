"""The first pass of an import: read every file once, decide every line, count everything.

:func:`scan` classifies every data line (:func:`pipeline.importer.records.classify`),
writes each rejected one to the reject file, adds each valid event to the file
:class:`~pipeline.importer.figures.Figures`, and returns a
:class:`~pipeline.importer.position.FileState` per file (its SHA-256, data lines, valid
events per kind, rejects). Nothing is sent: the second pass (:mod:`pipeline.importer.send`)
reads the files again and decides every line the same way.

The reject file is JSON Lines, one object per rejected line::

    {"file": "calls.jsonl", "line": 12, "reason": "missing_field",
     "detail": "service: required", "text": "{\\"event_id\\": ...}"}

``line`` is the physical line where the data line starts (1-based, the CSV header is line
1); ``text`` is the line as in the file (a CSV row re-encoded), cut at 64 KiB.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

import orjson

from pipeline.contract import Event
from pipeline.importer.figures import Figures
from pipeline.importer.position import FileState
from pipeline.importer.records import Reject
from pipeline.importer.sources import Line, Source

__all__ = ["ScanResult", "scan"]


@dataclass
class ScanResult:
    """What :func:`scan` found: per file, the figures, rejects by reason, repeated events
    and the first rejects (for display)."""

    files: list[FileState]
    figures: Figures
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    repeated: int = 0
    """Valid events repeating an earlier one of a row-per-event kind (stored once)."""
    first_rejects: list[str] = field(default_factory=list)


def scan(
    sources: Sequence[Source],
    classify_line: Callable[[Line, Source], Event | Reject],
    rejects: IO[bytes],
    *,
    progress: Callable[[int], None] | None = None,
    show: int = 10,
) -> ScanResult:
    """Read and decide every line of ``sources``; see the module docstring.

    ``classify_line(line, source)`` decides a line; ``progress(bytes)`` is called with the
    raw bytes read so far over all files; the first ``show`` rejects are kept as text.
    Raises :class:`~pipeline.importer.sources.SourceError` for an unreadable file.
    """
    result = ScanResult([], Figures())
    add = result.figures.add
    before = 0
    for source in sources:
        valid: Counter[str] = Counter()
        rejected = 0
        data_lines = 0
        for n, line in enumerate(source.lines()):
            data_lines += 1
            decided = classify_line(line, source)
            if isinstance(decided, Reject):
                rejected += 1
                result.rejects_by_reason[decided.reason] += 1
                entry = {
                    "file": source.name,
                    "line": line.number,
                    "reason": decided.reason,
                    "detail": decided.detail,
                    "text": line.text,
                }
                rejects.write(orjson.dumps(entry) + b"\n")
                if len(result.first_rejects) < show:
                    result.first_rejects.append(
                        f"{source.name}:{line.number}: {decided.reason}: {decided.detail}"
                    )
            else:
                valid[decided.kind.value] += 1
                if not add(decided):
                    result.repeated += 1
            if progress is not None and not n & 255:
                progress(before + source.position())
        before += source.bytes_read
        if progress is not None:
            progress(before)
        assert source.sha256 is not None  # set when the iteration reached the end
        result.files.append(
            FileState(
                path=str(source.path),
                sha256=source.sha256,
                size=source.size,
                format=source.format,
                gzip=source.gzip,
                data_lines=data_lines,
                valid=dict(sorted(valid.items())),
                rejected=rejected,
            )
        )
    rejects.flush()
    return result
