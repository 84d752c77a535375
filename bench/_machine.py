"""What every benchmark prints first: the machine its figures belong to."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """``2 cores (AMD EPYC ...), 24 GiB, Linux 6.x, Python 3.11.7``."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {memory_gib:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
