"""``segstream lookup USER``: print a user's Redis profile and segments as JSON.

Reads the same Redis (``redis_url``, ``redis_prefix``) as the worker writes.
Exits 1 when the user has no profile.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from segstream.config import load_config
from segstream.state.redis import RedisStore


def register(subparsers: Any) -> None:
    """Add the ``lookup`` subcommand."""
    parser = subparsers.add_parser("lookup", help="print a user's Redis profile", description=__doc__)
    parser.add_argument("user", metavar="USER", help="user id (userId, else anonymousId)")
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: $SEGSTREAM_CONFIG)")
    parser.set_defaults(func=_cmd_lookup)


def _cmd_lookup(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = RedisStore.from_url(config.redis_url, config.redis_prefix)
    try:
        profile = store.profile(args.user)
    finally:
        store.close()
    if not profile:
        print(f"no profile for user {args.user!r} under prefix {config.redis_prefix!r}")
        return 1
    pretty = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    print(orjson.dumps({"user_id": args.user, **profile}, option=pretty).decode())
    return 0
