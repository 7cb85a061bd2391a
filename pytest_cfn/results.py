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
     "scope": "test id, step or 'session'"}

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


class Regression(msgspec.Struct, kw_only=True):
    name: str
    scope: str
    baseline: float
    current: float
    change_pct: float
    regressed: bool


def compare(baseline: RunResult, current: RunResult, max_regression_pct: float) -> list[Regression]:
    """Metrics present in both runs, with the change in the direction that is worse."""
    base = {(m.scope, m.name): m for m in baseline.metrics}
    out = []
    for metric in current.metrics:
        old = base.get((metric.scope, metric.name))
        if old is None or old.value == 0:
            continue
        change = (metric.value - old.value) / abs(old.value) * 100.0
        worse = -change if metric.better == "higher" else change
        out.append(
            Regression(
                name=metric.name,
                scope=metric.scope,
                baseline=old.value,
                current=metric.value,
                change_pct=change,
                regressed=worse > max_regression_pct,
            )
        )
    return out
