"""Plain publish() is auto-pipelined: bursts coalesce into few writes, in order, every
publish acknowledged or its error counted; a lone publish is written at once.

Sync and asyncio alike: a burst is a tight loop in one thread (sync) or one coroutine
that awaits publish() many times without yielding (asyncio, one loop iteration).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import PermissionDeniedError

BURST = 3000


def burst(fe: Frontend, bus: Any, items: list[tuple[str, Any]]) -> list[str]:
    """Publish ``items`` back to back without batch(); the message ids."""
    if fe.loop is None:
        return [bus.publish(event_type, data) for event_type, data in items]
    target = bus._target

    async def run() -> list[str]:
        return [await target.publish(event_type, data) for event_type, data in items]

    return list(fe.loop.run(run()))


def test_a_burst_of_plain_publishes_is_coalesced_in_order(fe: Frontend, redis_server: Any,
                                                          ns: str) -> None:
    got: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "sub", namespace=ns)
    sub.subscribe("tick", lambda event: got.append(event.data))
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    pub.connect()
    ids = burst(fe, pub, [("tick", n) for n in range(BURST)])
    assert len(set(ids)) == BURST
    pub.flush()
    assert wait_until(lambda: len(got) == BURST)
    assert got == list(range(BURST)), "coalescing kept the publish order"
    stats = pub.stats()
    assert stats["acknowledged"] == BURST and stats["pending_writes"] == 0
    assert 1 <= stats["coalesced_writes"] < BURST // 10, stats["coalesced_writes"]
    assert sub.stats()["lost"] == 0 and sub.stats()["duplicates"] == 0


class WriteCounter:
    """Stands in for a publisher's connection and counts its writes of one command."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.single = 0
        self.writes = 0
        self.sizes: list[tuple[int, int]] = []
        """(commands, bytes) of each write, in order."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _count(self, data: bytes) -> None:
        commands = data.count(b"*3\r\n$7\r\nPUBLISH\r\n")
        self.writes += 1
        self.single += commands == 1
        self.sizes.append((commands, len(data)))

    def lone_after_full(self, commands: int, size: int) -> tuple[int, int]:
        """(full writes, at ``commands`` or ``size`` bytes, followed by a lone publish;
        full writes followed by any write)."""
        pairs = list(itertools.pairwise(self.sizes))
        after = [nxt for (n, b), (nxt, _) in pairs if n >= commands or b >= size]
        return sum(1 for nxt in after if nxt == 1), len(after)

    def write(self, data: bytes) -> Any:
        self._count(data)
        return self._conn.write(data)

    def write_nowait(self, data: bytes) -> None:
        self._count(data)
        self._conn.write_nowait(data)


def test_a_long_burst_keeps_coalescing_after_each_full_write(fe: Frontend, redis_server: Any,
                                                             ns: str) -> None:
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    pub.connect()
    publisher = (pub if fe.loop is None else pub._target)._engine.publisher
    counter = publisher._conn = WriteCounter(publisher._conn)
    ids = burst(fe, pub, [("tick", "x" * 100)] * 10_000)  # some 40 full coalesced writes
    pub.flush()
    assert len(set(ids)) == 10_000 and pub.stats()["acknowledged"] == 10_000
    assert counter.writes >= 10_000 // 256, counter.writes
    if fe.loop is not None:  # one loop iteration: only the burst's first publish is alone
        assert counter.single == 1, (counter.single, counter.writes)
    else:
        # Threads: a publish that comes over 20 µs after the last write goes alone, and on a
        # loaded machine many do (the loop's thread descheduled, the GIL held by the
        # flusher): CI once saw 73 % of the writes lone. The bug this guards sent the
        # publish right after every full write alone, whatever the timing; so count that:
        # of the full writes (256 commands or 64 KB), how many a lone publish followed.
        # Measured here with three CPU hogs running: 0-22 of 42-47 (at most 48 %).
        lone, full = counter.lone_after_full(256, 60_000)
        assert full >= 20, (full, counter.sizes[:5])
        assert lone * 10 < full * 8, (lone, full, counter.single, counter.writes)


def test_a_lone_publish_is_written_at_once_not_held_back(fe: Frontend, redis_server: Any,
                                                         ns: str) -> None:
    got: list[float] = []
    sub = fe.event_bus(redis_server.url, "s1", "sub", namespace=ns)
    sub.subscribe("tick", lambda event: got.append(time.perf_counter()))
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    pub.connect()
    for round_index in range(5):
        time.sleep(0.01)
        started = time.perf_counter()
        burst(fe, pub, [("tick", round_index)])
        assert pub.stats()["pending_writes"] == 0, "written before publish() returned"
        # Held back until a later publish, it would never arrive here (the next comes after
        # this wait); the bound on its arrival only has to clear a loaded machine's stall.
        assert wait_until(lambda want=round_index + 1: len(got) == want)
        assert got[-1] - started < 1.0
    assert pub.stats()["coalesced_writes"] == 0


def test_publishes_from_many_threads_or_tasks_keep_each_senders_order(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    senders, each = 8, 400
    got: list[tuple[int, int]] = []
    sub = fe.event_bus(redis_server.url, "s1", "sub", namespace=ns)
    sub.subscribe("tick", lambda event: got.append(tuple(event.data)))
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    pub.connect()
    if fe.loop is None:
        start = threading.Barrier(senders)

        def send(who: int) -> None:
            start.wait()
            for n in range(each):
                pub.publish("tick", [who, n])

        threads = [threading.Thread(target=send, args=(who,)) for who in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    else:
        target = pub._target

        async def send(who: int) -> None:
            for n in range(each):
                await target.publish("tick", [who, n])
                if n % 7 == 0:
                    await asyncio.sleep(0)

        async def run() -> None:
            await asyncio.gather(*(send(who) for who in range(senders)))

        fe.loop.run(run())
    pub.flush()
    assert wait_until(lambda: len(got) == senders * each)
    for who in range(senders):
        assert [n for w, n in got if w == who] == list(range(each)), who
    assert pub.stats()["acknowledged"] == senders * each


def test_refusals_among_coalesced_publishes_are_counted_and_raised_at_flush(
    fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis
) -> None:
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    raw.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~*", f"&{ns}:event:s1:ok", "+@all"
    )
    try:
        url = redis_server.url.replace("redis://", f"redis://{user}:{password}@")
        pub = fe.event_bus(url, "s1", "pub", namespace=ns, breaker_failures=10_000)
        pub.connect()
        items = [("ok" if n % 3 else "refused", n) for n in range(600)]
        burst(fe, pub, items)
        with pytest.raises(PermissionDeniedError, match="Redis refused 200 publish"):
            pub.flush()
        stats = pub.stats()
        assert stats["publish_errors"] == 200
        assert stats["acknowledged"] == 600 and stats["pending_writes"] == 0
        assert "NOPERM" in str(pub._engine.publisher.errors[-1] if fe.loop is None
                               else pub._target._engine.publisher.errors[-1])
    finally:
        raw.execute_command("ACL", "DELUSER", user)


def test_a_burst_survives_its_connection_being_killed(fe: Frontend, redis_server: Any, ns: str,
                                                      raw: redis.Redis) -> None:
    got: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "sub", namespace=ns)
    sub.subscribe("tick", lambda event: got.append(event.data))
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    pub.connect()
    burst(fe, pub, [("tick", n) for n in range(1000)])
    raw.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    burst(fe, pub, [("tick", n) for n in range(1000, 2000)])
    pub.flush()
    assert wait_until(lambda: len(set(got)) == 2000, timeout=10)
    assert sorted(set(got)) == list(range(2000)), "nothing lost"
    assert pub.stats()["publisher_reconnects"] >= 1
    assert len(got) == len(set(got)), "retried duplicates were dropped by the receiver"
