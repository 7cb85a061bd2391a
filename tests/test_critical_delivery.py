"""Priority 8-9 publishes that publish() returned survive a paused, killed and restarted
server; priorities 1-7 follow the stated policy (dropped when one call's retries run out,
and counted); the circuit breaker counts one failure per failed call."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from frontends import Frontend, wait_until

from pytest_cfn import (
    CircuitOpenError,
    CriticalBufferFullError,
    PublishFailedError,
    ServerUnavailableError,
)

# Small retry budget so that the retries of one call surely run out while the server is away.
FAST_RETRY = {"retries": 2, "backoff_base": 0.02, "backoff_cap": 0.05, "connect_timeout": 0.5,
              "socket_timeout": 1.0}
QUICK_SUB = {"backoff_base": 0.02, "backoff_cap": 0.2, "ping_interval": 0.5, "ping_timeout": 0.5,
             "connect_timeout": 0.5}


def kill_hard(server: Any) -> None:
    """SIGKILL (a paused server dies without executing what it has buffered), then reap it."""
    os.kill(server.pid, signal.SIGKILL)
    server.stop()


def collector(fe: Frontend, url: str, ns: str, got: list[Any]) -> Any:
    sub = fe.event_bus(url, "s1", "sub", namespace=ns, **QUICK_SUB)
    sub.subscribe("*", lambda e: got.append((e.priority, e.data)))
    return sub


def test_critical_publishes_survive_a_paused_killed_and_restarted_server(
        fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    server = fresh_redis_server
    got: list[Any] = []
    sub = collector(fe, server.url, ns, got)
    pub = fe.event_bus(server.url, "s1", "pub", namespace=ns, **FAST_RETRY)
    pub.publish("agent.spawn", "before", priority=5)
    pub.flush()
    assert wait_until(lambda: (5, "before") in got)

    server.pause()
    ids = [pub.publish("cfn.loop.phase.start", n, priority=9) for n in range(40)]
    assert len(set(ids)) == 40
    kill_hard(server)

    # Retries of this call run out while the server is away: the priority-5 publish is
    # dropped and said so; the 40 critical ones are kept, not dropped.
    with pytest.raises(PublishFailedError, match=r"40 priority 8-9 publish.*kept") as info:
        pub.publish("agent.spawn", "during", priority=5)
    assert "1 unacknowledged priority 1-7" in str(info.value)
    stats = pub.stats()
    assert stats["critical_pending"] == 40
    assert stats["publish_failed"] == 1 and stats["publish_dropped_by_priority"] == {5: 1}
    # a critical publish while the server is away is accepted into the buffer
    ids.append(pub.publish("cfn.loop.phase.start", 40, priority=9))
    assert pub.stats()["critical_pending"] == 41

    time.sleep(0.3)
    server.start()
    assert pub.flush() >= 41
    expected = {(9, n) for n in range(41)}
    assert wait_until(lambda: expected <= set(got), timeout=10), sorted(expected - set(got))
    stats, sub_stats = pub.stats(), sub.stats()
    assert stats["critical_pending"] == 0 and stats["critical_resent"] == 41
    assert stats["breaker"]["opens"] == 0
    assert sub_stats["duplicates"] == 0
    assert [d for p, d in got if p == 9] == list(range(41))  # once each, in order
    print(f"\nscenario paused+killed [{fe.kind}]: critical sent 41, delivered "
          f"{len(expected & set(got))}, lost {len(expected - set(got))}, replayed "
          f"{sub_stats['replayed']}, resent {stats['critical_resent']}; priority 5 dropped "
          f"and raised {stats['publish_failed']}")


def test_a_full_critical_buffer_refuses_at_once_and_drops_nothing(
        fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    server = fresh_redis_server
    got: list[Any] = []
    sub = collector(fe, server.url, ns, got)
    pub = fe.event_bus(server.url, "s1", "pub", namespace=ns, critical_buffer=5, **FAST_RETRY)
    pub.connect()
    server.pause()
    for n in range(5):
        pub.publish("cfn.loop.phase.start", n, priority=8)
    kill_hard(server)
    with pytest.raises(CriticalBufferFullError, match="critical_buffer=5"):
        pub.publish("cfn.loop.phase.start", 5, priority=8)
    before = pub.stats()
    started = time.monotonic()
    with pytest.raises(CriticalBufferFullError):
        pub.publish("cfn.loop.phase.start", 6, priority=9)
    took = time.monotonic() - started
    # At once: no retries once it is full. Counted, not timed (one CPU-starved moment of
    # 50 ms fails a 50 ms bound): a call that went through the retry loop counts retries and
    # a give-up.
    after = pub.stats()
    assert (after["retries"], after["publish_give_ups"]) == (
        before["retries"], before["publish_give_ups"]), (before, after)
    # ... nor waited for a reply: socket_timeout is 1 s here, the bound far above a stall
    assert took < 0.75, took
    assert pub.stats()["critical_pending"] == 5
    server.start()
    pub.flush()
    assert wait_until(lambda: {(8, n) for n in range(5)} <= set(got), timeout=10)
    assert not any(d in (5, 6) for _, d in got)
    assert sub.stats()["duplicates"] == 0


def test_close_says_when_critical_publishes_were_never_acknowledged(
        fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    server = fresh_redis_server
    pub = fe.event_bus(server.url, "s1", "pub", namespace=ns, **FAST_RETRY)
    pub.connect()
    server.pause()
    pub.publish("cfn.loop.phase.start", 1, priority=9)
    kill_hard(server)
    with pytest.raises(PublishFailedError, match="closed with 1 priority 8-9"):
        pub.close()


def test_one_failed_publish_call_is_one_breaker_failure(fe: Frontend, ns: str,
                                                        unreachable_url: str) -> None:
    bus = fe.event_bus(unreachable_url, "s1", "a1", namespace=ns, retries=3, backoff_base=0.001,
                       backoff_cap=0.002, connect_timeout=0.5)
    for n in range(1, 5):
        with pytest.raises(ServerUnavailableError):
            bus.publish("agent.spawn", n)
        stats = bus.stats()
        assert stats["breaker"]["consecutive_failures"] == n, stats["breaker"]
        assert stats["breaker_state"] == "closed"
        assert stats["retries"] == 0  # never connected: the attempts are not re-sends
    with pytest.raises(ServerUnavailableError):
        bus.publish("agent.spawn", 5)
    stats = bus.stats()
    assert stats["breaker_state"] == "open" and stats["breaker"]["opens"] == 1
    assert 29.0 < stats["breaker_next_probe_in"] <= 30.0
    probe = r"after 5 failed publish calls.*trial publish through in (29|30)\.\d s"
    with pytest.raises(CircuitOpenError, match=probe):
        bus.publish("agent.spawn", 6)


@pytest.mark.slow
def test_steady_traffic_through_a_one_second_restart_loses_no_critical_event(
        fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    server = fresh_redis_server
    got: list[Any] = []
    sub = collector(fe, server.url, ns, got)
    # ADR-002's retry and breaker defaults: 3 retries (jittered 0.1 / 0.2 / 0.4 s caps);
    # 5 failed calls open the breaker for 30 s
    pub = fe.event_bus(server.url, "s1", "pub", namespace=ns)
    accepted: list[tuple[int, int]] = []
    refused: list[tuple[int, int]] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            priority = 9 if n % 5 == 0 else 5
            try:
                pub.publish("task.progress", n, priority=priority)
                accepted.append((priority, n))
            except PublishFailedError:
                refused.append((priority, n))
            n += 1
            time.sleep(0.004)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(1.0)
        server.stop()
        time.sleep(1.0)
        server.start()
        time.sleep(1.5)
    finally:
        stop.set()
        worker.join(10)
    pub.flush()
    critical = {item for item in accepted if item[0] == 9}
    assert not [item for item in refused if item[0] == 9]
    assert wait_until(lambda: critical <= set(got), timeout=10), sorted(critical - set(got))
    stats, sub_stats = pub.stats(), sub.stats()
    assert stats["breaker"]["opens"] == 0 and stats["breaker"]["rejected"] == 0
    assert sub_stats["duplicates"] == 0
    normal_sent = sum(1 for p, _ in accepted if p == 5)
    normal_got = sum(1 for p, _ in set(got) if p == 5)
    print(f"\nscenario 1 s restart [{fe.kind}]: critical sent {len(critical)}, delivered "
          f"{len(critical & set(got))}, lost {len(critical - set(got))}, replayed "
          f"{sub_stats['replayed']}, resent {stats['critical_resent']}; priority 5 accepted "
          f"{normal_sent}, delivered {normal_got}, refused (raised) {len(refused)}, dropped "
          f"after acceptance {stats['publish_failed'] - len(refused)}, detected lost "
          f"{sub_stats['lost']}; breaker opens {stats['breaker']['opens']}")


def test_critical_messages_survive_a_killed_server_into_the_recipients_history(
        fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    server = fresh_redis_server
    sender = fe.make("Messenger", server.url, "a", "lead", namespace=ns, persist_history=True,
                     **FAST_RETRY)
    sender.send("b", "before", priority=8)
    sender.flush()
    server.pause()
    ids = [sender.send("b", n, priority=9) for n in range(10)]
    kill_hard(server)
    with pytest.raises(PublishFailedError, match=r"10 priority 8-9 publish\(es\) kept"):
        sender.send("b", "dropped", priority=3)
    assert sender.stats()["publish_dropped_by_priority"] == {3: 1}
    server.start()
    sender.flush()
    receiver = fe.make("Messenger", server.url, "b", "lead", namespace=ns)
    stored = receiver.stored_history()
    assert [m.id for m in stored if m.priority == 9] == ids
    assert "dropped" not in [m.data for m in stored]
    print(f"\nscenario messenger paused+killed [{fe.kind}]: critical sent 10, in the "
          f"recipient's history {len(stored)}, resent {sender.stats()['critical_resent']}, "
          f"priority 3 dropped and raised {sender.stats()['publish_failed']}")
