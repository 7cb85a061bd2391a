"""``loadtests/harness_cost.py``: the harness's CPU beside the bus's, run for real.

The command runs the micro-benchmark and Locust in subprocesses (Locust is never imported
here). One short run of each model: the figures come back, the ratios are the figures'
quotients, and a bad command line is refused with usage text.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

COST = Path(__file__).resolve().parent.parent / "loadtests" / "harness_cost.py"


@pytest.mark.slow
def test_one_short_run_per_model_prints_and_writes_both_ratios(
    tmp_path: Path, redis_url: str
) -> None:
    out = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, str(COST), "--redis", redis_url, "--runs", "shared:10,per-agent:10",
         "--duration", "6", "--bench-events", "20000", "--bench-duration", "1",
         "--work", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    refs = data["references"]
    assert refs["flat_out_cpu_us"] > 0
    assert refs["paced_cpu_us"]["1000"] > 0  # both runs' connections read 1,000 events/s
    runs = {run["spec"]["model"]: run for run in data["runs"]}
    assert set(runs) == {"shared", "per-agent"}
    for model, run in runs.items():
        assert run["error"] == "", run
        f = run["figures"]
        assert f["throughput"] == pytest.approx(1000, rel=0.01), (model, f)
        cpu = f["harness_cpu_us_per_delivery"]
        assert cpu > 0
        assert f["ratio_paced"] == pytest.approx(cpu / refs["paced_cpu_us"]["1000"])
        assert f["ratio_flat"] == pytest.approx(cpu / refs["flat_out_cpu_us"])
        assert run["verdicts"]["cpu"].startswith(("PASS", "FAIL"))
        # no capacity target at 10 agents: the row says whether the run held, not PASS/FAIL
        assert run["verdicts"]["capacity"].startswith(("held", "not held: ")), run
        assert run["verdicts"]["capacity"].endswith("(no target)"), run
        assert f"{model} 10 " in proc.stdout
        if model == "per-agent":  # the library alone at the same load, measured before it
            assert f["bare_cpu_us"] > 0 and f["bare_delivered"] > 0, f
            assert f["ratio_bare"] == pytest.approx(cpu / f["bare_cpu_us"])
            assert "per-agent 10: the library alone" in proc.stdout
        else:
            assert "bare_cpu_us" not in f
    assert "bus subscriber CPU per event, flat out" in proc.stdout
    assert (tmp_path / "work" / "bus-benchmark.json").exists()


@pytest.mark.parametrize(
    ("runs", "why"),
    [("bogus", "MODEL:AGENTS"), ("shared:x", "whole numbers"), ("shared:0", "AGENTS 1-5000"),
     ("", "names no run")],
)
def test_a_bad_run_list_is_refused_with_usage(runs: str, why: str) -> None:
    proc = subprocess.run([sys.executable, str(COST), "--runs", runs], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and why in proc.stderr, proc.stderr


def _harness_cost() -> Any:
    spec = importlib.util.spec_from_file_location("harness_cost_under_test", COST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("model", "agents", "lag_ms", "verdict"),
    [("per-agent", 100, 3.0, "PASS"), ("per-agent", 100, 6.0, "FAIL: send lag p99 >= 5 ms"),
     ("shared", 500, 4.0, "PASS"), ("shared", 100, 3.0, "held (no target)"),
     ("per-agent", 500, 9.0, "not held: send lag p99 >= 5 ms (no target)"),
     ("per-agent", 100, 6.0, "FAIL: send lag p99 >= 5 ms (the library alone: 7.5 ms)"),
     ("per-agent", 100, 6.0, "FAIL: send lag p99 >= 5 ms")],
)
def test_capacity_is_judged_only_where_the_issue_sets_a_target(
    model: str, agents: int, lag_ms: float, verdict: str
) -> None:
    cost = _harness_cost()
    spec = cost.RunSpec(model, agents)
    figures = {
        "throughput": spec.offered, "lost": 0.0, "late": 0.0, "critical_loss": 0.0,
        "abnormal": 0.0, "send_lag_p99": lag_ms, "harness_cpu_us_per_delivery": 5.0,
        "delivery_p99": 4.0,
    }
    if "library alone" in verdict:  # its own lag is named beside the harness's
        figures |= {"bare_cpu_us": 4.0, "bare_send_lag_p99": 7.5}
    elif model == "per-agent" and lag_ms > 5:  # the library alone held the limit: not named
        figures |= {"bare_cpu_us": 4.0, "bare_send_lag_p99": 3.0}
    run = cost.RunFigures(spec, figures=figures)
    refs = {"paced_cpu_us": {spec.socket_rate: 20.0}, "flat_out_cpu_us": 2.0,
            "latency_p99_us": {}}
    cost.judge(run, refs)
    assert run.verdicts["capacity"] == verdict
    if "bare_cpu_us" in figures:
        assert run.figures["ratio_bare"] == pytest.approx(5.0 / 4.0)
    assert "per-agent:500:2" in cost.DEFAULT_RUNS.split(",")
