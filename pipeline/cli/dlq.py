"""``pipeline dlq inspect|replay``: look at the dead-letter topic and replay after a fix.

Both read the dead-letter topic (PIPELINE_TOPIC_DEAD_LETTERS) from the beginning without a
consumer group, so they never move any group's position. See docs/operations.md
("Poison records and replay") for the procedure.

A broker that is down never makes them hang or print a traceback: they wait for it at
most ``--broker-timeout`` seconds (retrying), then print one line naming
KAFKA_BOOTSTRAP_SERVERS and exit 1 (:mod:`pipeline.deadletters.broker`); aiokafka's own
log lines stay off stderr unless ``--log-level INFO`` or ``DEBUG`` asks for them. A replay
the broker interrupts lists on stdout the dead letters that may have been published
without their markers, and its error line says how many were replayed and marked, how
many may have been published, and how many were not replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
from typing import Any

from pipeline.cli._common import format_table, operator_name
from pipeline.config import Config, KafkaConfig, TopicsConfig
from pipeline.contract import AuditActorType, AuditEvent, EventKind
from pipeline.deadletters import (
    DEFAULT_BROKER_TIMEOUT_S,
    Filters,
    Replayed,
    ReplayIncompleteError,
    Summary,
    execute_replay,
    inspect_dead_letters,
    markers_topic,
    prepare_replay,
    quiet_client_logs,
    summary_as_json,
)
from pipeline.producer import DeliveryError, EventProducer

# Longest value shown per sample in the table format.
_TABLE_VALUE_CHARS = 200
# Lines listing individual dead letters before "... and N more".
_LIST_LINES = 20

_EXIT_CODES = (
    "exit codes:\n"
    "  0  done\n"
    "  1  failed: the broker could not be reached, or stopped answering, within\n"
    "     --broker-timeout (the message names KAFKA_BOOTSTRAP_SERVERS). A replay that\n"
    "     stopped says how many dead letters were replayed and marked (a re-run skips\n"
    "     them), may have been published without a marker (listed on stdout: check them\n"
    "     before a re-run) and were not replayed (a re-run replays them)\n"
    "  2  configuration: KAFKA_BOOTSTRAP_SERVERS unset or no host resolves, the broker\n"
    "     refuses this client (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*,\n"
    "     KAFKA_IDEMPOTENT_PRODUCER), the dead-letter topic does not exist\n"
    "     (PIPELINE_TOPIC_DEAD_LETTERS), a bad option"
)


def _wrapped(text: str) -> str:
    """A description as the default help formatter would wrap it (the exit codes below
    it need the raw formatter)."""
    return textwrap.fill(text, width=79)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _seconds_at_least_one(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (seconds), got {text}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        action="append",
        default=[],
        metavar="R",
        help="only dead letters with this reason code (repeatable)",
    )
    parser.add_argument(
        "--source-topic",
        action="append",
        default=[],
        metavar="T",
        help="only dead letters from this source topic (repeatable)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="stop reading after S seconds without new records, at the end (default: 2)",
    )
    parser.add_argument(
        "--broker-timeout",
        type=_seconds_at_least_one,
        default=DEFAULT_BROKER_TIMEOUT_S,
        metavar="S",
        help="give up, exit 1, when the broker cannot be reached for S seconds (retrying "
        "meanwhile) or a read or send makes no progress for as long "
        f"(default: {DEFAULT_BROKER_TIMEOUT_S:g})",
    )


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dlq",
        help="inspect the dead-letter topic and replay dead letters after a fix",
        description=_wrapped(
            "Tools for the dead-letter topic (PIPELINE_TOPIC_DEAD_LETTERS). They read it from "
            "the beginning without a consumer group and commit nothing. Needs "
            "KAFKA_BOOTSTRAP_SERVERS."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    inspect = sub.add_parser(
        "inspect",
        help="count dead letters by reason and source topic, with samples",
        description=_wrapped(
            "Count the distinct dead letters (duplicates share a key) by reason and by source "
            "topic, and show samples with their source position and detail."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(inspect)
    inspect.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="read at most N records of the dead-letter topic (default: all)",
    )
    inspect.add_argument(
        "--samples",
        type=int,
        default=3,
        metavar="K",
        help="samples shown per reason (default: 3; 0 for none)",
    )
    inspect.add_argument(
        "--format", choices=["table", "json"], default="table", help="output (default: table)"
    )
    inspect.set_defaults(handler=_inspect)

    replay = sub.add_parser(
        "replay",
        help="re-publish selected dead letters to their source topic, once per key",
        description=_wrapped(
            "Re-publish the selected dead letters, values unchanged, to their source topic, "
            "and record each replayed key in the compacted topic <dead-letter topic>.replayed "
            "(created if missing), so that running replay again skips them. Run one replay "
            "at a time; use --dry-run first."
        ),
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(replay)
    replay.add_argument(
        "--limit", type=_positive_int, metavar="N", help="replay at most N dead letters"
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="show what would be replayed; publish nothing"
    )
    replay.add_argument(
        "--markers-replication-factor",
        type=_positive_int,
        default=1,
        metavar="N",
        help="replication factor if the markers topic has to be created (default: 1)",
    )
    replay.set_defaults(handler=_replay)


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(reasons=frozenset(args.reason), source_topics=frozenset(args.source_topic))


def _inspect(args: argparse.Namespace, config: Config) -> int:
    kafka = config.require_kafka()
    with quiet_client_logs(args.log_level):
        summary = asyncio.run(
            inspect_dead_letters(
                kafka,
                config.topics.dead_letters,
                filters=_filters(args),
                samples=max(args.samples, 0),
                limit=args.limit,
                idle_s=args.idle_timeout,
                broker_timeout_s=args.broker_timeout,
            )
        )
    if args.format == "json":
        print(json.dumps(summary_as_json(summary), indent=2, ensure_ascii=False))
    else:
        print(_summary_text(summary))
    return 0


def _summary_text(summary: Summary) -> str:
    lines = [
        f"dead-letter topic {summary.topic}: {summary.total} dead letters "
        f"({summary.messages_read} records read, {summary.duplicates} duplicates dropped), "
        f"{summary.replayed} replayed"
    ]
    if not summary.total:
        return "\n".join(lines)
    lines += ["", format_table(["reason", "count", "replayed"], [
        (reason, count, summary.replayed_by_reason.get(reason, 0))
        for reason, count in summary.by_reason.most_common()
    ])]  # fmt: skip
    lines += ["", format_table(["source topic", "count"], summary.by_source_topic.most_common())]
    for reason, letters in summary.samples.items():
        lines += ["", f"samples of {reason}:"]
        for letter in letters:
            lines.append(f"  {letter.source_position}  (key {letter.key})")
            lines.append(f"    detail: {letter.detail}")
            lines.append(f"    value:  {letter.value_text(_TABLE_VALUE_CHARS)}")
    return "\n".join(lines)


def _replay(args: argparse.Namespace, config: Config) -> int:
    kafka = config.require_kafka()
    topics = config.topics
    dlq = topics.dead_letters
    timeout_s: float = args.broker_timeout

    async def work() -> int:
        plan = await prepare_replay(
            kafka,
            dlq,
            filters=_filters(args),
            allowed_topics=set(topics.source_topics),
            limit=args.limit,
            idle_s=args.idle_timeout,
            broker_timeout_s=timeout_s,
        )
        print(
            f"dead-letter topic {dlq}: {len(plan.to_replay)} to replay, "
            f"{len(plan.already_replayed)} already replayed (skipped), "
            f"{len(plan.not_replayable)} not replayable, "
            f"{plan.left_for_later} left for a later run (--limit)"
        )
        for letter, why in plan.not_replayable[:_LIST_LINES]:
            print(f"  not replayable: {letter.key} ({letter.reason}): {why}")
        if args.dry_run:
            for letter in plan.to_replay[:_LIST_LINES]:
                print(f"  would replay {letter.key} ({letter.reason}) to {letter.source_topic}")
            _more(len(plan.to_replay))
            print("dry run: nothing published")
            return 0
        shown = 0

        def progress(item: Replayed) -> None:
            nonlocal shown
            if shown < _LIST_LINES:
                print(
                    f"  replayed {item.letter.key} ({item.letter.reason}) "
                    f"to {item.topic}/{item.partition}/{item.offset}"
                )
            shown += 1

        try:
            done = await execute_replay(
                kafka,
                plan,
                operator=operator_name(),
                replication_factor=args.markers_replication_factor,
                progress=progress,
                broker_timeout_s=timeout_s,
            )
        except ReplayIncompleteError as exc:
            _more(len(exc.done))
            _report_incomplete(exc)
            raise  # one line on stderr, exit 1 (pipeline.cli.main)
        _more(len(done))
        print(f"replayed {len(done)} dead letters; markers in {markers_topic(dlq)}")
        if done:
            try:
                await _audit_replay(kafka, topics, done, timeout_s)
            except Exception as exc:  # the replay itself is done and marked: say, not fail
                print(
                    f"pipeline dlq replay: warning: the replay is done but its audit event "
                    f"could not be sent to {topics.topic(EventKind.AUDIT)} ({_why(exc)}); "
                    "record it by hand if your audit needs it",
                    file=sys.stderr,
                )
        return 0

    with quiet_client_logs(args.log_level):
        return asyncio.run(work())


def _report_incomplete(exc: ReplayIncompleteError) -> None:
    """On stdout, before the error line: the dead letters a re-run would publish again
    unless checked first."""
    for letter in exc.unmarked[:_LIST_LINES]:
        print(
            f"  possibly published without a marker: {letter.key} ({letter.reason}) "
            f"to {letter.source_topic}"
        )
    if len(exc.unmarked) > _LIST_LINES:
        print(f"  ... and {len(exc.unmarked) - _LIST_LINES} more")


def _why(exc: Exception) -> str:
    if isinstance(exc, DeliveryError):
        return f"{exc.records} record(s) not acknowledged by the broker"
    return str(exc) or type(exc).__name__


async def _audit_replay(
    kafka: KafkaConfig, topics: TopicsConfig, done: list[Replayed], timeout_s: float
) -> None:
    """Record the replay in the audit trail: one audit event, applied by the workers like
    any other (the markers topic stays the record of which letters went back). Waits for
    the broker at most about ``timeout_s`` seconds (connecting, then the acknowledgement)."""
    by_topic: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for item in done:
        by_topic[item.topic] = by_topic.get(item.topic, 0) + 1
        reason = str(item.letter.reason)
        by_reason[reason] = by_reason.get(reason, 0) + 1
    event = AuditEvent.new(
        actor=operator_name(),
        actor_type=AuditActorType.USER,
        action="dead_letters.replayed",
        entity_type="dead_letter_topic",
        entity_id=topics.dead_letters,
        after={"replayed": len(done), "by_source_topic": by_topic, "by_reason": by_reason},
    )
    producer = EventProducer(kafka, topics, request_timeout_ms=max(int(timeout_s * 1000), 1000))
    await producer.start()
    try:
        await producer.send(event)
    finally:
        await producer.close(timeout_s=timeout_s)
    print(f"audit: the replay is recorded in {topics.topic(EventKind.AUDIT)}")


def _more(count: int) -> None:
    if count > _LIST_LINES:
        print(f"  ... and {count - _LIST_LINES} more")
