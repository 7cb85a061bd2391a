"""The publisher connection: pipelined writes, lazy acknowledgements, safe retries.

Commands are written as soon as they are published (or when a batch closes) and
their replies are read lazily, once more than ``ack_window`` are outstanding or
on :meth:`Publisher.flush`. Every command stays in ``in_flight`` until Redis has
acknowledged it; when the connection breaks, the publisher reconnects with
backoff and writes the unacknowledged commands again. Redis may have executed
some of them already, so a retry can duplicate a message: receivers drop such
duplicates by publisher sequence number.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Any

from pytest_cfn._async.connection import RespConnection, ServerRefusedError
from pytest_cfn._async.shard_route import ShardRoute
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import Lock, monotonic, sleep
from pytest_cfn._core.backoff import RetryPolicy
from pytest_cfn._core.breaker import CircuitBreaker
from pytest_cfn._core.resp import ServerReplyError, encode_command
from pytest_cfn._core.shard_layout import redirect
from pytest_cfn._errors import ConnectionLostError, PublishFailedError, TlsError

_PUBLISH = 0
_CALL = 1
MAX_BATCH_COMMANDS = 1000
MAX_BATCH_BYTES = 256 * 1024
BATCHES_IN_FLIGHT = 4
_KEEP_ERRORS = 20


class Publisher:
    """Writes ``PUBLISH`` (and other) commands on one connection of its own."""

    def __init__(
        self,
        address: ServerAddress,
        name: str,
        *,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        ack_window: int = 64,
    ) -> None:
        self._conn = RespConnection(
            address, name, connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )
        self._retry = retry
        self._breaker = breaker
        self._ack_window = ack_window
        self._lock = Lock()
        self._in_flight: deque[tuple[int, bytes]] = deque()
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._batch_depth = 0
        self._ever_connected = False
        self.acknowledged = 0
        self.retries = 0
        self.reconnects = 0
        self.failed = 0
        self.reply_errors = 0
        self.errors: deque[str] = deque(maxlen=_KEEP_ERRORS)
        self._unreported_errors = 0
        self.route: ShardRoute | None = None
        """On Redis Cluster: the owner of the swarm's slot, asked on every reconnect."""
        self.redirects = 0

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) + len(self._batch)

    async def connect(self) -> None:
        async with self._lock:
            if not self._conn.connected:
                await self._recover(None)

    async def send_publish(self, command: bytes) -> None:
        """Queue one encoded PUBLISH; written now unless a batch is open."""
        async with self._lock:
            if self._batch_depth:
                self._batch.append(command)
                self._batch_bytes += len(command)
                if (
                    len(self._batch) >= MAX_BATCH_COMMANDS
                    or self._batch_bytes >= MAX_BATCH_BYTES
                ):
                    await self._write_batch()
                return
            self._in_flight.append((_PUBLISH, command))
            await self._write(command)
            if len(self._in_flight) > self._ack_window:
                await self._read_acks(self._ack_window // 2)

    async def begin_batch(self) -> None:
        async with self._lock:
            self._batch_depth += 1

    async def end_batch(self) -> None:
        async with self._lock:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._batch:
                await self._write_batch()

    async def call(self, *args: str | bytes | int) -> Any:
        """Run one command in order with the published ones and return its reply."""
        async with self._lock:
            if self._batch:
                await self._write_batch()
            command = encode_command(*args)
            self._in_flight.append((_CALL, command))
            await self._write(command)
            return await self._read_acks(0, want_call_reply=True)

    async def flush(self) -> int:
        """Write everything batched and wait until Redis has acknowledged all of it.

        Returns how many commands were acknowledged by this flush. Raises
        :class:`PublishFailedError` if Redis answered any publish with an error
        since the last flush.
        """
        async with self._lock:
            before = self.acknowledged
            if self._batch:
                await self._write_batch()
            try:
                await self._conn.drain()
            except (OSError, ConnectionLostError) as exc:
                await self._recover(exc)
            await self._read_acks(0)
            if self._unreported_errors:
                count, self._unreported_errors = self._unreported_errors, 0
                raise PublishFailedError(
                    f"Redis refused {count} publish(es) since the last flush; last error: "
                    f"{self.errors[-1] if self.errors else 'unknown'}"
                )
            return self.acknowledged - before

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def _write_batch(self) -> None:
        commands = self._batch
        self._batch = []
        self._batch_bytes = 0
        self._in_flight.extend((_PUBLISH, c) for c in commands)
        await self._write(b"".join(commands))
        # Batches keep a few of themselves in flight (a pipeline); single publishes keep
        # only ack_window, so no single read of acknowledgements stalls the sender long.
        limit = max(self._ack_window, BATCHES_IN_FLIGHT * MAX_BATCH_COMMANDS)
        if len(self._in_flight) > limit:
            await self._read_acks(limit // 2)

    async def _write(self, data: bytes) -> None:
        if not self._conn.connected:
            await self._recover(None)
            return
        try:
            await self._conn.write(data)
        except (OSError, ConnectionLostError) as exc:
            await self._recover(exc)

    async def _read_acks(self, keep: int, want_call_reply: bool = False) -> Any:
        """Read replies until at most ``keep`` commands are unacknowledged."""
        while True:
            try:
                return await self._read_acks_once(keep, want_call_reply)
            except (OSError, ConnectionLostError) as exc:
                await self._recover(exc)

    async def _read_acks_once(self, keep: int, want_call_reply: bool) -> Any:
        in_flight = self._in_flight
        conn = self._conn
        acked = 0
        try:
            while len(in_flight) > keep:
                reply = conn.buffered_reply()
                if reply is False:
                    reply = await conn.read_reply(conn.socket_timeout)
                entry = in_flight.popleft()
                kind = entry[0]
                acked += 1
                if isinstance(reply, ServerReplyError):
                    if self.route is not None and redirect(reply) is not None:
                        # The slot moved: reconnect to its owner and send this again.
                        in_flight.appendleft(entry)
                        acked -= 1
                        self.redirects += 1
                        raise ConnectionLostError(f"Redis Cluster redirect: {reply}")
                    if kind == _CALL:
                        raise reply
                    self._note_error(str(reply))
                elif kind == _CALL and want_call_reply and not in_flight:
                    return reply
            return None
        finally:
            if acked:
                self.acknowledged += acked
                self._breaker.record_success(monotonic())

    def _note_error(self, message: str) -> None:
        self.reply_errors += 1
        self._unreported_errors += 1
        self.errors.append(message)
        self._breaker.record_failure(monotonic())

    async def _recover(self, cause: BaseException | None) -> None:
        """Reconnect with backoff and write every unacknowledged command again."""
        last: BaseException | None = cause
        if cause is not None:
            self._breaker.record_failure(monotonic())
        delays = [0.0, *self._retry.delays()] if cause is None else list(self._retry.delays())
        for delay in delays:
            if delay:
                await sleep(delay)
            if cause is not None:
                self.retries += 1
            try:
                if self.route is not None:
                    self._conn.address = await self.route.resolve(
                        refresh=cause is not None or self._ever_connected
                    )
                await self._conn.connect()
                if self._in_flight:
                    await self._conn.write(b"".join(c for _, c in self._in_flight))
            except TlsError:  # a certificate or TLS/plain mix-up: a retry cannot help
                self.failed += len(self._in_flight)
                self._in_flight.clear()
                await self._conn.close()
                raise
            except ServerRefusedError:
                raise
            except (OSError, ConnectionLostError, TimeoutError) as exc:
                last = exc
                self._breaker.record_failure(monotonic())
                continue
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            return
        lost = len(self._in_flight)
        self._in_flight.clear()
        self.failed += lost
        await self._conn.close()
        raise PublishFailedError(
            f"cannot reach Redis at {self._conn.address.describe()} after "
            f"{len(delays)} attempt(s): {last}; {lost} unacknowledged publish(es) dropped"
        ) from last


class PublishBatch:
    """``async with bus.batch():`` publishes inside are written in one go when it
    ends (or every 1,000 commands / 256 KB), like a pipeline."""

    __slots__ = ("_publisher",)

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def __aenter__(self) -> None:
        await self._publisher.begin_batch()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._publisher.end_batch()
