"""Many buses of one process on one publisher and one subscriber connection
(``SharedConnections``): each bus still sees only its own swarm's traffic, a bus that
closes leaves the others running, and a lost connection is caught up on every bus
(sync and asyncio alike, on a real server)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import BusClosedError, InvalidOptionError

SWARMS = 6


def _target(view: Any) -> Any:
    """The object behind the async front end's blocking view (to pass as ``share=``)."""
    return getattr(view, "_target", view)


def _names(raw: redis.Redis, ns: str) -> list[str]:
    return sorted(c["name"] for c in raw.client_list() if c["name"].endswith(f"@{ns}"))


def test_each_bus_gets_its_own_swarm_only_over_two_connections(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    share = fe.make("SharedConnections", redis_server.url, "host1", namespace=ns)
    shared = _target(share)
    assert share.usable() is True, "one server (not a cluster node): buses can share"
    got: dict[int, list[Any]] = {i: [] for i in range(SWARMS)}
    letters: dict[int, list[Any]] = {i: [] for i in range(SWARMS)}
    buses = [fe.event_bus(redis_server.url, f"s{i}", "agent", namespace=ns, share=shared)
             for i in range(SWARMS)]
    messengers = [fe.make("Messenger", redis_server.url, f"s{i}", "agent", namespace=ns,
                          share=shared) for i in range(SWARMS)]
    for i, (bus, messenger) in enumerate(zip(buses, messengers, strict=True)):
        bus.subscribe("*", got[i].append)
        messenger.on_message(letters[i].append)
    with share.batch():
        for i, bus in enumerate(buses):
            for n in range(20):
                bus.publish("task.step", {"swarm": i, "n": n}, 9 if n % 4 == 0 else 5)
        for i, messenger in enumerate(messengers):
            messenger.send(f"s{(i + 1) % SWARMS}", {"from": i})
    share.flush()
    assert wait_until(lambda: all(len(got[i]) == 20 and len(letters[i]) == 1
                                  for i in range(SWARMS)))
    for i in range(SWARMS):
        # (within one read, priority 9 is handed on first: compare as a set of events)
        assert sorted(e.data["n"] for e in got[i]) == list(range(20))
        assert {e.data["swarm"] for e in got[i]} == {i}
        assert letters[i][0].data == {"from": (i - 1) % SWARMS}
    names = _names(raw, ns)
    assert names == sorted([f"cfn:shared-pub:all:host1@{ns}", f"cfn:shared-sub:all:host1@{ns}",
                            f"cfn:catchup-call:all:host1@{ns}"]), names
    stats = buses[0].stats()
    assert stats["shared_connections"] is True and stats["connections"] == 0
    assert stats["delivered"] == 20 and stats["lost"] == 0
    totals = share.stats()
    assert totals["buses"] == 2 * SWARMS and totals["patterns"] == 2 * SWARMS
    assert totals["connections"] == 3 and totals["unrouted"] == 0
    assert totals["messages"] == 20 * SWARMS + SWARMS


def test_a_closed_bus_leaves_the_others_running(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    share = fe.make("SharedConnections", redis_server.url, "host2", namespace=ns)
    shared = _target(share)
    got: dict[str, list[Any]] = {"a": [], "b": []}
    bus_a = fe.event_bus(redis_server.url, "a", "x", namespace=ns, share=shared)
    bus_b = fe.event_bus(redis_server.url, "b", "x", namespace=ns, share=shared)
    bus_a.subscribe("*", got["a"].append)
    bus_b.subscribe("*", got["b"].append)
    before = raw.execute_command("PUBSUB", "NUMPAT")
    bus_a.close()
    assert wait_until(lambda: raw.execute_command("PUBSUB", "NUMPAT") == before - 1)
    with pytest.raises(BusClosedError):
        bus_a.publish("t", 1)
    publisher = fe.event_bus(redis_server.url, "a", "p", namespace=ns)
    publisher.publish("t", "to a")
    bus_b.publish("t", "to b")
    publisher.flush()
    share.flush()
    assert wait_until(lambda: len(got["b"]) == 1)
    assert got["a"] == [], "a closed bus gets nothing more"
    assert share.stats()["buses"] == 1
    share.close()
    with pytest.raises(BusClosedError):
        fe.event_bus(redis_server.url, "c", "x", namespace=ns, share=shared)
    assert _names(raw, ns) == [f"cfn:events-pub:a:p@{ns}"]


def test_a_lost_subscriber_connection_is_caught_up_on_every_bus(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    share = fe.make("SharedConnections", redis_server.url, "host3", namespace=ns)
    shared = _target(share)
    reconnects: list[int] = []
    got: dict[int, list[Any]] = {i: [] for i in range(3)}
    buses = [fe.event_bus(redis_server.url, f"r{i}", "sub", namespace=ns, share=shared,
                          on_reconnect=reconnects.append) for i in range(3)]
    for i, bus in enumerate(buses):
        bus.subscribe("*", got[i].append)
    publishers = [fe.event_bus(redis_server.url, f"r{i}", "pub", namespace=ns)
                  for i in range(3)]
    for pub in publishers:
        pub.publish("alert", "before", 9)
        pub.flush()
    assert wait_until(lambda: all(len(got[i]) == 1 for i in range(3)))
    sub_name = f"cfn:shared-sub:all:host3@{ns}"
    raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    for pub in publishers:  # published while the shared subscriber is away
        for n in range(5):
            pub.publish("alert", n, 9)
        pub.flush()
    assert wait_until(lambda: len(reconnects) == 3, timeout=10), reconnects
    assert wait_until(lambda: all(len(got[i]) == 6 for i in range(3)), timeout=10), got
    assert sub_name in _names(raw, ns)
    for i, bus in enumerate(buses):
        assert sorted(e.data for e in got[i][1:]) == list(range(5))
        assert bus.stats()["duplicates"] == 0
        assert bus.stats()["subscriber_reconnects"] == 1, "the shared connection's, as it is"
    assert share.stats()["subscriber_reconnects"] == 1


def test_a_failing_handler_stays_with_its_own_bus(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    share = fe.make("SharedConnections", redis_server.url, "host4", namespace=ns)
    shared = _target(share)
    good: list[Any] = []

    def explode(event: Any) -> None:
        raise RuntimeError("handler bug")

    bad_bus = fe.event_bus(redis_server.url, "bad", "x", namespace=ns, share=shared)
    good_bus = fe.event_bus(redis_server.url, "good", "x", namespace=ns, share=shared)
    bad_bus.subscribe("*", explode)
    good_bus.subscribe("*", good.append)
    with share.batch():
        for n in range(10):
            bad_bus.publish("t", n)
            good_bus.publish("t", n)
    share.flush()
    assert wait_until(lambda: len(good) == 10 and bad_bus.stats()["handler_errors"] == 10)
    assert [e.data for e in good] == list(range(10))
    assert good_bus.stats()["handler_errors"] == 0


def test_buses_for_another_server_or_eight_threads_at_once(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    share = fe.make("SharedConnections", redis_server.url, "host5", namespace=ns)
    shared = _target(share)
    with pytest.raises(InvalidOptionError, match=r"share\.address"):
        fe.event_bus("redis://127.0.0.1:1", "s", "x", namespace=ns, share=shared)
    got: dict[int, list[Any]] = {i: [] for i in range(8)}
    errors: list[BaseException] = []

    def join(i: int) -> None:
        try:
            bus = fe.event_bus(redis_server.url, f"t{i}", "x", namespace=ns, share=shared)
            bus.subscribe("*", got[i].append)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert [n for n in _names(raw, ns) if "-sub:" in n] == [f"cfn:shared-sub:all:host5@{ns}"]
    publisher = fe.event_bus(redis_server.url, "t3", "p", namespace=ns)
    publisher.publish("t", "hello")
    publisher.flush()
    assert wait_until(lambda: len(got[3]) == 1)
    assert all(not got[i] for i in range(8) if i != 3)


def test_large_chunks_for_many_buses_arrive_whole_and_in_order(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    """The shared reader hands a large chunk on in slices (yielding between them after
    0.5 ms): every event still reaches its own bus, each bus in publish order."""
    share = fe.make("SharedConnections", redis_server.url, "slices", namespace=ns)
    shared = _target(share)
    buses = [fe.event_bus(redis_server.url, f"s{i}", "agent", namespace=ns, share=shared)
             for i in range(3)]
    got: dict[int, list[int]] = {i: [] for i in range(3)}
    for i, bus in enumerate(buses):
        bus.subscribe("*", lambda e, i=i: got[i].append(e.data["n"]))
    with share.batch():
        for n in range(2000):  # hundreds per chunk and bus: many slices of 64
            for bus in buses:
                bus.publish("task.step", {"n": n}, 5)
    share.flush()
    assert wait_until(lambda: all(len(got[i]) == 2000 for i in range(3)), timeout=20)
    assert all(got[i] == list(range(2000)) for i in range(3))
    assert all(bus.stats()["lost"] == 0 and bus.stats()["duplicates"] == 0 for bus in buses)
