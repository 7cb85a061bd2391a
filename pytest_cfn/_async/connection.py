"""One RESP2 connection to Redis: handshake, pipelined writes, replies in order."""

from __future__ import annotations

import ssl
from typing import Any

from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import AsyncStream, connect_stream
from pytest_cfn._backends.tls import plain_to_tls_port, refused_after_handshake
from pytest_cfn._core.resp import ReplyParser, ServerReplyError, encode_command
from pytest_cfn._errors import (
    ConnectionLostError,
    PermissionDeniedError,
    ReplyTimeoutError,
    ServerRefusedError,
    ServerUnavailableError,
    TlsHandshakeTimeoutError,
    reply_error,
)


class RespConnection:
    """A named RESP2 connection; the name shows up in ``CLIENT LIST`` as ``cfn:{role}:...``."""

    __slots__ = (
        "_established", "_parser", "_stream", "address", "connect_timeout", "name",
        "socket_timeout",
    )

    def __init__(
        self,
        address: ServerAddress,
        name: str,
        *,
        connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
    ) -> None:
        self.address = address
        self.name = name
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self._stream: AsyncStream | None = None
        self._parser = ReplyParser()
        self._established = False

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def connect(self) -> None:
        """Open the socket and log in. Raises ServerUnavailableError (no connection),
        ConnectionLostError (it broke during the handshake), ServerRefusedError (AUTH,
        SELECT or CLIENT SETNAME refused) or PermissionDeniedError (an ACL refused it)."""
        await self.close()
        self._parser.reset()
        try:
            stream = await connect_stream(self.address, self.connect_timeout)
        except TlsHandshakeTimeoutError as exc:
            if self._established:  # it worked before: a hung server, retried like one
                raise ServerUnavailableError(str(exc)) from exc
            raise
        self._stream = stream
        commands = []
        if self.address.password is not None:
            if self.address.username:
                commands.append(
                    encode_command("AUTH", self.address.username, self.address.password)
                )
            else:
                commands.append(encode_command("AUTH", self.address.password))
        if self.address.db:
            commands.append(encode_command("SELECT", self.address.db))
        commands.append(encode_command("CLIENT", "SETNAME", self.name))
        try:
            await stream.write(b"".join(commands))
            for _ in commands:
                reply = await self.read_reply(self.connect_timeout)
                if isinstance(reply, ServerReplyError):
                    refused = reply_error(reply, "the connection handshake")
                    if isinstance(refused, PermissionDeniedError):
                        raise refused
                    raise ServerRefusedError(
                        f"Redis at {self.address.describe()} refused the connection: {reply}"
                    )
        except ReplyTimeoutError:  # no answer at all: a hung server, not a TLS mix-up
            await self.close()
            raise
        except (ssl.SSLError, ConnectionLostError, ConnectionResetError) as exc:
            # Cut off before the first reply, on a first connection: a TLS port does
            # that to plain text, a mutual-TLS server to a client without certificate.
            await self.close()
            tls = self.address.tls
            if self._established or self.address.unix_path:
                raise
            if tls is None:
                raise plain_to_tls_port(self.address.describe(), exc) from exc
            # The stream wraps the OS error; the TLS alert (its reason) is the cause.
            alert = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
            raise refused_after_handshake(
                alert, self.address.describe(), tls.certfile is not None
            ) from exc
        except BaseException:
            await self.close()
            raise
        self._established = True

    async def write(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise ConnectionLostError("not connected")
        await stream.write(data)

    def write_nowait(self, data: bytes) -> None:
        """Write without awaiting (asyncio: into the transport's buffer)."""
        stream = self._stream
        if stream is None:
            raise ConnectionLostError("not connected")
        stream.write_nowait(data)

    async def drain(self) -> None:
        if self._stream is not None:
            await self._stream.drain()

    def buffered_reply(self) -> Any:
        """A reply already received and parsed, or ``False``; never blocks."""
        return self._parser.get()

    def take_integer_replies(self) -> int:
        """How many buffered replies, all integers, were taken without parsing each one
        (see ``ReplyParser.take_integer_replies``); 0: use :meth:`buffered_replies`."""
        return self._parser.take_integer_replies()

    def buffered_replies(self, limit: int) -> list[Any]:
        """Up to ``limit`` replies already received, in order; never blocks."""
        return self._parser.get_many(limit)

    async def read_reply(self, timeout: float | None) -> Any:
        """The next reply (error replies are returned, not raised)."""
        parser = self._parser
        reply = parser.get()
        while reply is False:
            await self.read_more(timeout)
            reply = parser.get()
        return reply

    async def read_more(self, timeout: float | None) -> None:
        """Read one chunk into the parser; ConnectionLostError at EOF."""
        stream = self._stream
        if stream is None:
            raise ConnectionLostError("not connected")
        data = await stream.read(timeout)
        if not data:
            raise ConnectionLostError(f"Redis at {self.address.describe()} closed the connection")
        self._parser.feed(data)

    async def call(self, *args: str | bytes | int) -> Any:
        """Send one command and wait for its reply (only when nothing else is in flight)."""
        await self.write(encode_command(*args))
        reply = await self.read_reply(self.socket_timeout)
        if isinstance(reply, ServerReplyError):
            raise reply_error(reply, str(args[0]))
        return reply

    def abort(self) -> None:
        """Drop the socket at once (from the watchdog, or to unblock a reader)."""
        if self._stream is not None:
            self._stream.abort()

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
