"""``cfn swarms``: the swarms with state in Redis, and their state.

    cfn swarms                 # one line per swarm (found with SCAN, never KEYS)
    cfn swarms swarm-a         # everything stored for one swarm
    cfn swarms --json          # one JSON object per swarm
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pytest_cfn._core.ids import validate_swarm_id
from pytest_cfn._core.swarm_state import SwarmRecord
from pytest_cfn._errors import SwarmNotFoundError
from pytest_cfn.cli._swarm_args import add_namespace, age, require_url, table


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "swarms",
        parents=[common],
        help="list swarms and their state",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("swarm", nargs="?", help="show this one swarm in full")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    add_namespace(parser)
    parser.set_defaults(func=run)


def summary_rows(records: list[SwarmRecord], now: float) -> list[list[str]]:
    rows = []
    for r in records:
        busy = sum(1 for s in r.agents.values() if s not in ("done", "finished", "idle"))
        rows.append([
            r.swarm,
            r.status,
            "-" if r.loop is None else str(r.loop),
            r.phase or "-",
            f"{len(r.agents)} ({busy} active)" if r.agents else "0",
            age(r.heartbeat_age(now)),
            age(r.ttl),
        ])
    return rows


SUMMARY_HEADER = ["SWARM", "STATUS", "LOOP", "PHASE", "AGENTS", "HEARTBEAT", "TTL"]


def detail(record: SwarmRecord, checkpoints: int, now: float) -> str:
    lines = [
        f"swarm:      {record.swarm}",
        f"status:     {record.status}",
        f"loop:       {'-' if record.loop is None else record.loop}",
        f"phase:      {record.phase or '-'}",
        f"heartbeat:  {age(record.heartbeat_age(now))} ago",
        f"created:    {_when(record.created)}",
        f"updated:    {_when(record.updated)}",
        f"ttl:        {age(record.ttl)}",
        f"recoveries: {record.recoveries}"
        + (f" (last by {record.recovered_by})" if record.recovered_by else ""),
        f"checkpoints: {checkpoints}",
        f"agents:     {len(record.agents)}",
    ]
    lines += [f"  {agent}: {status}" for agent, status in sorted(record.agents.items())]
    lines.append(f"data:       {json.dumps(record.data, default=repr)}")
    return "\n".join(lines)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def run(args: argparse.Namespace) -> int:
    from pytest_cfn._sync.swarm_state import SwarmState

    swarm = validate_swarm_id(args.swarm) if args.swarm is not None else None
    url, _ = require_url(args)
    with SwarmState(url, namespace=args.namespace) as state:
        now = time.time()
        if swarm is not None:
            record = state.load(swarm)
            if record is None:
                raise SwarmNotFoundError(
                    f"swarm {swarm!r} has no state (never written, or expired)"
                )
            checkpoints = state.checkpoints(swarm)
            if args.json:
                print(json.dumps({**record.to_dict(), "checkpoints": len(checkpoints)},
                                 default=repr))
            else:
                print(detail(record, len(checkpoints), now))
            return 0
        records = state.swarms()
    if args.json:
        for record in records:
            print(json.dumps(record.to_dict(), default=repr))
    elif records:
        print(table(summary_rows(records, now), SUMMARY_HEADER))
    else:
        print("no swarms with state" + (f" in namespace {args.namespace!r}" if args.namespace
                                        else ""))
    return 0
