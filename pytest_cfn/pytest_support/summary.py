"""The end of a run: merged figures, the gate, the baseline comparison, table and JSON.

Computed once, on the process that reports (the xdist controller, or the only process),
after every sample has arrived.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from pytest_cfn.measure.results import Metric, Regression, RunResult, compare, format_value
from pytest_cfn.pytest_support.perf_sample import PerfSample, merge_by_scope, sample_metrics

if TYPE_CHECKING:
    from pytest_cfn.pytest_support.endpoint import RedisEndpoint
    from pytest_cfn.pytest_support.settings import Settings

_OPS_TEXT = {">=": ">=", "<=": "<=", ">": ">", "<": "<", "==": "=="}
_MIN_METHOD_WIDTH = 30


@dataclass
class Outcome:
    metrics: list[Metric]
    gate: bool
    regression_pct: float
    regressions: list[Regression] = field(default_factory=list)
    compared_with: str | None = None
    fake: bool = False
    reference: dict[str, Any] | None = None

    @property
    def missed(self) -> list[Metric]:
        return [m for m in self.metrics if m.verdict == "fail"]

    @property
    def regressed(self) -> list[Regression]:
        return [r for r in self.regressions if r.regressed]

    @property
    def failed(self) -> bool:
        """True when the run must fail: a missed target under --cfn-gate, or a regression."""
        return bool((self.gate and self.missed) or self.regressed)


def build_outcome(
    samples: list[PerfSample], settings: Settings, baseline: RunResult | None,
    reference: dict[str, Any] | None = None,
) -> Outcome:
    merged = merge_by_scope(samples)
    metrics = [metric for sample in merged for metric in sample_metrics(sample)]
    if reference:
        from pytest_cfn.measure.sweep.references import attach_reference

        attach_reference(metrics, reference)
    outcome = Outcome(
        metrics=metrics,
        gate=settings.gate,
        regression_pct=settings.regression_pct,
        fake=any(sample.is_fake for sample in merged),
        reference=reference,
    )
    if baseline is not None:
        gated = [m for m in metrics if m.target is not None and not m.method.startswith("[fake")]
        current = RunResult(tool="pytest", redis=baseline.redis, metrics=gated)
        outcome.regressions = compare(baseline, current, settings.regression_pct)
        outcome.compared_with = str(settings.baseline_path)
    return outcome


def build_result(outcome: Outcome, endpoint: RedisEndpoint, extra: dict[str, Any]) -> RunResult:
    from pytest_cfn.measure.metrics.machine import machine_info

    details = dict(extra)
    details.update(
        gate=outcome.gate,
        passed=not outcome.failed,
        missed=[f"{m.scope}::{m.name}" for m in outcome.missed],
        baseline=outcome.compared_with,
        regression_pct=outcome.regression_pct if outcome.compared_with else None,
        regressions=[msgspec.to_builtins(r) for r in outcome.regressions],
        reference=outcome.reference,
    )
    return RunResult(
        tool="pytest",
        redis=endpoint.to_info(),
        machine=machine_info(),
        metrics=list(outcome.metrics),
        extra=details,
    )


def format_target(metric: Metric) -> str:
    if metric.target is None or metric.op is None:
        return "-"
    return f"{_OPS_TEXT[metric.op]} {format_value(metric.target, metric.unit)}"


def table_lines(outcome: Outcome, width: int = 120) -> list[str]:
    """Rows of metric | measured | target | verdict | method, grouped by scope.

    The method is the point of a figure, so it is never cut: when it does not fit in its
    column it goes on the lines under its row, wrapped to the terminal's width.
    """
    if not outcome.metrics:
        return ["no performance figures were recorded (no test used cfn_perf)"]
    lines: list[str] = []
    if outcome.fake:
        lines.append(
            "FAKEREDIS: these figures were not measured through a real Redis server; they are "
            "not representative and never gate."
        )
    header = ("metric", "measured", "target", "verdict", "method")
    rows = [
        (m.scope, m.name, format_value(m.value, m.unit), format_target(m),
         "FAIL" if m.verdict == "fail" else m.verdict, m.method)
        for m in outcome.metrics
    ]
    widths = [max(len(header[i]), *(len(row[i + 1]) for row in rows)) for i in range(4)]
    left_width = 2 + sum(widths) + 2 * 3
    inline = left_width + 2 + max(len(row[5]) for row in rows) <= width

    def left(cells: tuple[str, ...]) -> str:
        return "  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells[:4]))

    lines.append((left(header) + "  method").rstrip() if inline else left(header[:4]).rstrip())
    scope = None
    for row in rows:
        if row[0] != scope:
            scope = row[0]
            lines.append(scope)
        if inline:
            lines.append(f"{left(row[1:5])}  {row[5]}".rstrip())
        else:
            lines.append(left(row[1:5]).rstrip())
            lines.extend(
                textwrap.wrap(
                    row[5], max(_MIN_METHOD_WIDTH, width - 6),
                    initial_indent="      method: ", subsequent_indent="        ",
                )
            )
    return lines


def verdict_lines(outcome: Outcome) -> list[str]:
    """The gate's and the baseline's conclusions, one line each."""
    lines = []
    judged = [m for m in outcome.metrics if m.verdict != "info"]
    missed = outcome.missed
    names = ", ".join(f"{m.name} ({m.scope})" for m in missed)
    if outcome.gate:
        if missed:
            lines.append(
                f"cfn gate FAILED: {len(missed)} of {len(judged)} targets missed: {names}"
            )
        else:
            lines.append(f"cfn gate passed: {len(judged)} targets met")
    elif missed:
        lines.append(
            f"cfn: {len(missed)} of {len(judged)} targets missed ({names}); informational, "
            "pass --cfn-gate to fail the run on a missed target"
        )
    if outcome.compared_with is not None:
        regressed = outcome.regressed
        if regressed:
            for item in regressed:
                lines.append(
                    f"cfn baseline REGRESSION: {item.name} ({item.scope}) changed "
                    f"{item.change_pct:+.1f} % ({item.baseline:,.6g} -> {item.current:,.6g}); "
                    f"the limit is {outcome.regression_pct:g} % (--cfn-regression); judged by "
                    f"{item.rule}: {item.detail}"
                )
        else:
            lines.append(
                f"cfn baseline: {len(outcome.regressions)} figures compared with "
                f"{outcome.compared_with}, none regressed by more than "
                f"{outcome.regression_pct:g} % outside the noise"
            )
    return lines
