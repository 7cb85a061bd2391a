"""Redis Cluster with sharded pub/sub, on a real local cluster the tests start and stop.

3 masters + 3 replicas on loopback ports (``LocalCluster``); the buses get the URL of
one node only. Marked ``cluster``: ``-m 'not cluster'`` skips them for a quick run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_nodes import client_names, local_cluster, swarms_on_every_master
from frontends import Frontend, wait_until

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.critical_log import CriticalOptions, stream_key
from pytest_cfn._core.resp import encode_publish
from pytest_cfn._core.shard_layout import (
    ShardChannelNames,
    ShardCriticalStream,
    as_spublish,
    redirect,
    redirect_target,
    swarm_slot,
)
from pytest_cfn.cluster_server import LocalCluster, cluster_available
from pytest_cfn.measure.cluster.faults import traffic_under_fault

# --- the layout, no server ------------------------------------------------------------


def test_shard_channel_and_swarm_keys_share_the_swarm_slot() -> None:
    names = ShardChannelNames("ns1")
    channel = names.event("loop3", "agent.spawn")
    assert channel == names.event_pattern("loop3") == "ns1:event:{loop3}"
    assert names.parse_event(channel) == ("loop3", "")
    assert names.parse_event("ns1:event:{a*b}") is None
    assert names.parse_event("ns1:event:loop3:agent.spawn") is None
    stream = stream_key(names, "loop3")
    assert stream == "ns1:critical:{loop3}"
    assert names.key("critical-cursor", "loop3", "a1") == "ns1:critical-cursor:{loop3}:a1"
    assert names.key("route", "agent.spawn") == "ns1:route:agent.spawn"
    from redis.crc import key_slot

    slots = {key_slot(k.encode()) for k in (channel, stream, "x:{loop3}")}
    assert slots == {swarm_slot("loop3")}
    assert ChannelNames("ns1").event("loop3", "a.b") == "ns1:event:loop3:a.b", "one server"


def test_spublish_and_the_critical_script_name_the_channel_in_the_slot() -> None:
    command = encode_publish(b"event:{s}", b"payload")
    assert as_spublish(command) == b"*3\r\n$8\r\nSPUBLISH\r\n$9\r\nevent:{s}\r\n$7\r\npayload\r\n"
    with pytest.raises(ValueError, match="not an encoded PUBLISH"):
        as_spublish(b"*1\r\n$4\r\nPING\r\n")
    names = ShardChannelNames()
    script = ShardCriticalStream(names, CriticalOptions()).append_and_publish(
        "event:{s}", b"env"
    )
    assert b"SPUBLISH" in script
    assert b"\r\n$1\r\n1\r\n$12\r\ncritical:{s}\r\n" in script
    assert script.endswith(b"\r\n$3\r\nenv\r\n$9\r\nevent:{s}\r\n")
    assert redirect("MOVED 3999 127.0.0.1:7002") == ("MOVED", 3999, "127.0.0.1:7002")
    assert redirect("ASK 12 h:1") == ("ASK", 12, "h:1")
    assert redirect("ERR wrong number of arguments") is None
    for forged in ("MOVED 12 host:abc", "MOVED 99999 h:1", "MOVED 12 h:0", "ASK 12 h:70000",
                   "MOVED 12 h:1 extra", "MOVED x h:1"):
        assert redirect(forged) is None, forged
    assert redirect_target("::1:7000", "n") == ("::1", 7000)
    assert redirect_target(":7000", "node-host") == ("node-host", 7000)
    assert redirect_target("?:7000", "node-host") == ("node-host", 7000)


# --- on a real cluster ------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


def _event_names(port: int, ns: str) -> list[str]:
    """Our Event Bus connections (namespace ``ns``) on the node at ``port``."""
    return [n for n in client_names(port, ns) if n.startswith("cfn:events")]


@pytest.mark.cluster
def test_swarms_on_different_masters_each_get_their_own_events(
    cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    by_master = swarms_on_every_master(cluster)
    got: dict[str, list[Any]] = {swarm: [] for swarm in by_master.values()}
    for swarm in by_master.values():
        fe.event_bus(cluster.url, swarm, "reader", namespace=ns).subscribe(
            "task.*", got[swarm].append
        )
    for swarm in by_master.values():
        pub = fe.event_bus(cluster.url, swarm, "writer", namespace=ns)
        for n in range(20):
            pub.publish("task.step", {"swarm": swarm, "n": n}, priority=9 if n == 0 else 5)
        pub.flush()
        assert pub.stats()["cluster"] is True
    assert wait_until(lambda: all(len(events) == 20 for events in got.values()), timeout=10), {
        swarm: len(events) for swarm, events in got.items()
    }
    for swarm, events in got.items():
        assert {e.data["swarm"] for e in events} == {swarm}
        assert [e.data["n"] for e in events] == list(range(20))
    # A swarm's connections (reader: publisher + subscriber, writer: publisher) are all on
    # the master that owns its slot, and no other swarm's are there.
    for port, swarm in by_master.items():
        names = sorted(n.split(":")[1] + ":" + n.split(":")[3] for n in _event_names(port, ns))
        assert names == ["events-pub:reader@" + ns, "events-pub:writer@" + ns,
                         "events-sub:reader@" + ns], (swarm, names)
        assert all(f":{swarm}:" in n for n in _event_names(port, ns))


@pytest.mark.cluster
def test_critical_events_replay_from_the_hash_tagged_stream(
    cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    pub = fe.event_bus(cluster.url, "late", "writer", namespace=ns)
    for n in range(5):
        pub.publish("cfn.loop.phase", {"n": n}, priority=9)
    pub.flush()
    got: list[Any] = []
    late = fe.event_bus(cluster.url, "late", "reader", namespace=ns)
    late.subscribe("cfn.*", got.append)
    assert wait_until(lambda: len(got) == 5, timeout=10)
    assert [e.data["n"] for e in got] == list(range(5))
    assert late.stats()["replayed"] == 5


def _assert_counted(result: dict[str, Any]) -> None:
    assert result["cluster"] is True
    assert result["owner_after"] != result["owner_before"], result
    assert result["critical_delivered"] == result["critical_sent"] > 0, result
    assert result["missing"] <= result["lost"], f"loss not counted: {result}"
    assert result["subscriber_reconnects"] >= 1, result


@pytest.mark.cluster
def test_slot_migrated_during_traffic(cluster: LocalCluster, ns: str) -> None:
    result = traffic_under_fault(cluster, "migrate", events=1200, rate=1200.0, namespace=ns)
    _assert_counted(result)
    assert result["publish_failed"] == 0, result
    assert result["redirects"] + result["publisher_reconnects"] >= 1, result


@pytest.mark.cluster
def test_cluster_failover_during_traffic(cluster: LocalCluster, ns: str) -> None:
    result = traffic_under_fault(cluster, "failover", events=1200, rate=1200.0, namespace=ns)
    _assert_counted(result)
    assert result["publish_failed"] == 0, result


@pytest.mark.cluster
@pytest.mark.slow
def test_killed_master_during_traffic(cluster: LocalCluster, ns: str) -> None:
    started = time.monotonic()
    result = traffic_under_fault(cluster, "kill", events=1500, rate=1000.0, namespace=ns)
    _assert_counted(result)
    assert time.monotonic() - started < 60


@pytest.mark.cluster
def test_critical_event_mid_migration_follows_ask_and_is_replayed(
    fe: Frontend, ns: str
) -> None:
    """The stream moved, the slot not yet: the old owner answers ASK to the critical script;
    it runs on the importing master (after ASKING), and the subscriber, re-subscribed on the
    new owner when the migration ends, replays it from the stream."""
    why = cluster_available()
    if why is not None:
        pytest.skip(why)
    with LocalCluster() as cluster:
        swarm = "askbus"
        slot = swarm_slot(swarm)
        got: list[Any] = []
        fe.event_bus(cluster.url, swarm, "reader", namespace=ns).subscribe("x.*", got.append)
        pub = fe.event_bus(cluster.url, swarm, "writer", namespace=ns)
        pub.publish("x.a", {"n": 0}, priority=9)
        pub.flush()
        source = cluster.owner(slot)
        target = cluster.node_for_port(next(p for p in cluster.masters() if p != source.port))
        cluster.begin_migration(slot, target)
        try:
            assert cluster.move_keys(slot, source, target) == 1  # the critical stream
            pub.publish("x.a", {"n": 1}, priority=9)  # ASK
            pub.publish("x.a", {"n": 2}, priority=5)  # SPUBLISH: still the old owner's
            pub.flush()
            assert pub.stats()["asks"] == 1, pub.stats()
        finally:
            cluster.finish_migration(slot, source, target)
        pub.publish("x.a", {"n": 3}, priority=9)  # MOVED: the publisher follows the slot
        pub.flush()
        assert wait_until(lambda: len(got) == 4, timeout=10), [e.data for e in got]
        assert sorted(e.data["n"] for e in got) == [0, 1, 2, 3]
        stats = pub.stats()
        assert stats["publish_failed"] == 0 and stats["critical_pending"] == 0, stats
        assert stats["redirects"] >= 2, stats  # the ASK and the MOVED
