"""``locust -f loadtests/swarm.py`` run for real, in subprocesses, against a real redis-server.

Locust is never imported here (it monkey-patches the interpreter); every run is a child
process with a hard timeout.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SWARM = Path(__file__).resolve().parent.parent / "loadtests" / "swarm.py"
RUN_TIMEOUT_S = 60


def locust(
    cwd: Path, *args: str, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(SWARM), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def headless(tmp_path: Path, url: str | None, users: int, *extra: str) -> tuple[
    subprocess.CompletedProcess[str], dict[str, Any]
]:
    report = tmp_path / "result.json"
    args = ["--headless", "-u", str(users), "-r", str(users), "-t", "4s", "--only-summary",
            "--cfn-report", str(report), "--cfn-warmup", "0.5", *extra]
    if url is not None:
        args += ["--cfn-redis", url]
    proc = locust(tmp_path, *args)
    assert report.exists(), f"no JSON written; rc={proc.returncode}\n{proc.stderr[-3000:]}"
    return proc, json.loads(report.read_text())


def metrics(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in result["metrics"]}


def test_ten_agents_pass_a_gate_and_write_the_result(tmp_path: Path, redis_url: str) -> None:
    # A generous send lag limit: on a busy shared CI machine the generator may be a few ms
    # late, and this test is about counting and gating, not about the generator's precision.
    proc, result = headless(
        tmp_path, redis_url, 10, "--cfn-rate", "50", "--cfn-gate", "throughput,critical-loss",
        "--cfn-target", "min_throughput=100", "--json-file", str(tmp_path / "stats"),
        "--cfn-send-lag-limit", "250",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "pytest-cfn load harness: 10 agents (per-agent model)" in proc.stdout
    assert "gates: all passed" in proc.stdout
    assert result["schema"] == "pytest-cfn/result" and result["tool"] == "locust"
    m = metrics(result)
    assert m["throughput"]["verdict"] == "pass"
    # 10 agents x 50 events/s, all in one swarm, all delivered.
    assert m["throughput"]["value"] == pytest.approx(500, rel=0.02)
    assert m["critical_loss"]["value"] == 0 and m["lost"]["value"] == 0
    assert m["late"]["value"] == 0
    assert result["extra"]["verdict"] == {**result["extra"]["verdict"], "outcome": "pass",
                                          "exit_code": 0, "abnormal": []}
    assert m["delivery_p99"]["verdict"] == "info"
    assert m["delivery_p99"]["latency"]["count"] > 1000
    assert m["connections_per_subsystem"]["value"] == 2
    extra = result["extra"]
    assert extra["model"] == "per-agent" and extra["agents"] == 10 and extra["swarms"] == 1
    assert extra["monkey_patched"] is True
    assert extra["processes_reported"] == ["local"]
    assert extra["delivered"] == extra["expected_deliveries"] > 0
    assert {s["request_type"] for s in result["steps"]} == {"deliver", "message"}
    assert result["redis"]["embedded"] is False

    # Locust's own statistics hold every delivery the harness counted, in aggregate rows.
    rows = json.loads((tmp_path / "stats.json").read_text())
    delivered_rows = sum(r["num_requests"] for r in rows if r["method"] in ("deliver", "message"))
    assert delivered_rows == extra["deliveries_total"] > 0
    assert any(r["method"] == "publish" and r["num_requests"] > 0 for r in rows)


def test_a_missed_gate_exits_1_and_an_unreachable_target_is_not_applicable(
    tmp_path: Path, redis_url: str
) -> None:
    # Each per-agent agent holds 2 connections per subsystem: a target of 1 is missed. The
    # 10 agents x 20 events/s offer 200/s: a 1,000,000/s target is out of reach by design.
    proc, result = headless(
        tmp_path, redis_url, 10, "--cfn-rate", "20", "--cfn-gate", "throughput,connections",
        "--cfn-target", "min_throughput=1000000", "--cfn-target", "max_connections_per_subsystem=1",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "gates: FAILED: connections_per_subsystem" in proc.stdout
    assert "exit code 1: a gate missed its target" in proc.stdout
    m = metrics(result)
    assert m["connections_per_subsystem"]["verdict"] == "fail"
    assert m["throughput"]["verdict"] == "n/a"
    assert "below the 1,000,000 target" in m["throughput"]["method"]
    assert result["extra"]["verdict"]["not_applicable"] == ["throughput"]


def test_without_a_url_an_embedded_server_is_started_and_stopped(tmp_path: Path) -> None:
    proc, result = headless(tmp_path, None, 5, "--cfn-rate", "10", "--cfn-gate", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["redis"]["embedded"] is True
    assert result["redis"]["url"].startswith("redis://127.0.0.1:")
    assert re.search(r"started an embedded redis-server [\d.]+ at \S+ \(redis-server [\d.]+ "
                     r"/\S+: (the newest of|the only one|named)", proc.stderr), proc.stderr[-2000:]
    port = int(result["redis"]["url"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("model", ["per-agent", "shared", "shared/swarm"])
def test_fifty_agents_in_both_connection_models(
    tmp_path: Path, redis_url: str, model: str
) -> None:
    model, _, share = model.partition("/")
    proc, result = headless(
        tmp_path, redis_url, 50, "--cfn-rate", "10", "--cfn-model", model,
        *(["--cfn-share", share] if share else []),
        "--cfn-gate", "connections,critical-loss", "--cfn-send-lag-limit", "250",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = metrics(result)
    connections = result["extra"]["connections"]
    assert result["extra"]["swarms"] == 5
    assert m["connections_per_subsystem"]["value"] <= 2
    if model == "per-agent":
        # Each agent: Event Bus publisher + subscriber and a Messenger subscriber; validators
        # and coordinators also a Messenger publisher.
        assert connections["owners"] == 50
        assert 150 <= connections["total"] <= 200
    elif share == "swarm":
        # One Event Bus and one Messenger per swarm in the one process.
        assert connections["owners"] == 5
        assert connections["total"] <= 4 * 5
    else:
        # Every swarm's bus and messenger on the process's shared publisher and subscriber
        # (and the catch-ups' connection).
        assert connections["owners"] == 1
        assert connections["total"] == 3
        assert connections["by_role"] == {"catchup-call": 1, "shared-pub": 1, "shared-sub": 1}
    assert m["lost"]["value"] == 0 and m["late"]["value"] == 0
    assert result["extra"]["delivered"] > 0
    # Dealt into swarms of 10.
    assert result["extra"]["agents_per_swarm"] == {f"swarm-{i:03d}": 10 for i in range(5)}


@pytest.mark.parametrize("model", ["per-agent", "shared"])
def test_exact_channels_and_patterns_deliver_the_same_traffic(
    tmp_path: Path, redis_url: str, model: str
) -> None:
    """--cfn-channels exact (the default: each event type's channel, each inbox its one
    sender swarm) and patterns: every delivery arrives either way, no sequence gap."""
    for channels in ("exact", "patterns"):
        run = tmp_path / channels
        run.mkdir()
        proc, result = headless(
            run, redis_url, 20, "--cfn-rate", "20", "--cfn-model", model,
            "--cfn-channels", channels, "--cfn-gate", "critical-loss",
            "--cfn-send-lag-limit", "250",
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        m = metrics(result)
        assert result["extra"]["channels"] == [channels]
        assert m["lost"]["value"] == 0 and m["bus_lost"]["value"] == 0, (channels, m["lost"])
        assert result["extra"]["delivered"] > 0


@pytest.mark.slow
def test_master_and_two_workers_merge_their_histograms_and_counts(
    tmp_path: Path, redis_url: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    report = tmp_path / "dist.json"
    base = [sys.executable, "-m", "locust", "-f", str(SWARM)]
    master = subprocess.Popen(
        [*base, "--master", "--headless", "-u", "20", "-r", "20", "-t", "5s", "--only-summary",
         "--expect-workers", "2", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
         "--cfn-redis", redis_url, "--cfn-rate", "20", "--cfn-report", str(report),
         "--cfn-warmup", "0.5", "--cfn-gate", "critical-loss,connections",
         "--cfn-send-lag-limit", "250"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    workers = [
        subprocess.Popen(
            [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    try:
        out, err = master.communicate(timeout=RUN_TIMEOUT_S)
        for worker in workers:
            worker.wait(timeout=20)
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert master.returncode == 0, out[-3000:] + err[-3000:]
    result = json.loads(report.read_text())
    extra = result["extra"]
    assert len(extra["processes_reported"]) == 2
    assert extra["agents"] == 20 and extra["swarms"] == 2
    assert extra["agents_per_swarm"] == {"swarm-000": 10, "swarm-001": 10}
    assert extra["verdict"]["outcome"] == "pass" and extra["abnormal"] == []
    m = metrics(result)
    # Histograms from both workers merged: as many latencies as deliveries counted.
    assert m["delivery_p99"]["latency"]["count"] == extra["deliveries_total"] > 0
    assert extra["delivered"] == extra["expected_deliveries"] > 0
    assert m["connections"]["value"] >= 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cfn-rate", "-5"], "rate"),
        (["--cfn-model", "pooled"], "per-agent, shared"),
        (["--cfn-mix", "state.update=1@12"], "priorities are 1-9"),
        (["--cfn-gate", "speed"], "unknown gate"),
        (["--cfn-redis", "http://127.0.0.1:1"], "redis://"),
        (["--cfn-rate", "10", "--cfn-total-rate", "100"], "not both"),
    ],
)
def test_bad_options_stop_locust_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = locust(tmp_path, "--headless", "-u", "1", "-t", "1s", *args, timeout=30)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not list(tmp_path.glob("reports/*.json"))


def test_the_harness_refuses_a_server_it_cannot_reach(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = locust(tmp_path, "--headless", "-u", "1", "-t", "1s", "--cfn-redis",
                  f"redis://127.0.0.1:{port}/0", timeout=30)
    assert proc.returncode != 0
    assert "cannot start the harness" in proc.stderr
