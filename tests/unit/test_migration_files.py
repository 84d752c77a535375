"""Migration files: naming, checksums, the pragma and statement splitting (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import MigrationError
from pipeline.migrations.files import checksum, discover, new_migration, split_statements
from tests.conftest import SQL_DIR


def test_shipped_migrations_are_well_formed() -> None:
    migrations = discover(SQL_DIR)
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    for m in migrations:
        assert m.up.in_transaction and m.down.in_transaction
        assert m.up.statements() and m.down.statements()


def test_checksum_ignores_line_endings_only() -> None:
    assert checksum("a\nb\n") == checksum("a\r\nb\r\n") == checksum("a\rb\r")
    assert checksum("a\nb\n") != checksum("a\nb \n")


def write(directory: Path, name: str, text: str = "SELECT 1;") -> None:
    (directory / name).write_text(text)


def test_discover_rejects_bad_names_missing_halves_and_duplicates(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.up.sql")
    with pytest.raises(MigrationError, match="the down file is missing"):
        discover(tmp_path)
    write(tmp_path, "0001_a.down.sql")
    assert [m.label for m in discover(tmp_path)] == ["0001_a"]
    write(tmp_path, "0001_b.up.sql")
    with pytest.raises(MigrationError, match="more than one migration"):
        discover(tmp_path)
    (tmp_path / "0001_b.up.sql").unlink()
    write(tmp_path, "2_Bad-Name.up.sql")
    with pytest.raises(MigrationError, match="NNNN_name"):
        discover(tmp_path)
    with pytest.raises(MigrationError, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_new_migration_takes_the_next_number(tmp_path: Path) -> None:
    up, down = new_migration(tmp_path, "first")
    assert up.name == "0001_first.up.sql" and down.name == "0001_first.down.sql"
    up2, _ = new_migration(tmp_path, "second")
    assert up2.name == "0002_second.up.sql"
    assert [m.version for m in discover(tmp_path)] == [1, 2]
    with pytest.raises(MigrationError, match="lower-case"):
        new_migration(tmp_path, "Bad Name")


def test_no_transaction_pragma_must_be_the_first_line(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.up.sql", "-- pipeline:no-transaction\nCREATE INDEX CONCURRENTLY x;")
    write(tmp_path, "0001_a.down.sql", "SELECT 1;\n-- pipeline:no-transaction\n")
    (migration,) = discover(tmp_path)
    assert not migration.up.in_transaction
    assert migration.down.in_transaction


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1;\n-- trailing comment only\n", ["SELECT 1"]),
        ("SELECT ';' AS s; SELECT 2", ["SELECT ';' AS s", "SELECT 2"]),
        ("SELECT 'it''s;'; SELECT 2", ["SELECT 'it''s;'", "SELECT 2"]),
        ("SELECT E'\\';'; SELECT 2", ["SELECT E'\\';'", "SELECT 2"]),
        ('SELECT 1 AS ";"; SELECT 2', ['SELECT 1 AS ";"', "SELECT 2"]),
        ("/* a; /* b; */ c; */ SELECT 1; SELECT 2", ["/* a; /* b; */ c; */ SELECT 1", "SELECT 2"]),
        ("-- c;\nSELECT 1", ["-- c;\nSELECT 1"]),
        (
            "CREATE FUNCTION f() AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql; SELECT 2",
            ["CREATE FUNCTION f() AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql", "SELECT 2"],
        ),
        (
            "DO $body$ BEGIN PERFORM '$$;'; END $body$; SELECT $1",
            ["DO $body$ BEGIN PERFORM '$$;'; END $body$", "SELECT $1"],
        ),
        (";;  ;\n", []),
    ],
)  # fmt: skip
def test_split_statements(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected
