"""What the Event Bus and the Messenger share: two connections, a bounded queue
between the socket reader and the handlers, a dispatcher, and the counters.

The reader worker decodes and checks each message (``InboundProcessor``) and
puts it on a ``DispatchQueue``; a separate dispatcher worker takes messages in
priority order and calls the handlers. A slow handler therefore never stalls the
socket (which would get the connection cut by the server's output-buffer limit):
the queue fills, and its overflow policy drops the lowest priorities first,
counting every drop.

Neither worker dies silently: anything that escapes the reader or the
dispatcher is counted (``worker_crashes``), reported to ``on_error`` and the
worker is restarted (the reader on a fresh connection).

Handing a chunk from the reader to the dispatcher costs a wake-up, and in the
sync front end a GIL hand-over between two threads (up to the 5 ms switch
interval when the reader is busy), and CPU on both threads for every chunk.
So handlers that have proved fast run in the reader itself when the dispatcher
is idle (``inline`` dispatch): after ``INLINE_AFTER`` deliveries of at most
``FAST_DELIVERY`` each with no slow batch between them (a batch slower than
``INLINE_BUDGET`` and ``FAST_DELIVERY`` per event starts the count again; one
that is merely not fast, a scheduler hiccup, does not count). One inline chunk
that slow, or ``SLOW_STRIKES`` not-fast chunks in a row, sends dispatching back
to the dispatcher worker until the handlers have proved fast again. Order is the
queue's either way (highest priority first), and a catch-up that is due or
running keeps everything on the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any

from pytest_cfn._async.connection_share import SharedConnections, connection_counters
from pytest_cfn._async.critical_replay import CriticalReplayer
from pytest_cfn._async.publisher import Publisher
from pytest_cfn._async.shard_route import ShardRoute, is_cluster
from pytest_cfn._async.subscriber import Subscriber
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import (
    Lock,
    QueueLock,
    Wakeup,
    Worker,
    monotonic,
    sleep,
    spawn,
    time_ns,
    yield_now,
)
from pytest_cfn._core.backoff import ExponentialWithJitterBackoff, RetryPolicy
from pytest_cfn._core.breaker import CircuitBreaker
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.connection_names import connection_name
from pytest_cfn._core.critical_log import CRITICAL_PRIORITY, CatchUp
from pytest_cfn._core.dispatch_queue import DispatchQueue
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.inbound import InboundProcessor, Kind, MalformedMessage
from pytest_cfn._core.options import BusOptions
from pytest_cfn._core.shard_layout import ShardChannelNames
from pytest_cfn._core.signing import EnvelopeSigner, signing_keys
from pytest_cfn._core.stages import StageProbe
from pytest_cfn._errors import (
    BusClosedError,
    ConnectionLostError,
    InvalidOptionError,
    PermissionDeniedError,
    PublishFailedError,
)

log = logging.getLogger("pytest_cfn.bus")

INLINE_AFTER = 1000
FAST_DELIVERY = 0.00005
INLINE_BUDGET = 0.002
SLOW_STRIKES = 16
DISPATCH_HOLD_NS = 500_000
"""A dispatcher working off a backlog yields (``yield_now``) once it has run this long
without waiting, so it never holds the rest of the process up for longer (the reader does
the same, see ``subscriber._HOLD_NS``)."""
IDLE_WAKE_S = 1.0
"""The longest an idle dispatcher sleeps unwoken. Everything it must act on wakes it (an
event queued, a catch-up asked for or made due by a live critical event, close) or is
timed (a follow-up, a retry, the periodic catch-up), so this only bounds a lost wake-up; it
was 0.2 s, five wake-ups a second for each idle bus (a 100-agent process has 200)."""
MIN_WAKE_S = 0.001

_PRIORITY = attrgetter("priority")

Deliver = Callable[[list[Envelope]], Awaitable[None]]
"""Hands envelopes, in order, to the front end's handlers (one call per batch: asyncio
then makes one coroutine per batch, not one per event); it counts and logs what a
handler raises itself."""
Intercept = Callable[[Envelope], bool]
ErrorCallback = Callable[[BaseException], None]


class BusEngine:
    """Connections, queue, dispatcher and counters of one bus instance."""

    def __init__(
        self,
        address: ServerAddress,
        *,
        kind: Kind,
        subsystem: str,
        swarm: str,
        agent: str,
        options: BusOptions,
        deliver: Deliver,
        on_reconnect: Callable[[int], None] | None = None,
        intercept: Intercept | None = None,
        on_error: ErrorCallback | None = None,
        share: SharedConnections | None = None,
    ) -> None:
        self.address = address
        self.share = share
        """Connections shared with other buses of the process (None: this bus's own)."""
        self.options = options
        self.codec = Codec(options.codec)
        self.channels = ChannelNames(options.namespace)
        ring = signing_keys(options.signing_key)
        self.signer: EnvelopeSigner | None = None
        if ring is not None:
            ring.check_signer(swarm)
            self.signer = EnvelopeSigner(ring)
        self._backoff = ExponentialWithJitterBackoff(
            base=options.backoff_base, cap=options.backoff_cap
        )
        if share is not None:
            share.attach(self)
            self.breaker = share.breaker
            self.publisher = share.publisher
        else:
            self.breaker = CircuitBreaker(
                failure_threshold=options.breaker_failures,
                reset_timeout=options.breaker_reset,
                success_threshold=options.breaker_successes,
            )
            self.publisher = Publisher(
                address,
                connection_name(f"{subsystem}-pub", swarm, agent, options.namespace),
                retry=RetryPolicy(retries=options.retries, backoff=self._backoff),
                breaker=self.breaker,
                connect_timeout=options.connect_timeout,
                socket_timeout=options.socket_timeout,
                ack_window=options.ack_window,
                critical_buffer=options.critical_buffer,
                on_error=self.report_error,
            )
        self.inbound = InboundProcessor(
            self.codec,
            self.channels,
            kind,
            swarm,
            keep_malformed=options.keep_malformed,
            signer=self.signer,
        )
        self.queue: DispatchQueue[Envelope] = DispatchQueue(maxsize=options.queue_size)
        self._sub_name = connection_name(f"{subsystem}-sub", swarm, agent, options.namespace)
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._on_error = on_error
        self._intercept = intercept
        self._subscribe_lock = Lock()
        self.permission_errors = 0
        self.last_error: BaseException | None = None
        self.worker_crashes: dict[str, int] = {"reader": 0, "dispatcher": 0}
        self._replayer: CriticalReplayer | None = None
        self._subscriber: Subscriber | None = None
        self._dispatcher: Worker | None = None
        self._queue_lock = QueueLock()
        self._wake = Wakeup()
        self._sleeping = False
        self.closed = False
        """True once close() began (a plain attribute: every publish reads it)."""
        self._dispatching = False
        # The Messenger's reader takes request replies (intercept): its handlers stay off
        # the reader, so a handler may wait for a reply.
        self._inline_allowed = options.inline_dispatch and intercept is None
        self._inline_ok = False
        self._inline_running = False
        self._fast_streak = 0
        self._slow_strikes = 0
        self.stage_probe: StageProbe | None = None
        self.inline_delivered = 0
        self.delivered = 0
        self.handler_errors = 0
        self.cluster: bool | None = None
        """None until the server was asked; True on Redis Cluster (sharded pub/sub)."""
        self.route: ShardRoute | None = None
        self._next_probe = 0.0
        self._shared_patterns: list[str] = []

    async def detect_cluster(self, swarm: str) -> bool | None:
        """Ask the server once whether it is a Redis Cluster node; on a cluster, both
        connections follow the owner of ``swarm``'s slot and the channels become shard
        channels. None (asked again a second later) when the server cannot be reached."""
        if self.cluster is not None or monotonic() < self._next_probe:
            return self.cluster
        if self.share is not None and self.share.cluster is False:
            self.cluster = False  # asked once for every bus of the share
            return False
        try:
            found = await is_cluster(self.address, self.options.connect_timeout)
        except (OSError, TimeoutError, ConnectionLostError):
            self._next_probe = monotonic() + 1.0
            return None
        if self.share is not None:
            self.share.cluster = found
        if found and self.share is not None:
            raise InvalidOptionError(
                f"{self.address.describe()} is a Redis Cluster node: shared connections "
                "serve one server, and on a cluster each swarm's channel lives on the owner "
                "of its slot. Create this bus without share= (it then follows its slot)"
            )
        if found:
            self.route = ShardRoute(self.address, swarm, self.options.connect_timeout)
            self.publisher.route = self.route
            self.channels = ShardChannelNames(self.options.namespace)
            self.inbound.use_channels(self.channels)
        self.cluster = found
        return found

    def enable_catch_up(self, catch_up: CatchUp) -> None:
        """Replay missed critical events from the swarm's stream (see ``critical_log``)."""
        self._replayer = CriticalReplayer(
            catch_up,
            self.publisher if self.share is None else self.share.control,
            self.codec,
            self.inbound.tracker,
            self._queue_lock,
            on_error=self.report_error,
            signer=self.signer,
            channels=self.channels,
        )
        self.inbound.before_tracking = self._replayer.not_yet_handed_on
        self.inbound.after_tracking = self._replayer.observe_live

    def request_catch_up(self, reason: str) -> None:
        if self._replayer is not None:
            self._replayer.request(reason)
            self._wake.wake()

    def check_open(self) -> None:
        if self.closed:
            raise BusClosedError("this bus is closed; create a new one")

    def report_error(self, error: BaseException) -> None:
        """An error no caller is waiting for (a refused catch-up, a refused publish read
        lazily): counted, kept as ``last_error`` and handed to ``on_error``."""
        self.last_error = error
        if isinstance(error, PermissionDeniedError):
            self.permission_errors += 1
        if self._on_error is None:
            log.warning("%s: %s", self._sub_name, error)
            return
        try:
            self._on_error(error)
        except Exception:
            log.exception("on_error callback failed")

    async def subscribe_pattern(self, pattern: str, *, exact: bool = False) -> None:
        """PSUBSCRIBE ``pattern`` (``exact``: SUBSCRIBE it as a channel) on the subscriber
        connection (made on first use) and return once Redis has confirmed it. Callers
        from several threads or tasks are served one at a time, so a bus never opens a
        second subscriber connection."""
        self.check_open()
        async with self._subscribe_lock:
            self.check_open()
            if self.share is not None:
                self._subscriber = await self.share.subscribe(
                    pattern, self._on_raw_messages, self.options.connect_timeout, exact=exact
                )
                if pattern not in self._shared_patterns:
                    self._shared_patterns.append(pattern)
            elif self._subscriber is None:
                self._subscriber = Subscriber(
                    self.address,
                    self._sub_name,
                    self._on_raw_messages,
                    on_reconnect=self._reconnected,
                    on_crash=self._worker_failed,
                    on_error=self.report_error,
                    ping_interval=self.options.ping_interval,
                    ping_timeout=self.options.ping_timeout,
                    connect_timeout=self.options.connect_timeout,
                    reconnect_backoff=ExponentialWithJitterBackoff(
                        base=self.options.backoff_base, cap=min(1.0, self.options.backoff_cap)
                    ),
                    route=self.route,
                )
            if self.share is None and exact:
                await self._subscriber.subscribe(pattern, timeout=self.options.connect_timeout)
            elif self.share is None:
                await self._subscriber.psubscribe(pattern, timeout=self.options.connect_timeout)
            if self._dispatcher is None:
                self._dispatcher = spawn(
                    self._supervised_dispatch, name=f"cfn-dispatch:{self._sub_name}"
                )

    def shared_reconnected(self, count: int) -> None:
        """The shared subscriber connection came back (it re-subscribed every pattern)."""
        if self.closed or not self._shared_patterns:
            return
        self._reconnected(count)

    def shared_worker_failed(self, worker: str, exc: BaseException) -> None:
        if not self.closed and self._shared_patterns:
            self._worker_failed(worker, exc)

    def _reconnected(self, count: int) -> None:
        self.request_catch_up("reconnect")
        if self._on_reconnect is not None:
            self._on_reconnect(count)

    def _worker_failed(self, worker: str, exc: BaseException) -> None:
        """A worker died: count it, log it, tell ``on_error``; the caller restarts it."""
        self.worker_crashes[worker] = self.worker_crashes.get(worker, 0) + 1
        log.error(
            "%s worker of %s died and is restarted: %s: %s",
            worker, self._sub_name, type(exc).__name__, exc, exc_info=exc,
        )
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("on_error callback failed")

    async def _on_raw_messages(self, items: list[tuple[bytes, bytes]]) -> None:
        """Called by the reader with the messages of one chunk: check, queue, then
        deliver them here (inline) or wake the dispatcher."""
        replayer = self._replayer
        queue = self.queue
        with self._queue_lock:
            fresh = self.inbound.process_many(items, self._intercept)
            if replayer is not None:
                replayer.observe_gaps()
            probe = self.stage_probe
            if probe is not None and self._subscriber is not None:
                probe.received(self._subscriber.read_ns, time_ns(), fresh)
            inline = (
                self._inline_ok
                and self._sleeping
                and not self.closed
                and (replayer is None or not replayer.due(monotonic()))
            )
            if inline and not queue:
                # What the queue would hand out: highest priority first, FIFO within one
                # (a stable sort), without the pushes and pops.
                batch = sorted(fresh, key=_PRIORITY, reverse=True)
            else:
                push = queue.push
                for env in fresh:
                    push(env.priority, env)
                batch = queue.pop_batch(len(queue)) if inline else []
            if inline:
                self._inline_running = True
                wake = False
            else:
                wake = self._sleeping
                self._sleeping = False
        if wake:
            self._wake.wake()
        if not inline:
            return
        started = monotonic()
        self.inline_delivered += len(batch)
        try:
            if batch:
                await self._deliver_batch(batch)
        finally:
            elapsed = monotonic() - started
            with self._queue_lock:
                self._inline_running = False
                fast = elapsed <= FAST_DELIVERY * len(batch)
                self._slow_strikes = 0 if fast else self._slow_strikes + 1
                if (not fast and elapsed > INLINE_BUDGET) or self._slow_strikes >= SLOW_STRIKES:
                    self._inline_ok = False
                    self._fast_streak = 0
                    self._slow_strikes = 0

    def _learn_speed(self, events: int, elapsed: float) -> None:
        """Dispatcher side: count consecutive fast deliveries; enough of them allow inline,
        a slow batch (as a slow inline chunk) ends it."""
        if not self._inline_allowed:
            return
        if elapsed <= FAST_DELIVERY * events:
            self._fast_streak += events
            if self._fast_streak >= INLINE_AFTER:
                self._inline_ok = True
        elif elapsed > INLINE_BUDGET:
            self._fast_streak = 0
            self._inline_ok = False

    async def _supervised_dispatch(self) -> None:
        crashes = 0
        while not self.closed:
            try:
                await self._dispatch_loop()
                return
            except Exception as exc:
                crashes += 1
                with self._queue_lock:
                    self._dispatching = False
                self._worker_failed("dispatcher", exc)
                await sleep(min(0.01 * 2 ** min(crashes, 7), 1.0))

    async def _dispatch_loop(self) -> None:
        queue = self.queue
        batch_size = self.options.dispatch_batch
        replayer = self._replayer
        held_since = time_ns()
        while not self.closed:
            if replayer is not None and replayer.due(monotonic()):
                self._dispatching = True
                replayed = await replayer.run(self._deliver_one)
                self.delivered += replayed
            with self._queue_lock:
                batch = queue.pop_batch(batch_size)
                if not batch and (replayer is None or not replayer.due(monotonic())):
                    self._sleeping = True
                    self._dispatching = False
                else:
                    self._dispatching = True
            if not batch:
                # Asleep until woken (an event queued, a catch-up asked for, close) or
                # until a catch-up falls due with no event to report it: a follow-up, a
                # retry, the periodic run.
                wait = IDLE_WAKE_S
                if replayer is not None:
                    until = replayer.seconds_until_due(monotonic())
                    if until is not None:
                        wait = min(wait, max(until, MIN_WAKE_S))
                await self._wake.wait(wait)
                held_since = time_ns()
                continue
            started = monotonic()
            await self._deliver_batch(batch)
            self._learn_speed(len(batch), monotonic() - started)
            if time_ns() - held_since > DISPATCH_HOLD_NS:  # a backlog: let others run
                await yield_now()
                held_since = time_ns()

    async def _deliver_batch(self, batch: list[Envelope]) -> None:
        """Hand a batch (in dispatch order) to the handlers and count the deliveries; a
        critical event a catch-up already handed on is left out."""
        replayer = self._replayer
        if replayer is not None:
            for env in batch:
                if env.priority >= CRITICAL_PRIORITY:
                    claim = replayer.claim
                    batch = [
                        env for env in batch
                        if env.priority < CRITICAL_PRIORITY or claim(env.id)
                    ]
                    break
        try:
            await self._deliver(batch)
        except Exception:  # the front end counts its handlers' errors; this is its own
            self.handler_errors += 1
            log.exception("delivering %d event(s) failed", len(batch))
        self.delivered += len(batch)

    async def _deliver_one(self, env: Envelope) -> None:
        try:
            await self._deliver([env])
        except Exception:
            self.handler_errors += 1
            log.exception("handler failed for replayed %s", env.id)

    def replay_stats(self) -> dict[str, Any] | None:
        return self._replayer.stats() if self._replayer is not None else None

    def idle(self) -> bool:
        """Nothing queued, no handler running, no catch-up due."""
        with self._queue_lock:
            busy = self._dispatching or self._inline_running or len(self.queue) > 0
        return not busy and (self._replayer is None or not self._replayer.pending)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until the dispatch queue is empty and every handler has returned."""
        deadline = monotonic() + timeout
        while not self.idle():
            if monotonic() >= deadline:
                return False
            await sleep(0.002)
        return True

    @property
    def malformed(self) -> list[MalformedMessage]:
        return list(self.inbound.malformed)

    def connection_count(self) -> int:
        """Connections this bus holds itself (shared ones are the share's)."""
        if self.share is not None:
            return 0
        subscribed = self._subscriber is not None and self._subscriber.connected
        return int(self.publisher.connected) + int(subscribed)

    def stats(self) -> dict[str, Any]:
        inbound = self.inbound.stats()
        queue = self.queue.stats()
        breaker = self.breaker.stats(monotonic())
        publisher = self.publisher
        sub = self._subscriber
        return {
            "delivered": self.delivered,
            "received": inbound["received"],
            "dropped": int(queue["dropped"]),
            "dropped_by_priority": queue["dropped_by_priority"],
            "queued": len(self.queue),
            "lost": inbound["lost"],
            "duplicates": inbound["duplicates"],
            "reordered": inbound["reordered"],
            "malformed": inbound["malformed"],
            "forged": inbound["forged"] + (self._replayer.catch_up.forged if self._replayer else 0),
            "anomalies": inbound["anomalies"],
            "sequence_resyncs": inbound["resyncs"],
            "worker_crashes": dict(self.worker_crashes),
            "handler_errors": self.handler_errors,
            "replayed": self._replayer.catch_up.replayed if self._replayer else 0,
            **connection_counters(publisher, sub),
            "publish_dropped_by_priority": dict(publisher.dropped_by_priority),
            "permission_errors": self.permission_errors,
            "last_error": str(self.last_error) if self.last_error is not None else None,
            "inline_dispatch": self._inline_ok,
            "inline_delivered": self.inline_delivered,
            "breaker_state": str(breaker["state"]),
            "breaker_next_probe_in": breaker["next_probe_in"],
            "breaker": breaker,
            "connections": self.connection_count(),
            "cluster": bool(self.cluster),
            "shared_connections": self.share is not None,
        }

    async def close(self) -> None:
        """Stop the workers, flush, close both connections. Raises PublishFailedError
        (after closing everything) if priority 8-9 publishes are left unacknowledged."""
        if self.closed:
            return
        self.closed = True
        self._wake.wake()
        async with self._subscribe_lock:  # a subscribe under way finishes first
            dispatcher, self._dispatcher = self._dispatcher, None
            subscriber, self._subscriber = self._subscriber, None
        if dispatcher is not None:
            await dispatcher.join(2.0)
        if self._replayer is not None:
            await self._replayer.settle()
        if self.share is not None:
            await self.share.release(self, self._shared_patterns, self._on_raw_messages)
            self._shared_patterns = []
            try:
                await self.publisher.flush()
            except Exception as exc:
                log.warning("could not flush pending publishes at close: %s", exc)
            return  # the connections (and what they still hold) are the share's to close
        try:
            await self.publisher.flush()
        except Exception as exc:
            log.warning("could not flush pending publishes at close: %s", exc)
        abandoned = self.publisher.critical_pending
        await self.publisher.close()
        if subscriber is not None:
            await subscriber.close()
        if abandoned:
            raise PublishFailedError(
                f"closed with {abandoned} priority 8-9 publish(es) that Redis at "
                f"{self.address.describe()} never acknowledged ({self.publisher.last_failure}); "
                "they are lost. flush() before close() waits for them while Redis is away"
            )
