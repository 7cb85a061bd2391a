"""The harness keeps its schedule at a modest load: ``locust`` run for real in a subprocess.

Locust is never imported here (it monkey-patches the interpreter). The bounds are generous
(the machine is shared): a generator that paces agent by agent, drifts, or sends late shows
up as a sent rate below the offered one, a backlog at the window's end, or a send lag of
over 250 ms; on a quiet machine the send lag p99 here is a few ms.

The send lag is the one figure here that measures the machine more than the harness: with
other work on the 2 cores (three CPU burners beside one run) its p99 read 45-114 ms in 8 runs,
at 1,000 and at 400 events/s alike, with the harness using 7-28 % of a core and the rest of
the machine busy (other_cpu_percent 181-206 %). The rate and backlog checks carry the pacing;
the lag bound only catches a pacing loop held for a quarter of a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SWARM = Path(__file__).resolve().parent.parent / "loadtests" / "swarm.py"
AGENTS = 40
RATE = 25  # per agent: 1,000 events/s offered, 10,000 deliveries/s


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "phase"), [("per-agent", "swarm"), ("per-agent", "agent"), ("shared", "swarm")]
)
def test_the_pacing_schedule_keeps_the_offered_rate(
    tmp_path: Path, redis_url: str, model: str, phase: str
) -> None:
    report = tmp_path / "result.json"
    stats = tmp_path / "stats"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(SWARM), "--headless", "-u", str(AGENTS),
         "-r", str(AGENTS), "-t", "5s", "--only-summary", "--cfn-redis", redis_url,
         "--cfn-rate", str(RATE), "--cfn-model", model, "--cfn-phase", phase,
         "--cfn-gate", "critical-loss",
         "--cfn-warmup", "0.5", "--cfn-report", str(report), "--json-file", str(stats)],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False,
    )
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(report.read_text())
    m = {x["name"]: x for x in result["metrics"]}
    offered = AGENTS * RATE
    assert m["offered_rate"]["value"] == offered
    assert m["sent_rate"]["value"] == pytest.approx(offered, rel=0.03)
    assert m["generator_behind"]["value"] < 0.05
    assert 0 < m["send_lag_p99"]["value"] < 250.0, m["send_lag_p99"]  # see the docstring
    assert m["lost"]["value"] == 0 and m["late"]["value"] == 0
    assert m["critical_loss"]["value"] == 0
    extra = result["extra"]
    assert extra["phase"] == phase
    assert f"({phase} phases)" in proc.stdout + proc.stderr
    assert extra["delivered"] == extra["expected_deliveries"] > 0
    # Measured sends: every agent the same number (whole intervals), none missing.
    window_events = extra["expected_deliveries"] / 10  # swarms of 10, all listening
    assert window_events == pytest.approx(offered * extra["window_s"], rel=0.001)
    # The harness prints its own cost beside the rates.
    assert m["harness_cpu_us_per_delivery"]["value"] > 0
    assert m["harness_cpu_us_per_publish"]["value"] > m["harness_cpu_us_per_delivery"]["value"]
    # Everything ran here on loopback: what else used the machine is stated beside it.
    # ... within the resolution of /proc/stat (10 ms ticks, marks not taken at the very
    # instants that bound the window): a saturated machine read 200.15 % on 2 cores
    assert 0 <= m["other_cpu_percent"]["value"] <= 100 * (os.cpu_count() or 1) + 2, m
    assert m["late_wakeups"]["value"] >= 0 and 0 <= m["late_wakeup_held"]["value"] <= 1
    # Publishes reach Locust's statistics in aggregate, every one counted.
    rows = json.loads((tmp_path / "stats.json").read_text())
    published = sum(r["num_requests"] for r in rows if r["method"] == "publish")
    assert published == extra["published_total"] > 0
    delivered = sum(r["num_requests"] for r in rows if r["method"] in ("deliver", "message"))
    assert delivered == extra["deliveries_total"]
