"""``loadtests/harness_cost.py``: the harness's CPU beside the bus's, run for real.

The command runs the micro-benchmark and Locust in subprocesses (Locust is never imported
here). One short run of each model: the figures come back, the ratios are the figures'
quotients, and a bad command line is refused with usage text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        assert run["verdicts"]["capacity"].startswith(("PASS", "FAIL"))
        assert f"{model} 10 " in proc.stdout
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
