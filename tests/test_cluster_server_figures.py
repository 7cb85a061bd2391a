"""Server-side figures of a Redis Cluster judged per master: the ``maxclients`` gate divides
the fullest master's clients by its own ``maxclients`` (each master refuses clients past its
own limit; the cluster's sum would hide a full one), and the server CPU over a window is
summed per master over the masters present at both ends, a failover in the window named
rather than summed wrongly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from cluster_nodes import local_cluster
from frontends import wait_until

from pytest_cfn.cluster_nodes import Fullest, fullest_master
from pytest_cfn.cluster_server import LocalCluster
from pytest_cfn.measure.metrics.server_cpu import CpuReading, cpu_delta, read_cpu
from pytest_cfn.measure.metrics.server_sampler import ServerSampler, sample_server
from pytest_cfn.pytest_support.perf_recorder import count_connections

# --- no server ------------------------------------------------------------------------


def test_the_fullest_master_is_the_highest_share_of_its_own_maxclients() -> None:
    counts = {"a:1": (900, 10_000), "b:2": (60, 100), "c:3": (500, 10_000)}
    assert fullest_master(counts) == Fullest("b:2", 60, 100)
    assert fullest_master(counts).fraction == pytest.approx(0.6)
    # The cluster's sum would read 1,460 / 20,100 = 7 %: a master at 60 % goes unseen.
    assert sum(c for c, _ in counts.values()) / sum(m for _, m in counts.values()) < 0.08
    assert fullest_master({"a:1": (5, None), "b:2": (7, None)}) == Fullest("b:2", 7, None)
    assert fullest_master({"a:1": (500, None), "b:2": (7, 100)}) == Fullest("b:2", 7, 100)
    assert fullest_master({"": (12, 10_000)}) == Fullest("", 12, 10_000)
    assert fullest_master({}) == Fullest("", 0, None)


def test_server_cpu_delta_sums_masters_present_at_both_ends_and_names_the_rest() -> None:
    start = {"h:1": CpuReading("r1", 10.0), "h:2": CpuReading("r2", 20.0),
             "h:3": CpuReading("r3", 30.0)}
    steady = cpu_delta(start, {"h:1": CpuReading("r1", 10.5), "h:2": CpuReading("r2", 21.0),
                               "h:3": CpuReading("r3", 30.25)})
    assert steady.cpu_s == pytest.approx(1.75) and steady.complete and steady.note() is None
    assert steady.masters == ["h:1", "h:2", "h:3"]
    # h:3 failed over to its replica h:4 (whose counter covers its life as a replica) and h:2
    # was restarted on the same port (its counter started again from zero).
    moved = cpu_delta(start, {"h:1": CpuReading("r1", 11.0), "h:2": CpuReading("r9", 0.5),
                              "h:4": CpuReading("r4", 99.0)})
    assert moved.cpu_s == pytest.approx(1.0) and moved.masters == ["h:1"]
    assert (moved.left, moved.joined, moved.restarted) == (["h:3"], ["h:4"], ["h:2"])
    note = moved.note()
    assert note is not None and "covers 1 master(s) present at both ends" in note
    assert "h:3" in note and "(promoted): h:4" in note and "restarted in the window: h:2" in note
    one = cpu_delta({"": CpuReading("r", 1.0)}, {"": CpuReading("r", 1.5)})
    assert one.cpu_s == pytest.approx(0.5) and one.complete


# --- on a real cluster ------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


@pytest.mark.cluster
def test_maxclients_figures_judge_the_fullest_master(cluster: LocalCluster) -> None:
    masters = cluster.masters()
    small = masters[1]
    admin = cluster.client(cluster.node_for_port(small))
    admin.config_set("maxclients", 100)
    crowd = [redis.Redis("127.0.0.1", small, protocol=2) for _ in range(30)]
    seed = redis.Redis.from_url(cluster.url, protocol=2)
    try:
        for client in crowd:
            client.ping()
        on_small = int(admin.info("clients")["connected_clients"])
        assert on_small >= 30
        sample = sample_server(seed)
        assert sample.fullest_node == f"127.0.0.1:{small}"
        # (the sampler's own connections to that master come on top)
        assert on_small <= sample.fullest_connected_clients <= on_small + 3
        assert sample.fullest_connected_clients == sample.clients_by_node[sample.fullest_node]
        assert sample.fullest_maxclients == 100
        assert sample.maxclients == 10_000 * 2 + 100, "a sample keeps the cluster's sums"
        with ServerSampler.from_url(cluster.url, interval=0.05) as sampler:
            sampler.sample_now()
        summary = sampler.summary()
        # What the harness's maxclients gate divides: the fullest master's pair.
        assert (summary.maxclients, summary.fullest_node) == (100, f"127.0.0.1:{small}")
        assert summary.max_connected_clients >= 30
        assert summary.max_connected_clients_total > summary.max_connected_clients
        assert summary.max_connected_clients / summary.maxclients >= 0.3
        # The plugin's cfn_perf count: the same fullest master.
        counts = count_connections(seed, "no-such-namespace")
        assert counts.fullest_master == f"127.0.0.1:{small}"
        assert counts.maxclients == 100 and counts.connected_clients >= 30
    finally:
        for client in crowd:
            client.close()
        admin.config_set("maxclients", 10_000)
        admin.close()
        seed.close()


@pytest.mark.cluster
@pytest.mark.slow
def test_server_cpu_across_a_failover_is_per_master_and_names_the_change(
    cluster: LocalCluster,
) -> None:
    seed = redis.Redis.from_url(cluster.url, protocol=2, socket_timeout=5)
    try:
        start = read_cpu(seed)
        assert sorted(start) == [f"127.0.0.1:{port}" for port in cluster.masters()]
        busy = cluster.masters()[0]
        worker = redis.Redis("127.0.0.1", busy, protocol=2)
        for _ in range(2_000):
            worker.ping()
        worker.close()
        unchanged = cpu_delta(start, read_cpu(seed))
        assert unchanged.complete and unchanged.cpu_s > 0
        old = cluster.masters()[2]
        new = cluster.failover(cluster.node_for_port(old)).port
        # the seed node's CLUSTER SLOTS may name the new master a moment after ROLE does
        assert wait_until(lambda: f"127.0.0.1:{new}" in read_cpu(seed), timeout=10)
        end = read_cpu(seed)
        delta = cpu_delta(start, end)
    finally:
        seed.close()
    assert f"127.0.0.1:{new}" in delta.joined, delta
    assert f"127.0.0.1:{old}" in delta.left, delta
    assert len(delta.masters) == 2 and f"127.0.0.1:{busy}" in delta.masters
    kept = sum(end[n].cpu_s - start[n].cpu_s for n in delta.masters)
    assert delta.cpu_s == pytest.approx(kept)
    assert delta.note() is not None and f"127.0.0.1:{new}" in str(delta.note())
