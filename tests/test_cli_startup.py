"""The ``cfn`` command line: one line and exit 2 for every kind of wrong server (real listeners
on loopback), only the subcommand that runs is imported, and ``monitor --type`` keeps messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from not_redis import EXPECTED, NOT_REDIS, not_redis_url


def cfn(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CFN_REDIS_URL", "CFN_NAMESPACE")}
    return subprocess.run([sys.executable, "-m", "pytest_cfn", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


COMMANDS = {
    "publish": ["publish", "--swarm", "s1", "--type", "agent.spawn"],
    "monitor": ["monitor", "--duration", "1"],
    "swarms": ["swarms"],
    "recover": ["recover"],
    "bench": ["bench", "--agents", "10", "--duration", "1"],
}
CASES = [("publish", kind) for kind in NOT_REDIS] + [
    (command, kind) for command in COMMANDS if command != "publish"
    for kind in ("http", "tls", "wrong-password")
]


@pytest.mark.parametrize(("command", "kind"), CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_a_wrong_server_is_one_line_and_exit_code_2(command: str, kind: str,
                                                    tmp_path: Path) -> None:
    with ExitStack() as stack:
        url = not_redis_url(kind, stack, tmp_path)
        out = cfn(*COMMANDS[command], "--redis", url)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"cfn {command}: error: ") and EXPECTED[kind] in out.stderr


@pytest.mark.parametrize("command", ["publish", "monitor", "swarms", "recover", "bench",
                                     "report"])
def test_only_the_subcommand_that_runs_is_imported(command: str) -> None:
    code = (
        "import sys\n"
        "from pytest_cfn.cli import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('pytest_cfn.cli.')),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = set(eval(done.stderr.strip().splitlines()[-1]))
    others = {f"pytest_cfn.cli.{name}" for name in COMMANDS | {"report": []}} - {
        f"pytest_cfn.cli.{command}"}
    if command == "recover":
        others.discard("pytest_cfn.cli.swarms")  # recover shows swarms' table
    assert f"pytest_cfn.cli.{command}" in loaded
    assert not loaded & others, loaded


def test_help_lists_every_subcommand() -> None:
    out = cfn("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


def test_monitor_type_filters_events_and_keeps_messages(redis_server: Any) -> None:
    ns = f"t{os.getpid()}m"
    env_args = ["--redis", redis_server.url, "--namespace", ns]
    monitor = subprocess.Popen(
        [sys.executable, "-m", "pytest_cfn", "monitor", "--swarm", "s1", "--type", "cfn.loop.*",
         "--json", "--count", "2", *env_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert monitor.stderr is not None
        deadline = time.monotonic() + 20
        while "watching" not in (monitor.stderr.readline() or "") and time.monotonic() < deadline:
            pass
        for args in (["--type", "agent.spawn"], ["--type", "cfn.loop.phase"],
                     ["--to", "s1", "--swarm", "s2"]):
            swarm = [] if "--swarm" in args else ["--swarm", "s1"]
            assert cfn("publish", *swarm, *args, "--data", "1", *env_args).returncode == 0
        out, _ = monitor.communicate(timeout=20)
    finally:
        monitor.kill()
        monitor.wait()
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["kind"], r["type"]) for r in records] == [
        ("event", "cfn.loop.phase"), ("message", "message")]
