"""The README is a contract: its python blocks run as written and do what the text says.

Every ```python block of README.md is run in a subprocess against a real redis-server of its
own, exactly as written except for the server URL, with a check of what the text around it
promises (printed lines, and a few lines run before and after the block). A python block with
no check here fails the test, so a new block gets one. The pytest examples run as a user's own
suite, through the plugin, on a real server and on fakeredis. The names, options, defaults and
exit codes the README promises are checked in test_readme_names.py.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from readme_text import fenced_blocks, run

from pytest_cfn.server import RedisServer

README_URL = "redis://localhost:6379"
README_TLS_URL = "rediss://redis.example.com:6380"
README_CA = "/etc/ssl/redis-ca.pem"


LIBRARY_BLOCKS = [(line, code) for line, code in fenced_blocks("python") if "def test_" not in code]
TEST_BLOCKS = [(line, code) for line, code in fenced_blocks("python") if "def test_" in code]


@dataclass(frozen=True)
class BlockCheck:
    """What the README promises of one python block: lines it prints, code run around it."""

    key: str
    prints: tuple[str, ...] = ()
    prelude: str = ""
    epilogue: str = ""
    tls: bool = False


EVENT_BUS_KEY = 'bus.subscribe("agent.*", handler)'
BLOCK_CHECKS = [
    BlockCheck(
        key=EVENT_BUS_KEY,
        # A second bus of the swarm, made before the block runs, sees what the block publishes
        # with the fields the comment names; the block's own handler may not have run before
        # close(), so its print is not required.
        prelude="""
import threading as _threading
from pytest_cfn import EventBus as _Bus
_seen, _spawned = [], _threading.Event()
_watcher = _Bus.from_url(URL, swarm="swarm-1", agent="watcher")
_watcher.subscribe("*", lambda e: (_seen.append(e), e.type == "agent.spawn" and _spawned.set()))
""",
        prints=(r"^1001$",),
        epilogue="""
assert _spawned.wait(10), "the watcher never saw agent.spawn"
_event = next(e for e in _seen if e.type == "agent.spawn")
assert (_event.data, _event.priority, _event.swarm, _event.source) == (
    {"agent": "coder-1"}, 7, "swarm-1", "coder-1"), _event
assert _event.id and _event.seq == 1 and _event.ts > 0, _event
import time as _time
_deadline = _time.monotonic() + 10
while sum(e.type == "task.progress" for e in _seen) < 1000 and _time.monotonic() < _deadline:
    _time.sleep(0.01)
assert sorted(e.data["n"] for e in _seen if e.type == "task.progress") == list(range(1000))
from pytest_cfn import BusClosedError
try:
    bus.publish("agent.spawn", {})
except BusClosedError:
    print("closed")
_watcher.close()
""",
    ),
    BlockCheck(
        key="share = SharedConnections(",
        epilogue="""
import redis as _redis
from pytest_cfn import BusClosedError
assert buses[0].stats()["connections"] == 0 and buses[0].stats()["shared_connections"] is True
for _bus in (buses[0], buses[-1], inboxes[0]):
    try:
        _bus.send("swarm-0", {}) if hasattr(_bus, "send") else _bus.publish("task.assign", {})
    except BusClosedError:
        pass
    else:
        raise AssertionError(f"{_bus!r} is still open after share.close()")
_names = [c["name"] for c in _redis.Redis.from_url(URL).client_list()]
assert not [n for n in _names if n.startswith("cfn:")], _names
print("share closed")
""",
        prints=(r"^share closed$",),
    ),
    BlockCheck(
        key="reviewer = Messenger.from_url(",
        prints=(r"^swarm-a swarm-b \{'phase': 'auth'\}$", r"^\{'ok': True\}$", r"^3$"),
        epilogue="""
assert [(h.sender, h.to, h.type) for h in m.history] == [
    ("swarm-a", "swarm-b", "message"), ("swarm-a", "swarm-b", "request"),
    ("swarm-b", "swarm-a", "reply")], m.history
""",
    ),
    BlockCheck(
        key='state.save("swarm-a"',
        # A swarm that stopped beating its heart two minutes ago, for the loop to recover.
        prelude="""
import time as _time
import redis as _redis
from pytest_cfn import SwarmState as _State
with _State.from_url(URL) as _old:
    _old.save("swarm-old", loop=2, phase="review")
_redis.Redis.from_url(URL).hset("swarm:swarm-old", "heartbeat", _time.time() - 120)
""",
        prints=(r"^resuming RecoveredSwarm\(swarm='swarm-old'",),
        epilogue="""
with SwarmState.from_url(URL) as _after:
    assert _after.load("swarm-a").status == "finished"
    assert len(_after.checkpoints("swarm-a")) == 1
    _old = _after.load("swarm-old")
    assert (_old.status, _old.phase, _old.recoveries) == ("recovering", "review", 1), _old
    assert [s.swarm for s in _after.interrupted(max_age=60)] == []
""",
    ),
    BlockCheck(
        key=README_TLS_URL,
        tls=True,
        epilogue="""
import threading as _threading
state.save("s1", loop=1, phase="tls")
assert state.load("s1").phase == "tls"
_got = _threading.Event()
bus.subscribe("tls.check", lambda event: _got.set())
bus.publish("tls.check", 1)
assert _got.wait(10), "no event over mutual TLS"
bus.close()
state.close()
print("tls ok")
""",
        prints=(r"^tls ok$",),
    ),
]


def check_for(code: str) -> BlockCheck:
    found = [c for c in BLOCK_CHECKS if c.key in code]
    assert len(found) == 1, (
        "a README python block without exactly one check in tests/test_readme_promises.py "
        f"(BLOCK_CHECKS): add one that asserts what the text promises:\n{code}"
    )
    return found[0]


def test_every_block_check_still_has_its_block() -> None:
    codes = [code for _, code in LIBRARY_BLOCKS]
    orphans = [c.key for c in BLOCK_CHECKS if not any(c.key in code for code in codes)]
    assert orphans == [], "checks whose README block is gone or changed its key line"
    assert len(LIBRARY_BLOCKS) >= 5 and len(TEST_BLOCKS) >= 4


def run_block(code: str, check: BlockCheck, url: str, cwd: Path,
              substitutions: dict[str, str]) -> str:
    for old, new in substitutions.items():
        code = code.replace(old, new)
    script = cwd / "readme_block.py"
    script.write_text(f"URL = {url!r}\n{check.prelude}\n{code}\n{check.epilogue}\n")
    result = run([sys.executable, str(script)], cwd=cwd)
    assert result.returncode == 0, f"the block failed:\n{code}\n{result.stdout}{result.stderr}"
    for promised in check.prints:
        assert re.search(promised, result.stdout, re.M), (promised, result.stdout)
    return result.stdout


@pytest.mark.parametrize(
    "code", [code for _, code in LIBRARY_BLOCKS], ids=[f"line{line}" for line, _ in LIBRARY_BLOCKS]
)
def test_python_block_runs_as_written_and_does_what_the_text_says(
    code: str, tmp_path: Path
) -> None:
    check = check_for(code)
    if check.tls:
        from pytest_cfn import ServerWithoutTlsError
        from pytest_cfn.tls_server import TlsRedisServer

        try:
            tls = TlsRedisServer().start()
        except ServerWithoutTlsError as exc:
            pytest.skip(f"redis-server without TLS: {exc}")
        try:
            # The block's client.pem / client.key are relative: run it where they are.
            run_block(code, check, tls.tls_url, tls.certs.client_cert.parent, {
                README_TLS_URL: f"rediss://localhost:{tls.tls_url.rsplit(':', 1)[1].split('/')[0]}",
                README_CA: str(tls.certs.ca),
            })
        finally:
            tls.stop()
        return
    with RedisServer() as server:
        base = server.url.rsplit("/", 1)[0]
        run_block(code, check, server.url, tmp_path, {README_URL: base})


FIXTURE_NAMES_TEST = """
def test_the_fixtures_have_what_the_readme_names(cfn_server, cfn_redis_url, cfn_swarm, cfn_perf):
    for name in ("url", "version", "backend", "embedded", "pid", "binary", "why"):
        assert hasattr(cfn_server, name), name
    assert cfn_server.url == cfn_redis_url and cfn_server.backend == "redis-server"
    swarm = cfn_swarm(2, swarm="named", team_size=7)
    for name in ("agents", "buses", "coordinators", "swarms", "wait_for", "wait_idle", "stats"):
        assert hasattr(swarm, name), name
    assert swarm.swarms == ["named"] and len(swarm.agents) == 2
    for name in ("record_latency", "latency", "measuring", "add_events", "record_throughput",
                 "record_loss", "record_critical", "record_cache", "record_bus",
                 "sample_connections", "set_targets", "run_event_bus"):
        assert hasattr(cfn_perf, name), name
"""


def write_test_blocks(tmp_path: Path, perf: bool) -> int:
    """The README's pytest examples as a user's own test files; how many tests they hold."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    tests = 0
    if not perf:
        (tmp_path / "test_readme_names.py").write_text(FIXTURE_NAMES_TEST)
        tests += 1
    for line, code in TEST_BLOCKS:
        if ("cfn_perf" in code) is perf:
            (tmp_path / f"test_readme_line{line}.py").write_text(code)
            tests += code.count("\ndef test_") + code.startswith("def test_")
    return tests


def test_the_fixture_examples_pass_as_a_users_suite(tmp_path: Path) -> None:
    count = write_test_blocks(tmp_path, perf=False)
    with RedisServer() as server:
        result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      f"--cfn-redis={server.url}"], cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(rf"\b{count} passed\b", out), out
    assert count >= 5


@pytest.mark.slow
def test_the_fixture_examples_pass_on_fakeredis_with_no_binary(tmp_path: Path) -> None:
    # Quick start: `pytest --cfn-redis=fakeredis://` runs every fixture on fakeredis's TCP server.
    count = write_test_blocks(tmp_path, perf=False)
    (tmp_path / "test_readme_names.py").unlink()  # it checks the real server's backend
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "--cfn-redis=fakeredis://"], cwd=tmp_path, CFN_REDIS_SERVER="/nonexistent")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(rf"\b{count - 1} passed\b", out), out


@pytest.mark.slow
def test_the_cfn_perf_example_passes_and_its_marker_sets_the_target(tmp_path: Path) -> None:
    count = write_test_blocks(tmp_path, perf=True)
    report = tmp_path / "result.json"
    with RedisServer() as server:
        result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      f"--cfn-redis={server.url}", f"--cfn-report={report}"], cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(rf"\b{count} passed\b", out) and count == 1, out
    # @pytest.mark.cfn_perf(max_p99_ms=50): the table judges the p99 against 50 ms.
    assert re.search(r"latency_p99 .*<= 50\.000 ms", out), out
    # --cfn-report: pytest-cfn/result JSON, schema version 1: machine, Redis version and
    # backend, one row per metric with value, unit, target, verdict, method, scope, and latency
    # percentiles with the encoded HdrHistogram.
    result_json = json.loads(report.read_text())
    assert (result_json["schema"], result_json["schema_version"]) == ("pytest-cfn/result", 1)
    assert result_json["machine"] and result_json["redis"]["version"]
    assert result_json["redis"]["backend"] == "redis-server"
    for row in result_json["metrics"]:
        assert {"value", "unit", "target", "verdict", "method", "scope"} <= set(row), row
    p99 = next(row for row in result_json["metrics"] if row["name"] == "latency_p99")
    assert p99["target"] == 50 and p99["latency"]["encoded"].startswith("HISTF")
    assert {"p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"} <= set(p99["latency"])




def awaited(code: str) -> str:
    """The sync Event Bus block as the asyncio front end takes it: the same names and arguments,
    awaited (README: "pytest_cfn.aio.EventBus, the same names and arguments, awaited")."""
    code = code.replace("from pytest_cfn import EventBus", "from pytest_cfn.aio import EventBus")
    code = re.sub(r"\bbus\.(subscribe|publish|flush|close)\(", r"await bus.\1(", code)
    code = code.replace("with bus.batch():", "async with bus.batch():")
    body = "\n".join(f"    {line}" for line in code.splitlines())
    return f"import asyncio\n\nasync def main():\n{body}\n\nasyncio.run(main())\n"


def test_the_event_bus_block_runs_awaited_on_the_asyncio_front_end(tmp_path: Path) -> None:
    code = next(code for _, code in LIBRARY_BLOCKS if EVENT_BUS_KEY in code)
    with RedisServer() as server:
        script = tmp_path / "readme_block_aio.py"
        script.write_text(awaited(code.replace(README_URL, server.url.rsplit("/", 1)[0])))
        result = run([sys.executable, str(script)], cwd=tmp_path)
    assert result.returncode == 0, f"{script.read_text()}\n{result.stdout}{result.stderr}"
    assert re.search(r"^1001$", result.stdout, re.M), result.stdout
    transcribed = script.read_text()
    assert "await bus.publish(" in transcribed and "async with bus.batch()" in transcribed
