"""cfn report: redraw the report of a saved sweep, and compare it with a baseline.

    cfn report reports/results.json                          # figures + summary beside it
    cfn report new/results.json --baseline old/results.json --out /tmp/compare

Reads a result of cfn bench (or of one Locust harness run), draws every figure it has data
for, and writes summary.md and summary.html. With --baseline, the baseline is drawn dashed in
the figures and every figure present in both is compared side by side: the change in %, the
rule that judged it and why, and REGRESSED where it regressed.

When is it a regression? {rule}

Exit status: 0 when the report was written, 1 with --fail-on-regression when a figure
regressed, 2 for a usage error or an unreadable result.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from pytest_cfn.measure.results import REGRESSION_RULE, read_result
from pytest_cfn.measure.sweep.document import SweepData
from pytest_cfn.measure.sweep.summary_page import (
    comparison_table,
    load_table,
    render_text,
    write_report,
)


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
        description=(__doc__ or "").format(rule=REGRESSION_RULE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("result", type=Path, metavar="RESULTS.json",
                        help="a result written by cfn bench (or by the Locust harness)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="OLD.json",
                        help="an earlier result to compare with, side by side")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: the folder of RESULTS.json)")
    parser.add_argument("--max-regression", type=_percent, default=10.0, metavar="PCT",
                        help="the threshold: a figure must be worse than the baseline by "
                        "more than this, and outside the noise, to be REGRESSED (default 10)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when any figure regressed")
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
        print(f"\ncompared with {args.baseline}:", file=stream)
        print(render_text(comparison_table(report.regressions, args.max_regression),
                          leave_out=("why",)), file=stream)
        regressed = [r for r in report.regressions if r.regressed]
        print(f"{len(regressed)} of {len(report.regressions)} figures regressed (worse by more "
              f"than {args.max_regression:g} % and outside the noise; see cfn report --help)",
              file=stream)
    print(f"\nwrote {report.markdown}, {report.html} and {len(report.figures)} figures to "
          f"{out}/", file=stream)
    return 1 if regressed and args.fail_on_regression else 0
