"""Micro-benchmark of :func:`pipeline.contract.validate.decode_record` for ``api_call``.

Run ``python -m pipeline.contract.bench [--seconds S]``. It builds realistic api_call events,
encodes them as array records of 500 events and as single-event records, and prints the
decode+validate throughput in events per second on this one core, for ``occurred_at`` as
epoch milliseconds, ISO-8601 with ``Z`` and ISO-8601 with a numeric offset. Each figure is
the best of several rounds (the least disturbed by other processes); the median follows it.

The target is more than 300,000 events/s for array records on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import orjson

from pipeline.contract.events import EventKind
from pipeline.contract.validate import decode_record

_NOW_MS = 1_790_000_000_000
_BATCH = 500


# occurred_at as each producer style writes it; the ISO forms are the same instant.
_TIMESTAMPS: dict[str, object] = {
    "epoch ms": _NOW_MS - 60_000,
    "ISO Z": "2026-09-21T11:32:20.123Z",
    "ISO +02:00": "2026-09-21T13:32:20.123+02:00",
}


def _event(i: int, occurred: object) -> dict[str, object]:
    return {
        "type": "api_call",
        "event_id": str(uuid.UUID(int=i * 7919 + 1, version=4)),
        "occurred_at": occurred,
        "service": "billing-api",
        "endpoint": "/v1/organizations/{org_id}/invoices/{id}",
        "method": ("GET", "POST", "PUT", "DELETE")[i % 4],
        "user_id": f"user-{i % 1000}",
        "organization_id": f"org-{i % 50}",
        "success": i % 17 != 0,
        "status_code": 200 if i % 17 else 503,
        "response_time_ms": 3.5 + (i % 400) * 0.25,
        "tokens": i % 2000,
        "cost_usd": (i % 2000) * 0.0000021,
    }


def _rate(run: Callable[[], int], seconds: float) -> tuple[float, float]:
    """(best, median) events/s over rounds of about 0.2 s each, for ``seconds`` in total."""
    rates: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < 0.2:
            count += run()
        rates.append(count / (time.perf_counter() - start))
    return max(rates), statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per scenario")
    args = parser.parse_args(argv)
    kind = EventKind.API_CALL
    for label, occurred in _TIMESTAMPS.items():
        events = [_event(i, occurred) for i in range(_BATCH)]
        batch = orjson.dumps(events)
        singles = [orjson.dumps(e) for e in events]
        valid, invalid = decode_record(kind, batch, now_ms=_NOW_MS)
        if invalid or len(valid) != _BATCH:
            raise SystemExit(f"benchmark events are not valid: {invalid[:1]}")

        def run_batch(batch: bytes = batch) -> int:
            return len(decode_record(kind, batch, now_ms=_NOW_MS)[0])

        def run_singles(singles: list[bytes] = singles) -> int:
            n = 0
            for value in singles:
                n += len(decode_record(kind, value, now_ms=_NOW_MS)[0])
            return n

        for name, run in ((f"array of {_BATCH}", run_batch), ("single-event", run_singles)):
            best, median = _rate(run, args.seconds)
            print(
                f"api_call, occurred_at {label:10s}, {name:12s} records: "
                f"{best:10,.0f} events/s (median {median:,.0f})"
            )


if __name__ == "__main__":
    main()
