"""cfn bench: the agent sweep against ADR-002, repeated, calibrated, and its report.

    cfn bench                                   # 10, 50, 100, 500 agents, 3 runs each
    cfn bench --agents 10,100 --duration 4 --repeat 5 --out /tmp/sweep
    cfn bench --redis redis://127.0.0.1:6379/0 --model per-agent

On an embedded redis-server unless --redis (or $CFN_REDIS_URL) names one, runs the Locust
harness (loadtests/swarm.py) in subprocesses at each agent count, --repeat times (the runs
interleaved), with the server's own ceiling (redis-benchmark), a round-trip floor, the route
cache sweep, the client models and the instrument's calibration (see cfn calibrate) measured
in the same run, and writes results.json, summary.md, summary.html and the figures (PNG) to
--out. Each load point's figures are the median of its runs with their min-max; its verdicts
are judged on the median and say how many of the runs met the target. About 3.5 minutes with
the defaults on a 2-core machine.

Not to be confused with python -m pytest_cfn.measure.microbench: that one is the Event Bus's own
micro-benchmark (one publisher, one subscriber, against redis-py and redis-benchmark), not the
agent sweep.

On Redis Cluster (--redis redis://HOST:PORT of any node): detected from the node, stated in
the output and the report (the number of masters). The references use sharded pub/sub as
our bus does: redis-benchmark SPUBLISH and the SPUBLISH round trip on the master that owns
their channel's slot, the raw client models on SSUBSCRIBE / SPUBLISH of a shard channel;
the route cache sweep runs without route_overrides (refused on a cluster: a miss then costs
no GET); the shared model's buses get connections of their own (SharedConnections serve one
server); server CPU is summed over the masters. The calibration is not measured on a
cluster (its delay proxy fronts one node; cluster clients connect to every master directly)
and the output says so.

Exit status: 0 when the report was written (verdicts are in it), 1 when a step failed to
run, 2 for a usage error or a server that cannot be reached.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_cfn._errors import CfnError
from pytest_cfn.measure.calibration.calibrate import calibration_lines
from pytest_cfn.measure.sweep.document import SweepData
from pytest_cfn.measure.sweep.runner import (
    DEFAULT_AGENTS,
    DEFAULT_DURATION_S,
    DEFAULT_REPEAT,
    MODELS_OF_HARNESS,
    SKIPPABLE,
    SweepConfig,
    SweepRun,
)
from pytest_cfn.measure.sweep.summary_page import load_table, render_text, write_report

MAX_AGENTS = 5_000


def parse_agents(text: str) -> tuple[int, ...]:
    """``10,50,100,500``: distinct whole numbers 1..5000, returned in ascending order."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a whole number; give agent counts like 10,50,100,500"
            ) from None
        if not 1 <= value <= MAX_AGENTS:
            raise argparse.ArgumentTypeError(
                f"{value} agents is out of range; use 1 to {MAX_AGENTS:,}"
            )
        values.append(value)
    return tuple(sorted(set(values)))


def _number(low: float, high: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; use {what}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {what}")
        return value

    parse.__name__ = what
    return parse


def _count(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; use {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {what}")
        return value

    parse.__name__ = what
    return parse


def _skip(text: str) -> str:
    if text not in SKIPPABLE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step that can be skipped; use one of {', '.join(SKIPPABLE)}"
        )
    return text


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "bench",
        parents=[common],
        help="the agent sweep (10-500 agents, repeated) against ADR-002, with its report "
        "in reports/ (python -m pytest_cfn.measure.microbench is the Event Bus micro-benchmark)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--agents", type=parse_agents, default=DEFAULT_AGENTS, metavar="N,N,...",
        help="agent counts of the sweep (default 10,50,100,500)",
    )
    parser.add_argument(
        "--duration", type=_number(1, 3600, "seconds, 1..3600"), default=DEFAULT_DURATION_S,
        metavar="S",
        help=f"about the measurement window of each load step, seconds (default "
        f"{DEFAULT_DURATION_S:g}; spawning and warm-up come on top; each step reports its own "
        "window)",
    )
    parser.add_argument(
        "--repeat", type=_count(1, 20, "runs, 1..20"), default=DEFAULT_REPEAT, metavar="K",
        help=f"runs of each load point (default {DEFAULT_REPEAT}); figures are the median with "
        "the runs' min-max, verdicts say how many runs met the target, and cfn report "
        "--baseline compares the ranges (K >= 2) rather than one noisy number",
    )
    parser.add_argument(
        "--rate", type=_number(0.01, 10_000, "events/s per agent, 0.01..10000"), default=100.0,
        metavar="R", help="events/s each agent offers (default 100: ADR-002's scaling table)",
    )
    parser.add_argument(
        "--model", choices=MODELS_OF_HARNESS, default="shared",
        help="connection model of the load steps (default shared: every swarm's Event Bus and "
        "Messenger of a process on one shared publisher and subscriber connection); the other "
        "model is counted by the connection probe",
    )
    parser.add_argument(
        "--probe-rate", type=_number(0.01, 10_000, "events/s per agent, 0.01..10000"),
        default=2.0, metavar="R",
        help="events/s per agent of the connection probe steps (default 2: enough for every "
        "agent that sends Messenger messages to have opened its publisher connection)",
    )
    parser.add_argument(
        "--warmup", type=_number(0, 60, "seconds, 0..60"), default=1.0, metavar="S",
        help="seconds of traffic before each measurement window (default 1)",
    )
    parser.add_argument(
        "--payload", type=_number(0, 65536, "bytes, 0..65536"), default=200, metavar="BYTES",
        help="approximate size of one encoded event (default 200)",
    )
    parser.add_argument(
        "--skip", type=_skip, action="append", default=[], metavar="STEP",
        help=f"leave out a step (repeatable): {', '.join(SKIPPABLE)}",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"), metavar="DIR",
                        help="output folder (default reports/)")
    parser.add_argument("--locustfile", type=Path, default=None, metavar="PATH",
                        help="the harness (default: loadtests/swarm.py of this source tree)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = SweepConfig(
        agents=args.agents, duration=args.duration, repeat=args.repeat, rate=args.rate,
        model=args.model,
        probe_rate=args.probe_rate, warmup=args.warmup, payload=int(args.payload),
        out=args.out, redis_url=args.redis or None, locustfile=args.locustfile,
        skip=frozenset(args.skip),
    )
    stream = sys.stdout
    outcome = SweepRun(config, stream).run()
    data = SweepData.from_result(outcome.result, str(outcome.results_path))
    try:
        report = write_report(data, config.out)
    except CfnError as exc:
        print(f"cfn bench: results written to {outcome.results_path}, but no report: {exc}",
              file=sys.stderr)
        return 1
    print(f"\nSummary ({outcome.wall_s:.0f} s in all):", file=stream)
    print(render_text(load_table(data)), file=stream)
    calibration = data.extra.get("calibration")
    if calibration:
        print("\nCalibration (injected vs measured):", file=stream)
        for line in calibration_lines(calibration):
            print(f"  {line}", file=stream)
    not_calibrated = (data.extra.get("not_measured") or {}).get("calibration")
    if not_calibrated:
        print(f"\nCalibration: {not_calibrated}", file=stream)
    cluster = data.extra.get("cluster")
    if cluster:
        print(f"\nRan on a Redis Cluster of {cluster['masters']} masters (sharded pub/sub); "
              f"server CPU summed over the {cluster['masters']} masters.", file=stream)
    for failure in outcome.failures:
        print(f"FAILED: {failure}", file=stream)
    print(f"\nwrote {outcome.results_path}, {report.markdown}, {report.html} and "
          f"{len(report.figures)} figures to {config.out}/", file=stream)
    return 1 if outcome.failures else 0
