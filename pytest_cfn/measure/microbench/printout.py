"""The benchmark's figures: each with its method, its reference ratio and its target.

A figure is printed as one line (value, ratio to its reference, verdict) and an
indented ``method:`` line saying what was timed, from where to where, at what
offered rate and payload; the same data becomes one ``Metric`` of the
``pytest-cfn/result`` JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO

from pytest_cfn.measure.results import (
    Better,
    Metric,
    Op,
    RedisInfo,
    RunResult,
    Verdict,
    format_value,
    judge,
)

_LABEL_WIDTH = 44


@dataclass
class Figure:
    """One measured figure; ``target`` is absolute (a rate, ns, bytes), not a ratio."""

    key: str
    title: str
    value: float
    unit: str
    method: str
    reference_title: str | None = None
    reference_value: float | None = None
    target: float | None = None
    op: Op | None = None
    target_text: str = ""
    better: Better = "higher"
    notes: list[str] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    unjudged: str = ""
    """Why the target is not judged in this run (the machine set the figure, not the code
    measured), or empty: judged."""

    @property
    def ratio(self) -> float | None:
        if self.reference_value is None or not self.reference_value:
            return None
        return self.value / self.reference_value

    @property
    def verdict(self) -> Verdict:
        if self.unjudged and self.target is not None and self.op is not None:
            return "not-judged"
        return judge(self.value, self.target, self.op)

    def to_metric(self) -> Metric:
        method = self.method
        if self.ratio is not None:
            method += f" Ratio {self.ratio:.2f}x to {self.reference_title}."
        return Metric(
            name=self.key,
            value=float(self.value),
            unit=self.unit,
            method=method,
            target=self.target,
            op=self.op,
            verdict=self.verdict,
            better=self.better,
            scope="bench",
            latency=self.latency,
        )


@dataclass
class StepFailure:
    """A step that produced no figure, and why."""

    title: str
    reason: str
    skipped: bool = False


def format_figure(figure: Figure) -> list[str]:
    line = f"  {figure.title:<{_LABEL_WIDTH}} {format_value(figure.value, figure.unit):>18}"
    if figure.ratio is not None:
        line += f"   {figure.ratio:5.2f}x {figure.reference_title}"
    if figure.op is not None and figure.target is not None:
        verdict = "NOT JUDGED" if figure.verdict == "not-judged" else figure.verdict.upper()
        line += f"   [target {figure.target_text or figure.op}: {verdict}]"
    lines = [line]
    if figure.unjudged:
        lines.append(f"      not judged: {figure.unjudged}")
    lines.extend(f"      {note}" for note in figure.notes)
    lines.append(f"      method: {figure.method}")
    return lines


def format_failure(failure: StepFailure) -> list[str]:
    reason = failure.reason.strip().splitlines()
    status = "SKIPPED" if failure.skipped else "FAILED"
    lines = [f"  {failure.title:<{_LABEL_WIDTH}} {status:>18}   {reason[0] if reason else ''}"]
    lines.extend(f"      {text}" for text in reason[1:8])
    return lines


def print_section(stream: TextIO, heading: str, items: list[Figure | StepFailure]) -> None:
    print(f"\n{heading}", file=stream)
    for item in items:
        lines = format_figure(item) if isinstance(item, Figure) else format_failure(item)
        for text in lines:
            print(text, file=stream)
    stream.flush()


def print_summary(stream: TextIO, figures: list[Figure], failures: list[StepFailure]) -> None:
    gated = [f for f in figures if f.op is not None and f.target is not None]
    print("\nTargets:", file=stream)
    for figure in gated:
        shown = format_value(figure.value, figure.unit)
        reference = ""
        if figure.ratio is not None and figure.reference_value is not None:
            reference = (
                f"{figure.reference_title} {format_value(figure.reference_value, figure.unit)}"
                f" in this run, {figure.ratio:.2f}x; "
            )
        verdict = "NOT JUDGED" if figure.verdict == "not-judged" else figure.verdict.upper()
        why = f"; not judged: {figure.unjudged}" if figure.unjudged else ""
        print(
            f"  {verdict:<5} {figure.title}: {shown} "
            f"({reference}target {figure.target_text}{why})",
            file=stream,
        )
    for failure in failures:
        label = "SKIP " if failure.skipped else "ERROR"
        print(f"  {label} {failure.title}: {failure.reason.splitlines()[0]}", file=stream)
    passed = sum(1 for f in gated if f.verdict == "pass")
    unjudged = sum(1 for f in gated if f.verdict == "not-judged")
    failed = sum(1 for f in failures if not f.skipped)
    judged = f" ({unjudged} not judged: see each)" if unjudged else ""
    print(f"  {passed} of {len(gated)} targets met{judged}; {failed} step(s) failed to run.",
          file=stream)
    stream.flush()


def build_result(
    figures: list[Figure],
    failures: list[StepFailure],
    *,
    redis: RedisInfo,
    machine: dict[str, Any],
    steps: list[dict[str, Any]],
    extra: dict[str, Any],
) -> RunResult:
    """The ``pytest-cfn/result`` document of one benchmark run."""
    extra = dict(extra)
    extra["failed_steps"] = [
        {"title": f.title, "reason": f.reason, "skipped": f.skipped} for f in failures
    ]
    return RunResult(
        tool="bench",
        redis=redis,
        machine=machine,
        metrics=[figure.to_metric() for figure in figures],
        steps=steps,
        extra=extra,
    )
