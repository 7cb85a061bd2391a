"""The subscriber connection: one reader, a PING watchdog, and re-subscription.

One worker reads the socket in large chunks and hands the messages of each
chunk to ``on_messages`` (which must not block for long: the bus queues them, or
hands them to handlers that have proved fast, see ``engine``). If no
byte arrives for ``ping_interval`` seconds it sends PING; if nothing arrives
within ``ping_timeout`` after that, the server is taken as hung (SIGSTOP, a dead
network path) and the connection is dropped. After any loss of the connection
it reconnects with capped backoff, subscribes again, counts the reconnect and
calls ``on_reconnect``. Messages published in the gap are gone (pub/sub is
at-most-once); the receivers' sequence tracking counts them as lost.

Whatever escapes the reader (a bug, a failing sink) does not end it quietly: it
is reported to ``on_crash`` and the reader starts again on a fresh connection.

A subscriber shared by several buses (``SharedConnections``) routes each message
by the pattern it matched: ``routes`` maps a pattern to the sinks of the buses
that subscribed it, and a chunk's messages go to each sink in one call, grouped.

Besides patterns, a subscriber holds exact channels (``SUBSCRIBE``, for a bus told
the only event types or senders it receives): Redis matches every PUBLISH against
every pattern subscribed on the server (measured on Redis 7.0: 40-55 ns per pattern
per PUBLISH, so 200 buses' patterns cost more than the PUBLISH itself), but finds an
exact channel's subscribers with one lookup. A shared subscriber routes an exact
channel's messages by the channel.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_cfn._async.connection import RespConnection
from pytest_cfn._async.shard_route import ShardRoute
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import (
    Lock,
    Signal,
    Worker,
    sleep,
    spawn,
    time_ns,
    yield_now,
)
from pytest_cfn._core.backoff import ExponentialWithJitterBackoff
from pytest_cfn._core.resp import ServerReplyError, encode_command
from pytest_cfn._errors import (
    CfnError,
    ConnectionFailedError,
    ConnectionLostError,
    SubscribeFailedError,
    reply_error,
)

log = logging.getLogger("pytest_cfn.subscriber")

MessageSink = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]
ErrorSink = Callable[[BaseException], None]
_PMESSAGE = b"pmessage"
_MESSAGE = b"message"
_SMESSAGE = b"smessage"
_PING = encode_command("PING")
_CHUNK_REPLIES = 1 << 30
_HAND_SLICE = 64
"""Shared connections: messages of one bus handed to it in one call, at most."""
_HOLD_NS = 500_000
"""After running this long without waiting for the socket, the reader yields (asyncio: to the
loop; threads: sleep(0); gevent: a 1 µs timer, see ``yield_now``) before its next slice, so
a backlog (reads that never wait: the socket always has more) or one large chunk for many
buses never holds up everything else in the process. Measured in the load harness: its
pacing loop woke over 2 ms late, held by a reader, when a chunk was handed in one go (with
``sleep(0)`` under gevent, still 3-5 ms); 100 per-agent agents' readers, each working its
backlog off without waiting, held it 1.5-20 ms at a time."""
_READ_SLICE = 64
"""Own connection: messages handed to the bus in one call, at most."""
_WAITED_NS = 100_000
"""A read that took this long waited for the socket (it yielded meanwhile)."""


class Subscriber:
    """Holds the PSUBSCRIBE patterns (and SUBSCRIBE channels) of one bus on one
    connection of its own, or of many buses (``routes``)."""

    def __init__(
        self,
        address: ServerAddress,
        name: str,
        on_messages: MessageSink,
        *,
        on_reconnect: Callable[[int], None] | None = None,
        on_crash: Callable[[str, BaseException], None] | None = None,
        on_error: ErrorSink | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 2.0,
        connect_timeout: float = 5.0,
        reconnect_backoff: ExponentialWithJitterBackoff | None = None,
        route: ShardRoute | None = None,
        routes: dict[bytes, list[MessageSink]] | None = None,
    ) -> None:
        self._route = route
        self._routes = routes
        """Shared by several buses: pattern -> the sinks of the buses that subscribed it."""
        self.unrouted = 0
        """On Redis Cluster: SSUBSCRIBE shard channels on the owner of the swarm's slot."""
        self._verb = "PSUBSCRIBE" if route is None else "SSUBSCRIBE"
        self._slot_moved = False
        self._conn = RespConnection(
            address, name, connect_timeout=connect_timeout, socket_timeout=ping_timeout
        )
        self._on_messages = on_messages
        self._on_reconnect = on_reconnect
        self._on_crash = on_crash
        self._on_error = on_error
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._backoff = reconnect_backoff or ExponentialWithJitterBackoff(base=0.05, cap=1.0)
        self._patterns: list[str] = []
        """Every pattern and exact channel subscribed, in order."""
        self._exact: set[str] = set()
        """Those of ``_patterns`` that are exact channels (SUBSCRIBE, not the verb)."""
        self._confirmed: set[str] = set()
        self._confirm_signal = Signal()
        self._write_lock = Lock()
        self._worker: Worker | None = None
        self._closing = False
        self.reconnects = 0
        self.pings = 0
        self.watchdog_trips = 0
        self.messages = 0
        self.crashes = 0
        self.read_ns = 0
        """Wall clock (ns) when the chunk being handed on was read (per-stage timing)."""
        self._held_since = 0
        """Wall clock (ns) since when the reader has run without waiting or yielding."""

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def patterns(self) -> list[str]:
        return list(self._patterns)

    async def psubscribe(self, pattern: str, timeout: float = 5.0) -> None:
        """Subscribe ``pattern`` (once) and wait until Redis has confirmed it.

        Not safe to call concurrently: the bus serialises its subscribe calls. The
        first call connects; if that fails nothing is left behind, and the error
        (ServerUnavailableError, PermissionDeniedError...) reaches the caller."""
        await self._add(pattern, exact=False, timeout=timeout)

    async def subscribe(self, channel: str, timeout: float = 5.0) -> None:
        """Subscribe the exact ``channel`` (SUBSCRIBE), as :meth:`psubscribe` does a
        pattern. On Redis Cluster a bus subscribes its shard channel with psubscribe()."""
        if self._route is not None:
            raise SubscribeFailedError("exact channels are not subscribed on Redis Cluster")
        await self._add(channel, exact=True, timeout=timeout)

    def _verb_of(self, name: str) -> str:
        return "SUBSCRIBE" if name in self._exact else self._verb

    async def _add(self, name: str, *, exact: bool, timeout: float) -> None:
        if name in self._patterns:
            return
        self._patterns.append(name)
        if exact:
            self._exact.add(name)
        if self._worker is None:
            try:
                await self._connect_and_subscribe()
            except BaseException:
                self._forget(name)
                await self._conn.close()
                raise
            self._worker = spawn(self._supervised_run, name=f"cfn-reader:{self._conn.name}")
            return
        verb = self._verb_of(name)
        async with self._write_lock:
            await self._conn.write(encode_command(verb, name))
        deadline_left = timeout
        while name not in self._confirmed and deadline_left > 0:
            self._confirm_signal.clear()
            if name in self._confirmed:
                break
            await self._confirm_signal.wait(0.05)
            deadline_left -= 0.05
        if name not in self._confirmed:
            self._forget(name)
            raise SubscribeFailedError(
                f"Redis did not confirm {verb} {name!r} within {timeout} s"
            )

    def _forget(self, name: str) -> None:
        if name in self._patterns:
            self._patterns.remove(name)
        self._exact.discard(name)
        self._confirmed.discard(name)

    async def punsubscribe(self, pattern: str) -> None:
        """Drop ``pattern`` or an exact channel (no bus of a shared subscriber wants it
        any more): PUNSUBSCRIBE or UNSUBSCRIBE, as it was subscribed."""
        if pattern not in self._patterns:
            return
        verb = "UNSUBSCRIBE" if pattern in self._exact else "PUNSUBSCRIBE"
        self._forget(pattern)
        if self._worker is None or not self._conn.connected:
            return
        try:
            async with self._write_lock:
                await self._conn.write(encode_command(verb, pattern))
        except (OSError, ConnectionLostError):
            self._conn.abort()  # the reader reconnects with the patterns left

    async def close(self) -> None:
        self._closing = True
        self._conn.abort()
        if self._worker is not None:
            await self._worker.join(2.0)
            self._worker = None
        await self._conn.close()

    async def _connect_and_subscribe(self) -> None:
        """Connect, PSUBSCRIBE every pattern (SUBSCRIBE every exact channel) and read
        the confirmations."""
        conn = self._conn
        if self._route is not None:
            conn.address = await self._route.resolve(refresh=self._worker is not None)
            self._slot_moved = False
        await conn.connect()
        self._confirmed.clear()
        if not self._patterns:
            return
        patterns = [name for name in self._patterns if name not in self._exact]
        channels = [name for name in self._patterns if name in self._exact]
        if patterns:
            await conn.write(encode_command(self._verb, *patterns))
        if channels:
            await conn.write(encode_command("SUBSCRIBE", *channels))
        while len(self._confirmed) < len(set(self._patterns)):
            reply = await conn.read_reply(conn.connect_timeout)
            if isinstance(reply, ServerReplyError):
                refused = reply_error(reply, f"{self._verb} {' '.join(self._patterns)}")
                if refused is not reply:
                    raise refused
                raise SubscribeFailedError(f"Redis refused {self._verb}: {reply}")
            if reply[0] == _PMESSAGE:
                if self._routes is not None:
                    await self._hand_routed({(): (reply[1], [(reply[2], reply[3])])})
                else:
                    await self._on_messages([(reply[2], reply[3])])
            elif reply[0] == _MESSAGE:
                if self._routes is not None:
                    await self._hand_routed({(): (reply[1], [(reply[1], reply[2])])})
                else:
                    await self._on_messages([(reply[1], reply[2])])
            elif reply[0] == _SMESSAGE:
                await self._on_messages([(reply[1], reply[2])])
            else:
                self._handle_reply(reply)
        await self._drain_parser()

    async def _supervised_run(self) -> None:
        crashes = 0
        while not self._closing:
            try:
                if crashes:
                    await self._reconnect()
                await self._run()
                return
            except Exception as exc:
                if self._closing:
                    return
                crashes += 1
                self.crashes += 1
                if self._on_crash is not None:
                    self._on_crash("reader", exc)
                else:
                    log.exception("subscriber reader died; restarting it")
                await sleep(min(0.01 * 2 ** min(crashes, 7), 1.0))

    async def _run(self) -> None:
        conn = self._conn
        awaiting_pong = False
        while not self._closing:
            before = time_ns()
            try:
                await conn.read_more(self._ping_timeout if awaiting_pong else self._ping_interval)
            except TimeoutError:
                if awaiting_pong:
                    self.watchdog_trips += 1
                    log.warning("no reply to PING within %.1f s; reconnecting", self._ping_timeout)
                    await self._reconnect()
                    awaiting_pong = False
                    continue
                try:
                    async with self._write_lock:
                        await conn.write(_PING)
                    self.pings += 1
                    awaiting_pong = True
                except (OSError, ConnectionLostError):
                    await self._reconnect()
                continue
            except (OSError, ConnectionLostError):
                if self._closing:
                    return
                await self._reconnect()
                awaiting_pong = False
                continue
            awaiting_pong = False
            self.read_ns = read_ns = time_ns()
            if read_ns - before > _WAITED_NS:
                self._held_since = read_ns
            await self._drain_parser()
            if self._routes is None:  # shared connections slice their hand-off themselves
                await self._yield_if_held()
            if self._slot_moved and not self._closing:
                log.info("the slot of %s moved; re-subscribing on its new owner", self._conn.name)
                await self._reconnect()

    async def _yield_if_held(self) -> None:
        if time_ns() - self._held_since > _HOLD_NS:
            await yield_now()
            self._held_since = time_ns()

    async def _drain_parser(self) -> None:
        """Hand every complete message of this chunk to the sink, up to ``_READ_SLICE`` per
        call, yielding between calls once the reader has held on for ``_HOLD_NS``."""
        if self._routes is not None:
            await self._drain_routed()
            return
        while True:
            replies = self._conn.buffered_replies(_READ_SLICE)
            batch: list[tuple[bytes, bytes]] = []
            append = batch.append
            for reply in replies:
                if type(reply) is list:
                    kind = reply[0]
                    if kind == _PMESSAGE:
                        append((reply[2], reply[3]))
                    elif kind in (_MESSAGE, _SMESSAGE):
                        append((reply[1], reply[2]))
                    else:
                        self._handle_reply(reply)
                elif isinstance(reply, ServerReplyError):
                    self._report(reply_error(reply, "a command on the subscriber connection"))
            if batch:
                self.messages += len(batch)
                await self._on_messages(batch)
            if len(replies) < _READ_SLICE:
                return
            await self._yield_if_held()

    async def _drain_routed(self) -> None:
        """Shared: group this chunk's messages by the buses they go to (the sinks of the
        pattern they matched, or of their exact channel), in the order they came. A bus
        with exact channels (one per event type) gets its chunk in one call, as a bus
        with the swarm's pattern does, and a publisher's events stay in its order."""
        routes = self._routes
        assert routes is not None
        groups: dict[Any, tuple[bytes, list[tuple[bytes, bytes]]]] = {}
        """The sinks (a tuple) -> (a pattern or channel that reaches them, the items)."""
        sinks_of: dict[bytes, Any] = {}
        count = 0
        for reply in self._conn.buffered_replies(_CHUNK_REPLIES):
            if type(reply) is list:
                kind = reply[0]
                if kind == _PMESSAGE:
                    item = (reply[2], reply[3])
                elif kind == _MESSAGE:  # an exact channel: routed by the channel
                    item = (reply[1], reply[2])
                else:
                    self._handle_reply(reply)
                    continue
                key = reply[1]
                sinks = sinks_of.get(key)
                if sinks is None:
                    sinks = sinks_of[key] = tuple(routes.get(key) or ())
                group = groups.get(sinks)
                if group is None:
                    group = groups[sinks] = (key, [])
                group[1].append(item)
                count += 1
            elif isinstance(reply, ServerReplyError):
                self._report(reply_error(reply, "a command on the subscriber connection"))
        if count:
            self.messages += count
            await self._hand_routed(groups)

    async def _hand_routed(self, groups: dict[Any, tuple[bytes, list[tuple[bytes, bytes]]]]
                           ) -> None:
        """Hand each group's messages to its sinks (those its pattern or channel still
        reaches), ``_HAND_SLICE`` at a time, yielding before a slice once the reader has
        held on for ``_HOLD_NS`` since it last waited or yielded: across chunks too, so a
        reader whose reads never wait (its socket always has a little more) yields as
        often as one given a single large chunk."""
        routes = self._routes
        assert routes is not None
        for pattern, group in groups.values():
            if len(group) <= _HAND_SLICE:
                slices = [group]
            else:
                slices = [group[i:i + _HAND_SLICE] for i in range(0, len(group), _HAND_SLICE)]
            for items in slices:
                if time_ns() - self._held_since > _HOLD_NS:
                    await yield_now()
                    self._held_since = time_ns()
                await self._hand_slice(routes, pattern, items)

    async def _hand_slice(
        self, routes: Any, pattern: bytes, items: list[tuple[bytes, bytes]]
    ) -> None:
        sinks = routes.get(pattern)
        if not sinks:  # a pattern its last bus dropped, still in flight
            self.unrouted += len(items)
            return
        for sink in list(sinks):
            try:
                await sink(items)
            except Exception as exc:  # one bus's failure must not stop the others
                self.crashes += 1
                if self._on_crash is None:
                    raise
                self._on_crash("reader", exc)

    def _report(self, error: BaseException) -> None:
        """Hand an error to the bus's error callback (a log warning when there is none)."""
        if self._on_error is None:
            log.warning("subscriber %s: %s", self._conn.name, error)
            return
        try:
            self._on_error(error)
        except Exception:
            log.exception("on_error callback failed")

    def _handle_reply(self, reply: list[bytes]) -> None:
        kind = reply[0]
        if kind in (b"psubscribe", b"subscribe", b"ssubscribe"):
            self._confirmed.add(reply[1].decode())
            self._confirm_signal.set()
        elif kind in (b"punsubscribe", b"unsubscribe") and reply[1] is not None:
            self._confirmed.discard(reply[1].decode())
        elif kind == b"sunsubscribe" and reply[1] is not None:
            # Redis 7 drops a shard channel whose slot moved to another node.
            self._confirmed.discard(reply[1].decode())
            self._slot_moved = True

    async def _reconnect(self) -> None:
        """Reconnect and re-subscribe until it works or the bus closes."""
        self._conn.abort()
        failures = 0
        while not self._closing:
            try:
                await self._connect_and_subscribe()
            except (ConnectionFailedError, SubscribeFailedError) as exc:
                failures += 1
                log.debug("reconnect attempt %d failed: %s", failures, exc)
                await sleep(self._backoff.compute(failures))
                continue
            except CfnError as exc:  # refused (an ACL, AUTH): report it, keep trying slowly
                failures += 1
                self._report(exc)
                await sleep(self._backoff.compute(failures))
                continue
            self.reconnects += 1
            log.info("subscriber %s reconnected and re-subscribed", self._conn.name)
            if self._on_reconnect is not None:
                try:
                    self._on_reconnect(self.reconnects)
                except Exception:
                    log.exception("on_reconnect callback failed")
            return
