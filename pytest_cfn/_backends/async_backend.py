"""asyncio backend: streams, tasks, events and locks for ``pytest_cfn._async``."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_stream import AsyncStream as AsyncStream
from pytest_cfn._backends.async_stream import StreamProtocol
from pytest_cfn._backends.tls import redis_py_options, tls_failure
from pytest_cfn._errors import ServerUnavailableError

if TYPE_CHECKING:
    from pytest_cfn._core.outbound import PlanLock

monotonic = time.monotonic
time_ns = time.time_ns
Lock = asyncio.Lock


async def connect_stream(address: ServerAddress, timeout: float) -> AsyncStream:
    """A connected stream (TLS-wrapped and handshaken for a ``rediss://`` address);
    :class:`ServerUnavailableError` when none can be made, :class:`TlsError` when the
    TLS handshake fails."""
    where = address.describe()
    tls = address.tls
    loop = asyncio.get_running_loop()
    coro: Awaitable[tuple[asyncio.BaseTransport, StreamProtocol]]
    if address.unix_path:
        coro = loop.create_unix_connection(StreamProtocol, address.unix_path)
    elif tls is None:
        coro = loop.create_connection(StreamProtocol, address.host, address.port)
    else:
        # The handshake has its own deadline, so its timeout tells "no TLS answer"
        # apart from a TCP connect that timed out (the outer, longer one).
        coro = loop.create_connection(
            StreamProtocol, address.host, address.port, ssl=tls.client_context(),
            server_hostname=address.host, ssl_handshake_timeout=timeout,
        )
    try:
        transport, protocol = await asyncio.wait_for(
            coro, timeout if tls is None else 2 * timeout
        )
    except asyncio.TimeoutError as exc:
        raise ServerUnavailableError(
            f"cannot reach Redis at {where}: no answer within {timeout} s"
        ) from exc
    except ssl.SSLError as exc:
        raise tls_failure(exc, where, timeout) from exc
    except ConnectionAbortedError as exc:
        if tls is None or "handshake" not in str(exc):
            raise ServerUnavailableError(f"cannot reach Redis at {where}: {exc}") from exc
        raise tls_failure(TimeoutError(str(exc)), where, timeout) from exc
    except OSError as exc:
        raise ServerUnavailableError(f"cannot reach Redis at {where}: {exc}") from exc
    assert isinstance(transport, asyncio.Transport)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return AsyncStream(transport, protocol, where)


async def cluster_slot_owner(
    address: ServerAddress, slot: int, timeout: float
) -> tuple[tuple[str, int], list[tuple[str, int]]]:
    """``(host, port)`` of the master serving ``slot`` and of every node the cluster
    knows, by redis-py's topology discovery."""
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster(
        host=address.host, port=address.port, **redis_py_options(address, timeout)
    )
    try:
        await client.initialize()
        node = client.nodes_manager.get_node_from_slot(slot)
        nodes = [(str(n.host), int(n.port)) for n in client.nodes_manager.nodes_cache.values()]
        return (str(node.host), int(node.port)), nodes
    finally:
        await client.aclose()

async def cluster_slot_table(
    address: ServerAddress, timeout: float
) -> tuple[list[tuple[str, int] | None], list[tuple[str, int]]]:
    """The master of every slot (None: not served) and every master, by redis-py's
    topology discovery (one ``CLUSTER SLOTS`` of a node that answers)."""
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster(
        host=address.host, port=address.port, **redis_py_options(address, timeout)
    )
    try:
        await client.initialize()
        owners: list[tuple[str, int] | None] = [None] * 16384
        for slot, nodes in client.nodes_manager.slots_cache.items():
            if nodes:
                owners[slot] = (str(nodes[0].host), int(nodes[0].port))
        masters = sorted({owner for owner in owners if owner is not None})
        return owners, masters
    finally:
        await client.aclose()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def yield_now() -> None:
    """Let the loop run its other ready callbacks and poll its sockets before going on."""
    await asyncio.sleep(0)


class PublishLock:
    """asyncio.Lock's behaviour (FIFO, safe under cancellation) plus ``try_acquire``, a
    plain call that takes the lock when it is free and nobody waits: the publisher's
    every publish takes its lock, and ``async with asyncio.Lock()`` costs two coroutines
    (some 0.6 µs measured here) where a free lock needs none."""

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        return self._locked

    def try_acquire(self) -> bool:
        if self._locked or self._waiters:
            return False
        self._locked = True
        return True

    def is_free(self) -> bool:
        """Neither held nor waited for (what :meth:`try_acquire` would take)."""
        return not self._locked and not self._waiters

    async def acquire(self) -> bool:
        if not self._locked and not self._waiters:
            self._locked = True
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        except asyncio.CancelledError:
            if not self._locked:  # handed the lock and cancelled: pass it on
                self._wake_first()
            raise
        self._locked = True
        return True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("PublishLock released while not held")
        self._locked = False
        if self._waiters:
            self._wake_first()

    def _wake_first(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
            return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def try_lock(lock: PublishLock) -> Callable[[], bool]:
    """``lock``'s take-it-if-free call (see :class:`PublishLock`)."""
    return lock.try_acquire


def offer_lock(lock: PublishLock) -> tuple[Callable[[], bool], Callable[[], None] | None]:
    """For a holder that never awaits while it holds ``lock`` (the publisher's
    ``offer``): a check that it is free, and no release. On one event loop nothing else
    runs until such a holder returns, so checking is enough and taking it would only
    cost two calls per publish."""
    return lock.is_free, None


def planned_offer_lock(lock: PublishLock) -> tuple[PlanLock | None, Callable[[], bool] | None]:
    """For a planner that hands its commands to the publisher holding ``lock`` (the
    publisher's ``offer_held``): the planner's lock (none: one event loop plans one
    publish at a time) and the check ``offer_held`` makes (that ``lock`` is free)."""
    return None, lock.is_free


class Signal:
    """Wakes a waiting worker; ``wait`` returns False on timeout."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class Wakeup:
    """Wakes one sleeping worker (the dispatcher task)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self._event.clear()


class WriteCoalescer:
    """Auto-pipelining for one connection: the first publish of an event-loop iteration
    is written at once; the ones after it in the same iteration wait in the publisher
    and go out in one write when the loop comes round (``call_soon``), as ioredis's
    ``enableAutoPipelining`` does. ``flush`` is called with the publisher's lock free
    and must not await; it runs again an iteration later while a coroutine holds it."""

    __slots__ = ("_busy", "_flush", "_lock", "_loop")

    def __init__(self, flush: Callable[[], None], lock: PublishLock, name: str) -> None:
        self._flush = flush
        self._lock = lock
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def busy(self) -> bool:
        """True when a publish was already written in this loop iteration."""
        return self._busy

    def wrote(self) -> None:
        if not self._busy:
            self._busy = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._end_iteration)

    def schedule(self) -> None:
        """Coalesced publishes are written when this iteration ends (see ``wrote``)."""
        if not self._busy:
            self.wrote()

    def _end_iteration(self) -> None:
        if self._lock.locked():
            assert self._loop is not None
            self._loop.call_soon(self._end_iteration)
            return
        self._busy = False
        self._flush()

    async def close(self) -> None:
        return None


class QueueLock:
    """No lock is needed between tasks of one event loop; this keeps the code shape."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class Worker:
    """A background task."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    async def join(self, timeout: float) -> bool:
        """Wait for the worker to end; cancel it if it has not within ``timeout``."""
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=timeout)
        return self._task.done()

    def is_alive(self) -> bool:
        return not self._task.done()


def spawn(target: Callable[[], Awaitable[None]], name: str) -> Worker:
    return Worker(asyncio.get_running_loop().create_task(target(), name=name))  # type: ignore[arg-type]


async def call_handler(handler: Callable[[Any], Any], event: Any) -> None:
    """Call a handler; await it if it is a coroutine function."""
    result = handler(event)
    if result is not None and inspect.isawaitable(result):
        await result


async def finish_handler(result: Any) -> None:
    """Await what a handler returned if it is awaitable (a coroutine function's call).
    Callers skip it for ``None``, what a plain function returns, so a plain handler
    costs no coroutine."""
    if inspect.isawaitable(result):
        await result
