"""Two connections for many buses: one publisher and one subscriber per process.

ADR-002 gives each bus a publisher and a subscriber connection of its own. A
process that hosts many swarms' agents (a worker running 50 swarms, a load
generator) then holds 4 connections per swarm, and at modest rates each socket
read, write and wake-up carries about one message: the per-read cost, not the
bytes, sets the CPU. ``SharedConnections`` lets any number of Event Buses and
Messengers of one process share one publisher and one subscriber connection
(still two: publishing never waits behind reading; a third, made only when a bus
catches up on critical events, carries the catch-ups' round trips, so that no
publish of the process waits behind one)::

    share = SharedConnections("redis://localhost:6379", owner="worker-1")
    buses = [EventBus(share.address, f"swarm-{i}", "a", share=share) for i in range(50)]
    ...
    for bus in buses:
        bus.close()
    share.close()

What each bus keeps to itself: its swarm, handlers, sequence numbers, dispatch
queue and dispatcher, critical-event catch-up, route cache and counters. What
is shared: the two sockets, the publish pipeline (a ``batch()`` on any of the
buses, or on the share, writes every bus's publishes in one go), its retries,
critical buffer and circuit breaker, and the reconnects: when the subscriber
connection comes back, every bus catches up. Messages are routed to the buses by
the pattern they matched (``PSUBSCRIBE``), so two buses never see each other's
traffic. A bus's ``stats()`` shows the shared connection counters as they are
(``"shared_connections": True``); to add them up over many buses count them once,
from :meth:`SharedConnections.stats`.

One Redis server only: on Redis Cluster each swarm's channel lives on the owner
of its slot, so a bus created with ``share=`` there raises ``InvalidOptionError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_cfn._async.publisher import PublishBatch, Publisher
from pytest_cfn._async.shard_route import is_cluster
from pytest_cfn._async.subscriber import MessageSink, Subscriber
from pytest_cfn._backends.address import (
    ADDRESS_SETTINGS,
    ServerAddress,
    parse_redis_url,
    with_tls_options,
)
from pytest_cfn._backends.async_backend import Lock, monotonic
from pytest_cfn._core.backoff import ExponentialWithJitterBackoff, RetryPolicy
from pytest_cfn._core.breaker import CircuitBreaker
from pytest_cfn._core.connection_names import connection_name
from pytest_cfn._core.ids import validate_agent_id
from pytest_cfn._core.options import BusOptions, bus_options
from pytest_cfn._errors import (
    BusClosedError,
    ConnectionLostError,
    InvalidOptionError,
    PublishFailedError,
    ServerUnavailableError,
)

if TYPE_CHECKING:
    from pytest_cfn._async.engine import BusEngine

log = logging.getLogger("pytest_cfn.share")

CONNECTION_KEYS = (
    "reconnects", "subscriber_reconnects", "publisher_reconnects", "watchdog_trips",
    "retries", "publish_failed", "publish_give_ups", "publish_errors", "acknowledged",
    "in_flight", "critical_pending", "critical_resent", "coalesced_writes", "pending_writes",
    "redirects",
)
"""The counters of a bus's ``stats()`` that belong to its connections (see
:func:`connection_counters`)."""


def connection_counters(publisher: Publisher, sub: Subscriber | None) -> dict[str, int]:
    """The :data:`CONNECTION_KEYS` of a publisher and a subscriber connection: a bus's own,
    or the ones it shares (then counted once, by :meth:`SharedConnections.stats`)."""
    sub_reconnects = sub.reconnects if sub else 0
    return {
        "reconnects": sub_reconnects + publisher.reconnects,
        "subscriber_reconnects": sub_reconnects,
        "publisher_reconnects": publisher.reconnects,
        "watchdog_trips": sub.watchdog_trips if sub else 0,
        "retries": publisher.retries,
        "publish_failed": publisher.failed,
        "publish_give_ups": publisher.give_ups,
        "publish_errors": publisher.reply_errors,
        "acknowledged": publisher.acknowledged,
        "in_flight": publisher.in_flight,
        "critical_pending": publisher.critical_pending,
        "critical_resent": publisher.critical_resent,
        "coalesced_writes": publisher.coalesced_writes,
        "pending_writes": publisher.pending,
        "redirects": publisher.redirects,
    }


ALL_SWARMS = "all"
"""The swarm field of a shared connection's name (``cfn:shared-pub:all:{owner}``)."""


class SharedConnections:
    """One publisher and one subscriber connection that many buses of a process share."""

    def __init__(
        self,
        address: ServerAddress | str,
        owner: str = "shared",
        *,
        options: BusOptions | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        **settings: Any,
    ) -> None:
        address = with_tls_options(
            parse_redis_url(address) if isinstance(address, str) else address, settings
        )
        if options is None:
            options = bus_options(settings, ADDRESS_SETTINGS)
        elif settings:
            raise TypeError("pass either options= or keyword settings, not both")
        self.address = address
        self.owner = validate_agent_id(owner)
        self.options = options
        self._on_error = on_error
        self.breaker = CircuitBreaker(
            failure_threshold=options.breaker_failures,
            reset_timeout=options.breaker_reset,
            success_threshold=options.breaker_successes,
        )
        self._backoff = ExponentialWithJitterBackoff(
            base=options.backoff_base, cap=options.backoff_cap
        )
        self.publisher = Publisher(
            address,
            connection_name("shared-pub", ALL_SWARMS, self.owner, options.namespace),
            retry=RetryPolicy(retries=options.retries, backoff=self._backoff),
            breaker=self.breaker,
            connect_timeout=options.connect_timeout,
            socket_timeout=options.socket_timeout,
            ack_window=options.ack_window,
            critical_buffer=options.critical_buffer,
            on_error=self._report_error,
        )
        self.control = Publisher(
            address,
            connection_name("catchup-call", ALL_SWARMS, self.owner, options.namespace),
            retry=RetryPolicy(retries=options.retries, backoff=self._backoff),
            breaker=CircuitBreaker(
                failure_threshold=options.breaker_failures,
                reset_timeout=options.breaker_reset,
                success_threshold=options.breaker_successes,
            ),
            connect_timeout=options.connect_timeout,
            socket_timeout=options.socket_timeout,
            on_error=self._report_error,
        )
        """The buses' critical-event catch-ups (TIME, XRANGE, the stored cursor): their round
        trips on a connection of their own, so that no publish waits behind one."""
        self._routes: dict[bytes, list[MessageSink]] = {}
        self._engines: list[BusEngine] = []
        self._subscribe_lock = Lock()
        self.subscriber: Subscriber | None = None
        self._closed = False
        self.last_error: BaseException | None = None
        self.cluster: bool | None = None
        """None until a bus asked the server; a cluster node refuses shared connections."""

    @classmethod
    def from_url(cls, url: str, owner: str = "shared", **settings: Any) -> SharedConnections:
        return cls(parse_redis_url(url), owner, **settings)

    @property
    def closed(self) -> bool:
        return self._closed

    async def usable(self) -> bool:
        """Whether buses can share these connections: False on a Redis Cluster node (each
        swarm's channel lives on its slot's owner; create those buses without ``share=``).
        Asks the server once; ServerUnavailableError when it cannot be reached."""
        if self.cluster is None:
            try:
                self.cluster = await is_cluster(self.address, self.options.connect_timeout)
            except (OSError, TimeoutError, ConnectionLostError) as exc:
                raise ServerUnavailableError(
                    f"cannot reach Redis at {self.address.describe()}: {exc}"
                ) from exc
        return not self.cluster

    def check_open(self) -> None:
        if self._closed:
            raise BusClosedError("these shared connections are closed; create new ones")

    def attach(self, engine: BusEngine) -> None:
        """A bus starts using the shared connections (from its constructor)."""
        self.check_open()
        if engine.address != self.address:
            raise InvalidOptionError(
                f"a bus for {engine.address.describe()} cannot share the connections to "
                f"{self.address.describe()}; give it the share's address (share.address)"
            )
        self._engines.append(engine)

    async def subscribe(
        self, pattern: str, sink: MessageSink, timeout: float, *, exact: bool = False
    ) -> Subscriber:
        """PSUBSCRIBE ``pattern`` (``exact``: SUBSCRIBE the channel) for one bus (its
        messages go to ``sink``); returns once Redis has confirmed it. The subscriber
        connection is made on the first call."""
        self.check_open()
        async with self._subscribe_lock:
            self.check_open()
            if self.subscriber is None:
                options = self.options
                self.subscriber = Subscriber(
                    self.address,
                    connection_name("shared-sub", ALL_SWARMS, self.owner, options.namespace),
                    self._unrouted_sink,
                    on_reconnect=self._reconnected,
                    on_crash=self._reader_failed,
                    on_error=self._report_error,
                    ping_interval=options.ping_interval,
                    ping_timeout=options.ping_timeout,
                    connect_timeout=options.connect_timeout,
                    reconnect_backoff=ExponentialWithJitterBackoff(
                        base=options.backoff_base, cap=min(1.0, options.backoff_cap)
                    ),
                    routes=self._routes,
                )
            key = pattern.encode()
            sinks = self._routes.setdefault(key, [])
            if sink not in sinks:
                sinks.append(sink)
            try:
                if exact:
                    await self.subscriber.subscribe(pattern, timeout=timeout)
                else:
                    await self.subscriber.psubscribe(pattern, timeout=timeout)
            except BaseException:
                self._drop_sink(key, sink)
                raise
            return self.subscriber

    def _drop_sink(self, key: bytes, sink: MessageSink) -> bool:
        """Remove ``sink``; True when no bus wants ``key`` any more."""
        sinks = self._routes.get(key)
        if sinks is None:
            return False
        if sink in sinks:
            sinks.remove(sink)
        if sinks:
            return False
        del self._routes[key]
        return True

    async def release(self, engine: BusEngine, patterns: list[str], sink: MessageSink) -> None:
        """A bus closes: its patterns are dropped (PUNSUBSCRIBE when it was the last one)
        and its messages stop; the connections stay for the others."""
        async with self._subscribe_lock:
            for pattern in patterns:
                if self._drop_sink(pattern.encode(), sink) and self.subscriber is not None:
                    await self.subscriber.punsubscribe(pattern)
            if engine in self._engines:
                self._engines.remove(engine)

    async def _unrouted_sink(self, items: list[tuple[bytes, bytes]]) -> None:
        """Never called: a shared subscriber routes by pattern."""
        if self.subscriber is not None:
            self.subscriber.unrouted += len(items)

    def _reconnected(self, count: int) -> None:
        for engine in list(self._engines):
            engine.shared_reconnected(count)

    def _reader_failed(self, worker: str, exc: BaseException) -> None:
        for engine in list(self._engines):
            engine.shared_worker_failed(worker, exc)

    def _report_error(self, error: BaseException) -> None:
        self.last_error = error
        engines = list(self._engines)
        if not engines and self._on_error is None:
            log.warning("shared connections of %s: %s", self.owner, error)
        for engine in engines:
            engine.report_error(error)
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("on_error callback failed")

    def batch(self) -> PublishBatch:
        """``async with share.batch():`` every bus's publishes inside go out in one write."""
        return PublishBatch(self.publisher)

    async def flush(self) -> int:
        """Write what is batched and wait until Redis has acknowledged every publish."""
        return await self.publisher.flush()

    def connection_count(self) -> int:
        sub = self.subscriber
        return (int(self.publisher.connected) + int(sub is not None and sub.connected)
                + int(self.control.connected))

    def stats(self) -> dict[str, Any]:
        """The shared connections' counters, once (add these to the buses' own counters)."""
        sub = self.subscriber
        stats: dict[str, Any] = dict(connection_counters(self.publisher, sub))
        stats.update(
            buses=len(self._engines),
            patterns=len(self._routes),
            connections=self.connection_count(),
            messages=sub.messages if sub else 0,
            unrouted=sub.unrouted if sub else 0,
            publish_dropped_by_priority=dict(self.publisher.dropped_by_priority),
            breaker=self.breaker.stats(monotonic()),
            last_error=str(self.last_error) if self.last_error is not None else None,
        )
        return stats

    async def close(self) -> None:
        """Flush and close both connections. The buses using them should be closed first;
        any still open are closed here. Raises PublishFailedError (after closing
        everything) if priority 8-9 publishes are left unacknowledged."""
        if self._closed:
            return
        for engine in list(self._engines):
            try:
                await engine.close()
            except PublishFailedError as exc:
                log.warning("closing a bus on shared connections: %s", exc)
        self._closed = True
        async with self._subscribe_lock:
            subscriber, self.subscriber = self.subscriber, None
        try:
            await self.publisher.flush()
        except Exception as exc:
            log.warning("could not flush pending publishes at close: %s", exc)
        abandoned = self.publisher.critical_pending
        await self.publisher.close()
        try:
            await self.control.flush()  # the last stored cursors
        except Exception as exc:
            log.info("could not store the last catch-up cursors at close: %s", exc)
        await self.control.close()
        if subscriber is not None:
            await subscriber.close()
        if abandoned:
            raise PublishFailedError(
                f"closed with {abandoned} priority 8-9 publish(es) that Redis at "
                f"{self.address.describe()} never acknowledged ({self.publisher.last_failure}); "
                "they are lost. flush() before close() waits for them while Redis is away"
            )

    async def __aenter__(self) -> SharedConnections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
