"""Worker processes for the benchmark: spawned, bounded in time, one result each.

Publisher and subscriber run in processes of their own (spawn context, a fresh
interpreter each) so that neither steals the other's CPU or GIL, and so that no
state of one step leaks into the next. A worker is a module-level function that
returns a plain dict; it reports it, or its traceback, on a queue. The parent
waits for that report with a deadline and stops a worker that overruns it by its
own pid, so no step can hang the run.

Also here: the sink subscriber, a raw socket that PSUBSCRIBEs a pattern and
discards what arrives. It makes the server do the fan-out work of a real
subscriber while costing almost no CPU, so a publish rate is measured with a
subscriber present but not competing with the publisher for a core.
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import traceback
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from typing import Any

import hiredis

from pytest_cfn._backends.address import ServerAddress, parse_redis_url
from pytest_cfn._backends.sync_backend import open_socket as connect_socket
from pytest_cfn._core.resp import encode_command
from pytest_cfn._errors import CfnError

CONTEXT = multiprocessing.get_context("spawn")
WorkerFunction = Callable[..., dict[str, Any]]


class StepFailedError(CfnError):
    """A benchmark step did not produce its figure (worker error, timeout or lost server)."""


def new_event() -> Event:
    """A cross-process flag (spawn context) for ready/stop signals between workers."""
    return CONTEXT.Event()


def new_counter() -> Any:
    """A cross-process integer in shared memory (``.value``), without a lock: one worker
    writes it, another only reads it, as a receiver's progress for a sender's window."""
    return CONTEXT.RawValue("q", 0)


def _worker_main(
    function: WorkerFunction, kwargs: dict[str, Any], results: multiprocessing.Queue[Any]
) -> None:
    try:
        outcome: tuple[str, Any] = ("ok", function(**kwargs))
    except BaseException as exc:
        outcome = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    results.put(outcome)


class Worker:
    """One spawned process running ``function(**kwargs)`` and reporting its dict."""

    def __init__(self, name: str, function: WorkerFunction, **kwargs: Any) -> None:
        self.name = name
        self._results: multiprocessing.Queue[Any] = CONTEXT.Queue()
        self._process: SpawnProcess = CONTEXT.Process(
            target=_worker_main,
            args=(function, kwargs, self._results),
            name=f"cfn-bench-{name}",
            daemon=True,
        )
        self._result: dict[str, Any] | None = None

    def start(self) -> Worker:
        self._process.start()
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def result(self, timeout: float) -> dict[str, Any]:
        """The worker's dict; StepFailedError if it failed or reported nothing in time."""
        if self._result is not None:
            return self._result
        try:
            status, payload = self._results.get(timeout=timeout)
        except queue.Empty:
            alive = self._process.is_alive()
            self.stop()
            state = "still running" if alive else f"exited with code {self._process.exitcode}"
            raise StepFailedError(
                f"{self.name} reported no result within {timeout:.0f} s ({state}); stopped it"
            ) from None
        if status != "ok":
            self.stop()
            raise StepFailedError(f"{self.name} failed: {payload}")
        self._result = dict(payload)
        self._process.join(5.0)
        return self._result

    def stop(self, grace: float = 2.0) -> None:
        """Join, then terminate, then kill this worker (its own pid only)."""
        process = self._process
        if process.pid is None:
            return
        process.join(grace)
        if process.is_alive():
            process.terminate()
            process.join(grace)
        if process.is_alive():
            process.kill()
            process.join(grace)


def wait_ready(flag: Event, timeout: float, who: Worker) -> None:
    """Wait until a worker sets its ready flag; StepFailedError (and stop it) otherwise."""
    deadline_step = 0.1
    waited = 0.0
    while waited < timeout:
        if flag.wait(deadline_step):
            return
        waited += deadline_step
        if not who.is_alive():
            who.result(1.0)
            break
    who.stop()
    raise StepFailedError(f"{who.name} was not ready within {timeout:.0f} s")


def open_socket(address: ServerAddress, timeout: float) -> socket.socket:
    """A logged-in socket to the server (AUTH when the URL carries a password)."""
    sock = connect_socket(address, timeout)  # TLS-wrapped for a rediss:// address
    if address.password is not None:
        args = [b"AUTH", address.password.encode()]
        if address.username:
            args.insert(1, address.username.encode())
        _command(sock, args)
    return sock


def read_reply(sock: socket.socket, reader: Any) -> Any:
    """The next reply ``reader`` (a hiredis ``Reader``) parses off the raw ``sock``."""
    reply = reader.gets()
    while reply is False:
        data = sock.recv(65536)
        if not data:
            raise StepFailedError("the server closed the connection")
        reader.feed(data)
        reply = reader.gets()
    return reply


def _command(sock: socket.socket, args: list[bytes]) -> Any:
    sock.sendall(encode_command(*args))
    reply = read_reply(sock, hiredis.Reader())
    if isinstance(reply, hiredis.ReplyError):
        raise StepFailedError(f"the server refused {args[0].decode()}: {reply}")
    return reply


def sink_subscriber(
    url: str, pattern: str, ready: Event, stop: Event, sharded: bool = False
) -> dict[str, Any]:
    """Worker: PSUBSCRIBE ``pattern`` (``sharded``: SSUBSCRIBE it as a shard channel) on a
    raw socket and discard everything until ``stop``."""
    sock = open_socket(parse_redis_url(url), timeout=5.0)
    verb = b"SSUBSCRIBE" if sharded else b"PSUBSCRIBE"
    try:
        confirmation = _command(sock, [verb, pattern.encode()])
        if not isinstance(confirmation, list) or confirmation[0] != verb.lower():
            raise StepFailedError(f"unexpected reply to {verb.decode()}: {confirmation!r}")
        ready.set()
        sock.settimeout(0.05)
        received = 0
        recv = sock.recv
        while not stop.is_set():
            try:
                chunk = recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                raise StepFailedError("the server closed the sink subscriber's connection")
            received += len(chunk)
        return {"bytes": received}
    finally:
        sock.close()
