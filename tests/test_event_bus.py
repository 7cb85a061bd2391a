"""Event Bus behaviour against a real redis-server, sync and asyncio front ends alike."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import msgspec
import pytest
import redis
from frontends import Frontend, gated_handler, wait_until

from pytest_cfn import (
    CircuitOpenError,
    Envelope,
    InvalidIdError,
    InvalidOptionError,
    MessageTooLargeError,
    ServerUnavailableError,
    ThrottledError,
)


def raw_envelope(seq: int, *, swarm: str = "s1", type_: str = "agent.spawn", publisher: str = "p1",
                 priority: int = 5) -> bytes:
    env = Envelope(id=f"{publisher}-{seq}", swarm=swarm, source="raw", type=type_,
                   priority=priority, seq=seq, ts=time.time_ns(), publisher=publisher,
                   data={"n": seq})
    return msgspec.json.encode(env)


def our_clients(raw: redis.Redis, ns: str) -> list[str]:
    return [c["name"] for c in raw.client_list() if c["name"].endswith("@" + ns)]


def test_publish_reaches_handler_with_every_envelope_field(fe: Frontend, redis_server: Any,
                                                            ns: str) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "swarm-1", "reviewer-1", namespace=ns)
    pub = fe.event_bus(redis_server.url, "swarm-1", "coder-1", namespace=ns)
    sub.subscribe("agent.*", got.append)
    message_id = pub.publish("agent.spawn", {"agent": "coder-1"}, priority=7)
    assert pub.flush() == 1
    assert wait_until(lambda: len(got) == 1)
    event = got[0]
    assert (event.type, event.data, event.priority) == ("agent.spawn", {"agent": "coder-1"}, 7)
    assert (event.swarm, event.source, event.id, event.seq) == ("swarm-1", "coder-1", message_id, 1)
    assert abs(event.ts - time.time_ns()) < 5e9
    assert sub.stats()["delivered"] == 1
    assert pub.stats()["published"] == 1


def test_pattern_matching_and_one_subscription_per_swarm(fe: Frontend, redis_server: Any, ns: str,
                                                          raw: redis.Redis) -> None:
    agent_events: list[str] = []
    everything: list[str] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    sub.subscribe("agent.*", lambda e: agent_events.append(e.type))
    sub.subscribe("*", lambda e: everything.append(e.type))
    pub = fe.event_bus(redis_server.url, "s1", "a2", namespace=ns)
    for event_type in ("agent.spawn", "task.assign", "agent.complete"):
        pub.publish(event_type, None)
    pub.flush()
    assert wait_until(lambda: len(everything) == 3)
    assert agent_events == ["agent.spawn", "agent.complete"]
    clients = {c["name"]: c for c in raw.client_list() if c["name"].endswith("@" + ns)}
    subscriber = clients[f"cfn:events-sub:s1:a1@{ns}"]
    assert subscriber["psub"] == "1", "two handlers share one PSUBSCRIBE"
    sub.publish("agent.spawn", None)
    sub.flush()
    mine = sorted(n for n in our_clients(raw, ns) if ":s1:a1@" in n)
    assert mine == [f"cfn:events-pub:s1:a1@{ns}", f"cfn:events-sub:s1:a1@{ns}"]
    assert sub.stats()["connections"] == 2


def test_swarms_and_namespaces_do_not_see_each_other(fe: Frontend, redis_server: Any,
                                                     ns: str) -> None:
    got: dict[str, list[str]] = {"a": [], "a.b": [], "other-ns": []}
    fe.event_bus(redis_server.url, "a", "x", namespace=ns).subscribe(
        "*", lambda e: got["a"].append(e.swarm))
    fe.event_bus(redis_server.url, "a.b", "x", namespace=ns).subscribe(
        "*", lambda e: got["a.b"].append(e.swarm))
    fe.event_bus(redis_server.url, "a", "x", namespace=ns + "z").subscribe(
        "*", lambda e: got["other-ns"].append(e.swarm))
    pub = fe.event_bus(redis_server.url, "a.b", "y", namespace=ns)
    pub.publish("agent.spawn", 1)
    pub.flush()
    assert wait_until(lambda: got["a.b"] == ["a.b"])
    time.sleep(0.2)
    assert got["a"] == [] and got["other-ns"] == []


BAD_IDS = ["*", "a:b", "", "a b", "s[1]", "x?", "back\\slash", "é", "x" * 129]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_swarm_ids_are_refused_before_touching_redis(fe: Frontend, redis_server: Any, ns: str,
                                                         raw: redis.Redis, bad: str) -> None:
    with pytest.raises(InvalidIdError) as info:
        fe.event_bus(redis_server.url, bad, "a1", namespace=ns)
    message = str(info.value)
    assert "swarm id" in message
    assert "letters, digits" in message or "at most 128" in message
    assert our_clients(raw, ns) == []


def test_bad_agent_type_pattern_and_priority_are_refused(fe: Frontend, redis_server: Any,
                                                         ns: str) -> None:
    with pytest.raises(InvalidIdError, match="agent id 'a:1' contains ':'"):
        fe.event_bus(redis_server.url, "s1", "a:1", namespace=ns)
    bus = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    with pytest.raises(InvalidIdError, match=r"event type 'agent\.\*' contains the glob"):
        bus.publish("agent.*", None)
    with pytest.raises(InvalidIdError, match=r"pattern 'agent:\*' contains ':'"):
        bus.subscribe("agent:*", print)
    for priority in (0, 10, "5", 5.0, True):
        with pytest.raises(InvalidOptionError, match="priorities are integers 1 \\(low\\) to 9"):
            bus.publish("agent.spawn", None, priority=priority)
    with pytest.raises(InvalidOptionError, match="cannot be encoded as json"):
        bus.publish("agent.spawn", {"x": object()})
    assert bus.stats()["published"] == 0


def test_oversized_message_is_refused(fe: Frontend, redis_server: Any, ns: str) -> None:
    bus = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns, max_message_bytes=1000)
    with pytest.raises(MessageTooLargeError, match="limit is 1000 bytes"):
        bus.publish("agent.spawn", "x" * 2000)
    bus.publish("agent.spawn", "x" * 100)
    assert bus.flush() == 1


def test_received_events_are_dispatched_in_priority_order(fe: Frontend, redis_server: Any,
                                                           ns: str) -> None:
    gate = threading.Event()
    order: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    sub.subscribe("*", gated_handler(fe, gate, lambda e: order.append(e.priority)))
    pub = fe.event_bus(redis_server.url, "s1", "a2", namespace=ns)
    pub.publish("agent.first", None, priority=5)
    pub.flush()
    assert wait_until(lambda: sub.stats()["queued"] == 0 and sub.stats()["received"] == 1)
    for priority in (1, 3, 9, 2, 8, 7, 4, 6):
        pub.publish("agent.spawn", None, priority=priority)
    pub.flush()
    assert wait_until(lambda: sub.stats()["received"] == 9)
    gate.set()
    assert wait_until(lambda: len(order) == 9)
    assert order == [5, 9, 8, 7, 6, 4, 3, 2, 1]


def test_full_queue_drops_lowest_priority_first_and_never_critical(fe: Frontend, redis_server: Any,
                                                                   ns: str) -> None:
    gate = threading.Event()
    seen: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns, queue_size=10)
    sub.subscribe("*", gated_handler(fe, gate, lambda e: seen.append(e.priority)))
    pub = fe.event_bus(redis_server.url, "s1", "a2", namespace=ns)
    pub.publish("agent.first", None, priority=5)
    pub.flush()
    assert wait_until(lambda: sub.stats()["received"] == 1 and sub.stats()["queued"] == 0)
    with pub.batch():
        for _ in range(20):
            pub.publish("agent.low", None, priority=1)
        for _ in range(5):
            pub.publish("agent.mid", None, priority=4)
        for _ in range(12):
            pub.publish("agent.critical", None, priority=9)
    pub.flush()
    assert wait_until(lambda: sub.stats()["received"] == 38)
    gate.set()
    assert wait_until(lambda: sub.stats()["delivered"] == len(seen) and sub.stats()["queued"] == 0)
    stats = sub.stats()
    assert seen.count(9) == 12, "critical events are never dropped"
    assert seen.count(1) == 0
    assert stats["dropped_by_priority"][1] == 20
    assert stats["dropped"] == 37 - (len(seen) - 1)
    assert stats["lost"] == 0


def test_malformed_messages_are_counted_and_set_aside(fe: Frontend, redis_server: Any, ns: str,
                                                      raw: redis.Redis) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    sub.subscribe("*", got.append)
    channel = f"{ns}:event:s1:agent.spawn"
    raw.publish(channel, b"not json at all")
    raw.publish(channel, b'{"id": "x"}')
    raw.publish(channel, raw_envelope(1, priority=5).replace(b'"priority":5', b'"priority":42'))
    raw.publish(f"{ns}:event:s1:task.assign", raw_envelope(1))
    raw.publish(channel, raw_envelope(1))
    assert wait_until(lambda: len(got) == 1)
    assert wait_until(lambda: sub.stats()["malformed"] == 4)
    reasons = [m.reason for m in sub.malformed]
    assert any("not a valid json envelope" in r for r in reasons)
    assert any("channel says type 'task.assign'" in r for r in reasons)
    assert sub.malformed[0].payload == b"not json at all"
    assert got[0].seq == 1


def test_duplicates_are_dropped_and_gaps_counted_as_lost(fe: Frontend, redis_server: Any, ns: str,
                                                        raw: redis.Redis) -> None:
    got: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    sub.subscribe("*", lambda e: got.append(e.seq))
    channel = f"{ns}:event:s1:agent.spawn"
    for seq in (1, 2, 2, 5, 3, 6):
        raw.publish(channel, raw_envelope(seq))
    assert wait_until(lambda: len(got) == 5)
    stats = sub.stats()
    assert got == [1, 2, 5, 3, 6]
    assert (stats["duplicates"], stats["lost"], stats["reordered"]) == (1, 1, 1)


def test_handler_errors_are_counted_and_the_subscriber_keeps_going(fe: Frontend, redis_server: Any,
                                                                   ns: str) -> None:
    got: list[int] = []

    def handler(event: Any) -> None:
        if event.data == 1:
            raise RuntimeError("boom")
        got.append(event.data)

    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    sub.subscribe("*", handler)
    pub = fe.event_bus(redis_server.url, "s1", "a2", namespace=ns)
    for n in (1, 2, 3):
        pub.publish("agent.spawn", n)
    pub.flush()
    assert wait_until(lambda: got == [2, 3])
    assert sub.stats()["handler_errors"] == 1


def test_route_cache_counts_hits_and_misses_honestly(fe: Frontend, redis_server: Any,
                                                     ns: str) -> None:
    bus = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    types = [f"type.{i}" for i in range(5)]
    for i in range(100):
        bus.publish(types[i % 5], i)
    stats = bus.stats()
    assert (stats["cache_misses"], stats["cache_hits"]) == (5, 95)
    assert stats["cache_hit_rate"] == pytest.approx(0.95)
    none = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns, route_cache_size=0)
    for i in range(10):
        none.publish("type.0", i)
    assert (none.stats()["cache_hits"], none.stats()["cache_misses"]) == (0, 10)


def test_route_override_sends_an_event_type_to_another_swarm(fe: Frontend, redis_server: Any,
                                                            ns: str, raw: redis.Redis) -> None:
    got: list[Any] = []
    fe.event_bus(redis_server.url, "review", "r1", namespace=ns).subscribe("*", got.append)
    raw.set(f"{ns}:route:task.review", "review")
    raw.set(f"{ns}:route:task.bad", "not a swarm!")
    bus = fe.event_bus(redis_server.url, "build", "b1", namespace=ns, route_overrides=True)
    bus.publish("task.review", {"pr": 1})
    bus.publish("task.bad", None)
    bus.flush()
    assert wait_until(lambda: len(got) == 1)
    assert (got[0].swarm, got[0].type) == ("build", "task.review")
    assert bus.stats()["route_errors"] == 1
    bus.invalidate_route("task.review")
    bus.publish("task.review", {"pr": 2})
    assert bus.stats()["cache_misses"] == 3


def test_throttle_limits_priorities_1_to_5_only(fe: Frontend, redis_server: Any, ns: str) -> None:
    bus = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns, throttle_rate=5.0,
                       throttle_burst=5.0)
    for _ in range(5):
        bus.publish("agent.tick", None, priority=3)
    with pytest.raises(ThrottledError, match="priorities 1-5"):
        bus.publish("agent.tick", None, priority=5)
    bus.publish("agent.spawn", None, priority=6)
    bus.publish("cfn.loop.phase.start", None, priority=9)
    assert bus.stats()["throttled"] == 1
    assert bus.flush() == 7


def test_circuit_breaker_opens_and_critical_priorities_bypass_it(fe: Frontend, ns: str,
                                                                 unreachable_url: str) -> None:
    bus = fe.event_bus(unreachable_url, "s1", "a1", namespace=ns, retries=0,
                       breaker_failures=2, connect_timeout=0.5)
    where = unreachable_url.removeprefix("redis://").removesuffix("/0")
    for _ in range(2):
        with pytest.raises(ServerUnavailableError, match=f"cannot reach Redis at {where}"):
            bus.publish("agent.spawn", None)
    assert bus.stats()["breaker_state"] == "open"
    with pytest.raises(CircuitOpenError, match="priorities 8-9 still go through"):
        bus.publish("agent.spawn", None, priority=7)
    with pytest.raises(ServerUnavailableError):
        bus.publish("cfn.loop.phase.start", None, priority=9)
    stats = bus.stats()
    assert stats["breaker"]["rejected"] == 1 and stats["breaker"]["bypassed"] >= 1
    assert stats["publish_failed"] == 3


def test_publisher_retries_after_its_connection_is_killed(fe: Frontend, redis_server: Any, ns: str,
                                                         raw: redis.Redis) -> None:
    got: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns)
    sub.subscribe("*", lambda e: got.append(e.data))
    pub = fe.event_bus(redis_server.url, "s1", "a2", namespace=ns)
    pub.publish("agent.spawn", 1)
    pub.flush()
    raw.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    for n in (2, 3, 4):
        pub.publish("agent.spawn", n)
    pub.flush()
    assert wait_until(lambda: got == [1, 2, 3, 4])
    stats = pub.stats()
    assert stats["publisher_reconnects"] == 1 and stats["retries"] >= 1
    assert sub.stats()["duplicates"] == 0 and sub.stats()["lost"] == 0


def test_subscriber_comes_back_after_client_kill_and_counts_the_gap(fe: Frontend, redis_server: Any,
                                                                    ns: str,
                                                                    raw: redis.Redis) -> None:
    reconnects: list[int] = []
    got: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns, on_reconnect=reconnects.append)
    sub.subscribe("*", lambda e: got.append(e.seq))
    channel = f"{ns}:event:s1:agent.spawn"
    raw.publish(channel, raw_envelope(1))
    assert wait_until(lambda: got == [1])
    with raw.pipeline(transaction=True) as pipe:
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        pipe.publish(channel, raw_envelope(2))
        pipe.publish(channel, raw_envelope(3))
        pipe.execute()
    assert wait_until(lambda: reconnects == [1])
    raw.publish(channel, raw_envelope(4))
    assert wait_until(lambda: got == [1, 4])
    stats = sub.stats()
    assert stats["subscriber_reconnects"] == 1 and stats["lost"] == 2


def test_subscriber_and_publisher_survive_a_server_restart(fe: Frontend, fresh_redis_server: Any,
                                                           ns: str) -> None:
    got: list[int] = []
    url = fresh_redis_server.url
    sub = fe.event_bus(url, "s1", "a1", namespace=ns)
    sub.subscribe("*", lambda e: got.append(e.data))
    pub = fe.event_bus(url, "s1", "a2", namespace=ns, retries=8, backoff_cap=0.5)
    pub.publish("agent.spawn", 1)
    pub.flush()
    assert wait_until(lambda: got == [1])
    fresh_redis_server.restart()
    assert wait_until(lambda: sub.stats()["subscriber_reconnects"] == 1, timeout=10)
    pub.publish("agent.spawn", 2)
    pub.flush()
    assert wait_until(lambda: got == [1, 2])
    assert pub.stats()["publisher_reconnects"] == 1


def test_watchdog_notices_a_hung_server(fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    got: list[int] = []
    url = fresh_redis_server.url
    sub = fe.event_bus(url, "s1", "a1", namespace=ns, ping_interval=0.3, ping_timeout=0.3,
                       connect_timeout=0.5)
    sub.subscribe("*", lambda e: got.append(e.data))
    fresh_redis_server.pause()
    try:
        assert wait_until(lambda: sub.stats()["watchdog_trips"] >= 1, timeout=5)
    finally:
        fresh_redis_server.resume()
    assert wait_until(lambda: sub.stats()["subscriber_reconnects"] >= 1, timeout=10)
    pub = fe.event_bus(url, "s1", "a2", namespace=ns)
    pub.publish("agent.spawn", 7)
    pub.flush()
    assert wait_until(lambda: got == [7])


def test_close_leaves_no_connection_thread_or_task(fe: Frontend, redis_server: Any, ns: str,
                                                   raw: redis.Redis) -> None:
    baseline = fe.background_workers()
    for i in range(200):
        bus = fe.event_bus(redis_server.url, "s1", f"a{i}", namespace=ns)
        if i % 10 == 0:
            bus.subscribe("*", print)
        bus.publish("agent.spawn", i)
        bus.close()
    assert wait_until(lambda: our_clients(raw, ns) == [], timeout=5), our_clients(raw, ns)
    assert wait_until(lambda: fe.background_workers() == baseline, timeout=5)


def test_context_manager_closes(fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    with fe.event_bus(redis_server.url, "s1", "a1", namespace=ns) as bus:
        bus.subscribe("*", print)
        bus.publish("agent.spawn", None)
        assert len(our_clients(raw, ns)) == 2
    assert wait_until(lambda: our_clients(raw, ns) == [])


def test_msgpack_codec_round_trips(fe: Frontend, redis_server: Any, ns: str) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "s1", "a1", namespace=ns, codec="msgpack")
    sub.subscribe("*", got.append)
    pub = fe.event_bus(redis_server.url, "s1", "a2", namespace=ns, codec="msgpack")
    pub.publish("agent.spawn", {"bytes": "ok", "n": [1, 2]})
    pub.flush()
    assert wait_until(lambda: len(got) == 1)
    assert got[0].data == {"bytes": "ok", "n": [1, 2]}
    with pytest.raises(InvalidOptionError, match="codec 'xml' is not known"):
        fe.event_bus(redis_server.url, "s1", "a2", namespace=ns, codec="xml")


def test_sync_bus_works_under_gevent_monkey_patching(redis_server: Any, ns: str) -> None:
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent
        from pytest_cfn import EventBus
        got = []
        sub = EventBus.from_url({redis_server.url!r}, swarm="s1", agent="a1", namespace={ns!r})
        sub.subscribe("*", lambda e: got.append(e.data))
        pubs = [EventBus.from_url({redis_server.url!r}, swarm="s1", agent=f"p{{i}}",
                                  namespace={ns!r}) for i in range(10)]
        def agent(bus, i):
            for n in range(50):
                bus.publish("agent.tick", i * 1000 + n)
                gevent.sleep(0)
            bus.flush()
        gevent.joinall([gevent.spawn(agent, b, i) for i, b in enumerate(pubs)], timeout=20)
        for _ in range(500):
            if len(got) == 500:
                break
            gevent.sleep(0.01)
        print("delivered", len(got), "lost", sub.stats()["lost"])
        for b in pubs:
            b.close()
        sub.close()
    """)
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "delivered 500 lost 0" in out.stdout


def test_generated_sync_code_is_up_to_date() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "scripts", "unasync.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
