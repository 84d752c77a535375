"""The JSON Schemas (draft 2020-12) of the wire contract, shipped inside the package.

One file per event kind, ``<kind>.schema.json``. Each describes a whole Kafka record value:
one event object or an array of them (``$defs/event`` is the single event). The schemas
express every rule of the validator except the ones listed as validator-only in
``docs/events.md``; they are for producers in other languages and for tests, the worker
does not use them.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["load_schema"]

# The EventKind values (this module does not import the events, to stay a leaf).
_KINDS = ("api_call", "analysis", "system_log", "performance_metric", "audit")


def load_schema(kind: str) -> dict[str, Any]:
    """Return a fresh copy of the JSON Schema for ``kind`` (an ``EventKind`` or its value).

    Raises ``ValueError`` for an unknown kind. Reads the packaged file on every call, so the
    caller may modify the result.
    """
    name = str(kind)
    if name not in _KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
