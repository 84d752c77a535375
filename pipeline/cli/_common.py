"""Helpers shared by subcommands: running a coroutine on one database connection, tables."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pipeline import db
from pipeline.config import DatabaseConfig

T = TypeVar("T")


def run_with_connection(
    config: DatabaseConfig, work: Callable[[Any], Awaitable[T]], *, application_name: str
) -> T:
    """Open one connection, run ``work(connection)``, close the connection."""

    async def runner() -> T:
        conn = await db.connect(config, application_name=application_name)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(runner())


def operator_name() -> str:
    """``user@host`` of whoever runs the command (recorded in migration history)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(isinstance(r[i], int | float) for r in rows if r[i] is not None) and bool(rows)
        for i in range(len(headers))
    ]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            v.rjust(w) if numeric[i] and n else v.ljust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
