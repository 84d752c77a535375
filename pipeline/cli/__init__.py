"""The ``pipeline`` command.

Each subcommand lives in its own module exposing ``register(subparsers)``; the handler it
installs receives the parsed arguments and the :class:`~pipeline.config.Config` built once
here from the environment, and returns the process exit code. Errors derived from
:class:`~pipeline.errors.PipelineError` are printed as one line without a traceback:
exit code 2 for configuration errors, 1 for everything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pipeline import __version__, logs
from pipeline.cli import (
    db,
    demo,
    dlq,
    http,
    importer,
    keys,
    migrate,
    partitions,
    produce,
    query,
    worker,
)
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError

Handler = Callable[[argparse.Namespace, Config], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description=(
            "Event-ingestion pipeline: Kafka events into time-partitioned PostgreSQL tables. "
            "External services are chosen with DATABASE_URL (or PG* variables) and "
            "KAFKA_BOOTSTRAP_SERVERS; `pipeline demo` runs everything on embedded services."
        ),
        epilog="Run `pipeline COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level for messages on stderr (default: WARNING)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    db.register(commands)
    demo.register(commands)
    dlq.register(commands)
    http.register(commands)
    importer.register(commands)
    keys.register(commands)
    migrate.register(commands)
    partitions.register(commands)
    produce.register(commands)
    query.register(commands)
    worker.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level, "text")
    handler: Handler = args.handler
    try:
        config = Config.from_env()
        logs.configure(args.log_level, config.log_format)
        return handler(args, config)
    except ConfigError as exc:
        print(f"pipeline: configuration error: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return 130
