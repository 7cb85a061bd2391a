"""Channel and key naming is injective, and every id is checked before any IO.

The sans-IO half tries every combination of namespaces, swarms and types from a
set chosen to collide (kinds as ids, prefixes of each other, dots and dashes) and
checks with Redis's glob rules that a subscription pattern reaches exactly its
own channels. The real-server half shows the collision that reserved
namespaces prevent, and that a bad id never opens a connection.
"""

from __future__ import annotations

import itertools
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import InvalidIdError
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.ids import RESERVED_NAMESPACES, validate_namespace
from pytest_cfn.pytest_support.namespaces import namespace_match

NAMESPACES = ["", "a", "a.b", "a-b", "ev", "events", "event-ns", "message.x", "swarm1", "e"]
SWARMS = ["a", "a.b", "b", "event", "message", "critical", "swarm", "history", "ev", "e"]
TYPES = ["t", "event", "message", "a", "b.c"]


def glob(pattern: str, name: str) -> bool:
    """Redis's glob: ids hold no ``?``, ``[`` or ``\\``, so only ``*`` matters, as in fnmatch."""
    assert not set(pattern) & set("?[]\\")
    return fnmatchcase(name, pattern)


@pytest.mark.parametrize("namespace", sorted(RESERVED_NAMESPACES))
def test_namespaces_equal_to_a_kind_are_refused(namespace: str) -> None:
    with pytest.raises(InvalidIdError, match=f"namespace {namespace!r} is reserved"):
        validate_namespace(namespace)
    with pytest.raises(InvalidIdError, match="reserved"):
        ChannelNames(namespace)


def test_event_patterns_reach_exactly_their_own_swarm_and_namespace() -> None:
    types = TYPES
    channels = {
        (ns, swarm, t): ChannelNames(ns).event(swarm, t)
        for ns, swarm, t in itertools.product(NAMESPACES, SWARMS, types)
    }
    assert len(set(channels.values())) == len(channels), "two combinations share a channel"
    for ns, swarm in itertools.product(NAMESPACES, SWARMS):
        pattern = ChannelNames(ns).event_pattern(swarm)
        reached = {key for key, name in channels.items() if glob(pattern, name)}
        assert reached == {(ns, swarm, t) for t in types}, pattern
        for name in channels.values():
            assert glob(pattern, name) == (ChannelNames(ns).parse_event(name) is not None
                                           and name.startswith(pattern[:-1]))


def test_inbox_patterns_reach_exactly_their_own_messages_and_no_events() -> None:
    names = ChannelNames
    messages = {
        (ns, f, t): names(ns).message(f, t)
        for ns, f, t in itertools.product(NAMESPACES, SWARMS, SWARMS)
    }
    events = [names(ns).event(s, t) for ns, s, t in itertools.product(NAMESPACES, SWARMS, ["t"])]
    assert len(set(messages.values())) == len(messages)
    assert not set(messages.values()) & set(events)
    for ns, to in itertools.product(NAMESPACES, SWARMS):
        pattern = names(ns).inbox_pattern(to)
        reached = {key for key, name in messages.items() if glob(pattern, name)}
        assert reached == {(ns, f, to) for f in SWARMS}, pattern
        assert not [e for e in events if glob(pattern, e)]


def test_key_patterns_reach_exactly_their_own_namespace() -> None:
    kinds = sorted(RESERVED_NAMESPACES)
    keys = {
        (ns, kind, swarm): ChannelNames(ns).key(kind, swarm)
        for ns, kind, swarm in itertools.product(NAMESPACES, kinds, SWARMS)
    }
    assert len(set(keys.values())) == len(keys)
    for ns in NAMESPACES:
        for kind in kinds:
            pattern = ChannelNames(ns).key_pattern(kind, "*")
            reached = {k for k, name in keys.items() if glob(pattern, name)}
            assert reached == {(ns, kind, s) for s in SWARMS}, pattern
        if ns:  # the plugin's teardown deletes exactly one namespace's keys
            reached = {k for k, name in keys.items() if glob(namespace_match(ns), name)}
            assert reached == {k for k in keys if k[0] == ns}


def test_every_key_kind_the_library_uses_is_reserved() -> None:
    source = Path(__file__).parent.parent / "pytest_cfn"
    used: set[str] = set()
    for path in source.rglob("*.py"):
        used |= set(re.findall(r"\.key(?:_pattern)?\(\s*\"([^\"]+)\"", path.read_text()))
    assert used, "no key kinds found: the scan is broken"
    assert used <= RESERVED_NAMESPACES, used - RESERVED_NAMESPACES


@pytest.mark.parametrize("kind", ["event", "message"])
def test_namespace_named_like_a_kind_cannot_reach_the_default_namespace(
        fe: Frontend, fresh_redis_server: Any, kind: str) -> None:
    url = fresh_redis_server.url
    got: list[Any] = []
    if kind == "event":
        listener = fe.event_bus(url, "event", "listener")
        listener.subscribe("*", got.append)
    else:
        listener = fe.make("Messenger", url, "b", "listener")
        listener.on_message(got.append)
    with pytest.raises(InvalidIdError, match="reserved"):
        if kind == "event":
            talker = fe.event_bus(url, "s", "talker", namespace=kind)
            talker.publish("t", 1)
        else:
            talker = fe.make("Messenger", url, "a", "talker", namespace=kind)
            talker.send("b", 1)
        talker.flush()
    # the nearest allowed namespaces stay apart
    for namespace in (f"{kind}s", f"{kind}-ns", kind[:2]):
        if kind == "event":
            other = fe.event_bus(url, "s", "talker", namespace=namespace)
            other.publish("t", 1)
        else:
            other = fe.make("Messenger", url, "a", "talker", namespace=namespace)
            other.send("b", 1)
        other.flush()
    client = redis.Redis.from_url(url)
    try:
        # positive control: the default namespace's own channel does reach the listener
        own = "event:event:t" if kind == "event" else "message:a:b"
        assert client.publish(own, b"not an envelope") == 1
    finally:
        client.close()
    assert wait_until(lambda: listener.stats()["malformed"] == 1)
    assert got == []
    assert [m.channel for m in listener.malformed] == [own]


# Failure 8: ids are validated before any IO.

BAD_IDS = ["a:b", "*", "", "a b", "x" * 129]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_every_api_taking_an_id_refuses_a_bad_one_before_connecting(
        fe: Frontend, unreachable_url: str, bad: str) -> None:
    messenger = fe.make("Messenger", unreachable_url, "a", "coder", connect_timeout=0.5)
    bus = fe.event_bus(unreachable_url, "s1", "coder", connect_timeout=0.5)
    state = fe.make("SwarmState", unreachable_url, timeout=0.5)
    calls = [
        lambda: messenger.request(bad, {"q": 1}, timeout=1),
        lambda: messenger.send(bad, 1),
        lambda: messenger.publisher_id(bad),
        lambda: bus.publish(bad, 1),
        lambda: bus.publish(bad, 1, priority=9),
        lambda: bus.subscribe(bad + ":x", print),
        lambda: state.save(bad, phase="x"),
        lambda: state.load(bad),
        lambda: state.heartbeat(bad),
        lambda: state.checkpoint(bad),
        lambda: state.checkpoints(bad),
        lambda: state.recover(bad),
        lambda: state.finish(bad),
        lambda: state.delete(bad),
        lambda: state.set_agent("s1", bad, "working"),
        lambda: state.start_heartbeat(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidIdError):
            call()
    assert messenger.stats()["connections"] == 0
    assert bus.stats()["connections"] == 0


def test_request_to_a_bad_id_opens_no_connection(fe: Frontend, redis_server: Any, ns: str,
                                                 raw: redis.Redis) -> None:
    def ours() -> int:
        return sum(1 for c in raw.client_list() if c["name"].endswith("@" + ns))

    messenger = fe.make("Messenger", redis_server.url, "a", "coder", namespace=ns)
    with pytest.raises(InvalidIdError, match="swarm id 'b:c' contains ':'"):
        messenger.request("b:c", {"q": 1}, timeout=1)
    with pytest.raises(InvalidIdError):
        messenger.request("*", {"q": 1}, timeout=1)
    assert ours() == 0
    assert messenger.stats()["connections"] == 0
