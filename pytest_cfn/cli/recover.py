"""``cfn recover``: interrupted swarms, and claiming one to resume it.

A swarm is interrupted when it has not finished and its heartbeat is older
than ``--max-age`` seconds (its process died, or lost Redis).

    cfn recover                        # list interrupted swarms
    cfn recover --resume swarm-a       # claim it: status becomes 'recovering', state is printed
    cfn recover --resume swarm-a --json > state.json

Claiming is atomic: of two recoverers, one gets the swarm and the other a clear
refusal. ``--force`` takes a swarm whose heartbeat is still fresh.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pytest_cfn._core.ids import validate_swarm_id
from pytest_cfn._core.swarm_state import DEFAULT_MAX_AGE, RecoveredSwarm
from pytest_cfn.cli._swarm_args import add_namespace, parse_seconds, require_url, table
from pytest_cfn.cli.swarms import SUMMARY_HEADER, summary_rows


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "recover",
        parents=[common],
        help="list interrupted swarms, or claim one with --resume",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--resume", metavar="ID", help="claim this swarm for recovery")
    parser.add_argument(
        "--max-age", default=str(DEFAULT_MAX_AGE),
        help=f"seconds without a heartbeat that make a swarm interrupted (default "
        f"{DEFAULT_MAX_AGE:g})",
    )
    parser.add_argument("--force", action="store_true",
                        help="with --resume: take the swarm even if its heartbeat is fresh")
    parser.add_argument("--json", action="store_true", help="JSON output")
    add_namespace(parser)
    parser.set_defaults(func=run)


def recovered_json(recovered: RecoveredSwarm) -> str:
    return json.dumps(
        {
            "swarm": recovered.swarm,
            "source": recovered.source,
            "state": recovered.state.to_dict(),
            "checkpoints": [c.to_dict() for c in recovered.checkpoints],
        },
        default=repr,
    )


def run(args: argparse.Namespace) -> int:
    from pytest_cfn._sync.swarm_state import SwarmState

    max_age = parse_seconds(args.max_age, "--max-age")
    swarm = validate_swarm_id(args.resume) if args.resume is not None else None
    url, _ = require_url(args)
    with SwarmState(url, namespace=args.namespace, max_age=max_age) as state:
        if swarm is not None:
            recovered = state.recover(swarm, force=args.force, recoverer="cfn-cli")
            if args.json:
                print(recovered_json(recovered))
            else:
                r = recovered.state
                print(
                    f"claimed {swarm} for recovery from its {recovered.source}: loop "
                    f"{'-' if r.loop is None else r.loop}, phase {r.phase or '-'}, "
                    f"{len(r.agents)} agent(s), {len(recovered.checkpoints)} checkpoint(s); "
                    f"status is now {r.status}"
                )
            return 0
        now = time.time()
        records = state.interrupted()
    if args.json:
        for record in records:
            print(json.dumps(record.to_dict(), default=repr))
    elif records:
        print(table(summary_rows(records, now), SUMMARY_HEADER))
    else:
        print(f"no interrupted swarms (no heartbeat for {max_age:g} s or more)")
    return 0
