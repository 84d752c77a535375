"""Small text helpers shared by the checks: SQL identifiers and literals, sizes, durations."""

from __future__ import annotations

import re

from pipeline.units import human_bytes as size

_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")

# Every keyword PostgreSQL's quote_ident() quotes: all but the unreserved ones
# (``SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'``, PostgreSQL 16, plus the
# JSON and MERGE keywords PostgreSQL 17 added; quoting a word needlessly is harmless).
# tests/integration/test_db_health.py compares ident() with the server's quote_ident().
_KEYWORD_LIST = """
    all analyse analyze and any array as asc asymmetric authorization between bigint
    binary bit boolean both case cast char character check coalesce collate collation
    column concurrently constraint create cross current_catalog current_date
    current_role current_schema current_time current_timestamp current_user dec decimal
    default deferrable desc distinct do else end except exists extract false fetch float
    for foreign freeze from full grant greatest group grouping having ilike in initially
    inner inout int integer intersect interval into is isnull join json_array
    json_arrayagg json_exists json_object json_objectagg json_query json_scalar
    json_serialize json_table json_value lateral leading least left like limit localtime
    localtimestamp merge_action national natural nchar none normalize not notnull null
    nullif numeric offset on only or order out outer overlaps overlay placing position
    precision primary real references returning right row select session_user setof
    similar smallint some substring symmetric system_user table tablesample then time
    timestamp to trailing treat trim true union unique user using values varchar
    variadic verbose when where window with xmlattributes xmlconcat xmlelement xmlexists
    xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
"""
_KEYWORDS = frozenset(_KEYWORD_LIST.split())


def ident(name: str) -> str:
    """``name`` as a SQL identifier, as ``quote_ident()`` writes it: quoted unless it is
    a plain lower-case name that is not a reserved (or column/type-name) keyword."""
    if _PLAIN.fullmatch(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.0 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def percent(ratio: float) -> str:
    return f"{ratio * 100:.1f} %"


__all__ = ["duration", "ident", "literal", "percent", "qualified", "size"]
