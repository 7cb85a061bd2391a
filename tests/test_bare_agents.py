"""``loadtests/bare_agents.py``: the library alone at a per-agent run's load, run for real.

It runs gevent processes of its own (subprocesses: gevent's monkey patching never enters the
pytest process). Every send is delivered to every agent of its swarm, the figures come back
in the JSON, and a bad command line is refused with usage text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BARE = Path(__file__).resolve().parent.parent / "loadtests" / "bare_agents.py"


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_every_send_reaches_every_agent_of_its_swarm(
    tmp_path: Path, redis_url: str, processes: int
) -> None:
    out = tmp_path / "bare.json"
    # 20 agents: two swarms of ten; each agent's messages go to the other swarm's inbox
    proc = subprocess.run(
        [sys.executable, str(BARE), "--redis", redis_url, "--agents", "20", "--processes",
         str(processes), "--rate", "50", "--duration", "3", "--warmup", "1", "--json",
         str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["offered_per_s"] == 1000
    # every event and message reaches the ten agents of the swarm it is sent to
    assert figures["delivered_per_s"] == pytest.approx(20 * 50 * 10, rel=0.03), figures
    assert figures["sends"] == pytest.approx(20 * 50 * 3, rel=0.01), figures
    assert figures["cpu_us_per_delivery"] > 0
    assert 0 < figures["send_lag_p50_ms"] <= figures["send_lag_p99_ms"]
    assert figures["loop"] == "select"
    assert figures["redis_version"][0].isdigit(), figures  # the server's own INFO
    assert "µs per delivery" in proc.stdout and "send lag" in proc.stdout


@pytest.mark.parametrize(
    ("args", "why"),
    [(["--agents", "0"], "--agents must be above 0"),
     (["--rate", "fast"], "--rate must be a number"),
     (["--agents", "2", "--processes", "3"], "--processes at most --agents")],
)
def test_a_bad_command_line_is_refused_with_usage(args: list[str], why: str) -> None:
    proc = subprocess.run([sys.executable, str(BARE), "--redis", "redis://127.0.0.1:1", *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and why in proc.stderr, proc.stderr


def test_without_a_server_it_says_so_and_exits_1() -> None:
    proc = subprocess.run([sys.executable, str(BARE), "--redis", "redis://127.0.0.1:1",
                           "--agents", "2", "--processes", "1", "--duration", "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "could not start its agents" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
