"""Quantities formatted for people, shared by the commands' text output."""

from __future__ import annotations


def human_bytes(n: int) -> str:
    """``512 B``, ``12.5 MiB``, ``3.0 GiB`` (GiB is the largest unit)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


__all__ = ["human_bytes"]
