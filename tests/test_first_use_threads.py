"""First use from many threads (sync) or tasks (asyncio, through the loop thread): one bus
opens one subscriber connection, subscribe() returns once Redis confirmed it, no request
times out, and close() leaves no connection, thread or task behind."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import redis
from frontends import Frontend, run_together, wait_until

THREADS = 20
MESSENGERS = 10


def sub_connections(raw: redis.Redis, ns: str, role: str) -> Counter[str]:
    """Subscriber connections of our namespace in CLIENT LIST, by swarm."""
    names = [c["name"] for c in raw.client_list() if c["name"].endswith("@" + ns)]
    return Counter(n.split(":")[2] for n in names if n.startswith(f"cfn:{role}-sub:"))


def test_fresh_messengers_hit_by_many_threads_open_one_subscriber_each(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    baseline_threads = {t.ident for t in threading.enumerate()}
    baseline_workers = fe.background_workers()
    server = fe.make("Messenger", redis_server.url, "srv", "answer", namespace=ns)
    server.on_request(lambda msg: {"echo": msg.data})
    clients = [fe.make("Messenger", redis_server.url, f"c{i}", "agent", namespace=ns)
               for i in range(MESSENGERS)]
    replies: list[tuple[int, int, Any]] = []

    def ask(i: int, j: int) -> Any:
        def job() -> None:
            reply = clients[i].request("srv", {"i": i, "j": j}, timeout=5)
            replies.append((i, j, reply.data))
        return job

    errors = run_together([ask(i, j) for i in range(MESSENGERS) for j in range(THREADS)])
    assert errors == []  # no RequestTimeoutError, nothing else either
    assert sorted(replies) == sorted(
        (i, j, {"echo": {"i": i, "j": j}}) for i in range(MESSENGERS) for j in range(THREADS))
    assert sub_connections(raw, ns, "messages") == Counter(
        {**{f"c{i}": 1 for i in range(MESSENGERS)}, "srv": 1})
    for m in clients:
        stats = m.stats()
        assert stats["request_timeouts"] == 0 and stats["duplicates"] == 0
        assert stats["unmatched_replies"] == 0
    assert server.stats()["duplicates"] == 0 and server.stats()["requests_answered"] == 200
    print(f"\nscenario 10 messengers x 20 threads [{fe.kind}]: requests sent 200, answered "
          f"{len(replies)}, timed out {sum(m.stats()['request_timeouts'] for m in clients)}, "
          f"subscriber connections {sum(sub_connections(raw, ns, 'messages').values())} "
          "(10 + the answering swarm's 1)")
    for m in [server, *clients]:
        m.close()
    assert wait_until(lambda: sub_connections(raw, ns, "messages") == Counter(), timeout=5)
    assert wait_until(lambda: not [c for c in raw.client_list()
                                   if c["name"].endswith("@" + ns)], timeout=5)
    assert wait_until(lambda: fe.background_workers() == baseline_workers, timeout=5)
    assert wait_until(lambda: {t.ident for t in threading.enumerate()} <= baseline_threads
                      | {fe.loop._thread.ident if fe.loop else None}, timeout=5)


def test_threads_subscribing_on_one_fresh_bus_share_one_confirmed_subscription(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    bus = fe.event_bus(redis_server.url, "s1", "sub", namespace=ns)
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    pub.connect()
    got: dict[int, list[Any]] = {i: [] for i in range(10)}

    def subscribe_then_publish(i: int) -> Any:
        def job() -> None:
            bus.subscribe(f"task.t{i}", lambda e: got[i].append(e.data))
            # subscribe() returned: the subscription is confirmed, so this must arrive
            pub.publish(f"task.t{i}", i)
        return job

    assert run_together([subscribe_then_publish(i) for i in range(10)]) == []
    pub.flush()
    assert wait_until(lambda: all(got[i] == [i] for i in range(10))), got
    assert sub_connections(raw, ns, "events") == Counter({"s1": 1})
    stats = bus.stats()
    assert stats["handlers"] == 10 and stats["duplicates"] == 0 and stats["lost"] == 0
    print(f"\nscenario 10 threads subscribe one bus [{fe.kind}]: sent 10 right after each "
          f"subscribe() returned, delivered {sum(len(v) for v in got.values())}, subscriber "
          f"connections {sum(sub_connections(raw, ns, 'events').values())}")
    bus.close()
    pub.close()
    assert wait_until(lambda: not [c for c in raw.client_list()
                                   if c["name"].endswith("@" + ns)], timeout=5)
