"""``pipeline http``: the HTTP ingestion server (:mod:`pipeline.http`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from typing import Any

from pipeline.config import Config


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "http",
        help="serve POST /v1/events: events over HTTP, for services without a Kafka client",
        description=(
            "Accept events over HTTP (POST /v1/events: a JSON array or NDJSON, gzip allowed) "
            "from clients holding an API key (`pipeline keys create`), validate each with the "
            "workers' contract and answer once the broker acknowledged the accepted ones. "
            "Also /healthz, /readyz and /metrics. Needs DATABASE_URL and "
            "KAFKA_BOOTSTRAP_SERVERS; limits and timeouts are PIPELINE_HTTP_* settings "
            "(README, configuration). Stops gracefully on SIGTERM or Ctrl-C: requests under "
            "way finish first. See docs/http.md."
        ),
    )
    parser.add_argument("--host", help="address to listen on (PIPELINE_HTTP_HOST; default 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, help="port to listen on (PIPELINE_HTTP_PORT; default 8080; 0: any)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    changes: dict[str, Any] = {}
    if args.host is not None:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if changes:
        config = dataclasses.replace(config, http=dataclasses.replace(config.http, **changes))
    asyncio.run(_serve(config))
    return 0


async def _serve(config: Config) -> None:
    from pipeline.http import serve  # aiohttp is imported only by the command that serves

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def listening(host: str, port: int) -> None:
        print(f"pipeline http: accepting events on http://{host}:{port}/v1/events", file=sys.stderr)

    await serve(config, stop, on_listening=listening)
