"""``cfn report``: redraw the report of a saved sweep, and compare it with a baseline.

    cfn report reports/results.json                          # figures + summary beside it
    cfn report new/results.json --baseline old/results.json --out /tmp/compare

Reads a result of ``cfn bench`` (or of one Locust harness run), draws every figure it has data
for, and writes summary.md and summary.html. With --baseline, the baseline is drawn dashed in
the figures and every metric present in both is compared side by side (change in %, and
REGRESSED where it got worse by more than --max-regression). Exit status: 0 when the report
was written, 1 with --fail-on-regression when a metric regressed, 2 for a usage error or an
unreadable result.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from pytest_cfn.results import read_result
from pytest_cfn.sweep.document import SweepData
from pytest_cfn.sweep.summary import Table, load_table, render_text, write_report


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of percent") from None
    if not (math.isfinite(value) and 0 <= value <= 1000):
        raise argparse.ArgumentTypeError(f"{text} is out of range; use 0..1000 (percent)")
    return value


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "report",
        help="redraw the report of a saved result (results.json); --baseline compares two",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("result", type=Path, metavar="RESULTS.json",
                        help="a result written by cfn bench (or by the Locust harness)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="OLD.json",
                        help="an earlier result to compare with, side by side")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: the folder of RESULTS.json)")
    parser.add_argument("--max-regression", type=_percent, default=10.0, metavar="PCT",
                        help="a metric worse than the baseline by more than this is marked "
                        "REGRESSED (default 10)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when any metric regressed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = SweepData.from_result(read_result(args.result), str(args.result))
    baseline = None
    if args.baseline is not None:
        baseline = SweepData.from_result(read_result(args.baseline), str(args.baseline))
    out = args.out if args.out is not None else args.result.resolve().parent
    report = write_report(data, out, baseline, args.max_regression)
    stream = sys.stdout
    print(render_text(load_table(data)), file=stream)
    regressed = []
    if report.regressions is not None:
        rows = [[r.scope, r.name, f"{r.baseline:,.4g}", f"{r.current:,.4g}",
                 f"{r.change_pct:+.1f} %", "REGRESSED" if r.regressed else ""]
                for r in report.regressions]
        print(f"\ncompared with {args.baseline}:", file=stream)
        print(render_text(Table(["scope", "metric", "baseline", "current", "change", ""], rows)),
              file=stream)
        regressed = [r for r in report.regressions if r.regressed]
        print(f"{len(regressed)} of {len(report.regressions)} metrics regressed by more than "
              f"{args.max_regression:g} %", file=stream)
    print(f"\nwrote {report.markdown}, {report.html} and {len(report.figures)} figures to "
          f"{out}/", file=stream)
    return 1 if regressed and args.fail_on_regression else 0
