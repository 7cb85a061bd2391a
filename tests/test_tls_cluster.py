"""A ``rediss://`` Redis Cluster: the same 3 masters + 3 replicas speaking TLS (``tls-cluster
yes``, ``tls-replication yes``, certificates made by ``trustme`` at start), given the TLS URL
of one node. A TLS client is told the masters' TLS ports by ``CLUSTER SLOTS``, so every
connection a bus or a Messenger opens must be a TLS one, verified against the test CA: the
tests check the local port each of our connections reached (``laddr`` of CLIENT LIST) is
its master's TLS port, not its plain one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cluster_nodes import swarms_on_every_master
from frontends import Frontend, wait_until

from pytest_cfn._errors import CfnError
from pytest_cfn.cluster_server import LocalCluster, cluster_available


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[LocalCluster]:
    why = cluster_available()
    if why is not None:
        pytest.skip(why)
    local = LocalCluster(tls=True)
    try:
        local.start()
    except CfnError as exc:
        if "tls-port" in str(exc):
            pytest.skip(f"redis-server without TLS: {exc}")
        raise
    try:
        yield local
    finally:
        local.stop()


def _our_ports(cluster: LocalCluster, namespace: str) -> dict[int, set[int]]:
    """Master plain port -> the local ports our connections (names holding ``namespace``)
    reached on it (CLIENT LIST ``laddr``)."""
    out: dict[int, set[int]] = {}
    for port in cluster.masters():
        client = redis.Redis("127.0.0.1", port, protocol=2)
        try:
            out[port] = {int(entry["laddr"].rsplit(":", 1)[1]) for entry in client.client_list()
                         if namespace in entry.get("name", "")}
        finally:
            client.close()
    return out


@pytest.mark.cluster
def test_the_tls_url_is_verified_and_names_the_tls_ports(tls_cluster: LocalCluster) -> None:
    verified = redis.Redis.from_url(tls_cluster.tls_url, protocol=2, socket_timeout=5)
    try:
        slots = verified.execute_command("CLUSTER", "SLOTS")
    finally:
        verified.close()
    told = sorted(int(entry[2][1]) for entry in slots)
    assert told == sorted(tls_cluster.tls_ports[p] for p in tls_cluster.masters())
    # Each replica follows its master over TLS (tls-replication: the master's TLS port).
    for port in tls_cluster.masters():
        replica = tls_cluster.replica_of(tls_cluster.node_for_port(port))
        link = tls_cluster.client(replica)
        try:
            assert wait_until(lambda link=link: link.info("replication")["master_link_status"]
                              == "up",
                              timeout=10)
            assert int(link.info("replication")["master_port"]) == tls_cluster.tls_ports[port]
        finally:
            link.close()
    # Without the CA the server certificate is refused: verification is on.
    unverified = redis.Redis.from_url(tls_cluster.tls_url.split("?")[0], protocol=2,
                                      socket_timeout=5)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.ping()
    unverified.close()


@pytest.mark.cluster
def test_event_bus_delivers_over_a_tls_cluster(
    tls_cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    by_master = swarms_on_every_master(tls_cluster, "tls")
    got: dict[str, list[Any]] = {swarm: [] for swarm in by_master.values()}
    for swarm in by_master.values():
        fe.event_bus(tls_cluster.tls_url, swarm, "reader", namespace=ns).subscribe(
            "job.*", got[swarm].append)
    writers = []
    for swarm in by_master.values():
        writer = fe.event_bus(tls_cluster.tls_url, swarm, "writer", namespace=ns)
        writers.append(writer)
        for n in range(20):
            writer.publish("job.step", {"swarm": swarm, "n": n}, priority=9 if n == 0 else 5)
        writer.flush()
    assert wait_until(lambda: all(len(g) == 20 for g in got.values()), timeout=10), {
        s: len(g) for s, g in got.items()}
    for swarm, events in got.items():
        assert [e.data["n"] for e in events] == list(range(20))
        assert {e.data["swarm"] for e in events} == {swarm}
    for writer in writers:
        stats = writer.stats()
        assert stats["lost"] == stats["publish_failed"] == 0, stats
    # Every connection of ours is on its swarm's master, through that master's TLS port.
    reached = _our_ports(tls_cluster, ns)
    for port, swarm in by_master.items():
        assert reached[port] == {tls_cluster.tls_ports[port]}, (swarm, reached)


@pytest.mark.cluster
def test_messenger_sends_and_requests_across_masters_over_tls(
    tls_cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    by_master = swarms_on_every_master(tls_cluster, "tm")
    a, b, c = (by_master[p] for p in sorted(by_master))
    got: dict[str, list[Any]] = {b: [], c: []}
    for swarm in (b, c):
        receiver = fe.make("Messenger", tls_cluster.tls_url, swarm, "agent-1", namespace=ns)
        receiver.on_message(got[swarm].append)
        receiver.on_request(lambda m, me=swarm: {"me": me, "n": m.data})
    sender = fe.make("Messenger", tls_cluster.tls_url, a, "asker", namespace=ns)
    for n in range(10):
        sender.send(b, {"n": n}, priority=9 if n == 0 else 5)
        sender.send(c, {"n": n})
    assert sender.flush() == 20
    assert wait_until(lambda: len(got[b]) == len(got[c]) == 10, timeout=10), got
    assert [m.data["n"] for m in got[c]] == list(range(10))
    assert sender.request(b, 3, timeout=5).data == {"me": b, "n": 3}
    assert sender.request(c, 4, timeout=5).data == {"me": c, "n": 4}
    stats = sender.stats()
    assert stats["cluster"] is True and stats["publisher_connections"] == 2, stats
    assert stats["lost"] == stats["publish_failed"] == 0, stats
    reached = _our_ports(tls_cluster, ns)
    for port in by_master:
        assert reached[port] == {tls_cluster.tls_ports[port]}, reached


@pytest.mark.cluster
@pytest.mark.slow
def test_micro_benchmark_tls_step_on_a_tls_cluster(
    tls_cluster: LocalCluster, tmp_path: Path
) -> None:
    report = tmp_path / "tls.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_cfn.measure.microbench", "--redis", tls_cluster.tls_url,
         "--plain-redis", tls_cluster.url, "--quick", "--only", "tls", "--json", str(report)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "a Redis Cluster node (3 masters)" in done.stdout.splitlines()[0]
    assert "TLS adds" in done.stdout and "x plain text end to end" in done.stdout
    result = json.loads(report.read_text())
    metrics = {m["name"]: m for m in result["metrics"]}
    for name in ("tls_e2e_delivered", "tls_publisher_cpu_us_per_event",
                 "tls_subscriber_cpu_us_per_event"):
        assert metrics[name]["value"] > 0, metrics[name]
    runs = [step for step in result["steps"] if step["step"].startswith("tls_cost_")]
    assert {step["step"] for step in runs} == {"tls_cost_tls", "tls_cost_plain"}
    for step in runs:  # every round delivered everything it published, over each port
        assert step["delivered"] == step["published"] > 0, step
