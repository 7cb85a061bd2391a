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
from functools import partial
from typing import Any

from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.tls import redis_py_options, tls_failure
from pytest_cfn._errors import ConnectionLostError, ReplyTimeoutError, ServerUnavailableError

READ_CHUNK = 256 * 1024
monotonic = time.monotonic
time_ns = time.time_ns


def Lock() -> threading.RLock:
    return threading.RLock()


PublishLock = Lock
"""The publisher's lock: re-entrant (the flusher and a caller may nest), taken without
blocking first (see :func:`try_lock`)."""


def try_lock(lock: threading.RLock) -> Callable[[], bool]:
    """``lock``'s take-it-if-free call, in C: ``lock.acquire(False)``."""
    return partial(lock.acquire, False)


def offer_lock(lock: threading.RLock) -> tuple[Callable[[], bool], Callable[[], None] | None]:
    """Take-it-if-free and release calls for a holder that never waits (the publisher's
    ``offer``): ``lock.acquire(False)`` and ``lock.release``, in C (another thread may
    come at any time, so the lock is taken)."""
    return partial(lock.acquire, False), lock.release


def planned_offer_lock(
    lock: threading.RLock,
) -> tuple[threading.RLock, Callable[[], bool] | None]:
    """For a planner that hands its commands to the publisher holding ``lock`` (the
    publisher's ``offer_held``): the planner's lock is ``lock`` itself, so a publish
    takes one lock for its sequence number and its place in the pending write;
    ``offer_held`` then needs no check of its own."""
    return lock, None


MIN_READ_CHUNK = 16 * 1024


class GeventReader:
    """Reads a plain gevent socket with one reused timer for the read timeout.

    gevent's own ``recv`` on a socket with a timeout first tries the read (an exception when
    nothing is there), then makes a new ``Timeout``, with a new loop timer, for every wait.
    Measured on the 2-core VM here (50 gevent readers in one process, each woken by its
    swarm's 10 events every 10 ms, written by another process; process CPU over reads):
    36-40 µs per read with a socket timeout against 27-32 µs with none or with this reader;
    50 library subscribers the same way, 8.8-9.0 against 9.3-10.6 µs per delivery. A
    subscriber woken a hundred times a second on each of hundreds of connections pays it on
    every wake-up. This waits on
    the socket's own read watcher (so closing the socket wakes it, as it wakes gevent's
    ``recv``) under a timer made once per timeout value, then reads with gevent's ``recv``,
    which finds the data there. (A timer that fires throws ``TimeoutError`` into the
    reader, as gevent's ``Timeout`` does.) TLS sockets keep gevent's path (decrypted bytes can be
    buffered with nothing left to read on the socket), as does anything but a socket of
    ``gevent.socket``.
    """

    __slots__ = ("_current", "_hub", "_recv", "_sock", "_timer", "_timer_s")

    def __init__(self, sock: Any, current: Callable[[], Any]) -> None:
        self._sock = sock
        self._current = current
        self._recv: Callable[[int], bytes] = sock.recv
        self._hub = sock.hub
        self._timer: Any = None
        self._timer_s: float | None = None

    @classmethod
    def of(cls, sock: socket.socket) -> GeventReader | None:
        """A reader for ``sock`` if it is a plain gevent socket, else None."""
        if not type(sock).__module__.startswith("gevent"):
            return None
        try:
            from gevent import getcurrent
            from gevent.socket import socket as gevent_socket
        except ImportError:  # pragma: no cover - a gevent socket without gevent
            return None
        if type(sock) is not gevent_socket:
            return None
        if not all(hasattr(sock, name) for name in ("_sock", "_read_event", "hub")):
            return None  # a gevent whose socket is built differently: its own recv
        return cls(sock, getcurrent)

    def recv(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes (b"" at EOF); TimeoutError when nothing came in ``timeout``."""
        sock = self._sock
        try:
            # the OS socket (non-blocking); after a close, gevent's stand-in that refuses
            return sock._sock.recv(size)  # type: ignore[no-any-return]
        except BlockingIOError:
            pass
        event = sock._read_event
        if event is None or event.callback is not None:
            return self._recv(size)  # closed, or another greenlet waits here: gevent's error
        if timeout is None:
            self._hub.wait(event)
        else:
            timer = self._timer
            if timer is None or self._timer_s != timeout:
                if timer is not None:
                    timer.close()
                # repeating, for ``again``: a stopped one-shot libev timer restarts with
                # what was left of its time (nothing, once it has fired), not its period
                timer = self._timer = self._hub.loop.timer(timeout, timeout)
                self._timer_s = timeout
            timer.again(self._current().throw, TimeoutError)  # from now, the whole timeout
            try:
                self._hub.wait(event)
            finally:
                timer.stop()
        return self._recv(size)


class SyncStream:
    """A connected socket with read timeouts.

    ``recv(n)`` allocates ``n`` bytes while it waits, so an idle subscriber blocked
    in a 256 KB read would hold 256 KB; the read size starts small and doubles
    while reads come back full (a backlog), and halves again when they do not.
    OS errors leave it as :class:`ConnectionLostError` (:class:`ReplyTimeoutError`
    for a timeout).
    """

    __slots__ = ("_chunk", "_closed", "_gevent", "_sock", "_timeout", "_where")

    def __init__(self, sock: socket.socket, where: str = "?") -> None:
        self._sock = sock
        self._where = where
        self._closed = False
        self._chunk = MIN_READ_CHUNK
        self._timeout: float | None = -1.0
        self._gevent = GeventReader.of(sock)

    def read(self, timeout: float | None) -> bytes:
        """Some bytes; b"" at EOF; ReplyTimeoutError when nothing arrives in time."""
        try:
            if timeout != self._timeout:
                self._sock.settimeout(timeout)
                self._timeout = timeout
            chunk = self._chunk
            reader = self._gevent
            if reader is not None and timeout != 0:
                data = reader.recv(chunk, timeout)
            else:
                data = self._sock.recv(chunk)
        except TimeoutError as exc:
            raise ReplyTimeoutError(
                f"Redis at {self._where} sent nothing within {timeout} s"
            ) from exc
        except OSError as exc:
            raise ConnectionLostError(f"connection to Redis at {self._where} broke: {exc}") from exc
        size = len(data)
        if size == chunk:
            if chunk < READ_CHUNK:
                self._chunk = chunk * 2
        elif size < chunk // 8 and chunk > MIN_READ_CHUNK:
            self._chunk = chunk // 2
        return data

    def write(self, data: bytes) -> None:
        """Send everything; the socket's current read timeout bounds a stalled send."""
        try:
            sent = self._sock.send(data)  # all of it, almost always: one call, no getsockopt
            if sent != len(data):
                self._sock.sendall(memoryview(data)[sent:])
        except TimeoutError as exc:
            raise ReplyTimeoutError(
                f"Redis at {self._where} took no data for {self._timeout} s"
            ) from exc
        except OSError as exc:
            raise ConnectionLostError(f"connection to Redis at {self._where} broke: {exc}") from exc

    def write_nowait(self, data: bytes) -> None:
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
    """A connected stream (TLS for ``rediss://``); :class:`ServerUnavailableError` when
    none can be made, :class:`TlsError` when the TLS handshake fails."""
    where = address.describe()
    try:
        sock = open_socket(address, timeout)
    except TimeoutError as exc:
        raise ServerUnavailableError(
            f"cannot reach Redis at {where}: no answer within {timeout} s"
        ) from exc
    except OSError as exc:
        raise ServerUnavailableError(f"cannot reach Redis at {where}: {exc}") from exc
    return SyncStream(sock, where)


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

def cluster_slot_table(
    address: ServerAddress, timeout: float
) -> tuple[list[tuple[str, int] | None], list[tuple[str, int]]]:
    """The master of every slot (None: not served) and every master, by redis-py's
    topology discovery (one ``CLUSTER SLOTS`` of a node that answers)."""
    from redis.cluster import RedisCluster

    client = RedisCluster(
        host=address.host, port=address.port, **redis_py_options(address, timeout)
    )
    try:
        owners: list[tuple[str, int] | None] = [None] * 16384
        for slot, nodes in client.nodes_manager.slots_cache.items():
            if nodes:
                owners[slot] = (str(nodes[0].host), int(nodes[0].port))
        masters = sorted({owner for owner in owners if owner is not None})
        return owners, masters
    finally:
        client.close()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


GEVENT_YIELD_S = 1e-6
"""Under gevent, :func:`yield_now` sleeps this long: a timer, so the loop turns first."""


def yield_now() -> None:
    """Let the other threads run before going on (a long job's slices call this).

    ``time.sleep(0)``, except under gevent's monkey patching: there ``sleep(0)`` only puts the
    greenlet back behind the other ready greenlets, and gevent checks timers and sockets only
    every 50 such callbacks, so a job sliced by ``sleep(0)`` still held every timer (measured in
    the load harness: its pacing timer woke ms late behind a reader's slices). A timer of one
    microsecond comes after the timers and sockets already due.
    """
    now_sleep = time.sleep
    if now_sleep.__module__.startswith("gevent"):
        now_sleep(GEVENT_YIELD_S)
    else:
        now_sleep(0)


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


COALESCE_WINDOW = 20e-6
"""A publish that starts within 20 µs of the previous publish's write is part of a burst
(a tight loop, or another thread that waited on the write): it joins the pending write."""


class WriteCoalescer:
    """Auto-pipelining for one connection, threads' flavour. A publish that comes
    while a write is in flight (another thread held the connection) or within
    ``COALESCE_WINDOW`` of the last write joins the pending write instead of
    writing at once; a flusher thread, started on first use, writes what is
    pending as soon as it gets the lock and the GIL (at the latest one switch
    interval later while the publishing thread keeps running Python). A lone
    publish, or one at a steady 20,000/s or slower, is written at once."""

    __slots__ = ("_flush", "_last", "_lock", "_name", "_scheduled", "_stopped", "_thread",
                 "_wakeup")

    def __init__(self, flush: Callable[[], None], lock: threading.RLock, name: str) -> None:
        self._flush = flush
        self._lock = lock
        self._name = name
        self._last = -1.0
        self._scheduled = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._wakeup = Wakeup()

    def busy(self) -> bool:
        return time.monotonic() - self._last < COALESCE_WINDOW

    def wrote(self) -> None:
        self._last = time.monotonic()

    def schedule(self) -> None:
        """Have the flusher write what is pending; call holding the publisher's lock."""
        if self._scheduled:
            return
        self._scheduled = True
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"cfn-flush:{self._name}", daemon=True
            )
            self._thread.start()
        self._wakeup.wake()

    def _run(self) -> None:
        while not self._stopped:
            self._wakeup.wait(1.0)
            with self._lock:
                if not self._scheduled:
                    continue
                self._scheduled = False
                self._flush()
                # a write of the burst: a publish right after it joins the next one
                self._last = time.monotonic()

    def close(self) -> None:
        self._stopped = True
        thread = self._thread
        if thread is not None:
            self._wakeup.wake()
            if thread is not threading.current_thread():
                thread.join(2.0)
            self._thread = None


def finish_handler(result: object) -> None:
    """A blocking front end ignores what a handler returns (see the asyncio backend)."""
    return None


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
