"""``pipeline worker``: one stream worker process of a worker group."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pipeline.cli._common import operator_name, run_with_connection
from pipeline.config import Config
from pipeline.kafka import require_codecs
from pipeline.migrations.runner import MigrationRunner


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "worker",
        help="run one stream worker (consumes the topics, writes PostgreSQL)",
        description=(
            "Run one worker of the group PIPELINE_GROUP_ID. Start more processes (up to the "
            "topics' partition count) to scale; they share the partitions. Needs "
            "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. SIGTERM stops it gracefully within "
            "PIPELINE_SHUTDOWN_TIMEOUT_S."
        ),
    )
    parser.add_argument("--web-port", type=int, help="port of /metrics, /healthz, /readyz")
    parser.add_argument("--worker-id", help="name of this worker (default: host-pid)")
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending migrations before starting (safe with concurrent workers)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    from pipeline.worker.process import run_worker  # faust is imported only when needed

    worker = config.worker
    if args.web_port is not None:
        worker = dataclasses.replace(worker, web_port=args.web_port)
    if args.worker_id:
        worker = dataclasses.replace(worker, worker_id=args.worker_id)
    config = dataclasses.replace(config, worker=worker)
    database = config.require_database()
    config.require_kafka()
    require_codecs()  # a worker that cannot read snappy/lz4/zstd must not start
    if args.migrate:

        async def migrate(conn: Any) -> Any:
            runner = MigrationRunner(
                conn,
                config.migrations.directory,
                applied_by=operator_name(),
                lock_timeout_s=config.migrations.lock_timeout_s,
                report=print,
            )
            return await runner.up()

        run_with_connection(database, migrate, application_name="pipeline-migrate")
    run_worker(config, log_level=args.log_level)
    return 0
