"""Under pytest-xdist: one server per run, isolated workers, samples merged on the controller."""

from __future__ import annotations

import json

import pytest
from plugin_runs import output, pid_alive, project, read_json, redis_servers_on_port, run

pytest_plugins = ["pytester"]

pytest.importorskip("xdist")

ISOLATION = """
    import json
    import os
    import time
    from pathlib import Path

    def _wait(predicate, timeout=15):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.01)
        return predicate()

    def test_same_swarm_names_do_not_meet(cfn_event_bus, cfn_namespace, cfn_server, worker_id):
        got = []
        sub = cfn_event_bus(swarm="s1", agent="a1")
        sub.subscribe("*", got.append)
        pub = cfn_event_bus(swarm="s1", agent="a1")
        pub.connect()
        barrier = Path(os.environ["BARRIER"])
        (barrier / worker_id).write_text("ready")
        assert _wait(lambda: len(list(barrier.iterdir())) == 2), "the other worker never came"
        for i in range(50):
            pub.publish("task.assign", worker_id)
        assert _wait(lambda: len(got) >= 50)
        time.sleep(0.3)
        assert {event.data for event in got} == {worker_id} and len(got) == 50
        info = {"url": cfn_server.url, "pid": cfn_server.pid, "ns": cfn_namespace}
        Path(f"{worker_id}.json").write_text(json.dumps(info))
"""


def test_workers_share_one_server_and_never_see_each_other(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=ISOLATION)
    barrier = pytester.mkdir("barrier")
    monkeypatch.setenv("BARRIER", str(barrier))
    report = pytester.path / "result.json"
    result = run(pytester, "-n", "2", "--dist", "each", f"--cfn-report={report}")
    assert result.ret == 0, output(result)
    result.assert_outcomes(passed=2)
    seen = [json.loads((pytester.path / f"gw{i}.json").read_text()) for i in (0, 1)]
    assert seen[0]["url"] == seen[1]["url"] and seen[0]["pid"] == seen[1]["pid"]
    assert seen[0]["ns"] != seen[1]["ns"]
    assert "-gw0-" in seen[0]["ns"] and "-gw1-" in seen[1]["ns"]
    assert read_json(report)["extra"]["server_pid"] == seen[0]["pid"]
    assert not pid_alive(seen[0]["pid"])
    port = int(seen[0]["url"].rsplit(":", 1)[1].split("/")[0])
    assert redis_servers_on_port(port) == []


MERGED = """
    import pytest

    @pytest.mark.cfn_perf(group="bus-latency", max_p99_ms=2.0)
    def test_latency(cfn_perf, worker_id):
        value_ns = 1_000_000 if worker_id == "gw0" else 3_000_000
        for _ in range(1000):
            cfn_perf.record_latency(value_ns)
        cfn_perf.record_throughput(1000, 1.0)
"""


def test_samples_from_every_worker_are_merged_reported_and_gated_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=MERGED)
    report = pytester.path / "result.json"
    result = run(pytester, "-n", "2", "--dist", "each", "--cfn-gate", f"--cfn-report={report}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    assert text.count("cfn performance (") == 1
    assert text.count("cfn gate FAILED") == 1
    result.stdout.fnmatch_lines(
        [
            "bus-latency",
            "*latency_p99*3.00? ms*<= 2.000 ms*FAIL*",
            "cfn gate FAILED: 2 of 2 targets missed: throughput (bus-latency), "
            "latency_p99 (bus-latency)",
        ]
    )
    data = read_json(report)
    assert sorted(data["extra"]["workers"]) == ["gw0", "gw1"]
    rows = {m["name"]: m for m in data["metrics"]}
    latency = rows["latency_p99"]["latency"]
    assert latency["count"] == 2000
    assert 0.99 <= latency["p50_us"] / 1000 <= 1.01
    assert 2.99 <= latency["p99_us"] / 1000 <= 3.01
    assert "workers gw0, gw1" in rows["latency_p99"]["method"]
    assert rows["throughput"]["value"] > 1000
