"""``cfn acl`` applied to a real server: a bus, a Messenger and SwarmState running as that
user work (live delivery, late-subscriber critical replay), and permission errors reach the
caller (PermissionDeniedError, on_error) instead of a log line."""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Any

import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import CfnError, PermissionDeniedError


def cfn_acl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_cfn", "acl", *args],
                          capture_output=True, text=True, timeout=30)


def as_user(url: str, user: str, password: str) -> str:
    return url.replace("redis://", f"redis://{user}:{password}@")


def apply(server: Any, line: str) -> None:
    client = redis.Redis.from_url(server.url, protocol=2)
    try:
        client.execute_command(*shlex.split(line))
    finally:
        client.close()


def test_cfn_acl_user_can_run_one_swarm_and_nothing_else(
        fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    out = cfn_acl("--swarm", "s1", "--namespace", ns, "--user", "agent-s1",
                  "--password", "pw-s1-secret")
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("ACL SETUSER agent-s1 reset on >pw-s1-secret ") and "\n" not in line
    apply(fresh_redis_server, line)
    url = as_user(fresh_redis_server.url, "agent-s1", "pw-s1-secret")
    errors: list[CfnError] = []

    pub = fe.event_bus(url, "s1", "pub", namespace=ns, on_error=errors.append)
    for n in range(10):  # before any subscriber: only a catch-up can deliver these
        pub.publish("cfn.loop.phase.start", n, priority=9)
    pub.flush()
    got: list[Any] = []
    late = fe.event_bus(url, "s1", "late", namespace=ns, on_error=errors.append)
    late.subscribe("*", lambda e: got.append((e.priority, e.data)))
    assert wait_until(lambda: [d for _, d in got] == list(range(10)), timeout=10), got
    pub.publish("agent.spawn", "live", priority=5)
    pub.publish("cfn.loop.phase.end", "live-critical", priority=8)
    pub.flush()
    assert wait_until(lambda: (5, "live") in got and (8, "live-critical") in got, timeout=5)
    late.close()  # settles the cursor (SET critical-cursor:s1:late)
    assert late.stats()["replayed"] == 10 and late.stats()["permission_errors"] == 0
    print(f"\nscenario cfn acl user [{fe.kind}]: critical sent before the subscriber 10, "
          f"replayed {late.stats()['replayed']}, live sent 2, delivered "
          f"{sum(1 for _, d in got if str(d).startswith('live'))}, permission errors "
          f"{late.stats()['permission_errors']}")

    m = fe.make("Messenger", url, "s1", "lead", namespace=ns, persist_history=True,
                on_error=errors.append)
    m.on_request(lambda msg: {"ok": msg.data})
    assert m.request("s1", 7, timeout=5).data == {"ok": 7}
    m.send("s2", {"hello": 1})
    m.flush()
    assert m.stored_history()  # its own history list
    state = fe.make("SwarmState", url, namespace=ns)
    state.save("s1", phase="auth")
    state.checkpoint("s1")
    assert state.load("s1").phase == "auth"
    assert errors == []

    # ...and nothing of another swarm
    other = fe.event_bus(url, "s2", "spy", namespace=ns)
    with pytest.raises(PermissionDeniedError, match=r"NOPERM.*cfn acl"):
        other.subscribe("*", print)
    with pytest.raises(PermissionDeniedError):
        state.save("s2", phase="auth")
    other.publish("agent.spawn", 1)
    with pytest.raises(PermissionDeniedError, match="NOPERM"):
        other.flush()


def test_an_acl_refusal_of_the_catch_up_reaches_on_error_and_stats(
        fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    # the grants the README used to imply: the channels and the stream, not the cursor
    apply(fresh_redis_server, f"ACL SETUSER partial reset on >partial-pw +@all "
                              f"&{ns}:event:s1:* ~{ns}:critical:s1*")
    url = as_user(fresh_redis_server.url, "partial", "partial-pw")
    errors: list[CfnError] = []
    got: list[Any] = []
    bus = fe.event_bus(url, "s1", "late", namespace=ns, on_error=errors.append)
    bus.subscribe("*", lambda e: got.append(e.data))
    assert wait_until(lambda: errors, timeout=5)
    assert isinstance(errors[0], PermissionDeniedError)
    assert "critical-cursor" in str(errors[0]) or "NOPERM" in str(errors[0])
    assert "cfn acl" in str(errors[0])
    stats = bus.stats()
    assert stats["permission_errors"] >= 1 and "NOPERM" in (stats["last_error"] or "")
    pub = fe.event_bus(url, "s1", "pub", namespace=ns)
    pub.publish("agent.spawn", "live")
    pub.flush()
    assert wait_until(lambda: "live" in got)  # live delivery still works
    print(f"\nscenario README-implied grants [{fe.kind}]: catch-up refusals reported to "
          f"on_error {len(errors)} (PermissionDeniedError), live delivered {got.count('live')}")


@pytest.mark.parametrize("args, message", [
    (["--swarm", "a*"], "swarm id 'a*' contains the glob character"),
    (["--swarm", "s1", "--agent", "x:y"], "agent id 'x:y'"),
    (["--swarm", "s1", "--password", "short"], "8-256 characters"),
    (["--swarm", "s1", "--user", "has space"], "ACL user name"),
])
def test_cfn_acl_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = cfn_acl(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert message in out.stderr and out.stderr.count("\n") == 1


def test_cfn_acl_without_a_password_generates_one_and_help_explains() -> None:
    first, second = cfn_acl("--swarm", "s1").stdout, cfn_acl("--swarm", "s1").stdout
    assert first.split()[5].startswith(">") and first.split()[5] != second.split()[5]
    assert first.split()[2] == "cfn-s1"
    assert "~critical-cursor:s1:*" in first and "&message:*:s1" in first
    assert "~critical-cursor:s1:a1 " in cfn_acl("--swarm", "s1", "--agent", "a1").stdout
    helped = subprocess.run([sys.executable, "-m", "pytest_cfn", "acl", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "ACL SETUSER" in helped.stdout
