"""The JSON result every measuring front end writes (plugin, Locust harness, benchmarks).

Schema ``pytest-cfn/result``, version 1. One file holds one run::

    {
      "schema": "pytest-cfn/result", "schema_version": 1,
      "created": "2026-11-30T20:00:00Z",
      "tool": "pytest" | "locust" | "bench" | "sweep",
      "machine": {...machine_info()...},
      "redis": {"version": "7.0.15", "backend": "redis-server" | "fakeredis",
                "embedded": true, "url": "redis://127.0.0.1:PORT/0" (password removed)},
      "metrics": [ Metric, ... ],       # the gated figures, one row each
      "steps": [ {...}, ... ],          # free-form per-step detail (e.g. a sweep's agent counts)
      "extra": {...}
    }

A ``Metric`` is one measured figure against (optionally) one target::

    {"name": "throughput", "value": 12345.0, "unit": "events/s",
     "target": 10000.0, "op": ">=",
     "verdict": "pass" | "fail" | "info" | "n/a" | "not-judged",
     "method": "delivered events counted at the handlers / wall time, ...",
     "better": "higher" | "lower",
     "latency": {"count": N, "p50_us": .., "p90_us": .., "p99_us": .., "p99_9_us": ..,
                 "max_us": .., "encoded": "<HdrHistogram base64>"} | null,
     "scope": "test id, step or 'session'",
     "runs": K, "low": min, "high": max,   # a figure repeated K times: value is the median
     "reference": 98765.0,                 # a same-run figure of the same unit (e.g. the
                                           # server's own rate) this one is judged against
     "role": "figure" | "reference" | "saturated"}   # a reference (the server's yardstick)
                                           # is not judged, nor a figure measured while the
                                           # load generator was behind (its limit, not ours)

Comparing two results (:func:`compare`) flags a regression only when it is outside the
noise; :data:`REGRESSION_RULE` says how, and ``cfn report --help`` / ``--cfn-baseline`` print it.

Readers must ignore unknown keys; a change that removes or renames a key bumps the version.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Literal

import msgspec

from pytest_cfn._errors import CfnError

SCHEMA = "pytest-cfn/result"
SCHEMA_VERSION = 1

Verdict = Literal["pass", "fail", "info", "n/a", "not-judged"]
"""``n/a``: the target cannot be met by construction (e.g. the offered rate is below it);
``not-judged``: the figure was set by the load generator's limit, not by Redis."""
Op = Literal[">=", "<=", ">", "<", "=="]
Better = Literal["higher", "lower"]


class ResultFormatError(CfnError):
    """A result file is not valid pytest-cfn/result JSON."""


class Metric(msgspec.Struct, kw_only=True, omit_defaults=False):
    name: str
    value: float
    unit: str
    method: str
    target: float | None = None
    op: Op | None = None
    verdict: Verdict = "info"
    better: Better = "higher"
    scope: str = "session"
    latency: dict[str, Any] | None = None
    runs: int = 1
    low: float | None = None
    high: float | None = None
    reference: float | None = None
    role: Literal["figure", "reference", "saturated"] = "figure"


class RedisInfo(msgspec.Struct, kw_only=True):
    version: str
    backend: Literal["redis-server", "fakeredis"] = "redis-server"
    embedded: bool = False
    url: str = ""


class RunResult(msgspec.Struct, kw_only=True):
    tool: str
    redis: RedisInfo
    machine: dict[str, Any] = msgspec.field(default_factory=dict)
    metrics: list[Metric] = msgspec.field(default_factory=list)
    steps: list[dict[str, Any]] = msgspec.field(default_factory=list)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    created: str = ""
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return all(m.verdict != "fail" for m in self.metrics)


def judge(value: float, target: float | None, op: Op | None) -> Verdict:
    """``pass``/``fail`` against a target, ``info`` when there is none."""
    if target is None or op is None:
        return "info"
    ok = {
        ">=": value >= target,
        "<=": value <= target,
        ">": value > target,
        "<": value < target,
        "==": value == target,
    }[op]
    return "pass" if ok else "fail"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def redact_url(url: str) -> str:
    """Drop a password from a Redis URL before it goes into a report."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RunResult)


def format_value(value: float, unit: str) -> str:
    """One figure with its unit, as every table of the project prints it: percentages for
    fractions, whole counts, ms to the µs, µs below a millisecond, KiB for memory, thousands
    separators for rates (two decimals below 100 for the units that are not counts)."""
    if unit == "fraction":
        return f"{value * 100:.3f} %"
    if unit in ("events", "connections", "deliveries", "subscribers", "reconnects"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:,.3f} ms"
    if unit == "us":
        return f"{value / 1000:.3f} ms" if value >= 1000 else f"{value:.1f} µs"
    if unit == "bytes":
        return f"{value / 1024:,.1f} KiB" if value >= 1024 else f"{value:,.0f} B"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def encode_result(result: RunResult) -> bytes:
    if not result.created:
        result.created = utc_now()
    return msgspec.json.format(_encoder.encode(result), indent=2)


def write_result(path: str | Path, result: RunResult) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encode_result(result) + b"\n")
    return target


def read_result(path: str | Path) -> RunResult:
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ResultFormatError(f"cannot read result file {source}: {exc.strerror}") from exc
    try:
        result = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ResultFormatError(f"{source} is not a {SCHEMA} JSON file: {exc}") from exc
    if result.schema != SCHEMA:
        raise ResultFormatError(f"{source} has schema {result.schema!r}, expected {SCHEMA!r}")
    if result.schema_version > SCHEMA_VERSION:
        raise ResultFormatError(
            f"{source} has schema version {result.schema_version}; this pytest-cfn reads "
            f"up to {SCHEMA_VERSION}"
        )
    return result


REGRESSION_RULE = (
    "A figure regressed only when it is worse than the baseline by more than the threshold AND "
    "the difference is outside the noise: (1) figures repeated in both runs (cfn bench "
    "--repeat K, K >= 2) regress only when the two runs' min-max ranges do not overlap and "
    "the gap between them is itself wider than the threshold (today's best run worse than the "
    "baseline's worst by more than it), and, where both runs also carry a reference measured "
    "in the same run (a latency tail: the calibration's base runs, the same harness at 10 "
    "agents), only when figure / reference is worse by more than the threshold too, so a "
    "tail that grew because the whole machine was noisier that day is not a regression (the "
    "yardstick runs the same code: a build whose tails grow everywhere lifts it too, and is "
    "then caught by its other figures, or by a tail that grew more than the yardstick); "
    "(2) single figures that carry a "
    "reference measured in the same run (the server's own rate or round trip) regress only "
    "when figure / reference is also worse by more than the threshold, so a machine that is "
    "slower today as a whole is not a regression; (3) a single figure with neither is judged "
    "by the threshold alone (marked 'threshold only'). The server's own figures "
    "(redis-benchmark, the round trip) are the yardstick and are never judged, nor are the "
    "latencies of a load point whose load generator fell behind its schedule in either run "
    "(they measure its backlog; what it delivered is still judged)."
)


class Regression(msgspec.Struct, kw_only=True):
    name: str
    scope: str
    baseline: float
    current: float
    change_pct: float
    regressed: bool
    rule: str = "threshold only"
    """How it was judged: 'spread', 'spread and reference', 'reference' or 'threshold only'."""
    detail: str = ""
    """Why it is or is not a regression, in words (ranges or ratios)."""


def _worse_pct(old: float, new: float, better: str) -> float:
    if old == 0:
        return 0.0
    change = (new - old) / abs(old) * 100.0
    return -change if better == "higher" else change


def _ratio(old: Metric, new: Metric, old_ref: float, new_ref: float) -> tuple[str, float]:
    """How much worse figure / same-run reference got, in words and in %."""
    ratio = _worse_pct(old.value / old_ref, new.value / new_ref, new.better)
    return (f"figure / same-run reference {old.value / old_ref:,.4g} -> "
            f"{new.value / new_ref:,.4g} ({ratio:+.1f} % worse)"), ratio


def _judge(old: Metric, new: Metric, max_pct: float) -> tuple[bool, str, str]:
    """(regressed, rule, detail) of one figure under :data:`REGRESSION_RULE`."""
    worse = _worse_pct(old.value, new.value, new.better)
    beyond = worse > max_pct
    if (old.low is not None and old.high is not None and new.low is not None
            and new.high is not None):
        if new.better == "higher":
            gap = _worse_pct(old.low, new.high, "higher")
        else:
            gap = _worse_pct(old.high, new.low, "lower")
        apart = gap > 0
        detail = (f"today {new.low:,.4g}..{new.high:,.4g} ({new.runs} runs), baseline "
                  f"{old.low:,.4g}..{old.high:,.4g} ({old.runs} runs): "
                  + (f"ranges apart by {gap:.1f} %" if apart else "ranges overlap"))
        if old.reference and new.reference:
            ratio_detail, ratio = _ratio(old, new, old.reference, new.reference)
            return (beyond and gap > max_pct and ratio > max_pct, "spread and reference",
                    f"{detail}; {ratio_detail}")
        return beyond and gap > max_pct, "spread", detail
    if old.reference and new.reference:
        detail, ratio = _ratio(old, new, old.reference, new.reference)
        return beyond and ratio > max_pct, "reference", detail
    return beyond, "threshold only", "one run and no same-run reference: the threshold decides"


def _from_zero(old: Metric, new: Metric) -> tuple[bool, str, str]:
    """A figure that was 0 (a loss, say): no percentage exists, so any move in the worse
    direction outside the noise is a regression."""
    worse = new.value > 0 if new.better == "lower" else new.value < 0
    if old.high is not None and new.low is not None and new.high is not None:
        apart = new.low > old.high if new.better == "lower" else new.high < (old.low or 0.0)
        return worse and apart, "spread", (f"from 0 to {new.low:,.4g}..{new.high:,.4g}: "
                                           + ("ranges apart" if apart else "ranges overlap"))
    return worse, "threshold only", f"from 0 to {new.value:,.4g}"


def compare(baseline: RunResult, current: RunResult, max_regression_pct: float) -> list[Regression]:
    """Figures present in both runs, each judged by :data:`REGRESSION_RULE`."""
    base = {(m.scope, m.name): m for m in baseline.metrics}
    out = []
    for metric in current.metrics:
        old = base.get((metric.scope, metric.name))
        if old is None or metric.role == "reference" or old.value == metric.value == 0:
            continue
        if "saturated" in (metric.role, old.role):
            regressed, rule, detail = (False, "not judged",
                                       "the load generator fell behind its schedule")
        elif old.value == 0:
            regressed, rule, detail = _from_zero(old, metric)
        else:
            regressed, rule, detail = _judge(old, metric, max_regression_pct)
        out.append(
            Regression(
                name=metric.name,
                scope=metric.scope,
                baseline=old.value,
                current=metric.value,
                change_pct=(metric.value - old.value) / abs(old.value) * 100.0
                if old.value else 0.0,
                regressed=regressed,
                rule=rule,
                detail=detail,
            )
        )
    return out
