"""The position file: everything an import needs to resume without skipping or repeating.

One JSON document (:class:`ImportState`), rewritten **atomically** at every checkpoint
(:func:`save`: a temporary file in the same directory, fsync, rename over the old one,
fsync of the directory), so after a crash it holds either the previous or the new state,
never a mix. It records:

- the files (path, SHA-256, format) and, per file, ``next_ordinal``/``next_line``: the
  first data line not yet known to be acknowledged by the broker (everything before it
  is), always at a chunk boundary; ``done`` once every chunk was acknowledged;
- the options that decide what the records are (``kind``, ``format``, ``chunk_lines``,
  ``max_record_bytes``) and the clock the validation used (``now_ms``) and the retention
  cut-offs (``cutoffs``): a resumed run classifies every line exactly as the first did;
- the scan's results: the file's figures per kind and day, the rejects, and the
  **baseline**, PostgreSQL's figures for those days before anything was sent;
- Kafka bookkeeping (see :mod:`pipeline.importer.tail`): ``lower_bounds`` per (topic,
  partition), the offset from which records not yet covered by a position may lie;
  ``landed``, records beyond the position known to be in their topic (found on an earlier
  resume); ``targets``, one past the highest offset of every acknowledged import record,
  which the workers' watermark must reach before verifying.

A position file belongs to one import: :meth:`ImportState.mismatch` says why another set of
files or options cannot use it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from pipeline.errors import ConfigError

__all__ = ["FORMAT", "FileState", "ImportState", "PositionFileError", "load", "save"]

FORMAT: Final = 1
TopicPartition = tuple[str, int]


class PositionFileError(ConfigError):
    """The position file cannot be read, or belongs to another import (exit code 2)."""


@dataclass
class FileState:
    """One file of the import and how far it got."""

    path: str
    sha256: str
    size: int
    format: str
    gzip: bool
    data_lines: int
    valid: dict[str, int]
    rejected: int
    next_ordinal: int = 0
    next_line: int = 1
    done: bool = False

    @property
    def valid_events(self) -> int:
        return sum(self.valid.values())


@dataclass
class ImportState:
    """The content of a position file; see the module docstring."""

    files: list[FileState]
    kind: str | None
    format: str | None
    chunk_lines: int
    max_record_bytes: int
    now_ms: int
    cutoffs: dict[str, int]
    figures: dict[str, Any]
    reject_file: str
    rejects_by_reason: dict[str, int]
    baseline: dict[str, Any] | None = None
    baseline_at: str | None = None
    lower_bounds: dict[TopicPartition, int] = field(default_factory=dict)
    targets: dict[TopicPartition, int] = field(default_factory=dict)
    landed: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    records_sent: int = 0
    events_sent: int = 0
    complete: bool = False
    started_at: str = field(default_factory=lambda: _now_iso())

    @property
    def rejected(self) -> int:
        return sum(self.rejects_by_reason.values())

    @property
    def valid_events(self) -> int:
        return sum(f.valid_events for f in self.files)

    def mismatch(
        self, shas: list[str], kind: str | None, fmt: str | None, chunk_lines: int
    ) -> str | None:
        """Why an import of files with ``shas`` and these options cannot resume from this
        state (None if it can)."""
        recorded = [f.sha256 for f in self.files]
        if shas != recorded:
            names = ", ".join(f.path for f in self.files)
            return f"it records another set of files or other contents ({names})"
        for name, mine, theirs in (
            ("--kind", self.kind, kind),
            ("--format", self.format, fmt),
            ("--record-events", self.chunk_lines, chunk_lines),
        ):
            if mine != theirs:
                return f"it was started with {name} {mine if mine is not None else '(none)'}"
        return None

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "started_at": self.started_at,
            "updated_at": _now_iso(),
            "complete": self.complete,
            "files": [vars(f) for f in self.files],
            "options": {
                "kind": self.kind,
                "format": self.format,
                "chunk_lines": self.chunk_lines,
                "max_record_bytes": self.max_record_bytes,
                "now_ms": self.now_ms,
                "cutoffs": self.cutoffs,
            },
            "rejects": {"file": self.reject_file, "by_reason": self.rejects_by_reason},
            "figures": self.figures,
            "baseline": self.baseline,
            "baseline_at": self.baseline_at,
            "kafka": {
                "lower_bounds": _offsets_json(self.lower_bounds),
                "targets": _offsets_json(self.targets),
                "landed": {k: list(v) for k, v in sorted(self.landed.items())},
                "records_sent": self.records_sent,
                "events_sent": self.events_sent,
            },
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_json(cls, data: bytes) -> ImportState:
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"unsupported position file format {doc.get('format')!r}")
        options, kafka, rejects = doc["options"], doc["kafka"], doc["rejects"]
        return cls(
            files=[FileState(**f) for f in doc["files"]],
            kind=options["kind"],
            format=options["format"],
            chunk_lines=options["chunk_lines"],
            max_record_bytes=options["max_record_bytes"],
            now_ms=options["now_ms"],
            cutoffs=dict(options["cutoffs"]),
            figures=doc["figures"],
            reject_file=rejects["file"],
            rejects_by_reason=dict(rejects["by_reason"]),
            baseline=doc["baseline"],
            baseline_at=doc["baseline_at"],
            lower_bounds=_offsets_from(kafka["lower_bounds"]),
            targets=_offsets_from(kafka["targets"]),
            landed={k: (v[0], int(v[1]), int(v[2])) for k, v in kafka["landed"].items()},
            records_sent=kafka["records_sent"],
            events_sent=kafka["events_sent"],
            complete=doc["complete"],
            started_at=doc["started_at"],
        )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _offsets_json(offsets: dict[TopicPartition, int]) -> list[list[Any]]:
    return [[t, p, o] for (t, p), o in sorted(offsets.items())]


def _offsets_from(rows: list[list[Any]]) -> dict[TopicPartition, int]:
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def load(path: Path) -> ImportState | None:
    """The state in ``path``; None if there is no such file. Raises
    :class:`PositionFileError` if it cannot be read or parsed."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PositionFileError(f"cannot read the position file {path}: {exc}") from exc
    try:
        return ImportState.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise PositionFileError(
            f"the position file {path} is not one `pipeline import` wrote ({exc}); pass "
            "another --position-file, or remove it to start over"
        ) from exc


def save(path: Path, state: ImportState) -> None:
    """Write ``state`` to ``path`` atomically and durably (see the module docstring)."""
    data = state.to_json()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
