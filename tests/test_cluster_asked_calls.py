"""Calls answered ``ASK`` mid-migration are read on the importing master, at once.

A slot held mid-migration (``begin_migration`` + ``move_keys``, not finished) with its keys
already on the importing master: the owner answers ``ASK`` to a read of them. The Event Bus's
catch-up (GET of the stored cursor, XRANGE of the critical stream) and the Messenger's
``stored_history`` (LRANGE) must then get their answer from the importing master
(``ASKING`` + the command) during the migration, not retry on the owner until it ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_nodes import local_cluster
from frontends import Frontend, wait_until

from pytest_cfn._core.shard_layout import swarm_slot
from pytest_cfn.cluster_server import LocalCluster


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


def _other_master(cluster: LocalCluster, slot: int) -> tuple[Any, Any]:
    source = cluster.owner(slot)
    target = cluster.node_for_port(next(p for p in cluster.masters() if p != source.port))
    return source, target


@pytest.mark.cluster
def test_catch_up_mid_migration_reads_the_stream_on_the_importing_master(
    cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    swarm = f"askcatch-{fe.kind}"
    slot = swarm_slot(swarm)
    before: list[Any] = []
    watcher = fe.event_bus(cluster.url, swarm, "watcher", namespace=ns)
    watcher.subscribe("*", before.append)
    pub = fe.event_bus(cluster.url, swarm, "coordinator", namespace=ns)
    pub.publish("loop.start", 0, priority=9)
    pub.flush()
    assert wait_until(lambda: len(before) == 1, timeout=10)
    watcher.close()  # stores its cursor past event 0
    for n in range(1, 4):
        pub.publish("loop.step", n, priority=9)
    pub.flush()
    time.sleep(0.5)  # a catch-up reads entries at least settle_time (0.25 s) old
    source, target = _other_master(cluster, slot)
    cluster.begin_migration(slot, target)
    try:
        # the critical stream and the watcher's cursor
        assert cluster.move_keys(slot, source, target) == 2
        after: list[Any] = []
        restarted = fe.event_bus(cluster.url, swarm, "watcher", namespace=ns)
        restarted.subscribe("*", after.append)
        assert wait_until(lambda: len(after) == 3, timeout=5), [e.data for e in after]
        stats = restarted.stats()
    finally:
        cluster.finish_migration(slot, source, target)
    assert [e.data for e in after] == [1, 2, 3], "the missed ones, once, in order"
    assert stats["replayed"] == 3 and stats["duplicates"] == 0, stats
    assert stats["asked_calls"] >= 2, stats  # the cursor's GET and the XRANGE at least
    assert stats["publisher_reconnects"] == 0, "answered at once, not retried on the owner"


@pytest.mark.cluster
def test_stored_history_mid_migration_is_read_on_the_importing_master(
    cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    receiver_swarm = f"askhist-{fe.kind}"
    slot = swarm_slot(receiver_swarm)
    receiver = fe.make("Messenger", cluster.url, receiver_swarm, "agent-1", namespace=ns)
    sender = fe.make("Messenger", cluster.url, f"sender-{fe.kind}", "agent-1", namespace=ns,
                     persist_history=True, history_ttl=60)
    for n in range(3):
        sender.send(receiver_swarm, {"n": n})
    assert sender.flush() == 3
    assert [m.data["n"] for m in receiver.stored_history()] == [0, 1, 2]
    source, target = _other_master(cluster, slot)
    cluster.begin_migration(slot, target)
    try:
        assert cluster.move_keys(slot, source, target) == 1  # history:{receiver}
        stored = receiver.stored_history()
        stats = receiver.stats()
    finally:
        cluster.finish_migration(slot, source, target)
    assert [m.data["n"] for m in stored] == [0, 1, 2]
    assert stats["asked_calls"] == 1, stats
    assert stats["publisher_reconnects"] == 0, stats
