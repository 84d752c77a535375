"""``pipeline produce``: the load generator (the standard workload, into Kafka).

The work is :func:`pipeline.producer.produce_workload`; this module parses the options,
creates the topics, shows progress, writes the expected totals and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.cli._common import format_table
from pipeline.cli._progress import Progress
from pipeline.config import Config, KafkaConfig, TopicsConfig
from pipeline.kafka import ensure_topics
from pipeline.kinds import KINDS
from pipeline.logs import quiet_client_logs
from pipeline.producer import BrokerUnavailableError, ProduceReport, produce_workload
from pipeline.workload import WorkloadSpec

Clock = Callable[[], int]
"""Epoch milliseconds; the default run start."""

_TOPIC_SETTINGS = ", ".join(spec.topic_setting for spec in KINDS)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 events/s, got {text}")
    return value


def register(commands: Any, *, clock: Clock = _now_ms) -> None:
    parser = commands.add_parser(
        "produce",
        help="send the standard workload to Kafka (load generator) and write its totals",
        description=(
            "Generate the standard workload (deterministic for --seed and --start-ms) and\n"
            "send it to Kafka as fast as possible or at --rate events/s. Analyses (1 per 10\n"
            "API calls, a fifth of them with earlier queued/processing state changes sent\n"
            "out of order), logs and performance metrics (1 per 20 each) and audit events\n"
            "(1 per 100) follow --events, every kind to its own topic. Poison records\n"
            "(--invalid-fraction) go out unvalidated, every reason code in turn. --totals\n"
            "writes the exact figures PostgreSQL must end up holding (poison counted\n"
            "separately) once the broker has acknowledged everything (acks=all)."
        ),
        epilog=(
            "environment:\n"
            "  KAFKA_BOOTSTRAP_SERVERS    the cluster (required)\n"
            "  KAFKA_IDEMPOTENT_PRODUCER  false for brokers without idempotence (Tansu)\n"
            f"  {_TOPIC_SETTINGS}\n"
            "  PIPELINE_TOPIC_DEAD_LETTERS  topic names\n"
            "\n"
            "examples:\n"
            "  pipeline produce --events 100000 --totals totals.json\n"
            "  pipeline produce --events 20000 --rate 2000 --shape single "
            "--invalid-fraction 0.01\n"
            "\n"
            "broker outages: records that fail transiently are kept (within --buffer-mib)\n"
            "and sent again until the broker acknowledges them; sending waits meanwhile.\n"
            "\n"
            "exit codes: 0 everything acknowledged, 1 failure (e.g. broker unreachable at\n"
            "start), 2 bad option or configuration"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    workload = parser.add_argument_group("workload")
    workload.add_argument(
        "--events",
        type=_count,
        default=10_000,
        metavar="N",
        help="API-call events to generate; the other kinds follow the ratios (default: 10000)",
    )
    workload.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    workload.add_argument(
        "--start-ms",
        type=int,
        metavar="MS",
        help="run start in epoch ms; events occur in the 6 hours before it (default: now)",
    )
    workload.add_argument(
        "--invalid-fraction",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="poison items as a fraction of valid events, every reason code (default: 0)",
    )
    workload.add_argument(
        "--late-fraction",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of API calls occurring up to 30 days before the start (default: 0)",
    )
    workload.add_argument(
        "--duplicate-fraction",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of analyses sent twice with the same event_id (default: 0)",
    )
    sending = parser.add_argument_group("sending")
    sending.add_argument(
        "--shape",
        choices=["batched", "single"],
        default="batched",
        help="batched: JSON arrays of up to --max-record-events events; single: one event "
        "per record (default: batched)",
    )
    sending.add_argument(
        "--rate",
        type=_rate,
        metavar="N",
        help="target events/s, poison included (default: as fast as possible)",
    )
    sending.add_argument(
        "--max-record-events",
        type=_positive_int,
        default=500,
        metavar="N",
        help="events per batched record at most (default: 500)",
    )
    sending.add_argument(
        "--max-record-bytes",
        type=_positive_int,
        default=1_048_576,
        metavar="N",
        help="bytes per batched record at most (default: 1048576)",
    )
    sending.add_argument(
        "--buffer-mib",
        type=_positive_int,
        default=64,
        metavar="N",
        help="memory cap of what is buffered or waiting for acknowledgement; sending waits "
        "at the cap, e.g. while the broker is down (default: 64)",
    )
    sending.add_argument(
        "--create-topics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create missing topics (dead-letter topic included) first (default: yes)",
    )
    sending.add_argument(
        "--partitions",
        type=_positive_int,
        default=8,
        metavar="N",
        help="partitions of topics it creates (default: 8)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--totals",
        type=Path,
        metavar="PATH",
        help="write the expected totals as JSON here once everything is acknowledged",
    )
    output.add_argument("--quiet", action="store_true", help="no progress display and no summary")
    parser.set_defaults(handler=partial(run, clock=clock))


def run(args: argparse.Namespace, config: Config, *, clock: Clock = _now_ms) -> int:
    """The handler: returns the exit code (2 for a workload the spec refuses)."""
    kafka = config.require_kafka()
    try:
        spec = WorkloadSpec(
            seed=args.seed,
            api_calls=args.events,
            start_ms=clock() if args.start_ms is None else args.start_ms,
            invalid_fraction=args.invalid_fraction,
            late_fraction=args.late_fraction,
            duplicate_fraction=args.duplicate_fraction,
        )
    except ValueError as exc:
        print(f"pipeline produce: error: {exc}", file=sys.stderr)
        return 2
    if args.max_record_bytes < 3:
        print("pipeline produce: error: --max-record-bytes must be >= 3", file=sys.stderr)
        return 2
    if args.totals is not None and not args.totals.parent.is_dir():
        print(
            f"pipeline produce: error: --totals: no directory {args.totals.parent}",
            file=sys.stderr,
        )
        return 2
    with quiet_client_logs(args.log_level):  # its failure is reported in one line below
        report = asyncio.run(_produce(args, kafka, config.topics, spec))
    if args.totals is not None:
        args.totals.write_bytes(report.totals.to_json())
    if not args.quiet:
        print(_summary(report, config.topics, args.totals))
    return 0


async def _produce(
    args: argparse.Namespace, kafka: KafkaConfig, topics: TopicsConfig, spec: WorkloadSpec
) -> ProduceReport:
    if args.create_topics:
        names = [*topics.source_topics, topics.dead_letters]
        try:
            await ensure_topics(kafka, names, partitions=args.partitions)
        except Exception as exc:  # the admin client raises aiokafka's own errors
            raise BrokerUnavailableError(
                f"could not connect to Kafka at {kafka.bootstrap} to create the topics "
                f"({type(exc).__name__}); is it running, and is KAFKA_BOOTSTRAP_SERVERS right?"
            ) from exc
    progress = None if args.quiet else Progress(spec.total_items, label="producing", unit="events")
    try:
        return await produce_workload(
            kafka,
            topics,
            spec,
            shape=args.shape,
            rate=args.rate,
            progress=None if progress is None else progress.update,
            max_record_events=args.max_record_events,
            max_record_bytes=args.max_record_bytes,
            max_buffered_bytes=args.buffer_mib * 1_048_576,
        )
    finally:
        if progress is not None:
            progress.finish()


def _summary(report: ProduceReport, topics: TopicsConfig, totals: Path | None) -> str:
    poison_by_kind = report.totals.invalid_by_kind
    rows = [
        (
            kind.value,
            topics.topic(kind),
            report.events.get(kind, 0),
            poison_by_kind.get(kind, 0),
            report.records.get(kind, 0),
        )
        for kind in topics.sources
    ]
    rows.append(
        (
            "total",
            "",
            sum(report.events.values()),
            sum(report.poison.values()),
            report.record_count,
        )
    )
    lines = [
        f"produced {report.items:,} events ({report.shape} records, {report.record_bytes:,} "
        f"bytes) in {report.elapsed_s:.2f}s: {report.items_per_s:,.0f} events/s",
        "",
        format_table(["kind", "topic", "events", "poison", "records"], rows),
    ]
    if report.poison:
        lines += ["", "poison by reason:"]
        lines += [f"  {reason.value:<20} {n:>8,}" for reason, n in sorted(report.poison.items())]
    if totals is not None:
        lines += ["", f"expected totals written to {totals}"]
    return "\n".join(lines)
