"""What ``cfn publish``, ``monitor``, ``swarms`` and ``recover`` share: the server URL,
the namespace, JSON and priority parsing, and short human forms of times."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

from pytest_cfn._backends.address import ServerAddress, parse_redis_url
from pytest_cfn._errors import InvalidOptionError

NAMESPACE_ENV = "CFN_NAMESPACE"


def add_namespace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        metavar="NS",
        default=os.environ.get(NAMESPACE_ENV, ""),
        help=f"channel and key prefix that isolates tenants or tests (default: ${NAMESPACE_ENV}, "
        "else none)",
    )


def require_url(args: argparse.Namespace) -> tuple[str, ServerAddress]:
    """The ``--redis`` URL and its parsed address; a clear error when there is none."""
    url = args.redis
    if not url:
        raise InvalidOptionError(
            "no Redis server given: pass --redis redis://host:port/db or set CFN_REDIS_URL"
        )
    return url, parse_redis_url(url)


def parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOptionError(
            f"{option} is not valid JSON ({exc.msg} at character {exc.pos}): {text[:60]!r}; "
            """e.g. --data '{"loop": 3, "phase": "auth"}'"""
        ) from None


def parse_priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 9:
        raise InvalidOptionError(
            f"--priority {text!r} is not a priority; priorities are integers 1 (low) to 9 "
            "(critical)"
        )
    return value


def parse_seconds(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidOptionError(f"{option} {text!r} is not a number of seconds >= 0")
    return value


def parse_count(text: str, option: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidOptionError(f"{option} {text!r} is not a whole number >= 1")
    return int(text)


def age(seconds: float | None) -> str:
    """``4.2s``, ``3m05s``, ``2h10m``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def clock(ts_ns: int) -> str:
    """A sender's wall-clock time in ns as local ``HH:MM:SS.mmm``."""
    seconds = ts_ns / 1e9
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(seconds % 1 * 1000):03d}"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)
