"""Durable critical events: priority 8-9 go to the swarm's stream and missed ones are replayed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import msgspec
import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import CriticalOptions, Envelope, InvalidOptionError
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.critical_log import APPEND_AND_PUBLISH, CatchUp
from pytest_cfn._core.sequence import SequenceTracker


def envelope(seq: int, priority: int, publisher: str = "p1", swarm: str = "s1") -> Envelope:
    return Envelope(id=f"{publisher}-{seq}", swarm=swarm, source="raw", type="cfn.loop.step",
                    priority=priority, seq=seq, ts=time.time_ns(), publisher=publisher, data=seq)


def critical_eval(ns: str, env: Envelope) -> tuple[Any, ...]:
    """The command an EventBus sends for a priority 8-9 event, for a raw pipeline."""
    return ("EVAL", APPEND_AND_PUBLISH, 1, f"{ns}:critical:{env.swarm}", 10_000, 3600,
            msgspec.json.encode(env), f"{ns}:event:{env.swarm}:{env.type}")


def critical_data(events: list[Any]) -> list[Any]:
    return [e.data for e in events if e.priority >= 8]


def test_a_restarted_subscriber_gets_every_missed_critical_event_once(
        fe: Frontend, redis_server: Any, ns: str) -> None:
    before: list[Any] = []
    watcher = fe.event_bus(redis_server.url, "s1", "watcher", namespace=ns)
    watcher.subscribe("*", before.append)
    pub = fe.event_bus(redis_server.url, "s1", "coordinator", namespace=ns)
    pub.publish("cfn.loop.phase.start", "start", priority=9)
    pub.publish("agent.tick", "tick")
    pub.flush()
    assert wait_until(lambda: len(before) == 2)
    watcher.close()
    for i in range(1, 6):
        pub.publish("cfn.loop.phase.step", i, priority=8 + i % 2)
        pub.publish("agent.tick", -i)
    pub.flush()
    after: list[Any] = []
    restarted = fe.event_bus(redis_server.url, "s1", "watcher", namespace=ns)
    restarted.subscribe("*", after.append)
    assert wait_until(lambda: len(after) == 5)
    pub.publish("cfn.loop.phase.end", "end", priority=9)
    pub.flush()
    assert wait_until(lambda: len(after) == 6)
    time.sleep(0.2)
    assert [e.data for e in after] == [1, 2, 3, 4, 5, "end"], "every missed one, once, in order"
    stats = restarted.stats()
    assert (stats["replayed"], stats["duplicates"], stats["lost"]) == (5, 0, 0)


def test_critical_events_lost_in_a_client_kill_are_replayed(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "s1", "w", namespace=ns)
    sub.subscribe("*", got.append)
    assert sub.wait_idle(5), "the catch-up at start is done"
    raw.execute_command(*critical_eval(ns, envelope(1, 9)))
    assert wait_until(lambda: len(got) == 1)
    with raw.pipeline(transaction=True) as pipe:
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for seq in range(2, 22):
            env = envelope(seq, 8 if seq % 2 else 5)
            if env.priority >= 8:
                pipe.execute_command(*critical_eval(ns, env))
            else:
                pipe.publish(f"{ns}:event:s1:{env.type}", msgspec.json.encode(env))
        pipe.execute()
    critical_seqs = [1, *range(3, 22, 2)]
    assert wait_until(lambda: critical_data(got) == critical_seqs, timeout=10), got
    stats = sub.stats()
    assert stats["subscriber_reconnects"] == 1
    assert stats["replayed"] == 10 and stats["duplicates"] == 0
    assert stats["lost"] == 10, "the priority 5 events in the gap stay lost, and are counted"
    raw.publish(f"{ns}:event:s1:cfn.loop.step", msgspec.json.encode(envelope(22, 5)))
    assert wait_until(lambda: got[-1].data == 22)
    assert sub.stats()["lost"] == 10


def test_a_gap_seen_in_the_sequence_triggers_a_catch_up(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    got: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "w", namespace=ns)
    sub.subscribe("*", lambda e: got.append(e.seq))
    assert sub.wait_idle(5), "the catch-up at start is done"
    channel = f"{ns}:event:s1:cfn.loop.step"
    raw.publish(channel, msgspec.json.encode(envelope(1, 5)))
    assert wait_until(lambda: got == [1])
    raw.xadd(f"{ns}:critical:s1", {"envelope": msgspec.json.encode(envelope(2, 9))})
    raw.publish(channel, msgspec.json.encode(envelope(3, 5)))
    assert wait_until(lambda: sorted(got) == [1, 2, 3])
    stats = sub.stats()
    assert (stats["replayed"], stats["lost"], stats["reordered"]) == (1, 0, 1)
    assert stats["replay_runs"] >= 2


def test_a_late_starting_subscriber_replays_recent_critical_events(
        fe: Frontend, redis_server: Any, ns: str) -> None:
    pub = fe.event_bus(redis_server.url, "s1", "coordinator", namespace=ns)
    for i in range(3):
        pub.publish("cfn.loop.phase.start", i, priority=9)
        pub.publish("agent.tick", -i)
    pub.flush()
    late: list[Any] = []
    no_window: list[Any] = []
    fe.event_bus(redis_server.url, "s1", "late", namespace=ns).subscribe("*", late.append)
    fe.event_bus(redis_server.url, "s1", "strict", namespace=ns,
                 critical=CriticalOptions(replay_window=0)).subscribe("*", no_window.append)
    assert wait_until(lambda: [e.data for e in late] == [0, 1, 2])
    pub.publish("cfn.loop.phase.end", "end", priority=8)
    pub.flush()
    assert wait_until(lambda: [e.data for e in late] == [0, 1, 2, "end"])
    assert wait_until(lambda: [e.data for e in no_window] == ["end"])


def test_only_priorities_8_and_9_are_kept_trimmed_and_with_a_ttl(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    pub = fe.event_bus(redis_server.url, "s1", "c", namespace=ns,
                       critical=CriticalOptions(stream_length=10, ttl=120))
    for i in range(30):
        pub.publish("agent.tick", i, priority=1 + i % 9)
    assert pub.flush() == 30
    key = f"{ns}:critical:s1"
    entries = raw.xrange(key)
    priorities = [msgspec.json.decode(fields[b"envelope"])["priority"] for _, fields in entries]
    assert len(entries) == 6 and set(priorities) == {8, 9}
    for i in range(30):
        pub.publish("cfn.loop.step", i, priority=9)
    pub.flush()
    assert raw.xlen(key) == 10
    assert 100 < raw.ttl(key) <= 120
    off = fe.event_bus(redis_server.url, "s2", "c", namespace=ns,
                       critical=CriticalOptions(enabled=False))
    off.publish("cfn.loop.step", 1, priority=9)
    off.flush()
    assert raw.exists(f"{ns}:critical:s2") == 0


def test_a_killed_subscriber_process_catches_up_after_it_restarts(redis_server: Any, ns: str,
                                                                  raw: redis.Redis) -> None:
    script = textwrap.dedent(f"""
        import time
        from pytest_cfn import CriticalOptions, EventBus
        bus = EventBus.from_url({redis_server.url!r}, swarm="s1", agent="watcher",
                                namespace={ns!r}, critical=CriticalOptions(sync_interval=0.2))
        bus.subscribe("*", lambda e: print("got", e.data, flush=True))
        print("ready", flush=True)
        time.sleep(60)
    """)

    def start() -> tuple[subprocess.Popen[str], list[str]]:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        lines: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.strip())

        threading.Thread(target=read, daemon=True).start()
        assert wait_until(lambda: "ready" in lines, timeout=10)
        return proc, lines

    pub_cmd = [sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from pytest_cfn import EventBus
        with EventBus.from_url({redis_server.url!r}, swarm="s1", agent="c", namespace={ns!r}) as b:
            for n in sys.argv[1:]:
                b.publish("cfn.loop.phase.step", int(n), priority=9)
                b.publish("agent.tick", -int(n))
    """)]
    first, lines = start()
    try:
        subprocess.run([*pub_cmd, "1"], check=True, timeout=30)
        assert wait_until(lambda: "got 1" in lines, timeout=10)
        # The kill comes once the watcher's periodic catch-up has stored its cursor past event
        # 1 (after a crash, what came in the last sync_interval + settle_time may come again:
        # the documented at-least-once). A fixed 0.6 s sleep left 0.15 s for a loaded machine.
        (entry_id, _), = raw.xrange(f"{ns}:critical:s1")
        assert wait_until(lambda: raw.get(f"{ns}:critical-cursor:s1:watcher") == entry_id,
                          timeout=15)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        subprocess.run([*pub_cmd, "2", "3", "4"], check=True, timeout=30)
        second, lines = start()
        try:
            assert wait_until(lambda: "got 4" in lines, timeout=10)
            time.sleep(0.3)
            assert [x for x in lines if x != "ready"] == ["got 2", "got 3", "got 4"]
        finally:
            second.kill()
            second.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)


def catch_up(window: float = 60.0) -> CatchUp:
    return CatchUp(ChannelNames("ns"), "s1", "w", CriticalOptions(replay_window=window, batch=3))


def entries(*envs: Envelope, start: int = 1000) -> list[Any]:
    return [[f"{start + i}-0".encode(), [b"envelope", msgspec.json.encode(e)]]
            for i, e in enumerate(envs)]


def test_catch_up_skips_handed_on_pulls_queued_ahead_and_turns_lost_into_reordered() -> None:
    cu = catch_up()
    cu.start_from(None, [b"2000", b"0"])
    assert cu.range_args()[2] == f"{2_000_000 - 60_000}-0"
    tracker = SequenceTracker()
    decode = msgspec.json.Decoder(Envelope).decode
    for seq in (1, 2, 5):
        tracker.observe("p1", seq)
        assert cu.observe_live(envelope(seq, 9 if seq != 2 else 5), tracker.lost)
    assert cu.claim("p1-1") and not cu.claim("p1-1")
    assert cu.due(0.0), "the gap (3, 4) asked for a catch-up"
    cu.begin(0.0)
    handed, more = cu.take(entries(envelope(1, 9), envelope(4, 8), envelope(5, 9)),
                           decode, tracker)
    assert [e.seq for e in handed] == [4, 5] and more
    assert (cu.replayed, cu.pulled_ahead, cu.skipped) == (1, 1, 1)
    assert tracker.lost == 1 and tracker.reordered == 1
    assert not cu.claim("p1-5"), "the queued live copy of 5 is not handed on again"
    assert cu.cursor == "1002-0" and cu.range_args()[2] == "1002-1"
    assert cu.observe_live(envelope(4, 8), tracker.lost) is False


def test_catch_up_of_an_unseen_publisher_leaves_the_tracker_alone() -> None:
    cu = catch_up()
    cu.start_from(b"999-3", None)
    assert cu.range_args()[2] == "999-4"
    tracker = SequenceTracker()
    decode = msgspec.json.Decoder(Envelope).decode
    handed, more = cu.take(entries(envelope(7, 9, publisher="old")), decode, tracker)
    assert [e.seq for e in handed] == [7] and not more
    assert tracker.expected("old") is None
    assert cu.observe_live(envelope(7, 9, publisher="old"), 0) is False


def test_settle_moves_the_cursor_only_over_what_was_handed_on() -> None:
    cu = catch_up()
    cu.start_from(b"999-0", None)
    tracker = SequenceTracker()
    decode = msgspec.json.Decoder(Envelope).decode
    for seq in (1, 2, 3):
        tracker.observe("p1", seq)
        cu.observe_live(envelope(seq, 9), tracker.lost)
    cu.claim("p1-1")
    cu.claim("p1-2")
    assert cu.settle(entries(envelope(1, 9), envelope(2, 9), envelope(3, 9)), decode)
    assert cu.cursor == "1001-0", "3 was still queued: it is replayed at the next start"
    assert cu.cursor_command() is not None


def test_bad_critical_options_are_refused() -> None:
    with pytest.raises(InvalidOptionError, match="stream_length"):
        CriticalOptions(stream_length=0)
    with pytest.raises(InvalidOptionError, match="replay_window"):
        CriticalOptions(replay_window=-1)
    with pytest.raises(InvalidOptionError, match="sync_interval"):
        CriticalOptions(sync_interval=0)


def test_catch_ups_under_steady_critical_traffic_count_no_false_duplicates(
        fe: Frontend, redis_server: Any, ns: str) -> None:
    got: list[int] = []
    sub = fe.event_bus(redis_server.url, "s1", "w", namespace=ns,
                       critical=CriticalOptions(sync_interval=0.05, settle_time=0.1))
    sub.subscribe("*", lambda e: got.append(e.data))
    pub = fe.event_bus(redis_server.url, "s1", "c", namespace=ns)
    for burst in range(20):
        with pub.batch():
            for n in range(burst * 500, burst * 500 + 500):
                pub.publish("cfn.loop.step", n, priority=9 if n % 2 else 5)
        time.sleep(0.02)
    pub.flush()
    assert wait_until(lambda: len(got) == 10_000, timeout=20)
    assert sub.wait_idle(5)
    stats = sub.stats()
    assert stats["replay_runs"] >= 5, "catch-ups ran while events flowed"
    counts = (stats["duplicates"], stats["reordered"], stats["lost"], stats["replayed"])
    assert counts == (0, 0, 0, 0)
    assert sorted(got) == list(range(10_000))


def _steady(cu: CatchUp, tracker: SequenceTracker, seconds: float, step: float = 0.01) -> int:
    """Steady critical traffic for ``seconds``, a catch-up run whenever one is due (no IO:
    ``begin``/``finished`` as the replayer calls them); returns how many ran."""
    runs, now, seq = 0, 0.0, 0
    while now < seconds:
        seq += 1
        tracker.observe("p1", seq)
        cu.observe_live(envelope(seq, 9), tracker.lost)
        cu.claim(f"p1-{seq}")
        if cu.due(now):
            cu.begin(now)
            cu.finished(now)
            runs += 1
        now += step
    return runs


def test_steady_traffic_costs_a_run_and_a_follow_up_per_sync_interval() -> None:
    options = CriticalOptions(sync_interval=1.0, settle_time=0.25)
    cu = CatchUp(ChannelNames("ns"), "s1", "w", options)
    cu.request("start")
    runs = _steady(cu, SequenceTracker(), 10.0)
    # every 1.25 s a periodic run and its follow-up (a follow-up does not chain another:
    # before, one ran every settle_time, 40 in 10 s)
    assert 15 <= runs <= 18, runs


def test_events_too_new_for_a_follow_up_get_a_periodic_run_though_traffic_stops() -> None:
    options = CriticalOptions(sync_interval=1.0, settle_time=0.25)
    cu = CatchUp(ChannelNames("ns"), "s1", "w", options)
    tracker = SequenceTracker()
    cu.request("start")
    cu.begin(0.0)
    cu.finished(0.0)  # the start run: a follow-up at 0.25 s
    tracker.observe("p1", 1)
    cu.observe_live(envelope(1, 9), tracker.lost)  # arrives at 0.2 s, too new at 0.25 s
    assert cu.due(0.25)
    cu.begin(0.25)
    cu.finished(0.25)
    assert not cu.due(1.0), "nothing before sync_interval"
    assert cu.due(1.25), "the event seen before the follow-up gets a periodic run"
    cu.begin(1.25)
    cu.finished(1.25)  # the periodic run schedules its own follow-up
    assert cu.due(1.5)
    cu.begin(1.5)
    cu.finished(1.5)
    assert not cu.due(60.0), "no event since: nothing more to read"


def test_the_dispatcher_is_told_how_long_until_a_catch_up_falls_due() -> None:
    """``seconds_until_due`` agrees with ``due``: 0 exactly when due, the wait to the next
    timed run (follow-up, retry, periodic), None when only a new event can make it due."""
    options = CriticalOptions(sync_interval=1.0, settle_time=0.25, retry_delay=2.0)
    cu = CatchUp(ChannelNames("ns"), "s1", "w", options)
    tracker = SequenceTracker()
    assert cu.seconds_until_due(0.0) is None and not cu.due(0.0)  # nothing asked, no event
    cu.request("start")
    assert cu.seconds_until_due(0.0) == 0.0 and cu.due(0.0)
    cu.begin(0.0)
    cu.finished(0.0)  # a follow-up at 0.25 s
    assert cu.seconds_until_due(0.1) == pytest.approx(0.15) and not cu.due(0.1)
    assert cu.seconds_until_due(0.25) == 0.0 and cu.due(0.25)
    cu.begin(0.25)
    cu.finished(0.25)  # no follow-up of a follow-up; the periodic run can come at 1.25 s
    assert cu.seconds_until_due(0.5) == pytest.approx(0.75) and not cu.due(0.5)
    assert cu.seconds_until_due(1.3) is None and not cu.due(1.3)  # no critical event came
    tracker.observe("p1", 1)
    cu.observe_live(envelope(1, 9), tracker.lost)  # one comes: due at once
    assert cu.seconds_until_due(1.3) == 0.0 and cu.due(1.3)
    cu.begin(1.3)
    cu.failed(1.3)  # Redis unreachable: retried after retry_delay
    assert cu.seconds_until_due(2.0) == pytest.approx(1.3) and not cu.due(2.0)
    assert cu.seconds_until_due(3.3) == 0.0 and cu.due(3.3)
    # at every instant the two agree
    for step in range(0, 500):
        now = 3.3 + step / 100
        until = cu.seconds_until_due(now)
        assert (until == 0.0) == cu.due(now), now
