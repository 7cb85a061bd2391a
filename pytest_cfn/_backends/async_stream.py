"""The asyncio byte stream of one Redis connection, on an ``asyncio.Protocol`` of its own.

``asyncio.StreamReader`` copies every chunk twice on the way in (``feed_data``
extends a bytearray, ``read`` copies it out again and moves the rest down):
some 100 ns per 400-byte pub/sub message, measured here, on the path every
event takes. This protocol keeps the chunks the transport hands it as they
are and gives them to the one reader at once (joined only when several
piled up), and pauses the transport while more than ``2 * READ_CHUNK`` bytes
wait unread, as ``StreamReader`` does, so a reader that falls behind leaves
the backlog in the kernel and the server (whose output-buffer limit then
applies), not in this process.

Writes go straight to the transport; ``drain`` waits while the transport has
paused writing. A lost connection wakes the reader and every drain: the reader
gets ``b""`` at a clean EOF, :class:`ConnectionLostError` (caused by the OS or
TLS error) otherwise.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from pytest_cfn._errors import ConnectionLostError, ReplyTimeoutError

READ_CHUNK = 256 * 1024
_timeout = getattr(asyncio, "timeout", None)


class StreamProtocol(asyncio.Protocol):
    """Collects received chunks for one reader; flow control both ways."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiters: deque[asyncio.Future[None]] = deque()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > 2 * READ_CHUNK and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> bytes:
        """Everything received so far (one chunk as it came, several joined)."""
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def wait_readable(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def drain(self) -> None:
        if self._writing_paused and not self.eof:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter


class AsyncStream:
    """A connected byte stream with read timeouts. OS errors leave it as
    :class:`ConnectionLostError` (:class:`ReplyTimeoutError` for a timeout)."""

    __slots__ = ("_protocol", "_transport", "_where")

    def __init__(
        self, transport: asyncio.Transport, protocol: StreamProtocol, where: str = "?"
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._where = where

    def extra(self, name: str) -> Any:
        return self._transport.get_extra_info(name)

    async def read(self, timeout: float | None) -> bytes:
        """What has arrived (at once if something has); b"" at EOF; ReplyTimeoutError
        when nothing arrives in time."""
        protocol = self._protocol
        if protocol.chunks:
            return protocol.take()
        if not protocol.eof:
            try:
                if timeout is None:
                    await protocol.wait_readable()
                elif _timeout is not None:
                    async with _timeout(timeout):
                        await protocol.wait_readable()
                else:
                    await asyncio.wait_for(protocol.wait_readable(), timeout)
            except asyncio.TimeoutError as exc:  # a distinct class before Python 3.11
                raise ReplyTimeoutError(
                    f"Redis at {self._where} sent nothing within {timeout} s"
                ) from exc
            if protocol.chunks:
                return protocol.take()
        if protocol.error is not None:
            raise ConnectionLostError(
                f"connection to Redis at {self._where} broke: {protocol.error}"
            ) from protocol.error
        return b""

    def _check_open(self) -> None:
        # A transport's write() never raises on a dead connection (it logs and discards)
        if self._transport.is_closing() or self._protocol.eof:
            raise ConnectionLostError(f"connection to Redis at {self._where} is closed")

    async def write(self, data: bytes) -> None:
        self._check_open()
        transport = self._transport
        try:
            transport.write(data)
            if transport.get_write_buffer_size() > 4 * READ_CHUNK:
                await self.drain()
        except OSError as exc:
            raise ConnectionLostError(f"connection to Redis at {self._where} broke: {exc}") from exc

    def write_nowait(self, data: bytes) -> None:
        """Into the transport's buffer (sent at once when the socket takes it)."""
        self._check_open()
        self._transport.write(data)

    async def drain(self) -> None:
        protocol = self._protocol
        await protocol.drain()
        if protocol.error is not None:
            raise ConnectionLostError(
                f"connection to Redis at {self._where} broke: {protocol.error}"
            ) from protocol.error

    async def close(self) -> None:
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass

    def abort(self) -> None:
        """Close at once, from anywhere (used by the watchdog)."""
        self._transport.abort()
