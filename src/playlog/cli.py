"""`playlog serve | verify | token | health | ctl`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from playlog import config
from playlog.events import configure_logging


def main(argv: list[str] | None = None) -> int:
    # gRPC core writes its own plain-text log lines to stderr, which would break
    # the JSON log stream: only its errors, unless the environment says otherwise.
    # Set before grpc initialises (nothing above imports it).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:  # the rest of argv is playlog ctl's own (see `playlog ctl --help`)
        from playlog.ctl import main as ctl_main

        return ctl_main(argv[1:])
    parser = argparse.ArgumentParser(prog="playlog", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC service")
    config.add_arguments(serve)

    verify = sub.add_parser(
        "verify",
        help="run the integrity audit on a store, read-only (exit 0 clean, 1 violations, 2 cannot audit)",
    )
    verify.add_argument("--data-dir", default="./var", help="SQLite data directory (default ./var)")
    verify.add_argument(
        "--database-url",
        default=os.environ.get("PLAYLOG_DATABASE_URL", ""),
        help="PostgreSQL URL (postgresql://...) instead of a data directory (env PLAYLOG_DATABASE_URL)",
    )
    verify.add_argument("--channel-id", default="", help="only this channel")

    token = sub.add_parser("token", help="create a bearer token and print the auth file entry")
    token.add_argument("--name", required=True, help="principal name")
    token.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["reader", "scheduler", "engine", "operator"],
        help="role (repeatable)",
    )

    health = sub.add_parser(
        "health",
        help="check a server's health (grpc.health.v1): exit 0 SERVING, 1 not serving, 2 unreachable",
    )
    health.add_argument(
        "--server",
        default=os.environ.get("PLAYLOG_SERVER") or _local_address(os.environ.get("PLAYLOG_LISTEN", "")),
        help="host:port (env PLAYLOG_SERVER; default: this machine at PLAYLOG_LISTEN's port, or "
        "127.0.0.1:50051)",
    )
    health.add_argument("--ca-cert", default="", help="CA (PEM) of a TLS server's certificate")
    health.add_argument("--server-name", default="", help="name to verify the TLS certificate against")
    health.add_argument("--service", default="", help="service name to check (default: the server)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")

    sub.add_parser("ctl", help="operate a server over its gRPC API (playlog ctl --help)", add_help=False)

    args, extra = parser.parse_known_args(argv)
    if extra:
        # An unknown flag belongs to the subcommand: show that subcommand's usage.
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve":
        return _serve(args)
    if args.command == "verify":
        return _verify(args.data_dir, args.database_url, args.channel_id)
    if args.command == "health":
        return _health(args)
    return _token(args.name, args.role)


def _local_address(listen: str) -> str:
    """Where a probe on this machine reaches a server listening on `listen`."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        return "127.0.0.1:50051"
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2

    if args.ca_cert:
        try:
            root = open(args.ca_cert, "rb").read()
        except OSError as exc:
            print(f"playlog health: --ca-cert {args.ca_cert}: {exc.strerror}", file=sys.stderr)
            return 2
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(root), options=options)
    else:
        channel = grpc.insecure_channel(args.server)
    with channel:
        try:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            answer = check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                print(f"playlog health: {args.server}: unknown service {args.service!r}", file=sys.stderr)
                return 1
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            print(
                f"playlog health: cannot reach {args.server}: {code.name if code else ''} {detail}",
                file=sys.stderr,
            )
            return 2
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(status)
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


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


def _verify(data_dir: str, database_url: str, channel_id: str) -> int:
    from playlog.store.base import StoreError

    # Read-only on both stores, and no data directory lock: the audit runs
    # beside a serving process and never migrates or changes what it audits.
    try:
        if database_url:
            from playlog.store.postgres import audit_read_only as audit_postgres

            findings = audit_postgres(database_url, channel_id)
        else:
            from playlog.store.sqlite import audit_read_only as audit_sqlite

            findings = audit_sqlite(data_dir, channel_id)
    except StoreError as exc:
        print(f"playlog verify: {exc}", file=sys.stderr)
        return 2
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
