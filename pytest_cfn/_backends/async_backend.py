"""asyncio backend: streams, tasks, events and locks for ``pytest_cfn._async``."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._errors import ConnectionLostError, ReplyTimeoutError, ServerUnavailableError

READ_CHUNK = 256 * 1024
monotonic = time.monotonic
time_ns = time.time_ns
Lock = asyncio.Lock


class AsyncStream:
    """A connected byte stream with read timeouts. OS errors leave it as
    :class:`ConnectionLostError` (:class:`ReplyTimeoutError` for a timeout)."""

    __slots__ = ("_reader", "_where", "_writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str = "?"
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._where = where

    async def read(self, timeout: float | None) -> bytes:
        """Up to READ_CHUNK bytes; b"" at EOF; ReplyTimeoutError when nothing arrives in time."""
        try:
            if timeout is None:
                return await self._reader.read(READ_CHUNK)
            return await asyncio.wait_for(self._reader.read(READ_CHUNK), timeout)
        except asyncio.TimeoutError as exc:  # a distinct class before Python 3.11
            raise ReplyTimeoutError(
                f"Redis at {self._where} sent nothing within {timeout} s"
            ) from exc
        except OSError as exc:
            raise ConnectionLostError(f"connection to Redis at {self._where} broke: {exc}") from exc

    async def write(self, data: bytes) -> None:
        transport = self._writer.transport
        if transport.is_closing() or self._reader.at_eof():
            # asyncio's write() never raises on a dead connection (it logs and discards)
            raise ConnectionLostError(f"connection to Redis at {self._where} is closed")
        try:
            self._writer.write(data)
            if transport.get_write_buffer_size() > 4 * READ_CHUNK:
                await self._writer.drain()
        except OSError as exc:
            raise ConnectionLostError(f"connection to Redis at {self._where} broke: {exc}") from exc

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionLostError(f"connection to Redis at {self._where} broke: {exc}") from exc

    async def close(self) -> None:
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass

    def abort(self) -> None:
        """Close at once, from anywhere (used by the watchdog)."""
        self._writer.transport.abort()


async def connect_stream(address: ServerAddress, timeout: float) -> AsyncStream:
    """A connected stream; :class:`ServerUnavailableError` when none can be made."""
    where = address.describe()
    if address.unix_path:
        coro = asyncio.open_unix_connection(address.unix_path, limit=READ_CHUNK)
    else:
        coro = asyncio.open_connection(address.host, address.port, limit=READ_CHUNK)
    try:
        reader, writer = await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError as exc:
        raise ServerUnavailableError(
            f"cannot reach Redis at {where}: no answer within {timeout} s"
        ) from exc
    except OSError as exc:
        raise ServerUnavailableError(f"cannot reach Redis at {where}: {exc}") from exc
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return AsyncStream(reader, writer, where)


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


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
    if inspect.isawaitable(result):
        await result
