"""`playlog serve | verify | token`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from playlog import config
from playlog.events import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="playlog", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC service")
    config.add_arguments(serve)

    verify = sub.add_parser("verify", help="run the integrity audit on a data directory, offline")
    verify.add_argument("--data-dir", default="./var", help="data directory (default ./var)")
    verify.add_argument("--channel-id", default="", help="only this channel")

    token = sub.add_parser("token", help="create a bearer token and print the auth file entry")
    token.add_argument("--name", required=True, help="principal name")
    token.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["reader", "scheduler", "operator"],
        help="role (repeatable)",
    )

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "verify":
        return _verify(args.data_dir, args.channel_id)
    return _token(args.name, args.role)


def _serve(args: argparse.Namespace) -> int:
    from playlog.server import serve
    from playlog.store.sqlite import DataDirInUse

    try:
        settings = config.load(args)
    except config.ConfigError as exc:
        print(f"playlog: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except (config.ConfigError, DataDirInUse) as exc:
        print(f"playlog: {exc}", file=sys.stderr)
        return 2
    return 0


def _verify(data_dir: str, channel_id: str) -> int:
    from pathlib import Path

    from playlog.store.sqlite import DB_FILE, SqliteStore

    if not (Path(data_dir) / DB_FILE).exists():
        print(f"playlog verify: no store in {data_dir}", file=sys.stderr)
        return 2
    # Without the data directory's lock: the audit only reads, and runs while a
    # server serves the directory.
    store = SqliteStore(data_dir, read_connections=1, lock=False)
    try:
        with store.read() as r:
            findings = r.verify_integrity(channel_id)
    finally:
        store.close()
    for f in findings:
        print(json.dumps({"kind": f.kind, "channel_id": f.channel_id, "detail": f.detail}))
    print(f"{len(findings)} violation(s) found", file=sys.stderr)
    return 1 if findings else 0


def _token(name: str, roles: list[str]) -> int:
    from playlog.auth import hash_token, new_token

    token = new_token()
    print(f"# token for {name} (give it to the client; it is not stored anywhere):", file=sys.stderr)
    print(f"#   {token}", file=sys.stderr)
    print("# add to the auth file:", file=sys.stderr)
    role_list = ", ".join(json.dumps(r) for r in sorted(set(roles)))
    print("[[principal]]")
    print(f"name = {json.dumps(name)}")
    print(f"roles = [{role_list}]")
    print(f'token_sha256 = "{hash_token(token)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
