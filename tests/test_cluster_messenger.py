"""The Messenger on a real local Redis Cluster: inbox shard channels, one publisher per
master, request/reply across masters, a slot migrated and a failover while subscribed.

Marked ``cluster`` (``-m 'not cluster'`` skips them); sync and asyncio front ends alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster_nodes import local_cluster, names_by_master, swarms_on_every_master
from frontends import Frontend, wait_until

from pytest_cfn._core.shard_layout import ShardChannelNames, swarm_slot
from pytest_cfn.cluster_server import LocalCluster
from pytest_cfn.measure.cluster.messenger_faults import messages_under_fault

pytestmark = pytest.mark.cluster


def test_inbox_shard_channel_and_history_share_the_recipient_slot() -> None:
    names = ShardChannelNames("ns1")
    channel = names.message("from-a", "to.b")
    assert channel == names.inbox_pattern("to.b") == "ns1:message:{to.b}"
    assert names.parse_message(channel) == ("", "to.b")
    assert names.parse_message("ns1:message:{a*b}") is None
    assert names.parse_message("ns1:message:a:b") is None
    assert names.key("history", "to.b") == "ns1:history:{to.b}"
    from redis.crc import key_slot

    assert {key_slot(channel.encode()), key_slot(b"ns1:history:{to.b}")} == {swarm_slot("to.b")}


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """A cluster of the test's own (its topology is changed by the test)."""
    yield from local_cluster()


def messenger(fe: Frontend, url: str, swarm: str, agent: str = "agent-1", **settings: Any) -> Any:
    return fe.make("Messenger", url, swarm, agent, **settings)


def test_messages_and_requests_cross_masters(
    shared_cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    by_master = swarms_on_every_master(shared_cluster, "m")
    ports = sorted(by_master)
    a, b, c = (by_master[p] for p in ports)
    got: dict[str, list[Any]] = {b: [], c: []}
    receivers = {}
    for swarm in (b, c):
        receivers[swarm] = messenger(fe, shared_cluster.url, swarm, namespace=ns)
        receivers[swarm].on_message(got[swarm].append)
        receivers[swarm].on_request(lambda m, me=swarm: {"from": m.sender, "me": me, "n": m.data})
    sender = messenger(fe, shared_cluster.url, a, agent="asker", namespace=ns)
    for n in range(10):
        sender.send(b, {"n": n}, priority=9 if n == 0 else 5)
        sender.send(c, {"n": n})
    assert sender.flush() == 20
    assert wait_until(lambda: len(got[b]) == 10 and len(got[c]) == 10, timeout=10), got
    assert [m.data["n"] for m in got[b]] == list(range(10))
    assert {m.sender for m in got[b] + got[c]} == {a}
    for to in (b, c):
        reply = sender.request(to, 7, timeout=5)
        assert reply.data == {"from": a, "me": to, "n": 7}
    # A request from a swarm to another on a third master, and back.
    assert receivers[b].request(c, "hi", timeout=5).data == {"from": b, "me": c, "n": "hi"}
    stats = sender.stats()
    assert stats["cluster"] is True
    assert stats["publisher_connections"] == 2, stats  # B's master and C's master
    assert stats["lost"] == stats["publish_failed"] == 0, stats
    # Connections: each swarm's subscriber is on its own master; each sends (requests or
    # replies) to the two others, one publisher connection on each of their masters.
    names = names_by_master(shared_cluster, "@" + ns)
    short = {port: sorted(n.split(":")[1] + ":" + n.split(":")[2] for n in found)
             for port, found in names.items()}
    for port, swarm in by_master.items():
        others = sorted(s for s in (a, b, c) if s != swarm)
        assert short[port] == [f"messages-pub:{o}" for o in others] + [
            f"messages-sub:{swarm}"], short


def test_stored_history_lives_in_the_recipient_slot(
    shared_cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    by_master = swarms_on_every_master(shared_cluster, "h")
    a, b = list(by_master.values())[:2]
    sender = messenger(fe, shared_cluster.url, a, namespace=ns, persist_history=True,
                       history_ttl=60)
    for n in range(4):
        sender.send(b, {"n": n})
    sender.flush()
    late = messenger(fe, shared_cluster.url, b, namespace=ns)
    assert [m.data["n"] for m in late.stored_history()] == [0, 1, 2, 3]
    assert [m.sender for m in late.stored_history(limit=1)] == [a]


def test_batch_writes_per_master(shared_cluster: LocalCluster, fe: Frontend, ns: str) -> None:
    by_master = swarms_on_every_master(shared_cluster, "bt")
    a, b, c = by_master.values()
    got: list[Any] = []
    for swarm in (b, c):
        messenger(fe, shared_cluster.url, swarm, namespace=ns).on_message(got.append)
    sender = messenger(fe, shared_cluster.url, a, namespace=ns)
    with sender.batch():
        for n in range(50):
            sender.send(b if n % 2 else c, n)
    sender.flush()
    assert wait_until(lambda: len(got) == 50, timeout=10), len(got)
    assert sorted(m.data for m in got) == list(range(50))


def _assert_counted(result: dict[str, Any]) -> None:
    assert result["cluster"] is True
    assert result["owner_after"] != result["owner_before"], result
    assert result["missing"] <= result["lost"], f"loss not counted: {result}"
    assert result["subscriber_reconnects"] >= 1, result
    assert result["requests_answered"] > 0, result
    assert result["requests_after_fault"] > 0, f"no request answered after the fault: {result}"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_messenger_slot_migrated_while_subscribed(
    cluster: LocalCluster, ns: str, kind: str
) -> None:
    result = messages_under_fault(cluster, "migrate", kind=kind, messages=900, rate=900.0,
                                  namespace=ns)
    _assert_counted(result)
    assert result["send_failed"] == 0, result
    assert result["redirects"] >= 1, result
    assert result["new_owner_has_subscriber"], result


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_messenger_failover_while_subscribed(cluster: LocalCluster, ns: str, kind: str) -> None:
    result = messages_under_fault(cluster, "failover", kind=kind, messages=900, rate=900.0,
                                  namespace=ns)
    _assert_counted(result)
    assert result["send_failed"] == 0, result
    assert result["new_owner_has_subscriber"], result


def test_ask_during_a_migration_sends_the_history_script_to_the_importing_master(
    shared_cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    """Mid-migration the old owner answers ASK for the recipient's history list (already
    moved); the sender sends ASKING + the script to the importing master, once."""
    receiver_swarm = f"ask-{fe.kind}"
    slot = swarm_slot(receiver_swarm)
    source = shared_cluster.owner(slot)
    target = shared_cluster.node_for_port(
        next(p for p in shared_cluster.masters() if p != source.port))
    got: list[Any] = []
    receiver = messenger(fe, shared_cluster.url, receiver_swarm, namespace=ns)
    receiver.on_message(got.append)
    sender = messenger(fe, shared_cluster.url, f"asker-{fe.kind}", namespace=ns,
                       persist_history=True, history_ttl=60)
    sender.send(receiver_swarm, {"n": 0})
    sender.flush()
    assert wait_until(lambda: len(got) == 1, timeout=5)
    shared_cluster.begin_migration(slot, target)
    try:
        assert shared_cluster.move_keys(slot, source, target) == 1  # history:{receiver}
        sender.send(receiver_swarm, {"n": 1})
        sender.flush()
        stats = sender.stats()
        assert stats["asks"] == 1 and stats["publish_failed"] == 0, stats
    finally:
        shared_cluster.finish_migration(slot, source, target)
    # The script ran on the importing master, where the receiver was not subscribed yet:
    # not delivered live, but kept in the history; the next message shows the gap.
    assert wait_until(lambda: receiver.stats()["subscriber_reconnects"] == 1, timeout=10)
    sender.send(receiver_swarm, {"n": 2})
    sender.flush()
    assert wait_until(lambda: len(got) == 2, timeout=10), got
    assert [m.data["n"] for m in got] == [0, 2]
    assert receiver.stats()["lost"] == 1
    assert [m.data["n"] for m in receiver.stored_history()] == [0, 1, 2]


def test_eight_threads_send_across_masters_on_one_connection_per_master(
    shared_cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    import threading

    by_master = swarms_on_every_master(shared_cluster, "th")
    recipients = sorted(by_master.values())
    got: dict[str, list[Any]] = {swarm: [] for swarm in recipients}
    for swarm in recipients:
        receiver = messenger(fe, shared_cluster.url, swarm, namespace=ns)
        receiver.on_message(got[swarm].append)
        receiver.on_request(lambda m: m.data)
    sender = messenger(fe, shared_cluster.url, "th-sender", namespace=ns)
    failures: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for n in range(60):
                sender.send(recipients[n % 3], {"t": thread, "n": n})
            assert sender.request(recipients[thread % 3], thread, timeout=5).data == thread
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    sender.flush()
    assert wait_until(lambda: all(len(v) == 160 for v in got.values()), timeout=10), {
        k: len(v) for k, v in got.items()}
    for index, swarm in enumerate(recipients):
        assert sorted((m.data["t"], m.data["n"]) for m in got[swarm]) == sorted(
            (t, n) for t in range(8) for n in range(60) if n % 3 == index)
    stats = sender.stats()
    assert stats["publisher_connections"] == 3, stats
    assert stats["lost"] == stats["publish_failed"] == stats["duplicates"] == 0, stats


@pytest.mark.slow
def test_messenger_master_killed_while_subscribed(cluster: LocalCluster, ns: str) -> None:
    """Every message missed while the receiver's master is down is counted as lost; with
    the history on, the missed ones are found in the receiver's stored history."""
    result = messages_under_fault(cluster, "kill", messages=1500, rate=1000.0, namespace=ns,
                                  history=True)
    _assert_counted(result)
    assert result["publisher_reconnects"] >= 1, result
    # Replication is asynchronous: a message the dead master acknowledged in its last
    # milliseconds may be in neither the replica's history nor the handler's list. At 1,000
    # messages/s that is about one per millisecond the replica lagged; a full run on this
    # shared machine once left 6 (the bound was 3). 25 allows 25 ms of lag. Without the
    # replay from history this reads the whole burst the receiver missed while it
    # re-subscribed (1,987 and 1,991 in two recorded kill runs); the kill is bimodal, and in
    # a run where the receiver came back first a few are missed and neither bound tells.
    assert 0 <= result["missing"] - result["replayed"] <= 25, result


def test_lists_of_types_and_senders_filter_the_one_shard_channel(
    shared_cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    """On a cluster a swarm has one shard channel for every type and sender: a bus with
    ``event_types=`` and an inbox with ``from_swarms=`` subscribe it and set the rest aside,
    counted (``other_types``, ``other_swarms``)."""
    url = shared_cluster.url
    events: list[Any] = []
    bus = fe.event_bus(url, "ft", "sub", namespace=ns, event_types=["task.assign"])
    bus.subscribe("*", events.append)
    publisher = fe.event_bus(url, "ft", "pub", namespace=ns)
    for n in range(4):
        publisher.publish("task.assign" if n % 2 else "state.update", n)
    publisher.flush()
    assert wait_until(lambda: bus.stats()["other_types"] == 2 and len(events) == 2), (
        events, bus.stats()["other_types"])
    assert [e.data for e in events] == [1, 3]
    letters: list[Any] = []
    inbox = messenger(fe, url, "fm", namespace=ns, from_swarms=["fa"])
    inbox.on_message(letters.append)
    for sender in ("fa", "fb", "fa"):
        out = messenger(fe, url, sender, namespace=ns)
        out.send("fm", sender)
        out.flush()
    assert wait_until(lambda: len(letters) == 2 and inbox.stats()["other_swarms"] == 1), (
        letters, inbox.stats()["other_swarms"])
    assert {m.sender for m in letters} == {"fa"}
