"""SwarmState against a real redis-server: TTL, checkpoints, interrupted swarms, recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import (
    InvalidIdError,
    InvalidOptionError,
    RecoveryRefusedError,
    SwarmNotFoundError,
    SwarmState,
)


class FakeClock:
    """Wall-clock seconds a test can move forward."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def state(fe: Frontend, url: str, ns: str, **settings: Any) -> Any:
    return fe.make("SwarmState", url, namespace=ns, **settings)


def test_save_and_load_round_trip_and_partial_updates(fe: Frontend, redis_server: Any, ns: str,
                                                      raw: redis.Redis) -> None:
    st = state(fe, redis_server.url, ns)
    assert st.load("swarm-a") is None
    st.save("swarm-a", loop=3, phase="auth", agents={"coder-1": "working"}, data={"epic": "E1"})
    st.set_agent("swarm-a", "tester-1", "spawned")
    st.save("swarm-a", phase="profile")
    record = st.load("swarm-a")
    assert (record.swarm, record.status, record.loop, record.phase) == ("swarm-a", "running", 3,
                                                                        "profile")
    assert record.agents == {"coder-1": "working", "tester-1": "spawned"}
    assert record.data == {"epic": "E1"}
    assert record.created <= record.updated and abs(record.heartbeat - time.time()) < 5
    assert 3590 < record.ttl <= 3600
    assert raw.hget(f"{ns}:swarm:swarm-a", "phase") == b"profile", "readable with redis-cli"


def test_ttl_expires_the_state_and_every_write_or_heartbeat_refreshes_it(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    # ttl 3 s, a heartbeat 1.5 s in, a load 3.3 s in: past the TTL the save set, inside the
    # one the heartbeat set. A stall of up to 1.5 s before the heartbeat or 1.2 s before the
    # load is allowed (ttl 2 s with steps of 1.2 s allowed 0.8 s). Without the refresh the
    # state is gone at 3.0 s, and the load sees None.
    st = state(fe, redis_server.url, ns, ttl=3)
    st.save("short", phase="p")
    saved = time.monotonic()
    assert 1 <= raw.ttl(f"{ns}:swarm:short") <= 3
    time.sleep(1.5)
    assert st.heartbeat("short") is True
    time.sleep(max(0.0, saved + 3.3 - time.monotonic()))
    assert st.load("short") is not None, "the heartbeat refreshed the TTL"
    assert wait_until(lambda: st.load("short") is None, timeout=10, interval=0.1)
    assert st.heartbeat("short") is False, "a heartbeat does not bring an expired swarm back"
    assert raw.exists(f"{ns}:swarm:short") == 0


def test_checkpoints_keep_the_last_n_newest_first(fe: Frontend, redis_server: Any,
                                                  ns: str) -> None:
    st = state(fe, redis_server.url, ns, keep_checkpoints=3)
    for loop in range(5):
        st.save("swarm-a", loop=loop)
        st.checkpoint("swarm-a")
    kept = st.checkpoints("swarm-a")
    assert [c.loop for c in kept] == [4, 3, 2]
    assert all(c.checkpointed is not None for c in kept)
    with pytest.raises(SwarmNotFoundError, match="no state to checkpoint"):
        st.checkpoint("nobody")


def test_interrupted_means_not_finished_and_silent_for_max_age(fe: Frontend, redis_server: Any,
                                                               ns: str) -> None:
    clock = FakeClock()
    st = state(fe, redis_server.url, ns, clock=clock, max_age=30)
    for swarm in ("old-running", "old-finished", "old-recovering", "fresh"):
        st.save(swarm, phase="x")
    st.finish("old-finished")
    st.save("old-recovering", status="recovering")
    clock.now += 31
    st.heartbeat("fresh")
    assert [r.swarm for r in st.swarms()] == ["fresh", "old-finished", "old-recovering",
                                              "old-running"]
    assert {r.swarm for r in st.interrupted()} == {"old-running", "old-recovering"}
    assert st.interrupted(max_age=60) == []
    assert {r.swarm for r in st.interrupted(max_age=0)} == {"fresh", "old-recovering",
                                                            "old-running"}


def test_recover_claims_once_marks_recovering_and_refuses_what_it_should(
        fe: Frontend, redis_server: Any, ns: str) -> None:
    clock = FakeClock()
    st = state(fe, redis_server.url, ns, clock=clock, max_age=30)
    st.save("swarm-a", loop=2, phase="auth", agents={"coder-1": "working"}, data={"step": 7})
    st.checkpoint("swarm-a")
    st.save("done", phase="x")
    st.finish("done")
    with pytest.raises(RecoveryRefusedError, match="still running"):
        st.recover("swarm-a")
    clock.now += 40
    recovered = st.recover("swarm-a", recoverer="tester")
    assert recovered.source == "state" and len(recovered.checkpoints) == 1
    got = recovered.state
    assert (got.status, got.loop, got.phase, got.data) == ("recovering", 2, "auth", {"step": 7})
    assert (got.recoveries, got.recovered_by, got.heartbeat) == (1, "tester", clock.now)
    with pytest.raises(RecoveryRefusedError, match="already being recovered"):
        st.recover("swarm-a")
    assert st.recover("swarm-a", force=True).state.recoveries == 2
    clock.now += 40
    with pytest.raises(RecoveryRefusedError, match="'done' is finished"):
        st.recover("done")
    with pytest.raises(SwarmNotFoundError, match="no state and no checkpoint"):
        st.recover("nobody")


def test_recover_falls_back_to_the_newest_checkpoint_when_the_state_is_gone(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    st = state(fe, redis_server.url, ns)
    st.save("swarm-a", loop=1, phase="auth", agents={"coder-1": "working"})
    st.checkpoint("swarm-a")
    st.save("swarm-a", loop=2, phase="profile")
    st.checkpoint("swarm-a")
    raw.delete(f"{ns}:swarm:swarm-a")
    recovered = st.recover("swarm-a")
    assert recovered.source == "checkpoint"
    assert (recovered.state.loop, recovered.state.phase) == (2, "profile")
    assert recovered.state.agents == {"coder-1": "working"}
    assert st.load("swarm-a").status == "recovering"


def test_two_recoverers_racing_get_the_swarm_once(redis_server: Any, ns: str) -> None:
    clock = FakeClock()
    setup = SwarmState.from_url(redis_server.url, namespace=ns, clock=clock)
    for i in range(20):
        setup.save(f"s{i}", phase="x")
    clock.now += 100
    results: list[list[str]] = [[], []]

    def recover_all(slot: int) -> None:
        with SwarmState.from_url(redis_server.url, namespace=ns, clock=clock) as st:
            results[slot] = [r.swarm for r in st.recover_interrupted(recoverer=f"r{slot}")]

    threads = [threading.Thread(target=recover_all, args=(slot,)) for slot in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results[0] + results[1]) == sorted(f"s{i}" for i in range(20))
    assert set(results[0]).isdisjoint(results[1])
    setup.close()


def test_swarms_uses_scan_never_keys(fresh_redis_server: Any, ns: str) -> None:
    raw = redis.Redis.from_url(fresh_redis_server.url, protocol=2)
    with SwarmState.from_url(fresh_redis_server.url, namespace=ns) as st:
        for i in range(1200):
            raw.hset(f"{ns}:swarm:s{i}", mapping={"status": "running", "heartbeat": "0"})
        raw.hset(f"{ns}:swarm:not:a:swarm", "status", "running")
        raw.set(f"{ns}:swarmish", "x")
        raw.config_resetstat()
        assert len(st.swarms()) == 1200
    stats = raw.info("commandstats")
    assert "cmdstat_keys" not in stats
    assert stats["cmdstat_scan"]["calls"] >= 2
    raw.close()


def test_background_heartbeat_keeps_a_swarm_alive_and_stops_at_close(
        fe: Frontend, redis_server: Any, ns: str) -> None:
    baseline = fe.background_workers()
    # Heartbeats every 0.1 s, judged against 1.5 s: 1.6 s after the save, only the heartbeat
    # keeps the swarm fresh, and a heartbeat thread starved for up to 1.4 s is allowed
    # (max_age 0.5 s allowed 0.4 s).
    st = state(fe, redis_server.url, ns, max_age=1.5)
    st.save("busy", phase="x")
    st.start_heartbeat("busy", interval=0.1)
    time.sleep(1.6)
    assert st.interrupted() == []
    assert fe.background_workers() > baseline
    st.close()
    assert wait_until(lambda: fe.background_workers() == baseline, timeout=5)
    time.sleep(0.6)
    reader = state(fe, redis_server.url, ns, max_age=0.5)
    assert [r.swarm for r in reader.interrupted()] == ["busy"]


def test_recovery_after_killing_a_process_mid_phase(redis_server: Any, ns: str) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pytest_cfn import SwarmState
        st = SwarmState.from_url({redis_server.url!r}, namespace={ns!r})
        st.save("swarm-k", loop=3, phase="auth", agents={{"coder-1": "working",
                "reviewer-1": "waiting"}}, data={{"files": ["api.py"]}})
        st.checkpoint("swarm-k")
        st.save("swarm-k", phase="auth-tests")
        st.start_heartbeat("swarm-k", interval=0.1)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # Judged against 1.5 s, 1.6 s after the save: only the heartbeat keeps it fresh,
        # and a child starved of the CPU for up to 1.4 s is allowed (0.5 s allowed 0.4 s).
        with SwarmState.from_url(redis_server.url, namespace=ns, max_age=1.5) as st:
            time.sleep(1.6)
            assert st.interrupted() == [], "alive while its heartbeat runs"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert wait_until(lambda: [r.swarm for r in st.interrupted()] == ["swarm-k"],
                              timeout=10, interval=0.1)
            recovered = st.recover("swarm-k")
            assert recovered.state.status == "recovering"
            assert (recovered.state.loop, recovered.state.phase) == (3, "auth-tests")
            assert recovered.state.agents == {"coder-1": "working", "reviewer-1": "waiting"}
            assert recovered.state.data == {"files": ["api.py"]}
            assert [c.phase for c in recovered.checkpoints] == ["auth"]
            assert st.interrupted() == [], "claimed: its heartbeat is fresh again"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_bad_ids_and_settings_are_refused(fe: Frontend, redis_server: Any, ns: str) -> None:
    with pytest.raises(InvalidOptionError, match="ttl must be"):
        state(fe, redis_server.url, ns, ttl=0)
    with pytest.raises(InvalidOptionError, match="keep_checkpoints"):
        state(fe, redis_server.url, ns, keep_checkpoints=0)
    st = state(fe, redis_server.url, ns)
    with pytest.raises(InvalidIdError, match="swarm id 'a:b' contains ':'"):
        st.save("a:b", phase="x")
    with pytest.raises(InvalidIdError, match="agent id"):
        st.set_agent("a", "x y", "working")
    with pytest.raises(InvalidOptionError, match="not terminal"):
        st.finish("a", status="running")
    with pytest.raises(InvalidOptionError, match="loop must be an integer"):
        st.save("a", loop=-1)
    with pytest.raises(InvalidOptionError, match="cannot be encoded as JSON"):
        st.save("a", data={"x": object()})
    assert st.swarms() == []
