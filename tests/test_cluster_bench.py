"""The measurement tools given one node of a real local Redis Cluster: the micro-benchmark
measures our bus and its references with the same channel kind (shard channels, on the master
that owns the slot); ``cfn bench`` runs its sweep on shard channels and says it ran on a
cluster; ``cfn calibrate`` refuses with the reason; the server sampler covers every master."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cluster_nodes import local_cluster

from pytest_cfn._core.shard_layout import swarm_slot
from pytest_cfn.cluster_server import LocalCluster
from pytest_cfn.measure.metrics.server_sampler import ServerSampler, sample_server
from pytest_cfn.measure.microbench.shard_references import node_url


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


def test_node_url_keeps_login_and_tls_options_and_selects_database_0() -> None:
    url = "rediss://bob:s3cret@10.0.0.1:7000/0?ssl_ca_certs=/ca.pem&ssl_check_hostname=false"
    assert node_url(url, "10.0.0.2", 7003) == (
        "rediss://bob:s3cret@10.0.0.2:7003/0?ssl_ca_certs=/ca.pem&ssl_check_hostname=false"
    )
    assert node_url("redis://127.0.0.1:7000", "::1", 7001) == "redis://[::1]:7001/0"


@pytest.mark.cluster
@pytest.mark.slow
def test_cfn_bench_on_a_cluster_node_runs_the_sweep_on_shard_channels(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    out_dir = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_cfn", "bench", "--redis", cluster.url, "--agents", "10",
         "--duration", "1", "--repeat", "1", "--warmup", "0.5", "--skip", "probe",
         "--out", str(out_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "a Redis Cluster node (3 masters)" in done.stdout.splitlines()[0]
    assert "Ran on a Redis Cluster of 3 masters" in done.stdout
    assert "Calibration: not measured on a cluster: the calibration's delay proxy" in done.stdout
    result = json.loads((out_dir / "results.json").read_text())
    extra = result["extra"]
    assert extra["cluster"]["masters"] == 3 and extra["failures"] == []
    assert len(extra["cluster"]["maxclients_by_node"]) == 3
    assert "calibration" not in extra
    assert extra["not_measured"]["calibration"].startswith("not measured on a cluster: ")
    # The ceiling and the round trip: SPUBLISH of a shard channel, at the master of its slot.
    for entry in extra["ceiling"]:
        found = re.search(r" -p (\d+) .* spublish event:\{([^}]+)\} ", entry["command"])
        assert found, entry["command"]
        assert int(found.group(1)) == cluster.owner(swarm_slot(found.group(2))).port
        assert entry["verb"] == "SPUBLISH" and entry["rate"] > 0
    assert extra["round_trip"]["verb"] == "SPUBLISH" and extra["round_trip"]["p50_us"] > 0
    # The route cache: hit rates counted without route_overrides (refused on a cluster).
    cache = extra["cache"]
    assert cache["route_overrides"] is False and "route_overrides is refused" in cache["method"]
    by = {(row["workload"], row["size"]): row for row in cache["rows"]}
    assert by[("adr", 10_000)]["hit_rate"] > 0.99 and by[("adr", 0)]["hit_rate"] == 0.0
    assert by[("zipf", 10_000)]["hit_rate"] > by[("zipf", 100)]["hit_rate"]
    # Every client model delivered every event it sent, to every agent.
    models = {row["key"]: row for row in extra["client_models"]}
    assert set(models) == {"single-wait", "single-pipelined", "separated", "per-agent", "shared"}
    for row in models.values():
        assert row["rate"] > 0, row
        assert row["deliveries"] == row["events"] * row["agents"], row
        assert "Redis Cluster of 3 masters" in row["method"]
    # The load step: delivered everything it sent, server CPU and connections over the masters.
    (load,) = [row for row in result["steps"] if row["kind"] == "load"]
    assert load["status"] == "ok", load
    assert load["lost"] == 0 and load["latency_count"] > 0
    assert load["delivered_per_s"] == pytest.approx(load["sent_per_s"], rel=0.05)
    assert load["server_cpu_percent"] is not None and load["server_cpu_percent"] > 0
    nodes = {f"127.0.0.1:{port}" for port in cluster.masters()}
    assert set(load["connections_by_node"]) <= nodes and load["connections_by_node"]
    assert sum(load["connections_by_node"].values()) == load["connections"]
    assert not any("masters changed" in note for note in load["notes"]), load["notes"]
    summary = (out_dir / "summary.md").read_text()
    assert "Ran on a Redis Cluster of 3 masters" in summary
    assert "redis-benchmark SPUBLISH -P 1" in summary and "not measured on a cluster" in summary


@pytest.mark.cluster
def test_cfn_calibrate_refuses_a_cluster_node_with_the_reason(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    out_dir = tmp_path / "calibration"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_cfn", "calibrate", "--redis", cluster.url,
         "--out", str(out_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("cfn calibrate: error: ")
    assert "is a Redis Cluster node" in done.stderr and "around the proxy" in done.stderr
    assert done.stdout == "" and not out_dir.exists()


@pytest.mark.cluster
@pytest.mark.slow
def test_micro_benchmark_on_a_cluster_node_measures_shard_channels_on_their_master(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    report = tmp_path / "microbench.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_cfn.measure.microbench", "--redis", cluster.url,
         "--quick", "--only", "ceiling", "--only", "throughput", "--only", "latency",
         "--also-rates", "none", "--duration", "0.3", "--json", str(report)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "a Redis Cluster node (3 masters)" in done.stdout.splitlines()[0]
    assert "redis-benchmark SPUBLISH -P 1 " in done.stdout
    result = json.loads(report.read_text())
    steps: dict[str, dict[str, Any]] = {step["step"]: step for step in result["steps"]}
    # redis-benchmark: SPUBLISH of the swarm's shard channel, sent to the master of its slot.
    command = steps["redis_benchmark_p1"]["command"]
    found = re.search(r"-p (\d+) .* spublish event:\{(cfnbench-[0-9a-f]+)\} ", command)
    assert found, command
    assert int(found.group(1)) == cluster.owner(swarm_slot(found.group(2))).port
    # The sink subscriber reads shard channels: it receives what redis-py's SPUBLISH pipeline
    # and our bus sent (a PSUBSCRIBE sink would read nothing of a shard channel).
    events = steps["ours"]["events"]
    assert steps["pipeline"]["sink_bytes"] >= events * 200
    assert steps["ours"]["sink_bytes"] >= events * 200
    # redis-py's end to end, on SSUBSCRIBE, got everything, as our pairs did.
    assert steps["redis_py_e2e"]["delivered"] == steps["redis_py_e2e"]["published"] == events
    for ours in ("e2e", "e2e_plain", "aio_e2e", "aio_e2e_plain"):
        assert steps[ours]["delivered"] == steps[ours]["published"] == events, ours
    latency = next(m for m in result["metrics"] if m["name"].startswith("redis_py_latency_p99"))
    assert latency["value"] > 0
    assert "SPUBLISH / SSUBSCRIBE of the swarm's shard channel" in done.stdout


@pytest.mark.cluster
def test_server_sampler_sums_every_master_given_one_node(cluster: LocalCluster) -> None:
    masters = cluster.masters()
    named = [redis.Redis("127.0.0.1", port, protocol=2, client_name=f"cfn:sub:sampled:a{i}")
             for i, port in enumerate(masters)]
    seed = redis.Redis.from_url(cluster.url, protocol=2)
    try:
        for client in named:
            client.ping()
        sample = sample_server(seed, swarm="sampled")
        assert sample.our_clients == len(masters)
        assert sample.our_clients_by_role == {"sub": len(masters)}
        assert sorted(sample.clients_by_node) == [f"127.0.0.1:{port}" for port in masters]
        assert all(count >= 1 for count in sample.clients_by_node.values())
        assert sample.connected_clients == sum(sample.clients_by_node.values())
        alone = redis.Redis("127.0.0.1", masters[0], protocol=2)
        try:
            one_node = int(alone.info("memory")["used_memory"])
        finally:
            alone.close()
        assert sample.used_memory > one_node
        with ServerSampler.from_url(cluster.url, interval=0.05, swarm="sampled") as sampler:
            sampler.sample_now()
        summary = sampler.summary()
        assert summary.errors == 0 and summary.max_our_clients == len(masters)
    finally:
        for client in named:
            client.close()
        seed.close()


@pytest.mark.cluster
def test_same_run_reference_on_a_cluster_node_spublishes_at_the_slot_master(
    cluster: LocalCluster,
) -> None:
    from pytest_cfn.measure.sweep.references import same_run_reference

    reference = same_run_reference(cluster.url, "cfn-reference:clustered")
    assert reference["events_per_s"] > 0 and reference["round_trip_ms"] > 0
    assert "SPUBLISHes of 200 B" in reference["method"]
    assert "Redis Cluster of 3 masters" in reference["method"]


@pytest.mark.cluster
def test_sweep_leaves_out_server_cpu_when_the_masters_changed_during_a_step(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    from pytest_cfn.measure.metrics.server_cpu import CpuReading
    from pytest_cfn.measure.sweep.cluster_target import SweepServer
    from pytest_cfn.measure.sweep.runner import SweepConfig, SweepRun

    run = SweepRun(SweepConfig(out=tmp_path))
    run.server = SweepServer.detect(cluster.url)
    before = run._cluster_cpu(cluster.url)
    assert before is not None and len(before) == 3
    assert run._topology_change(cluster.url, before) is None
    gone = dict(before, **{"127.0.0.1:1": CpuReading("gone", 1.0)})
    note = run._topology_change(cluster.url, gone)
    assert note is not None and "no longer a master at the window's end: 127.0.0.1:1" in note
    assert "covers 3 master(s)" in note
    assert SweepRun(SweepConfig(out=tmp_path))._cluster_cpu(cluster.url) is None, "one server"
