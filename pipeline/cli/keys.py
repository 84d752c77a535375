"""``pipeline keys create|list|revoke``: API keys for HTTP ingestion (:mod:`pipeline.apikeys`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline import apikeys
from pipeline.cli._common import format_table, run_with_connection
from pipeline.config import Config

_APP = "pipeline-keys"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "keys",
        help="create, list and revoke API keys for HTTP ingestion",
        description=(
            "API keys bind HTTP requests to one organization. A key is printed once, when "
            "it is created; PostgreSQL keeps only its SHA-256. Needs DATABASE_URL (a login "
            "with the pipeline_writer privileges). Creation and revocation are recorded in "
            "audit_trail."
        ),
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--organization", required=True, help="the organization it sends for")
    create.add_argument("--name", default="", help="what it is for (e.g. the service)")
    create.set_defaults(handler=_create)
    listing = sub.add_parser("list", help="keys without their secrets, newest first")
    listing.add_argument("--organization", help="only this organization's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.set_defaults(handler=_list)
    revoke = sub.add_parser(
        "revoke",
        help="revoke a key by its id (HTTP servers refuse it within PIPELINE_HTTP_KEY_CACHE_TTL_S)",
    )
    revoke.add_argument("key_id", help="the 12 hex characters after evk_ (see `keys list`)")
    revoke.set_defaults(handler=_revoke)


def _create(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> tuple[apikeys.ApiKey, str]:
        return await apikeys.create(conn, args.organization, args.name)

    try:
        key, secret = run_with_connection(config.require_database(), work, application_name=_APP)
    except ValueError as exc:
        print(f"pipeline keys create: error: {exc}", file=sys.stderr)
        return 2
    print(secret)
    print(
        f"key {key.key_id} for organization {key.organization_id} created; it is shown only "
        "now: store it in the service's secrets",
        file=sys.stderr,
    )
    return 0


def _list(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> list[apikeys.ApiKey]:
        return await apikeys.list_keys(
            conn, organization_id=args.organization, include_revoked=args.all
        )

    keys = run_with_connection(config.require_database(), work, application_name=_APP)
    if args.format == "json":
        print(json.dumps([
            {"key_id": k.key_id, "organization_id": k.organization_id, "name": k.name,
             "created_at": k.created_at.isoformat(), "created_by": k.created_by,
             "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
             "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}
            for k in keys
        ], indent=2))  # fmt: skip
        return 0
    print(
        format_table(
            ["key_id", "organization", "name", "created", "last used", "revoked"],
            [
                (
                    k.key_id,
                    k.organization_id,
                    k.name,
                    f"{k.created_at:%Y-%m-%d %H:%M}",
                    f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
                    f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
                )
                for k in keys
            ],
        )
    )
    return 0


def _revoke(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> bool:
        return await apikeys.revoke(conn, args.key_id)

    if not run_with_connection(config.require_database(), work, application_name=_APP):
        print(f"pipeline keys revoke: error: no key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"key {args.key_id} revoked")
    return 0
