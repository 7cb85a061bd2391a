"""Blocking backend: sockets and threads for ``pytest_cfn._sync``.

Works under gevent monkey-patching (Locust): sockets, threads, locks, events and
sleep all come from the patched standard library modules at call time.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.tls import redis_py_options, tls_failure

READ_CHUNK = 256 * 1024
monotonic = time.monotonic
time_ns = time.time_ns


def Lock() -> threading.RLock:
    return threading.RLock()


MIN_READ_CHUNK = 16 * 1024


class SyncStream:
    """A connected socket with read timeouts.

    ``recv(n)`` allocates ``n`` bytes while it waits, so an idle subscriber blocked
    in a 256 KB read would hold 256 KB; the read size starts small and doubles
    while reads come back full (a backlog), and halves again when they do not.
    """

    __slots__ = ("_chunk", "_closed", "_sock", "_timeout")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False
        self._chunk = MIN_READ_CHUNK
        self._timeout: float | None = -1.0

    def read(self, timeout: float | None) -> bytes:
        """Some bytes; b"" at EOF; TimeoutError when nothing arrives in time."""
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout
        chunk = self._chunk
        data = self._sock.recv(chunk)
        size = len(data)
        if size == chunk:
            if chunk < READ_CHUNK:
                self._chunk = chunk * 2
        elif size < chunk // 8 and chunk > MIN_READ_CHUNK:
            self._chunk = chunk // 2
        return data

    def write(self, data: bytes) -> None:
        """Send everything; the socket's current read timeout bounds a stalled send."""
        self._sock.sendall(data)

    def drain(self) -> None:
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def abort(self) -> None:
        """Close at once, from any thread (wakes a reader blocked in recv)."""
        self.close()


def open_socket(address: ServerAddress, timeout: float) -> socket.socket:
    """A connected socket (TLS-wrapped and handshaken for a ``rediss://`` address).

    A failed TLS handshake raises :class:`TlsError`; TCP failures stay OSError/TimeoutError.
    """
    if address.unix_path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address.unix_path)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if address.tls is None:
        return sock
    try:
        return address.tls.client_context().wrap_socket(sock, server_hostname=address.host)
    except (ssl.SSLError, TimeoutError) as exc:
        sock.close()
        raise tls_failure(exc, address.describe(), timeout) from exc
    except BaseException:
        sock.close()
        raise


def connect_stream(address: ServerAddress, timeout: float) -> SyncStream:
    return SyncStream(open_socket(address, timeout))


def cluster_slot_owner(
    address: ServerAddress, slot: int, timeout: float
) -> tuple[tuple[str, int], list[tuple[str, int]]]:
    """``(host, port)`` of the master serving ``slot`` and of every node the cluster
    knows, by redis-py's topology discovery."""
    from redis.cluster import RedisCluster

    client = RedisCluster(
        host=address.host, port=address.port, **redis_py_options(address, timeout)
    )
    try:
        node = client.nodes_manager.get_node_from_slot(slot)
        nodes = [(str(n.host), int(n.port)) for n in client.nodes_manager.nodes_cache.values()]
        return (str(node.host), int(node.port)), nodes
    finally:
        client.close()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


class Signal:
    """Wakes a waiting worker; ``wait`` returns False on timeout."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


class Wakeup:
    """Wakes one sleeping worker. A C-level SimpleQueue of tokens: ``wake`` is one
    put, far cheaper than ``threading.Event.set`` on a hot path."""

    __slots__ = ("_get", "_put")

    def __init__(self) -> None:
        tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._put = tokens.put
        self._get = tokens.get

    def wake(self) -> None:
        self._put(None)

    def wait(self, timeout: float) -> None:
        try:
            self._get(True, timeout)
        except queue.Empty:
            pass


def QueueLock() -> threading.Lock:
    return threading.Lock()


class Worker:
    """A background daemon thread."""

    __slots__ = ("_thread",)

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    def join(self, timeout: float) -> bool:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()


def spawn(target: Callable[[], None], name: str) -> Worker:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return Worker(thread)


def call_handler(handler: Callable[[Any], Any], event: Any) -> None:
    handler(event)
