"""The README is a contract: its python blocks run as written, and what it names exists.

Every ```python block of README.md is run in a subprocess against a real redis-server of its
own, exactly as written except for the server URL, with a check of what the text around it
promises (printed lines, and a few lines run after the block). A python block with no check
here fails the test, so a new block gets one. The pytest examples run as a user's own suite,
through the plugin. Then the names the README promises (options, subcommands, error classes,
exit codes, defaults) are checked against the code. Nothing here imports locust: the harness's
``--help`` runs in a subprocess.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

import pytest_cfn
import pytest_cfn._errors
import pytest_cfn.aio
from pytest_cfn.server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
RUN_TIMEOUT = 60.0
README_URL = "redis://localhost:6379"
README_TLS_URL = "rediss://redis.example.com:6380"
README_CA = "/etc/ssl/redis-ca.pem"


def fenced_blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block of ``language`` in the README."""
    pattern = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
    return [
        (README[: m.start()].count("\n") + 1, m.group(2))
        for m in pattern.finditer(README)
        if m.group(1) == language
    ]


def section(title: str) -> str:
    """The README's text under the heading ``title``, up to the next heading as high or higher."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", README, re.M)
    assert match is not None, f"README has no heading {title!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(README, match.end())
    return README[match.end(): end.start() if end else len(README)]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new user's shell: no pytest, xdist or CFN_* settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CFN_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(args: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)


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


BLOCK_CHECKS = [
    BlockCheck(
        key='bus.subscribe("agent.*", handler)',
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


def test_the_header_names_the_server_as_the_readme_quotes_it(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    pass\n")
    embedded = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path)
    assert re.search(r"^cfn: embedded redis-server [\d.]+ /\S+: .*found by --version .*; "
                     r"started when a test first needs it", embedded.stdout, re.M), embedded.stdout
    url = "redis://127.0.0.1:6390/0"
    from_env = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path,
                   CFN_REDIS_URL=url)
    quoted = (f"cfn: CFN_REDIS_URL='{url}' (from the environment); not checked until a test "
              "first needs a server")
    assert quoted in from_env.stdout and from_env.returncode == 0, from_env.stdout


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


# --- the cfn command line -------------------------------------------------------------------


def cli_block_commands() -> list[list[str]]:
    blocks = [code for _, code in fenced_blocks("bash") if code.lstrip().startswith("cfn publish")]
    assert len(blocks) == 1, "the README's `cfn` command-line block"
    return [shlex.split(line, comments=True) for line in blocks[0].splitlines() if line.strip()]


CLI_PROMISES = {
    ("publish", "--type"): (
        r"^published .* on swarm S \(priority 9\) and kept in the critical stream"),
    ("publish", "--to"): r"^sent \S+ from S to T \(priority 5\)$",
    ("swarms",): r"^SWARM +STATUS.*\n(.*\n)*S +running +3 +auth",
    ("recover",): r"^SWARM +STATUS.*\nS +running +3 +auth",
    ("acl",): r"^ACL SETUSER \S+ .*&event:S:\* &message:S:\* &message:\*:S .*~critical-cursor:S:A",
}


@pytest.mark.slow
def test_the_cli_examples_run_against_a_server_from_cfn_redis_url() -> None:
    commands = cli_block_commands()
    ran = 0
    with RedisServer() as server:
        # Swarm S, silent for two minutes: `cfn swarms` lists it and `cfn recover` finds it.
        with pytest_cfn.SwarmState.from_url(server.url) as state:
            state.save("S", loop=3, phase="auth")
        with redis.Redis.from_url(server.url) as raw:
            raw.hset("swarm:S", "heartbeat", time.time() - 120)
        for argv in commands:
            key = next((k for k in CLI_PROMISES if tuple(argv[1:2]) == k[:1]
                        and all(flag in argv for flag in k[1:])), None)
            if argv[1] in ("monitor", "bench", "report"):
                continue  # live, minutes long, or needs a saved sweep: tested elsewhere
            assert key is not None, f"no promise checked for {argv}"
            result = run([str(BIN / "cfn"), *argv[1:]], CFN_REDIS_URL=server.url)
            assert result.returncode == 0, (argv, result.stderr)
            assert re.search(CLI_PROMISES[key], result.stdout, re.M), (argv, result.stdout)
            ran += 1
    assert ran == len(CLI_PROMISES)


def test_the_cfn_subcommands_the_readme_names_are_those_cfn_help_lists() -> None:
    listed = run([str(BIN / "cfn"), "--help"])
    assert listed.returncode == 0
    real = set(re.findall(r"^    (\w+)", listed.stdout, re.M))
    named = set(re.findall(r"`cfn (\w+)", README)) | set(re.findall(r"^cfn (\w+)", README, re.M))
    assert named == real, f"README names {sorted(named)}, cfn --help lists {sorted(real)}"


@pytest.mark.parametrize("argv, says", [
    (["publish", "--swarm", "S", "--type", "x", "--data", "{bad"], "not valid JSON"),
    (["publish", "--swarm", "S*", "--type", "x", "--data", "1"], "swarm id 'S*'"),
    (["publish", "--swarm", "S", "--type", "x", "--data", "1", "--priority", "10"], "1 (low) to 9"),
    (["swarms", "--redis", "redis://127.0.0.1:1/0"], "connection refused"),
])
def test_bad_cli_input_is_one_line_and_exit_code_2(argv: list[str], says: str) -> None:
    result = run([str(BIN / "cfn"), *argv])
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


# --- names the README promises --------------------------------------------------------------


def error_tree() -> dict[str, tuple[str, set[str]]]:
    """README's error tree: class -> (its CfnError parent, the other bases it names)."""
    tree = next(code for _, code in fenced_blocks("") if code.startswith("CfnError\n"))
    parents: dict[str, tuple[str, set[str]]] = {}
    stack = ["CfnError"]
    for line in tree.splitlines()[1:]:
        depth = line.index("── ") // 4
        entry = line[line.index("── ") + 3:]
        named = re.findall(r"(\w+Error)(?: \(also (\w+)\))?", entry.split(":", 1)[0])
        del stack[depth + 1:]
        for name, also in named:
            parents[name] = (stack[depth], {also} - {""})
        stack.append(named[-1][0])
    return parents


def test_the_error_tree_is_the_class_hierarchy() -> None:
    tree = error_tree()
    exported = {name for name in pytest_cfn.__all__ if name.endswith("Error")}
    assert set(tree) | {"CfnError"} == exported
    for name, (parent, also) in tree.items():
        cls = getattr(pytest_cfn, name)
        assert getattr(pytest_cfn.aio, name) is cls, f"{name} is not exported by pytest_cfn.aio"
        bases = {base.__name__ for base in cls.__bases__}
        assert parent in bases, f"README: {name} under {parent}; its bases are {bases}"
        assert also <= {b.__name__ for b in cls.__mro__}, f"README: {name} also {also}"
    defined = {
        name for name, obj in inspect.getmembers(pytest_cfn._errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == "pytest_cfn._errors"
    }
    assert defined | {"ServerCheckError"} == exported


def test_every_plugin_option_and_ini_name_exists_in_pytest_help(tmp_path: Path) -> None:
    helptext = run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                   cwd=tmp_path).stdout
    plugin = section("The pytest plugin")
    named = set(re.findall(r"`(--cfn-[a-z-]+)", plugin))
    offered = set(re.findall(r"^  (--cfn-[a-z-]+)", helptext, re.M))
    assert named == offered, f"README {sorted(named)} against pytest --help {sorted(offered)}"
    for ini in set(re.findall(r"ini `(cfn_\w+)`", plugin)) | {"cfn_targets"}:
        assert re.search(rf"^  {ini} \(", helptext, re.M), ini
    assert re.search(r"--cfn-regression=PCT .*\n?.*\(10\)", helptext), "default 10 %"


@functools.lru_cache(maxsize=1)
def harness_help() -> str:
    result = run([sys.executable, str(ROOT / "loadtests" / "swarm.py"), "--help"])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_the_harness_option_table_is_what_its_help_offers() -> None:
    helptext = harness_help()
    table = section("The load harness: `locust -f loadtests/swarm.py`")
    rows = re.findall(r"^\| (`--cfn-[^|]+)\|", table, re.M)
    named = {opt for row in rows for opt in re.findall(r"`(--cfn-[a-z-]+)", row)}
    offered = set(re.findall(r"^  (--cfn-[a-z-]+)", helptext, re.M))
    assert named == offered, f"README table {sorted(named)} against --help {sorted(offered)}"


@pytest.mark.slow
def test_the_harness_exit_code_table_is_what_it_does() -> None:
    from pytest_cfn.measure.loadgen.verdicts import EXIT_CODES, run_outcome

    helptext = " ".join(harness_help().split())
    table = section("The load harness: `locust -f loadtests/swarm.py`")
    rows = re.findall(r"^\| (\d) \| `([a-z-]+)` \|", table, re.M)
    assert [code for code, _ in rows] == ["4", "1", "3", "0"], rows
    for code, _ in rows:
        assert f"{code} {EXIT_CODES[int(code)]}" in helptext, (code, helptext)
    # Earlier rows win: abnormal over fail over not judged.
    from pytest_cfn.measure.results import Metric

    def metric(verdict: str) -> Metric:
        return Metric(name="g", value=1.0, unit="x", method="m", verdict=verdict)  # type: ignore[arg-type]

    from pytest_cfn.measure.loadgen.verdicts import GeneratorLimit
    cases = {
        "abnormal": run_outcome([metric("fail"), metric("not-judged")], GeneratorLimit(), ["lost"]),
        "fail": run_outcome([metric("fail"), metric("not-judged")], GeneratorLimit()),
        "not-judged": run_outcome([metric("not-judged"), metric("pass")], GeneratorLimit()),
        "pass": run_outcome([metric("pass"), metric("n/a"), metric("info")], GeneratorLimit()),
    }
    assert {o: str(r.exit_code) for o, r in cases.items()} == {o: c for c, o in rows}
    assert all(r.outcome == o for o, r in cases.items())


def test_the_defaults_the_readme_names() -> None:
    from pytest_cfn import BusOptions, Messenger, SwarmState
    from pytest_cfn.measure.targets import Targets

    options = BusOptions()
    assert (options.queue_size, options.critical_buffer, options.retries) == (10_000, 10_000, 3)
    assert (options.ping_interval, options.ping_timeout) == (5.0, 2.0)
    assert (options.route_cache_size, options.route_ttl) == (10_000, 60.0)
    breaker = (options.breaker_failures, options.breaker_reset, options.breaker_successes)
    assert breaker == (5, 30, 3)
    assert options.max_message_bytes == 1024 * 1024 and options.throttle_rate is None
    assert options.inline_dispatch is True and options.codec == "json"
    messenger = inspect.signature(Messenger.__init__).parameters
    assert messenger["history_size"].default == 100
    assert inspect.signature(SwarmState.__init__).parameters["ttl"].default == 3600
    targets = Targets()
    assert (targets.min_throughput, targets.max_p99_ms, targets.min_cache_hit_rate) == (
        10_000, 1.0, 0.99)
    assert (targets.max_connections_per_subsystem, targets.max_maxclients_fraction,
            targets.max_critical_loss) == (2, 0.2, 0)


@pytest.mark.parametrize("good", ["a" * 128, "swarm-1", "coder_1.x", "A9"])
def test_ids_of_the_allow_list_are_accepted(good: str) -> None:
    from pytest_cfn._core.ids import validate_swarm_id

    validate_swarm_id(good)


@pytest.mark.parametrize("bad", ["a" * 129, "a:b", "*", "a b", "", "é"])
def test_ids_outside_the_allow_list_are_refused_before_any_io(bad: str) -> None:
    from pytest_cfn import EventBus, InvalidIdError

    # Port 1: nothing listens there, so anything but InvalidIdError would be a connection error.
    with pytest.raises(InvalidIdError):
        EventBus.from_url("redis://127.0.0.1:1/0", swarm=bad, agent="a")


def test_the_plugin_turns_off_with_p_no_cfn(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_x.py").write_text("def test_x(cfn_redis):\n    pass\n")
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:cfn"],
                 cwd=tmp_path)
    assert result.returncode == 1 and "fixture 'cfn_redis' not found" in result.stdout


FRONT_ENDS = {"EventBus", "Messenger", "SwarmState", "SharedConnections"}


def test_both_front_ends_export_the_same_names_and_share_every_value_class() -> None:
    # README: `pytest_cfn.aio` has "the same names and arguments, awaited"; the README's
    # examples import SigningKeys, CriticalOptions, BusOptions and every error from the package.
    assert set(pytest_cfn.__all__) - {"__version__"} == set(pytest_cfn.aio.__all__)
    for name in pytest_cfn.aio.__all__:
        same = getattr(pytest_cfn, name) is getattr(pytest_cfn.aio, name)
        assert same is (name not in FRONT_ENDS), name
    for name in ("SigningKeys", "CriticalOptions", "BusOptions", "ServerCheckError"):
        assert name in pytest_cfn.__all__, name


def test_every_keyword_the_readme_gives_a_bus_or_messenger_is_accepted_before_any_io() -> None:
    from pytest_cfn import CriticalOptions, EventBus, Messenger, SigningKeys

    def callback(*_: object) -> None:
        return None

    nowhere = "redis://127.0.0.1:1/0"  # nothing listens: construction must not connect
    keys = SigningKeys({"k1": b"1" * 16, "k2": b"2" * 16}, current="k2")
    EventBus.from_url(
        nowhere, swarm="s", agent="a", namespace="ns", codec="msgpack", route_overrides=True,
        throttle_rate=100, retries=3, critical_buffer=10, queue_size=10, ping_interval=5,
        ping_timeout=2, on_reconnect=callback, on_error=callback, signing_key=keys,
        inline_dispatch=False, critical=CriticalOptions(),
    ).close()
    Messenger.from_url(
        nowhere, swarm="s", agent="a", history_size=5, persist_history=True,
        max_message_bytes=1000, on_error=callback, signing_key={"k1": b"1" * 16},
    ).close()


def test_cli_server_and_namespace_default_to_the_environment() -> None:
    # README: publish, monitor, swarms and recover take --redis (default $CFN_REDIS_URL) and
    # --namespace (default $CFN_NAMESPACE).
    with RedisServer() as server, redis.Redis.from_url(server.url) as raw:
        env = {"CFN_REDIS_URL": server.url, "CFN_NAMESPACE": "tenant1"}
        cfn = str(BIN / "cfn")
        published = run([cfn, "publish", "--swarm", "S", "--type", "t", "--priority", "9"], **env)
        assert published.returncode == 0, published.stderr
        assert [k.decode() for k in raw.scan_iter("*")] == ["tenant1:critical:S"]
        with pytest_cfn.SwarmState.from_url(server.url, namespace="tenant1") as state:
            state.save("in-tenant", loop=1, phase="p")
        with pytest_cfn.SwarmState.from_url(server.url) as state:
            state.save("outside", loop=1, phase="p")
        listed = run([cfn, "swarms"], **env)
        assert listed.returncode == 0 and "in-tenant" in listed.stdout, listed
        assert "outside" not in listed.stdout, listed.stdout


def test_cfn_bench_help_and_the_readme_give_the_same_duration() -> None:
    helptext = " ".join(run([str(BIN / "cfn"), "bench", "--help"]).stdout.split())
    in_help = re.search(r"About ([\d.]+) minutes with the defaults", helptext)
    in_readme = re.search(r"About ([\d.]+) minutes on a 2-core machine", README)
    assert in_help and in_readme, helptext
    assert in_help.group(1) == in_readme.group(1)
