"""Forged sequence numbers, 200k-deep nesting and dying workers, on a real redis-server.

Sync and asyncio front ends alike. Each test injects what an attacker or a fault
would (with a plain redis-py client), then checks that genuine traffic after it
is still delivered and that what happened is counted.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import Envelope, Message

DEPTH = 200_000


def envelope(seq: int, *, publisher: str, swarm: str = "s1", type_: str = "agent.spawn",
             priority: int = 5, data: Any = None, source: str = "intruder") -> Envelope:
    return Envelope(id=f"{publisher}-{seq}", swarm=swarm, source=source, type=type_,
                    priority=priority, seq=seq, ts=time.time_ns(), publisher=publisher, data=data)


def deep_payload(codec: str, **fields: Any) -> bytes:
    """A valid-looking envelope whose data is nested DEPTH levels deep (~400 KB as JSON)."""
    env = envelope(1, publisher=fields.pop("publisher", "deep"), **fields)
    if codec == "json":
        head = msgspec.json.encode(env)[:-1]  # data=None is omitted; reopen the object
        return head + b',"data":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    raw = msgspec.msgpack.encode({**msgspec.structs.asdict(env), "data": None})
    assert raw.endswith(b"\xc0")
    return raw[:-1] + b"\x91" * DEPTH + b"\xc0"


def test_deep_payload_really_is_200k_levels() -> None:
    payload = deep_payload("json")
    assert len(payload) > 400_000
    with pytest.raises(RecursionError):
        msgspec.json.decode(payload)


# Failure 1: one forged envelope with a genuine publisher id and seq 10**12.

def test_forged_seq_does_not_silence_an_event_publisher(fe: Frontend, redis_server: Any, ns: str,
                                                        raw: redis.Redis) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "s1", "reviewer", namespace=ns)
    sub.subscribe("*", got.append)
    pub = fe.event_bus(redis_server.url, "s1", "coder", namespace=ns)
    for n in range(10):
        pub.publish("task.progress", {"n": n})
    pub.flush()
    assert wait_until(lambda: len(got) == 10)
    forged = envelope(10**12, publisher=pub.publisher_id, type_="task.progress", priority=9)
    raw.publish(f"{ns}:event:s1:task.progress", msgspec.json.encode(forged))
    for n in range(10, 60):
        pub.publish("task.progress", {"n": n}, priority=9 if n % 2 else 5)
    pub.flush()
    assert wait_until(lambda: len(got) == 61), f"{len(got)} of 61 delivered"
    assert sub.wait_idle()
    genuine = [e.data["n"] for e in got if e.seq != 10**12]
    assert sorted(genuine) == list(range(60))
    stats = sub.stats()
    assert (stats["lost"], stats["duplicates"], stats["anomalies"]) == (0, 0, 1)
    assert stats["sequence_resyncs"] == 0


def test_forged_seq_does_not_silence_a_messenger(fe: Frontend, redis_server: Any, ns: str,
                                                 raw: redis.Redis) -> None:
    got: list[Message] = []
    b = fe.make("Messenger", redis_server.url, "b", "lead", namespace=ns)
    b.on_message(got.append)
    a = fe.make("Messenger", redis_server.url, "a", "coder", namespace=ns)
    for n in range(5):
        a.send("b", n)
    a.flush()
    assert wait_until(lambda: len(got) == 5)
    forged = envelope(10**12, publisher=a.publisher_id("b"), swarm="a", type_="message")
    raw.publish(f"{ns}:message:a:b", msgspec.json.encode(forged))
    for n in range(5, 25):
        a.send("b", n)
    a.flush()
    assert wait_until(lambda: len(got) == 26), f"{len(got)} of 26 delivered"
    assert sorted(m.data for m in got if m.seq != 10**12) == list(range(25))
    stats = b.stats()
    assert (stats["lost"], stats["duplicates"], stats["anomalies"]) == (0, 0, 1)


# Failure 2: decode failures of any kind are malformed input; workers never die silently.

@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_deeply_nested_message_is_set_aside_and_the_reader_goes_on(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis, codec: str) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "s1", "reader", namespace=ns, codec=codec)
    sub.subscribe("*", got.append)
    raw.publish(f"{ns}:event:s1:agent.spawn", deep_payload(codec))
    pub = fe.event_bus(redis_server.url, "s1", "writer", namespace=ns, codec=codec)
    for n in range(108):
        pub.publish("agent.spawn", n, priority=9 if n % 3 == 0 else 5)
    pub.flush()
    assert wait_until(lambda: len(got) == 108), f"{len(got)} of 108 delivered"
    stats = sub.stats()
    assert stats["malformed"] == 1
    assert "RecursionError" in sub.malformed[0].reason
    assert stats["worker_crashes"] == {"reader": 0, "dispatcher": 0}


def test_deeply_nested_critical_entry_is_skipped_by_catch_up(fe: Frontend, redis_server: Any,
                                                             ns: str, raw: redis.Redis) -> None:
    pub = fe.event_bus(redis_server.url, "s1", "lead", namespace=ns)
    for n in range(5):
        pub.publish("cfn.loop.phase", n, priority=9)
    pub.flush()
    raw.xadd(f"{ns}:critical:s1", {"envelope": deep_payload("json", priority=9)})
    for n in range(5, 10):
        pub.publish("cfn.loop.phase", n, priority=9)
    pub.flush()
    got: list[Any] = []
    late = fe.event_bus(redis_server.url, "s1", "late", namespace=ns)
    late.subscribe("*", got.append)
    assert wait_until(lambda: len(got) == 10), f"{len(got)} of 10 replayed"
    assert [e.data for e in got] == list(range(10))
    pub.publish("task.assign", "live", priority=6)
    pub.flush()
    assert wait_until(lambda: len(got) == 11), "the dispatcher is still alive"
    stats = late.stats()
    assert (stats["replayed"], stats["replay_malformed"]) == (10, 1)
    assert stats["worker_crashes"] == {"reader": 0, "dispatcher": 0}


def test_stored_history_skips_a_deeply_nested_entry(fe: Frontend, redis_server: Any, ns: str,
                                                    raw: redis.Redis) -> None:
    a = fe.make("Messenger", redis_server.url, "a", "coder", namespace=ns, persist_history=True)
    for n in range(3):
        a.send("b", n)
    a.flush()
    raw.lpush(f"{ns}:history:b", deep_payload("json", swarm="a", type_="message"))
    b = fe.make("Messenger", redis_server.url, "b", "lead", namespace=ns)
    assert [m.data for m in b.stored_history()] == [0, 1, 2]


def test_a_dying_reader_is_counted_reported_and_restarted(fe: Frontend, redis_server: Any,
                                                          ns: str) -> None:
    got: list[Any] = []
    errors: list[BaseException] = []
    sub = fe.event_bus(redis_server.url, "s1", "reader", namespace=ns, on_error=errors.append)
    sub.subscribe("*", got.append)
    subscriber = sub._engine._subscriber
    sink = subscriber._on_messages
    fault = RuntimeError("injected reader fault")

    def crash_once(batch: Any) -> None:
        subscriber._on_messages = sink
        raise fault

    pub = fe.event_bus(redis_server.url, "s1", "writer", namespace=ns)
    pub.publish("agent.spawn", "before")
    pub.flush()
    assert wait_until(lambda: len(got) == 1)
    subscriber._on_messages = crash_once
    pub.publish("agent.spawn", "lost with the reader")
    pub.flush()
    assert wait_until(lambda: errors == [fault])
    assert wait_until(lambda: sub.stats()["subscriber_reconnects"] == 1)
    for n in range(20):
        pub.publish("agent.spawn", n)
    pub.flush()
    assert wait_until(lambda: len(got) == 21), f"{len(got) - 1} of 20 after the restart"
    stats = sub.stats()
    assert stats["worker_crashes"] == {"reader": 1, "dispatcher": 0}
    assert stats["lost"] == 1, "the message the reader died with shows up as a gap"


def test_a_failing_check_sets_the_message_aside_without_killing_the_reader(
        fe: Frontend, redis_server: Any, ns: str) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "s1", "reader", namespace=ns)
    sub.subscribe("*", got.append)
    engine = sub._engine
    failed: list[int] = []

    def fail_once(env: Any) -> bool:
        if failed:
            return False
        failed.append(env.seq)
        raise RecursionError("injected")

    engine._intercept = fail_once
    pub = fe.event_bus(redis_server.url, "s1", "writer", namespace=ns)
    for n in range(10):
        pub.publish("agent.spawn", n)
    pub.flush()
    assert wait_until(lambda: len(got) == 9)
    stats = sub.stats()
    assert (stats["malformed"], stats["subscriber_reconnects"]) == (1, 0)
    assert stats["worker_crashes"] == {"reader": 0, "dispatcher": 0}
    assert "RecursionError: injected" in sub.malformed[0].reason


def test_a_dying_dispatcher_is_counted_reported_and_restarted(fe: Frontend, redis_server: Any,
                                                              ns: str) -> None:
    got: list[Any] = []
    errors: list[BaseException] = []
    sub = fe.event_bus(redis_server.url, "s1", "reader", namespace=ns, on_error=errors.append)
    sub.subscribe("*", got.append)
    replayer = sub._engine._replayer
    fault = MemoryError("injected dispatcher fault")

    def crash_once(now: float) -> bool:
        del replayer.due
        raise fault

    replayer.due = crash_once
    pub = fe.event_bus(redis_server.url, "s1", "writer", namespace=ns)
    for n in range(20):
        pub.publish("agent.spawn", n)
    pub.flush()
    assert wait_until(lambda: len(got) == 20), f"{len(got)} of 20 after the restart"
    assert errors == [fault]
    assert sub.stats()["worker_crashes"] == {"reader": 0, "dispatcher": 1}


def test_swarm_state_reads_past_deeply_nested_values(fe: Frontend, redis_server: Any, ns: str,
                                                     raw: redis.Redis) -> None:
    state = fe.make("SwarmState", redis_server.url, namespace=ns)
    state.save("s1", phase="auth", data={"ok": 1})
    state.checkpoint("s1")
    nested = b"[" * DEPTH + b"]" * DEPTH
    raw.lpush(f"{ns}:swarm-checkpoints:s1", b'{"swarm":"s1","data":' + nested + b"}")
    raw.hset(f"{ns}:swarm:s1", "data", nested)
    record = state.load("s1")
    assert record is not None and record.phase == "auth"
    assert isinstance(record.data, str) and len(record.data) == 2 * DEPTH
    assert [c.data for c in state.checkpoints("s1")] == [{"ok": 1}]
