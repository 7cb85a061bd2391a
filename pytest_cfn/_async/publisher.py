"""The publisher connection: pipelined writes, lazy acknowledgements, safe retries.

Commands are written as soon as they are published (or when a batch closes) and
their replies are read lazily, once more than ``ack_window`` are outstanding or
on :meth:`Publisher.flush`. Every command stays in ``in_flight`` until Redis has
acknowledged it; when the connection breaks, the publisher reconnects with
backoff and writes the unacknowledged commands again. Redis may have executed
some of them already, so a retry can duplicate a message: receivers drop such
duplicates by publisher sequence number.

When the retries of one call run out (the call failed):

- priority 8-9 publishes stay in ``in_flight`` (at most ``critical_buffer`` of
  them) and are written again by the next call that reaches Redis (a publish,
  ``flush`` or ``close``); a critical ``publish`` that could not be written is
  accepted into that buffer and returns. When the buffer is full, a critical
  ``publish`` raises :class:`CriticalBufferFullError` at once: nothing accepted
  is ever dropped;
- priority 1-7 publishes still unacknowledged are dropped (ADR-002: fire and
  forget), counted in ``failed`` and ``dropped_by_priority``, and the call raises
  :class:`PublishFailedError` saying how many;
- a ``publish`` that raises is one circuit-breaker failure, however many
  reconnect attempts it made (a critical one kept in the buffer is not a failed
  call; ``flush`` and the library's own reads do not count either).

Before the first connection ever succeeds nothing is kept: the call raises
:class:`ServerUnavailableError` (a wrong URL or a server that is not there).
Plain publishes are auto-pipelined (``WriteCoalescer``, one per backend): a
publish that comes while a write has just been made (asyncio: in the same
event-loop iteration; threads: within a few µs, or while another thread held
the connection) joins a pending write, which goes out as one write when the
loop comes round (or the flusher thread runs), or once it holds
``AUTO_MAX_COMMANDS`` / ``AUTO_MAX_BYTES``. A lone publish is written at once.
Coalesced commands are in ``in_flight`` from the moment they are written, so
acknowledgements, errors and retries count them like any other.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from itertools import repeat, starmap
from types import TracebackType
from typing import Any

from pytest_cfn._async.asked_calls import AskedCalls
from pytest_cfn._async.connection import RespConnection
from pytest_cfn._async.shard_route import ShardRoute
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import (
    PublishLock,
    WriteCoalescer,
    monotonic,
    offer_lock,
    planned_offer_lock,
    sleep,
    try_lock,
)
from pytest_cfn._core.backoff import RetryPolicy
from pytest_cfn._core.breaker import CircuitBreaker
from pytest_cfn._core.resp import ServerReplyError, encode_command
from pytest_cfn._core.shard_layout import redirect
from pytest_cfn._errors import (
    ConnectionFailedError,
    ConnectionLostError,
    CriticalBufferFullError,
    PermissionDeniedError,
    PublishFailedError,
    ServerUnavailableError,
    TlsError,
    reply_error,
)

# The kind of each command in flight: a publish's priority (1-9), or one of these.
INTERNAL = 0  # a write of the library's own (the catch-up cursor); not a publish
_CALL = -1  # a command whose reply a caller is waiting for
KEPT_PRIORITY = 8  # publishes of priority 8-9 are kept when retries run out
DEFAULT_CRITICAL_BUFFER = 10_000
MAX_BATCH_COMMANDS = 1000
MAX_BATCH_BYTES = 256 * 1024
BATCHES_IN_FLIGHT = 4
AUTO_MAX_COMMANDS = 256
AUTO_MAX_BYTES = 64 * 1024
_KEEP_ERRORS = 20

log = logging.getLogger("pytest_cfn.publisher")


class Publisher:
    """Writes ``PUBLISH`` (and other) commands on one connection of its own."""

    __slots__ = (
        "_ack_window",
        "_batch",
        "_batch_bytes",
        "_batch_depth",
        "_batch_kinds",
        "_breaker",
        "_coalescer",
        "_conn",
        "_critical",
        "_critical_buffer",
        "_ever_connected",
        "_held_check",
        "_in_flight",
        "_in_flight_kinds",
        "_kept_unsent",
        "_lock",
        "_offer_release",
        "_offer_take",
        "_on_error",
        "_retry",
        "_try_lock",
        "_unreported_errors",
        "acknowledged",
        "asked_calls",
        "coalesced_writes",
        "critical_resent",
        "dropped_by_priority",
        "errors",
        "failed",
        "give_ups",
        "last_failure",
        "on_redirect",
        "plan_lock",
        "reconnects",
        "redirects",
        "reply_errors",
        "retries",
        "route",
    )


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
        critical_buffer: int = DEFAULT_CRITICAL_BUFFER,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._conn = RespConnection(
            address, name, connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )
        self._retry = retry
        self._breaker = breaker
        self._ack_window = ack_window
        self._critical_buffer = critical_buffer
        self._on_error = on_error
        self._lock = PublishLock()
        self._try_lock = try_lock(self._lock)
        self._offer_take, self._offer_release = offer_lock(self._lock)
        self.plan_lock, self._held_check = planned_offer_lock(self._lock)
        """The lock of a planner that hands its commands to :meth:`offer_held`."""
        # Written and not acknowledged yet, in order: each command and its kind, side by
        # side (two deques of plain items: no tuple per publish to build, track and free).
        self._in_flight: deque[bytes] = deque()
        self._in_flight_kinds: deque[int] = deque()
        self._batch: list[bytes] = []
        self._batch_kinds: list[int] = []
        self._batch_bytes = 0
        self._critical = 0  # priority 8-9 publishes queued or in flight, not acknowledged
        self._batch_depth = 0
        self._coalescer = WriteCoalescer(self._write_pending_now, self._lock, name)
        self.coalesced_writes = 0
        self._ever_connected = False
        self.acknowledged = 0
        self.retries = 0
        self.reconnects = 0
        self.failed = 0
        self.dropped_by_priority: dict[int, int] = {}
        self.critical_resent = 0
        self._kept_unsent = 0
        self.give_ups = 0
        self.last_failure = ""
        self.reply_errors = 0
        self.errors: deque[str] = deque(maxlen=_KEEP_ERRORS)
        self._unreported_errors = 0
        self.route: ShardRoute | None = None
        """On Redis Cluster: the owner of the swarm's slot, asked on every reconnect."""
        self.on_redirect: Callable[[int, bytes, str], bool] | None = None
        """On Redis Cluster: ``(priority, command, "MOVED ...")`` -> True if it was taken
        to be sent on the new owner's connection (else: reconnect here and resend)."""
        self.redirects = 0
        self.asked_calls: AskedCalls | None = None
        """On Redis Cluster: follows an ASK reply to a :meth:`call` (``asked_calls``)."""

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) + len(self._batch)

    @property
    def critical_pending(self) -> int:
        """Priority 8-9 publishes accepted and not yet acknowledged by Redis."""
        return self._critical

    @property
    def pending(self) -> int:
        """Publishes not written yet (an open batch, or coalesced by auto-pipelining)."""
        return len(self._batch)

    async def connect(self) -> None:
        async with self._lock:
            if not self._conn.connected:
                await self._recover(None)

    def offer(self, command: bytes, priority: int) -> bool:
        """Queue one encoded PUBLISH of priority 1-7 if that needs no IO now: into an open
        batch, or joining a coalesced write, short of their limits, while nobody else holds
        the connection. False: nothing was done; :meth:`send_publish` it instead. (The
        fast path of a publish: no coroutine, no wait.)"""
        if not self._offer_take():
            return False
        try:
            return self.offer_held(command, priority)
        finally:
            if self._offer_release is not None:  # None: checked free, nothing taken
                self._offer_release()

    def offer_held(self, command: bytes, priority: int) -> bool:
        """:meth:`offer` for a planner whose lock is :attr:`plan_lock`, called while it
        holds it (threads: this connection's lock, so nothing is taken here; asyncio: no
        lock, so the connection's is checked free here)."""
        if priority >= KEPT_PRIORITY or priority <= INTERNAL:
            return False
        check = self._held_check
        if check is not None and not check():
            return False
        batch = self._batch
        size = self._batch_bytes + len(command)
        if self._batch_depth:
            if len(batch) + 1 >= MAX_BATCH_COMMANDS or size >= MAX_BATCH_BYTES:
                return False  # this one fills the batch: send_publish writes it
        elif batch:  # joining a coalesced write (already scheduled: see below)
            if len(batch) + 1 >= AUTO_MAX_COMMANDS or size >= AUTO_MAX_BYTES:
                return False  # this one fills it: send_publish writes it
        elif self._coalescer.busy() and size < AUTO_MAX_BYTES:
            # The first to wait for the coalesced write: schedule it. Pending publishes
            # outside a batch always have their write scheduled (the flush that clears
            # the schedule writes them, under the lock).
            self._coalescer.schedule()
        else:
            return False  # a lone publish: written at once, by send_publish
        batch.append(command)
        self._batch_kinds.append(priority)
        self._batch_bytes = size
        return True

    async def send_publish(self, command: bytes, priority: int) -> None:
        """Queue one encoded PUBLISH of ``priority`` (or :data:`INTERNAL`); written now
        unless a batch is open. A priority 8-9 one is kept until acknowledged."""
        lock = self._lock
        if not self._try_lock():
            await lock.acquire()
        try:
            critical = priority >= KEPT_PRIORITY
            if critical:
                if self._critical >= self._critical_buffer:
                    await self._make_room()
                self._critical += 1
            try:
                if self._batch_depth:
                    self._batch.append(command)
                    self._batch_kinds.append(priority)
                    self._batch_bytes += len(command)
                    if (
                        len(self._batch) >= MAX_BATCH_COMMANDS
                        or self._batch_bytes >= MAX_BATCH_BYTES
                    ):
                        await self._write_batch()
                    return
                coalescer = self._coalescer
                if self._batch or coalescer.busy():
                    self._batch.append(command)
                    self._batch_kinds.append(priority)
                    self._batch_bytes += len(command)
                    if (
                        len(self._batch) >= AUTO_MAX_COMMANDS
                        or self._batch_bytes >= AUTO_MAX_BYTES
                    ):
                        self.coalesced_writes += 1
                        await self._write_batch()
                        # A write of the burst, as the lone one that began it: publishes
                        # right after it keep joining writes instead of one going alone
                        # (and reading acknowledgements) after every full write.
                        coalescer.wrote()
                    else:
                        coalescer.schedule()
                    return
                self._in_flight.append(command)
                self._in_flight_kinds.append(priority)
                await self._write(command)
                coalescer.wrote()
                in_flight = len(self._in_flight)
                if in_flight > self._ack_window:
                    # Read the oldest ack_window/2 acknowledgements (long written: there by
                    # now), not all but ack_window/2: after a coalesced burst, thousands
                    # are in flight, and draining them would stall the sender a round trip.
                    await self._read_acks(in_flight - self._ack_window // 2)
            except PublishFailedError:
                # Retries ran out; a critical publish is kept (and re-sent later), so
                # this call accepted it. Others have been dropped and counted: raise.
                if critical and self._ever_connected:
                    return
                self._breaker.record_failure(monotonic())  # one failed call, one failure
                raise
            except ServerUnavailableError:
                self._breaker.record_failure(monotonic())
                raise
        finally:
            lock.release()

    async def _make_room(self) -> None:
        """The critical buffer is full: read acknowledgements if Redis is reachable,
        else refuse at once."""
        if self._conn.connected:
            try:
                if self._batch:
                    await self._write_batch()
                await self._read_acks(0)
            except PublishFailedError:
                pass
        if self._critical >= self._critical_buffer:
            raise CriticalBufferFullError(
                f"{self._critical} priority 8-9 publishes are waiting for Redis at "
                f"{self._conn.address.describe()} to acknowledge them (critical_buffer="
                f"{self._critical_buffer}); this one was not accepted. They are re-sent by "
                f"the next call that reaches Redis; flush() waits for them, or raise "
                f"critical_buffer. Last failure: {self.last_failure or 'none'}"
            )

    def _write_pending_now(self) -> None:
        """The coalescer's flush: write what plain publishes left pending, without
        waiting. Called with the connection to itself; a broken connection is found
        (and everything unacknowledged re-sent) by the next publish, flush or read."""
        if self._batch_depth or not self._batch:
            return
        commands = self._batch
        kinds = self._batch_kinds
        self._batch = []
        self._batch_kinds = []
        self._batch_bytes = 0
        self._in_flight.extend(commands)
        self._in_flight_kinds.extend(kinds)
        self.coalesced_writes += 1
        if not self._conn.connected:
            return
        try:
            self._conn.write_nowait(b"".join(commands))
        except (OSError, ConnectionLostError):
            self._conn.abort()

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
            self._in_flight.append(command)
            self._in_flight_kinds.append(_CALL)
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
            except ConnectionFailedError as exc:
                await self._recover(exc)
            await self._read_acks(0)
            if self._unreported_errors:
                count, self._unreported_errors = self._unreported_errors, 0
                last = self.errors[-1] if self.errors else "unknown"
                message = (
                    f"Redis refused {count} publish(es) since the last flush; last error: {last}"
                )
                if "NOPERM" in last:
                    raise PermissionDeniedError(
                        f"{message}; run `cfn acl --swarm SWARM` for the ACL rules a swarm's "
                        "agents need"
                    )
                raise PublishFailedError(message)
            return self.acknowledged - before

    async def close(self) -> None:
        await self._coalescer.close()
        async with self._lock:
            await self._conn.close()

    async def _write_batch(self) -> None:
        commands = self._batch
        kinds = self._batch_kinds
        self._batch = []
        self._batch_kinds = []
        self._batch_bytes = 0
        self._in_flight.extend(commands)
        self._in_flight_kinds.extend(kinds)
        await self._write(b"".join(commands))
        # Batches keep a few of their size in flight (a pipeline; at least
        # AUTO_MAX_COMMANDS), and each write reads back at most two batches' worth of the
        # oldest acknowledgements (long written: there by now): no single read stalls the
        # sender long. Measured in the load harness (10-command batches, 1,000 a second):
        # a limit of 4,000 whatever the batch size made every 200th write read 2,000
        # acknowledgements, 0.5 ms in one go, the latency's p99 tail.
        size = len(commands)
        in_flight = len(self._in_flight)
        limit = max(self._ack_window, AUTO_MAX_COMMANDS, BATCHES_IN_FLIGHT * size)
        if in_flight > limit:
            await self._read_acks(max(limit // 2, in_flight - 2 * size - self._ack_window // 2))

    async def _write(self, data: bytes) -> None:
        if not self._conn.connected:
            await self._recover(None)
            return
        try:
            await self._conn.write(data)
        except ConnectionFailedError as exc:
            await self._recover(exc)

    async def _read_acks(self, keep: int, want_call_reply: bool = False) -> Any:
        """Read replies until at most ``keep`` commands are unacknowledged."""
        while True:
            try:
                return await self._read_acks_once(keep, want_call_reply)
            except ConnectionFailedError as exc:
                await self._recover(exc)

    async def _read_acks_once(self, keep: int, want_call_reply: bool) -> Any:
        in_flight = self._in_flight
        kinds = self._in_flight_kinds
        conn = self._conn
        acked = 0
        try:
            while len(in_flight) > keep:
                if not want_call_reply and not self._critical:
                    # Nothing in flight needs its own reply read (no call, no priority 8-9
                    # to count): a run of integer replies acknowledges as many commands.
                    count = conn.take_integer_replies()
                    if count:
                        if count > len(in_flight):
                            raise ConnectionLostError(
                                f"Redis sent {count} replies for {len(in_flight)} commands "
                                "in flight; reconnecting to get back in step"
                            )
                        acked += count
                        _drop_left(in_flight, count)
                        _drop_left(kinds, count)
                        continue
                replies = conn.buffered_replies(len(in_flight) - keep)
                if not replies:
                    await conn.read_more(conn.socket_timeout)
                    continue
                for reply in replies:
                    command = in_flight.popleft()
                    kind = kinds.popleft()
                    if kind > INTERNAL and type(reply) is int:
                        acked += 1
                        if kind >= KEPT_PRIORITY:
                            self._critical -= 1
                        continue
                    if (
                        self.route is not None
                        and isinstance(reply, ServerReplyError)
                        and redirect(reply) is not None
                    ):
                        if kind > INTERNAL and self.on_redirect is not None and (
                            self.on_redirect(kind, command, str(reply))
                        ):
                            # Taken to the slot's owner on another connection (Messenger).
                            self.redirects += 1
                            if kind >= KEPT_PRIORITY:
                                self._critical -= 1
                            continue
                        if kind <= INTERNAL and self.asked_calls is not None:
                            # ASK mid-migration: a call or a cursor write runs on the
                            # importing master.
                            done, answer = await self.asked_calls.follow(
                                command, str(reply), conn.address, conn.name)
                            if done:
                                acked += 1
                                if kind == INTERNAL:
                                    if isinstance(answer, ServerReplyError):
                                        self._note_error(answer)
                                    continue
                                if isinstance(answer, ServerReplyError):
                                    raise reply_error(answer, "a command sent on after ASK")
                                if want_call_reply and not in_flight:
                                    return answer
                                continue
                        # The slot moved: reconnect to its owner and send this (and every
                        # command after it, redirected too) again.
                        in_flight.appendleft(command)
                        kinds.appendleft(kind)
                        self.redirects += 1
                        raise ConnectionLostError(f"Redis Cluster redirect: {reply}")
                    acked += 1
                    if kind >= KEPT_PRIORITY:
                        self._critical -= 1
                    if isinstance(reply, ServerReplyError):
                        if kind == _CALL:
                            raise reply_error(reply, "a command on the publisher connection")
                        self._note_error(reply)
                    elif kind == _CALL and want_call_reply and not in_flight:
                        return reply
            return None
        finally:
            if acked:
                self.acknowledged += acked
                self._breaker.record_success(monotonic())

    def _note_error(self, reply: ServerReplyError) -> None:
        self.reply_errors += 1
        self._unreported_errors += 1
        self.errors.append(str(reply))
        self._breaker.record_failure(monotonic())
        if self._on_error is not None:
            try:
                self._on_error(reply_error(reply, "a publish"))
            except Exception:  # a failing callback must not stop the acknowledgements
                log.exception("on_error callback failed")

    async def _recover(self, cause: BaseException | None) -> None:
        """Reconnect with backoff and write every unacknowledged command again;
        when the retries run out, give up (see the module docstring)."""
        last: BaseException | None = cause
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
                    await self._conn.write(b"".join(self._in_flight))
            except TlsError as exc:  # a certificate or TLS/plain mix-up: a retry cannot help
                self.last_failure = str(exc)
                await self._give_up()
                raise
            except ConnectionFailedError as exc:
                last = exc
                continue
            except ServerReplyError as exc:  # refused (AUTH, an ACL): retrying cannot help
                self.last_failure = str(exc)
                await self._give_up()
                raise exc from None
            if self._ever_connected:
                self.reconnects += 1
                if cause is not None:
                    self._kept_unsent = sum(
                        1 for k in self._in_flight_kinds if k >= KEPT_PRIORITY
                    )
                self.critical_resent += self._kept_unsent
                self._kept_unsent = 0
            self._ever_connected = True
            return
        self.last_failure = str(last)
        dropped, kept = await self._give_up()
        where = self._conn.address.describe()
        if not self._ever_connected:
            raise ServerUnavailableError(
                f"{last} ({len(delays)} attempt(s)); nothing was published"
            ) from last
        raise PublishFailedError(
            f"cannot reach Redis at {where} after {len(delays)} attempt(s): {last}; "
            f"{dropped} unacknowledged priority 1-7 publish(es) dropped (stats()"
            f"['publish_failed']); {kept} priority 8-9 publish(es) kept and re-sent by the "
            "next call that reaches Redis"
        ) from last

    async def _give_up(self) -> tuple[int, int]:
        """One failed call: keep the critical publishes (none if Redis was never
        reached), drop and count the others; returns (dropped, kept)."""
        self.give_ups += 1
        keep = self._ever_connected
        kept: list[bytes] = []
        kept_kinds: list[int] = []
        dropped = 0
        for kind, command in zip(self._in_flight_kinds, self._in_flight, strict=True):
            if kind >= KEPT_PRIORITY and keep:
                kept.append(command)
                kept_kinds.append(kind)
            elif kind > INTERNAL:
                dropped += 1
                self.dropped_by_priority[kind] = self.dropped_by_priority.get(kind, 0) + 1
        self._in_flight.clear()
        self._in_flight.extend(kept)
        self._in_flight_kinds.clear()
        self._in_flight_kinds.extend(kept_kinds)
        self._critical = len(kept) + sum(1 for k in self._batch_kinds if k >= KEPT_PRIORITY)
        self._kept_unsent = len(kept)
        self.failed += dropped
        await self._conn.close()
        return dropped, len(kept)


def _drop_left(entries: deque[Any], count: int) -> None:
    """Remove the first ``count`` entries, in C (no Python step per entry)."""
    if count >= len(entries):
        entries.clear()
    else:
        deque(starmap(entries.popleft, repeat((), count)), maxlen=0)


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
