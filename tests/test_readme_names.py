"""The README is a contract: every option, subcommand, error class, exit code and default it
names exists with that name and behaviour (its python blocks: test_readme_promises.py).

Nothing here imports locust: the harness's ``--help`` runs in a subprocess.
"""

from __future__ import annotations

import functools
import inspect
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
import redis
from readme_text import BIN, README, ROOT, fenced_blocks, run, section

import pytest_cfn
import pytest_cfn._errors
import pytest_cfn.aio
from pytest_cfn.server import RedisServer


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
