"""cfn calibrate: measure the measuring instrument against faults of a known size.

    cfn calibrate                                # on an embedded redis-server
    cfn calibrate --delays 1,2,5 --drop 50 --out /tmp/calibration

Runs the Locust harness (loadtests/swarm.py, in subprocesses, as cfn bench does) through a
small TCP proxy on 127.0.0.1 in front of the server: once with the proxy's base delay
(0.5 ms, so its own hop is the same in every run), then once for each injected one-way delay
on top, on the delivery path (server -> client). The shift of the delivery p50 from the base
run must equal the injected delay within 10 %. In the base run the proxy also drops
exactly --drop non-critical events (priority < 8) on one subscriber connection (the shared
model: one Event Bus per swarm, 10 agents behind it) in the middle of the measurement window;
the harness must report exactly that many events missed by each of those agents. cfn bench
runs the same calibration as one of its steps and shows it beside its figures.

Not on Redis Cluster: cluster clients learn every master's address from CLUSTER SLOTS and
connect to it directly, around the proxy; given a cluster node it stops with one error.

Writes calibration.json to --out. Exit status: 0 when every injected fault was measured
within its bound, 1 when one was not (the instrument is off), 2 for a usage error, a
server that cannot be reached or a Redis Cluster node.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.calibration.calibrate import (
    DELAYS_MS,
    DROP_EVENTS,
    calibrate,
    calibration_lines,
    calibration_ok,
)
from pytest_cfn.measure.embedded_server import measured_server
from pytest_cfn.measure.sweep.harness import find_locustfile, require_locust


def parse_delays(text: str) -> tuple[float, ...]:
    """``2,5``: distinct delays in ms, each 0.1..1000, ascending."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} is not a number of milliseconds; give delays like 2,5"
            ) from None
        if not 0.1 <= value <= 1000:
            raise argparse.ArgumentTypeError(f"{value:g} ms is out of range; use 0.1 to 1000")
        values.append(value)
    return tuple(sorted(set(values)))


def parse_drop(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of events") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{value} events is out of range; use 0 to 10,000")
    return value


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        parents=[common],
        help="measure the harness through a delay/loss proxy: injected vs measured",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--delays", type=parse_delays, default=DELAYS_MS, metavar="MS,MS",
        help="one-way delays to inject, ms (default 2,5)",
    )
    parser.add_argument(
        "--drop", type=parse_drop, default=DROP_EVENTS, metavar="N",
        help=f"events to drop on one subscriber connection (default {DROP_EVENTS}; 0: none)",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"), metavar="DIR",
                        help="output folder for calibration.json and the runs (default "
                        "reports/)")
    parser.add_argument("--locustfile", type=Path, default=None, metavar="PATH",
                        help="the harness (default: loadtests/swarm.py)")
    parser.set_defaults(func=run)


def refuse_cluster(url: str) -> None:
    """:class:`InvalidOptionError` when ``url`` is a Redis Cluster node (its clients go
    around the delay proxy: see ``CALIBRATION_ON_CLUSTER``)."""
    from pytest_cfn.measure.microbench.shard_references import server_is_cluster
    from pytest_cfn.measure.sweep.cluster_target import CALIBRATION_ON_CLUSTER

    address = parse_redis_url(url)
    if server_is_cluster(url):
        raise InvalidOptionError(
            f"{address.describe()} is a Redis Cluster node, and the calibration cannot run "
            f"there: {CALIBRATION_ON_CLUSTER}"
        )


def run(args: argparse.Namespace) -> int:
    if args.redis:
        refuse_cluster(args.redis)
    require_locust()
    locustfile = find_locustfile(args.locustfile)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stream = sys.stdout
    with measured_server(args.redis or None) as server:
        print(f"cfn calibrate: {server.description}; harness {locustfile}", file=stream,
              flush=True)
        result = calibrate(server.url, locustfile, out / "calibration",
                           delays_ms=args.delays, drop=args.drop,
                           say=lambda text: print(f"  {text}", file=stream, flush=True))
    path = out / "calibration.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("\ninjected vs measured:", file=stream)
    for line in calibration_lines(result):
        print(f"  {line}", file=stream)
    ok = calibration_ok(result)
    print(f"\n{'calibrated' if ok else 'NOT CALIBRATED'}: wrote {path}", file=stream)
    return 0 if ok else 1
