"""Typing CSV cells by the contract's JSON Schemas, so a CSV row validates like a JSON line.

A CSV cell is text; the contract wants JSON types. :func:`typed_row` turns the row
``{column: cell}`` of an event of a given kind into the object the validator expects,
reading each field's type from the kind's JSON Schema (:func:`pipeline.contract.load_schema`):

- an **empty cell** means the field is absent (its default applies; a required field is
  then ``missing_field``), except for a required string that may be empty (``message``),
  where it is the empty string: a CSV cell cannot tell the two apart;
- ``integer``: an optionally signed run of ASCII digits; ``number``: the same or a decimal
  fraction with an optional exponent (``12.5``, ``1e-3``), or ``nan``/``inf`` (which the
  validator then rejects as ``invalid_number``). A cell that is not a number is passed on
  as text, so the validator rejects it as ``wrong_type`` naming the field (``3.5`` in an
  integer field is passed as a number: "must be an integer");
- ``boolean``: ``true``/``false``, ``t``/``f`` (what PostgreSQL's CSV output writes) or
  ``1``/``0``, in any case;
- ``object`` (``metadata``, ``tags``, ``before``, ``after``): JSON text, parsed; a cell
  that is not JSON raises :class:`CellError` (``malformed_json``);
- ``occurred_at`` (string or integer): digits are epoch milliseconds, anything else is
  the timestamp text;
- every other column stays text.

A column that is a field of no kind the file can hold (``--kind``, or any kind for a file
whose ``type`` column picks the kind per row) is refused before anything is read or sent
(:func:`check_columns`): the validator would ignore it, so a misspelt ``token`` would
import every row with 0 tokens, and the verification, counting the same rows, would agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from pipeline.contract import EventKind, load_schema
from pipeline.importer.sources import SourceError

__all__ = ["CellError", "CellType", "check_columns", "field_types", "known_columns", "typed_row"]

CellType = Literal["string", "integer", "number", "boolean", "object", "timestamp"]

_INTEGER: Final = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER: Final = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_SPECIAL: Final = frozenset({"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity",
                             "+infinity", "-infinity"})  # fmt: skip
_TRUE: Final = frozenset({"true", "t", "1"})
_FALSE: Final = frozenset({"false", "f", "0"})


class CellError(ValueError):
    """A cell cannot be turned into its field's type: ``reason`` and ``detail`` as in the
    reject file."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _type_of(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> CellType:
    ref = prop.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name == "timestamp":
            return "timestamp"
        prop = defs.get(name, {})
    declared = prop.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    for option in (*prop.get("anyOf", ()), *prop.get("oneOf", ())):
        option_type = option.get("type")
        types |= {option_type} if isinstance(option_type, str) else set(option_type or ())
    types.discard("null")
    if types == {"string", "integer"}:
        return "timestamp"
    for candidate in ("object", "boolean", "integer", "number"):
        if types == {candidate}:
            return candidate
    return "string"


@cache
def field_types(kind: EventKind) -> tuple[Mapping[str, CellType], frozenset[str]]:
    """The cell type of every field of ``kind``, and the required string fields that may
    be empty (an empty cell is ``""`` for them), from the kind's JSON Schema."""
    schema = load_schema(kind)
    defs = schema["$defs"]
    event = defs["event"]
    required = set(event.get("required", ()))
    types: dict[str, CellType] = {}
    empty_ok: set[str] = set()
    for name, prop in event["properties"].items():
        types[name] = _type_of(prop, defs)
        if (
            name in required
            and types[name] == "string"
            and prop.get("type") == "string"
            and not prop.get("minLength")
            and "pattern" not in prop
        ):
            empty_ok.add(name)
    return types, frozenset(empty_ok)


def known_columns(kind: EventKind | None) -> frozenset[str]:
    """The columns a CSV file of ``kind`` may have: its fields (``type`` included); with
    ``kind`` None (the kind comes from each row's ``type``), the fields of every kind."""
    kinds = list(EventKind) if kind is None else [kind]
    return frozenset(name for k in kinds for name in field_types(k)[0])


def check_columns(path: Path, columns: Sequence[str], kind: EventKind | None) -> None:
    """Raise :class:`~pipeline.importer.sources.SourceError` (one line naming the unknown
    columns and the known ones) if a column of ``path``'s header is no field of ``kind``
    (of any kind when None)."""
    known = known_columns(kind)
    unknown = [c for c in columns if c not in known]
    if not unknown:
        return
    what = f"a field of {kind.value}" if kind is not None else "a field of any event kind"
    listed = ", ".join(repr(c) for c in unknown)
    raise SourceError(
        f"{path}: unknown CSV column{'s' if len(unknown) > 1 else ''} {listed}: not {what} "
        f"(known: {', '.join(sorted(known))}); rename or remove "
        f"{'them' if len(unknown) > 1 else 'it'} (nothing was sent)"
    )


def _number(cell: str) -> object:
    if _INTEGER.fullmatch(cell):
        return int(cell)
    if _NUMBER.fullmatch(cell) or cell.lower() in _SPECIAL:
        return float(cell)
    return cell


def typed_row(kind: EventKind, cells: Mapping[str, str]) -> dict[str, object]:
    """The event object of a CSV row of ``kind`` (see the module docstring).

    Raises :class:`CellError` for an object cell that is not JSON text.
    """
    types, empty_ok = field_types(kind)
    obj: dict[str, object] = {}
    for name, cell in cells.items():
        if cell == "":
            if name in empty_ok:
                obj[name] = ""
            continue
        kind_of_cell = types.get(name, "string")
        value: object = cell
        if kind_of_cell == "timestamp":
            value = int(cell) if _INTEGER.fullmatch(cell) else cell
        elif kind_of_cell in ("integer", "number"):
            value = _number(cell.strip())
        elif kind_of_cell == "boolean":
            lowered = cell.strip().lower()
            value = True if lowered in _TRUE else False if lowered in _FALSE else cell
        elif kind_of_cell == "object":
            try:
                value = orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                raise CellError("malformed_json", f"{name}: not valid JSON text: {exc}") from exc
        obj[name] = value
    return obj
