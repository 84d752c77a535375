"""Migration files on disk: discovery, checksums, the no-transaction pragma, splitting.

A migration is a numbered pair in one directory::

    0001_core.up.sql      applied by ``pipeline migrate up``
    0001_core.down.sql    applied by ``pipeline migrate down``; undoes exactly the up file

Versions are the leading integer; names are ``[a-z0-9_]+``. The checksums are the sha256 of
each file's text with line endings normalised to ``\\n`` (so a checkout with CRLF endings
does not look like an edit). A file whose first line is ``-- pipeline:no-transaction`` runs
statement by statement outside a transaction (needed for ``CREATE INDEX CONCURRENTLY``).

Everything here is pure: reading files is the only I/O, and nothing talks to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MigrationError

NO_TRANSACTION_PRAGMA = "-- pipeline:no-transaction"
_FILE_RE = re.compile(r"^(?P<version>\d{4,})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")
_NAME_RE = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class SqlScript:
    """One file's text and how it must run."""

    path: Path
    text: str

    @property
    def in_transaction(self) -> bool:
        first_line = self.text.lstrip("\ufeff").split("\n", 1)[0].strip().lower()
        return first_line != NO_TRANSACTION_PRAGMA

    def statements(self) -> list[str]:
        return split_statements(self.text)


@dataclass(frozen=True)
class Migration:
    """A numbered up/down pair. ``down`` is ``None`` only if the file is missing (an error
    that :func:`discover` reports)."""

    version: int
    name: str
    up: SqlScript
    down: SqlScript

    @property
    def checksum(self) -> str:
        return checksum(self.up.text)

    @property
    def down_checksum(self) -> str:
        return checksum(self.down.text)

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def checksum(text: str) -> str:
    """sha256 hex digest of ``text`` with line endings normalised."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """Read every migration pair in ``directory``, sorted by version.

    Raises :class:`MigrationError` for a file that does not follow the naming scheme, a
    version used twice, or an up file without its down file (or the reverse).
    """
    if not directory.is_dir():
        raise MigrationError(
            f"migrations directory {directory} does not exist "
            "(set PIPELINE_MIGRATIONS_DIR to the folder holding NNNN_name.up.sql files)"
        )
    found: dict[int, dict[str, tuple[str, SqlScript]]] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: migration files are named NNNN_name.up.sql / NNNN_name.down.sql "
                "with a lower-case name"
            )
        version = int(match["version"])
        pair = found.setdefault(version, {})
        direction = match["direction"]
        if direction in pair or any(name != match["name"] for name, _ in pair.values()):
            raise MigrationError(f"version {version} is used by more than one migration")
        text = normalise(path.read_text(encoding="utf-8"))
        pair[direction] = (match["name"], SqlScript(path, text))
    migrations = []
    for version in sorted(found):
        pair = found[version]
        if "up" not in pair or "down" not in pair:
            missing = "up" if "up" not in pair else "down"
            name = next(iter(pair.values()))[0]
            raise MigrationError(f"{version:04d}_{name}: the {missing} file is missing")
        migrations.append(Migration(version, pair["up"][0], pair["up"][1], pair["down"][1]))
    return migrations


def new_migration(directory: Path, name: str) -> tuple[Path, Path]:
    """Create the next-numbered empty pair named ``name``; return (up, down) paths."""
    if not _NAME_RE.match(name):
        raise MigrationError(f"migration names are lower-case letters, digits and _: {name!r}")
    existing = discover(directory) if directory.is_dir() else []
    version = (existing[-1].version + 1) if existing else 1
    directory.mkdir(parents=True, exist_ok=True)
    up = directory / f"{version:04d}_{name}.up.sql"
    down = directory / f"{version:04d}_{name}.down.sql"
    up.write_text(
        f"-- {version:04d} {name}: say here why this change is needed.\n"
        "-- Runs in one transaction. For CREATE INDEX CONCURRENTLY make the first line\n"
        f"-- {NO_TRANSACTION_PRAGMA}\n\n",
        encoding="utf-8",
    )
    down.write_text(f"-- Undoes {version:04d} {name} exactly.\n\n", encoding="utf-8")
    return up, down


def split_statements(sql: str) -> list[str]:
    """Split a script into statements at top-level semicolons.

    Understands ``--`` and nested ``/* */`` comments, single-quoted strings (with ``''``),
    ``E''`` escapes, double-quoted identifiers and dollar-quoted bodies (``$$`` or
    ``$tag$``), which is what PL/pgSQL function bodies need. Empty statements and
    comment-only fragments are dropped.
    """
    statements: list[str] = []
    start = 0
    i = 0
    n = len(sql)
    has_code = False
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if c == "'":
            escapes = i > 0 and sql[i - 1] in "eE"
            i += 1
            while i < n:
                if escapes and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if sql.startswith("''", i):
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            has_code = True
            continue
        if c == '"':
            end = sql.find('"', i + 1)
            i = n if end < 0 else end + 1
            has_code = True
            continue
        if c == "$":
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if match and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                tag = match.group(0)
                end = sql.find(tag, i + len(tag))
                i = n if end < 0 else end + len(tag)
                has_code = True
                continue
        if c == ";":
            if has_code:
                statements.append(sql[start:i].strip())
            start, has_code = i + 1, False
            i += 1
            continue
        if not c.isspace():
            has_code = True
        i += 1
    if has_code:
        statements.append(sql[start:].strip())
    return statements
