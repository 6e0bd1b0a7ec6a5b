"""Command line for the local stack: ``python -m deploy.local up|down|status|install``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from deploy.local import stack


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local",
        description=(
            "Run real Kafka (KRaft), PostgreSQL 15 and Redis locally for Parley. "
            "See deploy/local/stack.py for the environment variables."
        ),
    )
    _add_common(parser, default=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "install", parents=[common], help="install system packages and Kafka jars (idempotent)"
    )
    up = sub.add_parser(
        "up", parents=[common], help="start the stack and wait until every component answers"
    )
    up.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait per component (default 120)"
    )
    sub.add_parser("down", parents=[common], help="stop what `up` started")
    sub.add_parser(
        "status", parents=[common], help="show components; exit code 3 if any is not answering"
    )
    sub.add_parser(
        "env", parents=[common], help="print the endpoints as shell variable assignments"
    )
    return parser


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    """Options accepted both before and after the subcommand."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="no progress output"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug logging"
    )


def _print_env() -> None:
    eps = stack.endpoints()
    for var, value in (
        ("PARLEY_KAFKA_BOOTSTRAP", eps.kafka_bootstrap),
        ("PARLEY_POSTGRES_DSN", eps.postgres_dsn),
        ("PARLEY_REDIS_URL", eps.redis_url),
    ):
        sys.stdout.write(f"export {var}={shlex.quote(value)}\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    progress = not args.quiet
    try:
        if args.command == "install":
            stack.install(progress=progress)
        elif args.command == "up":
            stack.up(progress=progress, timeout=args.timeout)
        elif args.command == "down":
            stack.down(progress=progress)
        elif args.command == "env":
            _print_env()
        else:
            rows = stack.status(progress=progress)
            return 0 if all(row.answering for row in rows) else 3
    except stack.LocalStackError as exc:
        Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
