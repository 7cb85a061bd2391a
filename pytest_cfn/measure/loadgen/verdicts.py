"""How a harness run is judged: the verdict of each gate, the run's outcome and its exit code.

Theory of operation. A gate's verdict is decided in this order, the first rule that applies wins:

1. ``info``: the gate is not selected (``--cfn-gate``);
2. ``fail``: the figure is missing (no measurement window, no deliveries, no sample);
3. ``n/a``: the run cannot meet the target by construction (20 agents x 100 events/s offer
   2,000 events/s and can never deliver 10,000/s; no priority 8-9 event was sent);
4. ``not-judged``: the gate depends on the load (throughput, delivery p99, critical loss) and
   the load generator was the limit (see :func:`generator_limit`): its figures say how much the
   generator could do, not how much Redis can, so they are neither a pass nor a fail;
5. ``pass`` / ``fail`` against the target; throughput never passes while any delivery was lost
   or late or any publish failed.

The run's outcome, in order of precedence, sets the process's exit code:

=====================  ====  =========================================================
outcome                code  when
=====================  ====  =========================================================
``abnormal``           4     workers missed heartbeats, quit or crashed; fewer processes
                             reported than took part; Locust stopped the test itself
``fail``               1     a judged gate missed its target
``not-judged``         3     a gated load-dependent target was not judged: load generator limit
``pass``               0     every judged gate met its target (``n/a`` and ``info`` aside)
=====================  ====  =========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_cfn.measure.results import Metric, Verdict

EXIT_PASSED = 0
EXIT_GATE_FAILED = 1
EXIT_NOT_JUDGED = 3
EXIT_ABNORMAL = 4
EXIT_CODES = {
    EXIT_PASSED: "every judged gate passed",
    EXIT_GATE_FAILED: "a gate missed its target",
    EXIT_NOT_JUDGED: "not judged: load generator limit",
    EXIT_ABNORMAL: "the run ended abnormally",
}

SEND_LAG_LIMIT_MS = 5.0
"""Default ``--cfn-send-lag-limit``: a load generator whose send lag p99 (actual publish time
minus intended send time) is above this is the limit of the run."""
BEHIND_SCHEDULE_LIMIT_S = 0.1
"""A load generator whose agents are behind their schedules by more than this on average at
the window's end is the limit of the run, whatever its send lag percentiles say."""
CPU_SATURATED_PERCENT = 95.0
"""A Locust process that used this much of one core over the window had no time to spare:
gevent runs one thread, so the run measured how fast that process is."""

LOAD_DEPENDENT_GATES = frozenset({"throughput", "p99", "critical-loss"})
GENERATOR_ADVICE = (
    "spread the agents over more Locust processes (--processes N on one machine, or --master "
    "and --worker on several), or offer less load"
)
NOT_JUDGED = "not judged: load generator limit"

Outcome = Literal["pass", "fail", "not-judged", "abnormal"]


@dataclass(frozen=True)
class GeneratorLimit:
    """Why the load generator, not Redis, set the run's figures (empty: it kept up)."""

    reasons: tuple[str, ...] = ()

    @property
    def limited(self) -> bool:
        return bool(self.reasons)

    def text(self) -> str:
        return "; ".join(self.reasons)


KEPT_UP = GeneratorLimit()
"""The generator kept up: nothing limited the run."""


def generator_limit(
    send_lag_p99_ms: float,
    behind_s: float,
    process_cpu_percent: Mapping[str, float],
    send_lag_limit_ms: float = SEND_LAG_LIMIT_MS,
) -> GeneratorLimit:
    """The load generator is the limit when its send lag p99 is over ``send_lag_limit_ms``,
    its agents are more than BEHIND_SCHEDULE_LIMIT_S behind schedule at the window's end, or
    one of its processes used CPU_SATURATED_PERCENT of a core over the window."""
    reasons = []
    if send_lag_p99_ms > send_lag_limit_ms:
        reasons.append(f"send_lag_p99 {send_lag_p99_ms:,.1f} ms > {send_lag_limit_ms:g} ms")
    if behind_s > BEHIND_SCHEDULE_LIMIT_S:
        reasons.append(
            f"agents {behind_s:.2f} s behind schedule at the window's end "
            f"(> {BEHIND_SCHEDULE_LIMIT_S:g} s)"
        )
    busy = {p: c for p, c in process_cpu_percent.items() if c >= CPU_SATURATED_PERCENT}
    if busy:
        shown = ", ".join(f"{p} {c:.0f} %" for p, c in sorted(busy.items()))
        reasons.append(f"Locust process CPU >= {CPU_SATURATED_PERCENT:g} % of a core ({shown})")
    return GeneratorLimit(tuple(reasons))


def decide(
    gate: str,
    gates: frozenset[str],
    *,
    missing: str | None = None,
    not_applicable: str | None = None,
    generator: GeneratorLimit = KEPT_UP,
) -> tuple[Verdict, str] | None:
    """(verdict, reason) when a rule before the comparison decides the gate, else None."""
    if gate not in gates:
        return "info", "not gated in this run"
    if missing is not None:
        return "fail", missing
    if not_applicable is not None:
        return "n/a", f"not applicable: {not_applicable}"
    if gate in LOAD_DEPENDENT_GATES and generator.limited:
        return "not-judged", f"{NOT_JUDGED} ({generator.text()})"
    return None


@dataclass
class RunOutcome:
    """The run's outcome and exit code, with the names and reasons behind them."""

    outcome: Outcome
    exit_code: int
    failed: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)
    abnormal: list[str] = field(default_factory=list)
    generator: GeneratorLimit = KEPT_UP
    gated: int = 1
    """How many figures a gate judged or set aside (pass, fail, not judged, n/a); 0: the run
    asked for none (``--cfn-gate none``, as ``cfn bench``'s steps, which it judges itself)."""

    def lines(self) -> list[str]:
        """The table's closing lines."""
        out = []
        if self.abnormal:
            out.append("run: ABNORMAL END: " + "; ".join(self.abnormal))
        if self.failed:
            out.append("gates: FAILED: " + ", ".join(self.failed))
        if self.not_judged:
            out.append(
                f"gates: NOT JUDGED ({NOT_JUDGED}): {', '.join(self.not_judged)}: "
                f"{self.generator.text()}; {GENERATOR_ADVICE}"
            )
        elif self.generator.limited:
            out.append(f"load generator limit: {self.generator.text()}; {GENERATOR_ADVICE}")
        if not self.gated and not self.abnormal:
            out.append("gates: none asked for (--cfn-gate none): the figures above are "
                       "informational, nothing was judged, loss and lateness included")
        elif not self.failed and not self.not_judged and not self.abnormal:
            out.append("gates: all passed")
        if self.not_applicable:
            out.append("not applicable (cannot be met by construction): "
                       + ", ".join(self.not_applicable))
        out.append(f"exit code {self.exit_code}: {EXIT_CODES[self.exit_code]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "gated": self.gated,
            "failed": self.failed,
            "not_judged": self.not_judged,
            "not_applicable": self.not_applicable,
            "abnormal": self.abnormal,
            "generator_limited": self.generator.limited,
            "generator_limit": list(self.generator.reasons),
            "advice": GENERATOR_ADVICE if self.generator.limited else "",
        }


def run_outcome(
    metrics: Iterable[Metric], generator: GeneratorLimit, abnormal: Iterable[str] = ()
) -> RunOutcome:
    """Outcome and exit code: abnormal (4) before a failed gate (1) before not judged (3)."""
    metrics = list(metrics)
    failed = [m.name for m in metrics if m.verdict == "fail"]
    not_judged = [m.name for m in metrics if m.verdict == "not-judged"]
    not_applicable = [m.name for m in metrics if m.verdict == "n/a"]
    reasons = list(abnormal)
    outcome: Outcome
    if reasons:
        outcome, code = "abnormal", EXIT_ABNORMAL
    elif failed:
        outcome, code = "fail", EXIT_GATE_FAILED
    elif not_judged:
        outcome, code = "not-judged", EXIT_NOT_JUDGED
    else:
        outcome, code = "pass", EXIT_PASSED
    gated = sum(1 for m in metrics if m.verdict != "info")
    return RunOutcome(outcome, code, failed, not_judged, not_applicable, reasons, generator,
                      gated)


def help_text() -> str:
    """The verdict states, the generator limit and the exit codes, for ``--help``."""
    return (
        "Verdicts: PASS/FAIL against the target; 'n/a' when the run cannot meet it by "
        "construction (offered rate below min_throughput, no priority 8-9 events); "
        f"'NOT JUDGED' ({NOT_JUDGED}) for throughput, delivery p99 and critical loss when "
        "the load generator was the limit: send_lag_p99 over --cfn-send-lag-limit (default "
        f"{SEND_LAG_LIMIT_MS:g} ms), agents over {BEHIND_SCHEDULE_LIMIT_S:g} s behind schedule, "
        f"or a Locust process at >= {CPU_SATURATED_PERCENT:g} % of a core; then use "
        "--processes N or --master/--worker. Throughput never passes with lost or late "
        "deliveries. Exit codes: "
        + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items())
        + " (workers missing or lost, a crashed worker, fewer processes reporting than "
        "expected, Locust stopping the test itself)."
    )
