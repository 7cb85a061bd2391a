"""A bus told the only event types it receives (``event_types=``), and an inbox told the
only swarms that write to it (``from_swarms=``), subscribe exact channels (SUBSCRIBE), not
patterns: Redis matches every PUBLISH against every pattern on the server, one exact
channel costs it one lookup. They receive what they were told and nothing else, once, on
their own connections and on shared ones, across a lost connection (sync and asyncio alike,
on a real server)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from frontends import Frontend, run_together, wait_until

from pytest_cfn import InvalidIdError, InvalidOptionError

TYPES = ["state.update", "task.assign"]


def _target(view: Any) -> Any:
    return getattr(view, "_target", view)


def _subscriptions(raw: redis.Redis, name: str) -> tuple[int, int]:
    """(exact channels, patterns) the connection called ``name`` holds."""
    for client in raw.client_list():
        if client["name"] == name:
            return int(client["sub"]), int(client["psub"])
    raise AssertionError(f"no connection named {name}: {[c['name'] for c in raw.client_list()]}")


def test_a_bus_with_event_types_subscribes_them_exactly_and_gets_only_them(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    got: list[Any] = []
    bus = fe.event_bus(redis_server.url, "x1", "sub", namespace=ns, event_types=TYPES)
    bus.subscribe("*", got.append)
    assert _subscriptions(raw, f"cfn:events-sub:x1:sub@{ns}") == (2, 0)
    assert sorted(raw.pubsub_channels(f"{ns}:*")) == sorted(
        f"{ns}:event:x1:{t}".encode() for t in TYPES
    )
    publisher = fe.event_bus(redis_server.url, "x1", "pub", namespace=ns)
    for n in range(10):
        publisher.publish(TYPES[n % 2], n)
    publisher.publish("state.update", "critical", 9)
    publisher.flush()
    assert wait_until(lambda: len(got) == 11), len(got)
    assert {e.type for e in got} == set(TYPES)
    assert sorted(e.data for e in got if e.data != "critical") == list(range(10))
    stats = bus.stats()
    assert stats["lost"] == 0 and stats["duplicates"] == 0, stats
    assert bus.event_types == frozenset(TYPES)


def test_an_event_of_another_type_never_arrives_and_shows_as_lost(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    """A publisher numbers its events over every type: the one the bus did not subscribe
    leaves a gap, counted as lost (never hidden), as the README says."""
    got: list[Any] = []
    bus = fe.event_bus(redis_server.url, "x3", "sub", namespace=ns, event_types=TYPES)
    bus.subscribe("*", got.append)
    publisher = fe.event_bus(redis_server.url, "x3", "pub", namespace=ns)
    publisher.publish("task.assign", 1)
    publisher.publish("other.kind", 2)
    publisher.publish("task.assign", 3)
    publisher.flush()
    assert wait_until(lambda: len(got) == 2), got
    assert [e.data for e in got] == [1, 3]
    assert wait_until(lambda: bus.stats()["lost"] == 1), bus.stats()["lost"]


def test_handlers_are_still_matched_among_the_types(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    tasks: list[Any] = []
    everything: list[Any] = []
    bus = fe.event_bus(redis_server.url, "x2", "sub", namespace=ns, event_types=TYPES)
    bus.subscribe("task.*", tasks.append)
    bus.subscribe("*", everything.append)
    publisher = fe.event_bus(redis_server.url, "x2", "pub", namespace=ns)
    for event_type in ["task.assign", "state.update", "task.other", "task.assign"]:
        publisher.publish(event_type, event_type)
    publisher.flush()
    assert wait_until(lambda: len(everything) == 3), everything
    assert [e.type for e in tasks] == ["task.assign", "task.assign"]


def test_an_inbox_with_from_swarms_gets_those_swarms_only(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    letters: list[Any] = []
    inbox = fe.make("Messenger", redis_server.url, "m0", "sub", namespace=ns,
                    from_swarms=["m1", "m2"])
    inbox.on_message(letters.append)
    assert _subscriptions(raw, f"cfn:messages-sub:m0:sub@{ns}") == (2, 0)
    senders = {s: fe.make("Messenger", redis_server.url, s, "pub", namespace=ns)
               for s in ("m1", "m2", "m3")}
    for n in range(5):
        for sender in senders.values():
            sender.send("m0", n)
    for sender in senders.values():
        sender.flush()
    assert wait_until(lambda: len(letters) == 10), letters
    assert {m.sender for m in letters} == {"m1", "m2"}
    assert inbox.stats()["lost"] == 0


def test_a_request_from_a_listed_swarm_is_answered(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    server = fe.make("Messenger", redis_server.url, "q0", "srv", namespace=ns,
                     from_swarms=["q1"])
    server.on_request(lambda message: {"echo": message.data})
    client = fe.make("Messenger", redis_server.url, "q1", "cli", namespace=ns,
                     from_swarms=["q0"])
    assert client.request("q0", "ping", timeout=5.0).data == {"echo": "ping"}


def test_exact_and_pattern_buses_on_one_shared_connection_each_get_one_copy(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    share = fe.make("SharedConnections", redis_server.url, "hx", namespace=ns)
    shared = _target(share)
    exact: list[Any] = []
    every: list[Any] = []
    fe.event_bus(redis_server.url, "y1", "a", namespace=ns, share=shared,
                 event_types=["task.assign"]).subscribe("*", exact.append)
    fe.event_bus(redis_server.url, "y1", "b", namespace=ns, share=shared).subscribe(
        "*", every.append)
    assert _subscriptions(raw, f"cfn:shared-sub:all:hx@{ns}") == (1, 1)
    publisher = fe.event_bus(redis_server.url, "y1", "pub", namespace=ns)
    for n in range(6):
        publisher.publish("task.assign" if n % 2 else "state.update", n)
    publisher.flush()
    assert wait_until(lambda: len(every) == 6 and len(exact) == 3), (every, exact)
    assert sorted(e.data for e in exact) == [1, 3, 5]
    assert sorted(e.data for e in every) == list(range(6))


@pytest.mark.parametrize("shared", [False, True], ids=["own", "shared"])
def test_exact_channels_are_subscribed_again_after_a_lost_connection(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str, shared: bool
) -> None:
    extra: dict[str, Any] = {}
    if shared:
        extra["share"] = _target(fe.make("SharedConnections", redis_server.url, "hr",
                                         namespace=ns))
    reconnects: list[int] = []
    got: list[Any] = []
    bus = fe.event_bus(redis_server.url, "z1", "sub", namespace=ns, event_types=TYPES,
                       on_reconnect=reconnects.append, **extra)
    bus.subscribe("*", got.append)
    raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert wait_until(lambda: len(reconnects) == 1, timeout=10), reconnects
    publisher = fe.event_bus(redis_server.url, "z1", "pub", namespace=ns)
    for n in range(4):
        publisher.publish(TYPES[n % 2], n)
    publisher.flush()
    assert wait_until(lambda: len(got) == 4, timeout=10), got
    assert sorted(e.data for e in got) == list(range(4))


@pytest.mark.parametrize(
    ("kind", "setting", "value", "error"),
    [
        ("EventBus", "event_types", "task.assign", InvalidOptionError),
        ("EventBus", "event_types", [], InvalidOptionError),
        ("EventBus", "event_types", ["task.*"], InvalidIdError),
        ("Messenger", "from_swarms", "s1", InvalidOptionError),
        ("Messenger", "from_swarms", [], InvalidOptionError),
        ("Messenger", "from_swarms", ["s*"], InvalidIdError),
    ],
)
def test_a_bad_list_is_refused_with_what_is_allowed(
    fe: Frontend, redis_server: Any, ns: str, kind: str, setting: str, value: Any,
    error: type[Exception],
) -> None:
    with pytest.raises(error) as caught:
        fe.make(kind, redis_server.url, "s0", "a", namespace=ns, **{setting: value})
    # what was wrong: the setting named, or the id with its glob character
    expected = "*" if error is InvalidIdError else setting
    assert expected in str(caught.value), caught.value


def test_a_shared_exact_bus_gets_a_publishers_types_in_the_order_they_were_sent(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    """Its channels are one per type, but a chunk goes to the bus in one call in the order
    it came: one publisher's events never arrive regrouped by type."""
    share = _target(fe.make("SharedConnections", redis_server.url, "ho", namespace=ns))
    got: list[Any] = []
    bus = fe.event_bus(redis_server.url, "o1", "sub", namespace=ns, share=share,
                       event_types=TYPES)
    bus.subscribe("*", got.append)
    publisher = fe.event_bus(redis_server.url, "o1", "pub", namespace=ns)
    with publisher.batch():
        for n in range(200):
            publisher.publish(TYPES[n % 2], n)
    publisher.flush()
    assert wait_until(lambda: len(got) == 200), len(got)
    assert [e.data for e in got] == list(range(200))
    assert bus.stats()["lost"] == 0


def test_eight_threads_subscribing_at_once_share_one_connection_and_every_channel(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    """First use from eight threads: each subscribe() returns once every listed channel is
    confirmed (an event published at once reaches every handler), on one connection."""
    types = [f"t{n}" for n in range(6)]
    bus = fe.event_bus(redis_server.url, "w1", "sub", namespace=ns, event_types=types)
    got: list[list[Any]] = [[] for _ in range(8)]
    assert run_together([lambda g=g: bus.subscribe("*", g.append) for g in got]) == []
    assert _subscriptions(raw, f"cfn:events-sub:w1:sub@{ns}") == (6, 0)
    publisher = fe.event_bus(redis_server.url, "w1", "pub", namespace=ns)
    for event_type in types:
        publisher.publish(event_type, event_type)
    publisher.flush()
    assert wait_until(lambda: all(len(g) == 6 for g in got)), [len(g) for g in got]
    assert all(sorted(e.data for e in g) == types for g in got)


def test_a_critical_event_of_another_type_replayed_by_a_catch_up_is_set_aside_and_counted(
    fe: Frontend, redis_server: Any, raw: redis.Redis, ns: str
) -> None:
    """Published while the subscriber was away, a priority 9 event of an unlisted type comes
    back through the swarm's stream: not handed on, counted in ``other_types``, not lost."""
    got: list[Any] = []
    reconnects: list[int] = []
    bus = fe.event_bus(redis_server.url, "cu", "sub", namespace=ns,
                       event_types=["task.assign"], on_reconnect=reconnects.append)
    bus.subscribe("*", got.append)
    publisher = fe.event_bus(redis_server.url, "cu", "pub", namespace=ns)
    publisher.publish("task.assign", 1)
    publisher.flush()
    assert wait_until(lambda: len(got) == 1), got
    raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    publisher.publish("other.kind", "away", 9)
    publisher.publish("task.assign", "away too", 9)
    publisher.flush()
    assert wait_until(lambda: len(reconnects) == 1, timeout=10), reconnects
    assert wait_until(lambda: bus.stats()["other_types"] == 1 and len(got) == 2, timeout=10), (
        got, bus.stats()["other_types"])
    assert [e.data for e in got] == [1, "away too"]
    assert bus.stats()["lost"] == 0
