"""Running pytest with the cfn plugin in a subprocess, for the tests of the plugin itself."""

from __future__ import annotations

import json
import os
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest

INNER_INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings =
    error
    ignore::pytest.PytestUnraisableExceptionWarning
"""
# Only bounds a hung inner run. One inner run (pytest start, a redis-server, 20,000
# publishes, the same-run reference) took over 60 s on a loaded machine, where a bare `cfn
# --help` took 14 s; the suite's own per-test timeout (300 s) stays the outer bound.
RUN_TIMEOUT = 180.0


def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, **files: str) -> None:
    """An inner project: its own ini, no CFN_REDIS_URL from outside, and test files."""
    monkeypatch.delenv("CFN_REDIS_URL", raising=False)
    pytester.makeini(INNER_INI)
    for name, source in files.items():
        pytester.makepyfile(**{name: textwrap.dedent(source)})


def run(pytester: pytest.Pytester, *args: str, timeout: float = RUN_TIMEOUT) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=timeout)


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def redis_servers_on_port(port: int) -> list[int]:
    """Pids of redis-server processes whose command line names ``port`` (pgrep -f, by hand)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        padded = f"{cmdline} "
        if "redis-server" in cmdline and (f":{port} " in padded or f"--port {port} " in padded):
            pids.append(int(entry.name))
    return pids
