"""Reading import files: JSON Lines or CSV, optionally gzip-compressed, one line at a time.

A :class:`Source` is one file. :meth:`Source.lines` yields a :class:`Line` per **data
line**: a non-blank JSON Lines line, or a CSV row after the header row (blank lines are
skipped, but counted in line numbers). Each line has

- ``ordinal``: its 0-based position among the data lines. The importer's records are
  chunks of consecutive ordinals, so they are the same on every run over the same file;
- ``number``: the 1-based physical line of the file where it starts (a CSV row whose
  quoted cell holds a newline spans several lines), as the reject file reports it;
- ``value``: the decoded JSON value (JSON Lines) or the row as ``{column: cell}`` (CSV,
  cells still text: :mod:`pipeline.importer.csv_cells` types them per kind), or None;
- ``error``: ``(reason, detail)`` when the line cannot be decoded at all.

Nothing here raises for bad data: an undecodable line is a ``Line`` with an ``error``
(a CSV row with more or fewer cells than the header is ``malformed_csv``: a missing
trailing cell is not an empty one, and would otherwise import the row with defaults).
:class:`SourceError` is for files that cannot be read at all (missing, unknown format, a
CSV file without a usable header; :meth:`Source.columns` reads the header alone). Lines
before ``skip`` are read but not decoded (a resumed import skips them quickly). While
reading, the raw bytes are counted (``bytes_read``, for the progress display) and hashed:
once the iteration ends, ``sha256`` is the digest of the whole file as stored (compressed
bytes for a gzip file).

Formats: the name decides (``.jsonl``, ``.ndjson``, ``.json`` or ``.csv``, each optionally
followed by ``.gz``) unless a format is given; gzip is recognised by its magic bytes,
whatever the name. CSV is read as UTF-8 (a byte-order mark is ignored); JSON Lines lines
are decoded by orjson, which rejects invalid UTF-8.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from pipeline.errors import ConfigError

__all__ = ["FORMATS", "Format", "Line", "Source", "SourceError"]

Format = Literal["jsonl", "csv"]
FORMATS: Final[tuple[Format, ...]] = ("jsonl", "csv")
GZIP_MAGIC: Final = b"\x1f\x8b"
_SUFFIXES: Final[dict[str, Format]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
_TEXT_LIMIT: Final = 65_536  # characters of a line kept in the reject file


class SourceError(ConfigError):
    """The file cannot be imported at all (missing, unreadable, unknown format, no header).

    A usage problem: the command exits 2 and nothing was sent.
    """


@dataclass(frozen=True, slots=True)
class Line:
    """One data line of a file; see the module docstring."""

    ordinal: int
    number: int
    value: object
    error: tuple[str, str] | None
    raw: bytes | list[str]

    @property
    def text(self) -> str:
        """The line as in the file (a CSV row re-encoded as CSV), for the reject file."""
        if isinstance(self.raw, bytes):
            text = self.raw.decode("utf-8", errors="replace").rstrip("\r\n")
        else:
            out = io.StringIO()
            csv.writer(out, lineterminator="").writerow(self.raw)
            text = out.getvalue()
        return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "…"


class _Counting(io.RawIOBase):
    """A raw binary reader that counts and hashes every byte read from ``inner``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.count = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._inner.readinto(buffer)
        if n:
            self.count += n
            self.digest.update(memoryview(buffer)[:n])
        return n

    def close(self) -> None:
        self._inner.close()
        super().close()


def detect_format(path: Path) -> Format | None:
    """The format the file name says (``x.csv.gz`` is CSV), or None."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return _SUFFIXES.get(suffixes[-1]) if suffixes else None


class Source:
    """One import file; see the module docstring. Raises :class:`SourceError` if the file
    cannot be opened or its format cannot be told."""

    def __init__(self, path: Path, fmt: Format | None = None) -> None:
        self.path = path
        try:
            self.size = path.stat().st_size
            with path.open("rb") as f:
                self.gzip = f.read(2) == GZIP_MAGIC
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
        detected = fmt or detect_format(path)
        if detected is None:
            raise SourceError(
                f"cannot tell the format of {path} from its name: name it .jsonl or .csv "
                "(optionally .gz), or pass --format"
            )
        self.format: Format = detected
        self.bytes_read = 0
        self.sha256: str | None = None
        self._counter: _Counting | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def position(self) -> int:
        """Raw bytes read so far in the current iteration (the progress display's unit)."""
        return self._counter.count if self._counter is not None else self.bytes_read

    def lines(self, *, skip: int = 0) -> Iterator[Line]:
        """Yield every data line; the first ``skip`` ones are yielded undecoded (``value``
        None, no ``error``). Sets ``sha256`` when the iteration reaches the end."""
        self.sha256 = None
        counter = _Counting(self.path.open("rb", buffering=0))
        self._counter = counter
        buffered = io.BufferedReader(counter, buffer_size=1 << 20)
        stream: Any = buffered
        try:
            if self.gzip:
                stream = gzip.GzipFile(fileobj=buffered, mode="rb")
            if self.format == "jsonl":
                yield from _jsonl(stream, skip)
            else:
                yield from _csv(stream, skip, self.path)
            while buffered.read(1 << 20):  # hash what the decompressor left unread
                pass
            self.sha256 = counter.digest.hexdigest()
        except OSError as exc:  # also gzip.BadGzipFile, EOFError is handled below
            raise SourceError(f"cannot read {self.path}: {exc}") from exc
        except EOFError as exc:
            raise SourceError(f"{self.path}: the compressed stream is truncated ({exc})") from exc
        finally:
            self.bytes_read = counter.count
            self._counter = None
            stream.close()
            buffered.close()

    def columns(self) -> list[str] | None:
        """A CSV file's column names, from its header row read alone (None for JSON Lines
        or an empty file). Raises :class:`SourceError` as :meth:`lines` does for a header
        that does not name every column once, event_id among them."""
        if self.format != "csv":
            return None
        try:
            with self.path.open("rb") as raw:
                stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if self.gzip else raw
                text = io.TextIOWrapper(
                    stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
                )
                try:
                    return _header(csv.reader(text), self.path)
                finally:
                    text.detach()
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc}") from exc
        except EOFError as exc:
            raise SourceError(f"{self.path}: the compressed stream is truncated ({exc})") from exc

    def digest(self) -> str:
        """The SHA-256 of the file as stored, reading it once without decoding."""
        h = hashlib.sha256()
        try:
            with self.path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc}") from exc
        return h.hexdigest()


def _jsonl(stream: Any, skip: int) -> Iterator[Line]:
    ordinal = 0
    loads = orjson.loads
    for number, raw in enumerate(stream, 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
            raw = raw[3:]
        if not raw.strip():
            continue
        if ordinal < skip:
            yield Line(ordinal, number, None, None, raw)
            ordinal += 1
            continue
        try:
            value = loads(raw)
        except orjson.JSONDecodeError as exc:
            line = Line(ordinal, number, None, ("malformed_json", f"not valid JSON: {exc}"), raw)
        else:
            if type(value) is dict:
                line = Line(ordinal, number, value, None, raw)
            else:
                kind = "an array" if type(value) is list else f"a JSON {type(value).__name__}"
                detail = f"a line must be one JSON object, got {kind}"
                line = Line(ordinal, number, None, ("not_an_object", detail), raw)
        yield line
        ordinal += 1


def _csv(stream: Any, skip: int, path: Path) -> Iterator[Line]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(csv.reader(text), skip, path)
    finally:
        text.detach()  # the caller closes the binary stream (and hashes what is left)


def _header(reader: Any, path: Path) -> list[str] | None:
    """The CSV header row's column names (None for an empty file); a
    :class:`SourceError` if it does not name every column once, event_id among them."""
    try:
        header = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise SourceError(f"{path}: the CSV header row cannot be read: {exc}") from exc
    header = [h.strip() for h in header]
    if not header or any(not h for h in header) or len(set(header)) != len(header):
        raise SourceError(f"{path}: the first row must name every column once (got {header!r})")
    if "event_id" not in header:
        raise SourceError(
            f"{path}: the CSV header has no event_id column (columns: {', '.join(header)}); "
            "the first row must name the fields"
        )
    return header


def _csv_rows(reader: Any, skip: int, path: Path) -> Iterator[Line]:
    header = _header(reader, path)
    if header is None:
        return
    width = len(header)
    ordinal = 0
    previous = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number = previous + 1
            if reader.line_num == previous:  # no progress: the reader cannot go on
                raise SourceError(f"{path}: line {number}: unreadable CSV: {exc}") from exc
            previous = reader.line_num
            yield Line(ordinal, number, None, ("malformed_csv", f"unreadable CSV: {exc}"), [])
            ordinal += 1
            continue
        number, previous = previous + 1, reader.line_num
        if not row or (len(row) == 1 and not row[0].strip() and width > 1):
            continue
        if ordinal < skip:
            yield Line(ordinal, number, None, None, row)
        elif len(row) != width:
            # A short row too: its missing cells would become absent fields (defaults
            # applied), a shifted or truncated row imported as if it were whole.
            detail = f"the row has {len(row)} cells, the header {width}"
            yield Line(ordinal, number, None, ("malformed_csv", detail), row)
        elif _not_utf8(row):
            detail = "the row is not valid UTF-8"
            yield Line(ordinal, number, None, ("malformed_csv", detail), row)
        else:
            yield Line(ordinal, number, dict(zip(header, row, strict=True)), None, row)
        ordinal += 1


def _not_utf8(row: list[str]) -> bool:
    try:
        for cell in row:
            cell.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
