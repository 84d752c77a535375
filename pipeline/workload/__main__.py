"""``python -m pipeline.workload [API_CALLS]``: how fast the standard workload is generated.

Generates the workload of ``API_CALLS`` API calls (default 200,000, plus the analyses, logs,
metrics and audit events of the default ratios) and packs it in both record shapes,
printing events per second for generation alone and for generation plus packing. Touches
neither Kafka nor PostgreSQL.
"""

from __future__ import annotations

import sys
import time

from pipeline.workload.generate import generate
from pipeline.workload.records import Shape, pack_stream
from pipeline.workload.spec import WorkloadSpec

_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed start keeps runs comparable


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status."""
    args = sys.argv[1:] if argv is None else argv
    api_calls = int(args[0]) if args else 200_000
    spec = WorkloadSpec(api_calls=api_calls, start_ms=_START_MS)
    began = time.perf_counter()
    events = sum(1 for _ in generate(spec))
    elapsed = time.perf_counter() - began
    print(f"generate          {events:>9,} events {elapsed:6.2f} s {events / elapsed:>12,.0f} ev/s")
    shapes: tuple[Shape, ...] = ("batched", "single")
    for shape in shapes:
        began = time.perf_counter()
        records = size = 0
        for record in pack_stream(generate(spec), shape):
            records += 1
            size += len(record.value)
        elapsed = time.perf_counter() - began
        print(
            f"generate+{shape:<8} {events:>9,} events {elapsed:6.2f} s "
            f"{events / elapsed:>12,.0f} ev/s  {records:,} records, {size / 1e6:,.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
