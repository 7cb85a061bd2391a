"""``cfn publish / monitor / swarms / recover`` run as subprocesses against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis
from frontends import wait_until

from pytest_cfn import SwarmState


def cfn_env(url: str | None, ns: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CFN_REDIS_URL", "CFN_NAMESPACE")}
    if url is not None:
        env["CFN_REDIS_URL"] = url
    env["CFN_NAMESPACE"] = ns
    return env


def cfn(*args: str, url: str | None, ns: str,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_cfn", *args], capture_output=True,
                          text=True, timeout=timeout, env=cfn_env(url, ns))


class Monitor:
    """``cfn monitor`` in the background; its lines are collected as they come."""

    def __init__(self, url: str, ns: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_cfn", "monitor", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=cfn_env(url, ns))
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()
        # Deadlines bound a failing wait only: on a loaded machine one `cfn` start took 14 s.
        assert wait_until(lambda: any("watching" in line for line in self.err), timeout=60), \
            self.err

    @staticmethod
    def _read(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def finish(self) -> int:
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)


def test_publish_is_seen_by_monitor_and_critical_events_are_kept(
        redis_server: Any, ns: str, raw: redis.Redis) -> None:
    monitor = Monitor(redis_server.url, ns, "--swarm", "s1", "--count", "2")
    out = cfn("publish", "--swarm", "s1", "--type", "cfn.loop.phase.start",
              "--data", '{"loop":3,"phase":"auth"}', "--priority", "9",
              url=redis_server.url, ns=ns)
    assert out.returncode == 0, out.stderr
    assert "published cfn-cli." in out.stdout and "kept in the critical stream" in out.stdout
    out = cfn("publish", "--swarm", "s2", "--to", "s1", "--data", '{"q": 1}',
              url=redis_server.url, ns=ns)
    assert out.returncode == 0, out.stderr
    assert monitor.finish() == 0
    event, message = monitor.out
    assert "event" in event and "cfn.loop.phase.start" in event and "p9" in event
    assert '{"loop":3,"phase":"auth"}' in event
    assert "message" in message and "s2->s1" in message and '{"q":1}' in message
    assert raw.xlen(f"{ns}:critical:s1") == 1


def test_monitor_json_filters_by_type_and_sets_aside_garbage(redis_server: Any, ns: str,
                                                             raw: redis.Redis) -> None:
    monitor = Monitor(redis_server.url, ns, "--type", "agent.*", "--json", "--count", "2")
    for event_type in ("task.assign", "agent.spawn"):
        assert cfn("publish", "--swarm", "s9", "--type", event_type, "--data", "7",
                   url=redis_server.url, ns=ns).returncode == 0
    raw.publish(f"{ns}:event:s9:agent.bad", b"not an envelope")
    assert monitor.finish() == 0
    records = [json.loads(line) for line in monitor.out]
    assert records[0]["kind"] == "event" and records[0]["type"] == "agent.spawn"
    assert records[0]["swarm"] == "s9" and records[0]["data"] == 7
    assert records[1]["kind"] == "malformed" and records[1]["channel"].endswith("agent.bad")


def test_monitor_stops_after_its_duration(redis_server: Any, ns: str) -> None:
    started = time.monotonic()
    out = cfn("monitor", "--duration", "0.5", url=redis_server.url, ns=ns)
    assert out.returncode == 0 and out.stdout == ""
    # A monitor that ignores --duration never stops (cfn's 120 s timeout raises); a loaded
    # machine took 14 s just to start `cfn --help`, so 60 s, not 20.
    assert time.monotonic() - started < 60


def test_swarms_lists_state_and_shows_one_swarm(redis_server: Any, ns: str) -> None:
    with SwarmState.from_url(redis_server.url, namespace=ns) as st:
        st.save("swarm-a", loop=3, phase="auth", agents={"coder-1": "working", "rev-1": "done"})
        st.save("swarm-b", phase="profile")
        st.checkpoint("swarm-b")
    out = cfn("swarms", url=redis_server.url, ns=ns)
    assert out.returncode == 0, out.stderr
    header, a, b = out.stdout.splitlines()
    assert header.split() == ["SWARM", "STATUS", "LOOP", "PHASE", "AGENTS", "HEARTBEAT", "TTL"]
    assert a.split()[:6] == ["swarm-a", "running", "3", "auth", "2", "(1"]
    assert b.split()[:4] == ["swarm-b", "running", "-", "profile"]
    out = cfn("swarms", "swarm-b", url=redis_server.url, ns=ns)
    assert "phase:      profile" in out.stdout and "checkpoints: 1" in out.stdout
    out = cfn("swarms", "--json", url=redis_server.url, ns=ns)
    assert [json.loads(line)["swarm"] for line in out.stdout.splitlines()] == ["swarm-a",
                                                                               "swarm-b"]
    out = cfn("swarms", url=redis_server.url, ns=ns + "x")
    assert out.returncode == 0 and "no swarms with state" in out.stdout


def test_recover_lists_interrupted_swarms_and_resumes_one(redis_server: Any, ns: str) -> None:
    with SwarmState.from_url(redis_server.url, namespace=ns) as st:
        st.save("stuck", loop=2, phase="auth", agents={"coder-1": "working"})
        st.save("finished", phase="x")
        st.finish("finished")
    time.sleep(0.3)
    out = cfn("recover", "--max-age", "0.2", url=redis_server.url, ns=ns)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["SWARM", "stuck"]
    out = cfn("recover", "--max-age", "0.2", "--resume", "stuck", "--json",
              url=redis_server.url, ns=ns)
    assert out.returncode == 0, out.stderr
    claimed = json.loads(out.stdout)
    assert claimed["source"] == "state" and claimed["state"]["status"] == "recovering"
    assert claimed["state"]["phase"] == "auth" and claimed["state"]["recovered_by"] == "cfn-cli"
    # The claim above beat its heart; judged against 10 minutes, not 5 s (each `cfn` here is a
    # new process, and one took 14 s to start on a loaded machine: the claim would look stale).
    again = cfn("recover", "--max-age", "600", "--resume", "stuck", url=redis_server.url, ns=ns)
    assert again.returncode == 2
    assert again.stderr.startswith("cfn recover: error: swarm 'stuck' beat its heart")
    forced = cfn("recover", "--resume", "stuck", "--force", url=redis_server.url, ns=ns)
    assert forced.returncode == 0 and "claimed stuck for recovery" in forced.stdout
    out = cfn("recover", "--max-age", "30", url=redis_server.url, ns=ns)
    assert "no interrupted swarms (no heartbeat for 30 s or more)" in out.stdout


BAD_INPUT = [
    (["publish", "--swarm", "s1", "--type", "x", "--data", "{bad"], "--data is not valid JSON"),
    (["publish", "--swarm", "s1:x", "--type", "x"], "swarm id 's1:x' contains ':'"),
    (["publish", "--swarm", "s1", "--type", "agent.*"], "event type 'agent.*' contains"),
    (["publish", "--swarm", "s1", "--type", "x", "--priority", "10"], "priorities are integers"),
    (["publish", "--swarm", "s1"], "give --type TYPE for an event, or --to SWARM"),
    (["publish", "--swarm", "s1", "--to", "*"], "swarm id '*' contains the glob"),
    (["monitor", "--swarm", "a b"], "swarm id 'a b' contains whitespace"),
    (["monitor", "--type", "a:b"], "pattern 'a:b' contains ':'"),
    (["monitor", "--count", "zero"], "--count 'zero' is not a whole number"),
    (["monitor", "--no-events", "--no-messages"], "leave nothing to show"),
    (["swarms", "no:such"], "swarm id 'no:such' contains ':'"),
    (["swarms", "nobody"], "swarm 'nobody' has no state"),
    (["recover", "--max-age", "soon"], "--max-age 'soon' is not a number of seconds"),
    (["recover", "--resume", "nobody"], "swarm 'nobody' has no state and no checkpoint"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT,
                         ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_gives_one_clear_line_and_exit_code_2(redis_server: Any, ns: str,
                                                        args: list[str], message: str) -> None:
    out = cfn(*args, url=redis_server.url, ns=ns)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"cfn {args[0]}: error: ") and message in out.stderr


@pytest.mark.parametrize("command", [
    ["publish", "--swarm", "s1", "--type", "agent.spawn"],
    ["monitor"],
    ["swarms"],
    ["recover"],
])
def test_an_unreachable_or_missing_server_is_one_line_and_exit_code_2(
        ns: str, command: list[str], unreachable_url: str) -> None:
    out = cfn(*command, url=unreachable_url, ns=ns)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    host_port = unreachable_url.removeprefix("redis://").removesuffix("/0")
    assert f"cannot reach Redis at {host_port}" in out.stderr
    out = cfn(*command, url=None, ns=ns)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "no Redis server given: pass --redis" in out.stderr


@pytest.mark.parametrize("command", ["publish", "monitor", "swarms", "recover"])
def test_every_subcommand_has_help(command: str, ns: str) -> None:
    out = cfn(command, "--help", url=None, ns=ns)
    assert out.returncode == 0
    assert f"usage: cfn {command}" in out.stdout and "--redis URL" in out.stdout
    assert "--namespace" in out.stdout
