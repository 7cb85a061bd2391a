"""The ``cfn`` command line: one module per subcommand, each with ``register(subparsers)``.

A subcommand module defines ``register(subparsers, common)`` that adds its parser
(with ``parents=[common]`` for ``--redis``) and sets ``func`` to a callable taking the
parsed ``argparse.Namespace`` and returning an exit code. Only the module of the subcommand
named on the command line is imported (all of them only for ``cfn --help``). A ``--redis`` URL
is checked before the subcommand runs (``pytest_cfn.server_probe``). Errors the user can fix
(:class:`CfnError`, bad JSON, a server that is not a usable Redis) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pytest_cfn._errors import CfnError

SUBCOMMANDS = ("publish", "monitor", "swarms", "recover", "acl", "bench", "report", "calibrate")
EXIT_USAGE = 2


def common_parser() -> argparse.ArgumentParser:
    """Options every subcommand takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("CFN_REDIS_URL"),
        help="Redis server URL: redis://host:port/db, rediss://... (TLS) or unix:///path "
        "(default: $CFN_REDIS_URL; subcommands that need a server and get none say so)",
    )
    return common


def _chosen_subcommand(arguments: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if
    it is one we have; only its module is imported then."""
    for word in arguments:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``cfn`` parser; with ``only``, just that subcommand's module is imported (the
    others' are needed only for ``cfn --help`` and for an unknown command's usage)."""
    parser = argparse.ArgumentParser(
        prog="cfn",
        description="Coordinate, watch and measure CFN agent swarms on Redis pub/sub (ADR-002).",
    )
    common = common_parser()
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"pytest_cfn.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pytest_cfn.cli.{name}":
                continue
            raise
        module.register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_subcommand(arguments))
    args = parser.parse_args(arguments)
    try:
        if getattr(args, "redis", None):
            from pytest_cfn.server_probe import check_server

            check_server(args.redis)
        code = args.func(args)
    except CfnError as exc:
        print(f"cfn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConnectionError, OSError, TimeoutError) as exc:
        print(f"cfn {args.command}: error: cannot reach Redis: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if not type(exc).__module__.startswith(("redis", "hiredis")):
            raise
        print(f"cfn {args.command}: error: Redis failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
