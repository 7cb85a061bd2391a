"""One sweep step: the Locust harness (``loadtests/swarm.py``) run headless in a subprocess.

Locust is never imported here: it monkey-patches the interpreter with gevent. Each step is a
child process (``python -m locust -f swarm.py --headless ...``) in a session of its own, with
a hard deadline; its JSON result (``pytest-cfn/result``, tool ``locust``) is read back and
reduced to one row of the sweep (see :func:`step_row`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_cfn
from pytest_cfn._errors import CfnError
from pytest_cfn.measure.results import ResultFormatError, RunResult, Verdict, read_result

LOAD = "load"
PROBE = "probe"
HEARTBEAT_S = 10.0
DEADLINE_MARGIN_S = 60.0
LEGACY_SATURATED_LAG_MS = 100.0
"""For results written before the harness reported ``generator_saturated``: send lag p99 above
which a step's load generator is called saturated."""


class HarnessNotFoundError(CfnError):
    """The Locust harness (``loadtests/swarm.py``) or Locust itself cannot be found."""


def find_locustfile(explicit: str | Path | None = None) -> Path:
    """``loadtests/swarm.py``: the explicit path, else beside the package in a source
    checkout, else where a wheel installs it (``<prefix>/share/pytest-cfn/loadtests``), else
    under the working directory."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise HarnessNotFoundError(f"--locustfile {path}: no such file")
        return path.resolve()
    candidates = [
        Path(pytest_cfn.__file__).resolve().parents[1] / "loadtests" / "swarm.py",
        Path(sysconfig.get_path("data")) / "share" / "pytest-cfn" / "loadtests" / "swarm.py",
        Path.cwd() / "loadtests" / "swarm.py",
    ]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise HarnessNotFoundError(
        f"cannot find the Locust harness loadtests/swarm.py (looked at {looked}); reinstall "
        "pytest-cfn (its wheel installs the harness under share/pytest-cfn/), run from a "
        "clone of pytest-cfn, or pass --locustfile PATH"
    )


def require_locust() -> None:
    """Fail early, with the fix, when Locust is not installed (checked without importing it)."""
    if importlib.util.find_spec("locust") is None:
        raise HarnessNotFoundError(
            "Locust is not installed in this environment; install it with "
            "pip install 'pytest-cfn[load]' (or pip install locust)"
        )


@dataclass(frozen=True)
class StepSpec:
    """One harness run: ``agents`` agents of one connection model at ``rate`` events/s each."""

    kind: str
    model: str
    agents: int
    rate: float
    duration: float
    warmup: float
    payload: int = 200
    spawn_per_agent_s: float = 1 / 500
    """Ramp-up allowance per agent (see :attr:`spawn_allowance`)."""

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.model}-{self.agents}"

    @property
    def offered(self) -> float:
        return self.agents * self.rate

    @property
    def spawn_allowance(self) -> float:
        """Seconds allowed for spawning and subscribing before the warm-up starts (measured
        here: ~0.4 s for 500 agents in the shared model, ~1 s in the per-agent model; on a
        Redis Cluster node, where every bus first asks which master owns its swarm, 1.9 s for
        50 per-agent agents: see :func:`spawn_per_agent`); the window is what is left of the
        run time, and each row reports its own."""
        return 0.5 + self.agents * self.spawn_per_agent_s

    @property
    def run_time(self) -> int:
        """Locust's ``-t``, a limit only: the harness ends the step itself when its window
        has lasted ``duration`` (``--cfn-window``), however long spawning took; ``-t`` ends a
        step whose agents never all subscribe (twice the spawn allowance, warm-up, window)."""
        return math.ceil(2 * self.spawn_allowance + self.warmup + self.duration)

    @property
    def deadline(self) -> float:
        """Seconds after which the subprocess is stopped: its run time, drain and margin."""
        return self.run_time + DEADLINE_MARGIN_S + self.agents / 10.0


CLUSTER_SPAWN_PER_AGENT_S = {"per-agent": 0.06, "shared": 0.01}
"""Ramp-up allowance per agent on a Redis Cluster node (measured: 50 per-agent agents
subscribed after 1.9 s, 100 shared-model agents after 0.6 s, on 2 cores)."""


def spawn_per_agent(model: str, cluster: bool) -> float:
    """Seconds of ramp-up allowed per agent of ``model`` (one server, or a cluster node)."""
    return CLUSTER_SPAWN_PER_AGENT_S.get(model, 0.06) if cluster else 1 / 500


def locust_command(spec: StepSpec, locustfile: Path, url: str, report: Path) -> list[str]:
    """The headless Locust command line of one step (every gate off: the sweep judges).

    The agents run in one worker process (``--processes 1``), not in the master's: in plain
    local mode the master's own work (Locust's statistics, the server sampler) shares the
    agents' event loop, and measured at 10 agents the sweep's p99.9 was 19-30 ms there
    against 9.6-14.8 ms in a worker. Spawning a worker takes longer, so the window's length
    is the harness's (``--cfn-window``), counted from the moment every agent subscribed."""
    return [
        sys.executable, "-m", "locust", "-f", str(locustfile),
        "--headless", "--only-summary", "--loglevel", "WARNING", "--processes", "1",
        "-u", str(spec.agents), "-r", str(spec.agents), "-t", f"{spec.run_time}s",
        "--cfn-window", f"{spec.duration:g}",
        "--cfn-redis", url,
        "--cfn-model", spec.model,
        "--cfn-rate", f"{spec.rate:g}",
        "--cfn-payload", str(spec.payload),
        "--cfn-warmup", f"{spec.warmup:g}",
        "--cfn-gate", "none",
        "--cfn-report", str(report),
    ]


@dataclass
class StepRun:
    """What one subprocess left behind."""

    spec: StepSpec
    result: RunResult | None
    returncode: int | None
    wall_s: float
    report: Path
    log: Path
    error: str = ""


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, the step's own process group (it was started in a new session)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _log_tail(log: Path, lines: int = 12) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def run_step(
    spec: StepSpec,
    locustfile: Path,
    url: str,
    step_dir: Path,
    heartbeat: Callable[[float], None] | None = None,
) -> StepRun:
    """Run one step to completion (or its deadline); never raises for a failed run."""
    step_dir = step_dir.resolve()
    step_dir.mkdir(parents=True, exist_ok=True)
    report = step_dir / f"{spec.label}.json"
    log = step_dir / f"{spec.label}.log"
    report.unlink(missing_ok=True)
    command = locust_command(spec, locustfile, url, report)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=step_dir, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        next_beat = started + HEARTBEAT_S
        error = ""
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now - started > spec.deadline:
                    error = f"the harness ran over its {spec.deadline:.0f} s deadline; stopped it"
                    break
                if heartbeat is not None and now >= next_beat:
                    heartbeat(now - started)
                    next_beat += HEARTBEAT_S
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                stop_group(proc)
    wall = time.monotonic() - started
    result: RunResult | None = None
    if report.exists():
        try:
            result = read_result(report)
        except ResultFormatError as exc:
            error = error or str(exc)
    elif not error:
        error = f"the harness exited with code {proc.returncode} and wrote no result"
    if error:
        tail = _log_tail(log)
        if tail:
            error += f"; last lines of {log.name}:\n{tail}"
    return StepRun(spec, result, proc.returncode, wall, report, log, error)


def _metric_values(result: RunResult) -> dict[str, Any]:
    return {m.name: m for m in result.metrics}


def saturated(row: dict[str, Any]) -> bool:
    """True when the harness found its load generator to be the limit of the step (send lag
    p99 over the limit, agents behind schedule, a busy process), so the step's load figures
    are the generator's, not the server's."""
    flag = row.get("generator_saturated")
    if flag is not None:
        return bool(flag)
    lag = row.get("send_lag_p99_ms")
    return lag is not None and lag > LEGACY_SATURATED_LAG_MS


def saturation_text(row: dict[str, Any]) -> str:
    """Why the load generator was the limit, in the harness's words."""
    behind = row.get("generator_behind_s")
    reasons = [r for r in row.get("generator_limit") or [] if "behind schedule" not in r]
    if behind is None and not reasons:
        lag = row.get("send_lag_p99_ms") or 0
        return f"load generator sent late (send lag p99 {lag:,.0f} ms)"
    parts = []
    if behind is not None and (float(behind) > 0.1 or not reasons):
        parts.append(f"load generator behind schedule by {float(behind):.2f} s")
    if reasons:
        parts.append("load generator limit: " + "; ".join(reasons))
    return "; ".join(parts)


def throughput_verdict(row: dict[str, Any], target: float) -> tuple[Verdict, str]:
    """A sweep step's throughput against ``target``: ``n/a`` when the step offers less,
    ``not-judged`` at the load generator's limit, never ``pass`` with lost or late
    deliveries; (verdict, why)."""
    if row["offered"] < target:
        return "n/a", (f"not applicable: {row['offered']:,.0f} events/s offered is below the "
                       f"{target:,.0f} target")
    if saturated(row):
        return "not-judged", f"not judged: {saturation_text(row)}, not Redis's limit"
    delivered = float(row.get("delivered_per_s") or 0.0)
    if delivered + float(row.get("delivered_resolution") or 0.0) < target:
        return "fail", f"{delivered:,.0f} events/s delivered"
    # results from before lost and late were told apart only have "loss" (both together)
    counts = {"lost": row.get("lost", row.get("loss")),
              "late (after the drain)": row.get("arrived_late")}
    spoilt = [f"{int(n):,} deliveries {k}" for k, n in counts.items() if n]
    if spoilt:
        return "fail", ", ".join(spoilt)
    return "pass", ""


def latency_verdict(row: dict[str, Any], p99_ms: float, target_ms: float) -> tuple[Verdict, str]:
    """A sweep step's delivery p99 against ``target_ms``; ``not-judged`` at the generator's
    limit (its lateness is part of a latency measured from the intended send time)."""
    if not row.get("latency_count"):
        return "fail", "no deliveries were measured"
    if saturated(row):
        return "not-judged", f"not judged: {saturation_text(row)}"
    return ("pass" if p99_ms <= target_ms else "fail"), ""


def step_row(result: RunResult, kind: str = LOAD) -> dict[str, Any]:
    """The figures of one harness result as one plain row of the sweep (JSON data)."""
    metrics = _metric_values(result)
    extra = result.extra

    def value(name: str) -> float | None:
        metric = metrics.get(name)
        return None if metric is None else float(metric.value)

    latency = metrics["delivery_p99"].latency if "delivery_p99" in metrics else None
    latency = latency or {}
    window = float(extra.get("window_s") or 0.0)
    message_deliveries = sum(
        int(row.get("count", 0)) for row in result.steps if row.get("request_type") == "message"
    )
    connections = extra.get("connections") or {}
    server = extra.get("server") or {}
    verdict = extra.get("verdict") or {}
    abnormal = [str(reason) for reason in extra.get("abnormal") or []]
    lost = value("lost") if "lost" in metrics else value("loss")
    agents = int(extra.get("agents", 0))
    rate = float(extra.get("agent_rate", 0.0))
    return {
        "kind": kind,
        "model": str(extra.get("model", "")),
        "agents": agents,
        "swarms": int(extra.get("swarms", 0)),
        "agent_rate": rate,
        "offered": agents * rate,
        "window_s": window,
        "delivered_per_s": value("throughput"),
        "delivered_resolution": float(extra.get("throughput_resolution") or 0.0),
        "sent_per_s": value("sent_rate"),
        "deliveries_per_s": value("deliveries_per_s"),
        "message_deliveries_per_s": message_deliveries / window if window else 0.0,
        "loss": lost,
        "lost": lost,
        "arrived_late": value("late") or 0.0,
        "loss_rate": value("loss_rate"),
        "critical_loss": value("critical_loss"),
        "latency_count": int(latency.get("count", 0)),
        **{key: latency.get(key) for key in ("p50_us", "p90_us", "p99_us", "p99_9_us",
                                              "max_us", "mean_us")},
        "transit_p99_ms": value("transit_p99"),
        "send_lag_p99_ms": value("send_lag_p99"),
        "generator_behind_s": extra.get("generator_behind_s"),
        "generator_saturated": extra.get("generator_saturated"),
        "generator_limit": list(verdict.get("generator_limit") or []),
        "abnormal": abnormal,
        "connections": int(connections.get("total", 0)),
        "connections_by_role": dict(connections.get("by_role", {})),
        "connections_by_node": dict(connections.get("by_node", {})),
        "max_per_subsystem": int(connections.get("max_per_subsystem", 0)),
        "maxclients_fraction": value("maxclients_fraction"),
        "cache_hit_rate": value("cache_hit_rate"),
        "harness_cpu_percent": value("harness_cpu_percent"),
        "server_cpu_percent": value("server_cpu_percent"),
        "server_max_omem": server.get("max_omem"),
        "notes": list(extra.get("notes", [])),
        "status": "abnormal" if abnormal else "ok" if window > 0 else "no-window",
        "latency_encoded": latency.get("encoded"),
    }
