"""The Event Bus (ADR-002, intra-swarm): ``event:{swarm}:{type}`` over Redis pub/sub."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from pytest_cfn._async.asked_calls import AskedCalls
from pytest_cfn._async.connection_share import SharedConnections
from pytest_cfn._async.engine import BusEngine
from pytest_cfn._async.frontend import EngineFrontend
from pytest_cfn._async.shard_senders import ShardSenders
from pytest_cfn._backends.address import (
    ADDRESS_SETTINGS,
    ServerAddress,
    parse_redis_url,
    with_tls_options,
)
from pytest_cfn._backends.async_backend import finish_handler, monotonic, time_ns
from pytest_cfn._core.connection_names import connection_name
from pytest_cfn._core.critical_log import (
    CRITICAL_PRIORITY,
    CatchUp,
    CriticalOptions,
    CriticalStream,
)
from pytest_cfn._core.envelope import Envelope
from pytest_cfn._core.handlers import Handler, HandlerRegistry
from pytest_cfn._core.ids import (
    validate_agent_id,
    validate_event_type,
    validate_id_list,
    validate_swarm_id,
)
from pytest_cfn._core.options import BusOptions, bus_options
from pytest_cfn._core.outbound import OutboundPlanner
from pytest_cfn._core.route_cache import RouteCache
from pytest_cfn._core.shard_layout import ShardChannelNames, ShardCriticalStream, as_spublish
from pytest_cfn._core.throttle import PriorityThrottle
from pytest_cfn._errors import CfnError, InvalidIdError, InvalidOptionError, PublishFailedError

log = logging.getLogger("pytest_cfn.bus")


class EventBus(EngineFrontend):
    """Publish and subscribe to one swarm's events.

    Two connections: a publisher (made on the first publish) and a subscriber
    (made on the first subscribe), which subscribes the swarm's pattern once and
    hands each event to every local handler whose pattern matches its type.
    Priority 8-9 events are also kept in the swarm's stream, and a subscriber
    replays the ones it missed (``critical=CriticalOptions(...)`` tunes or disables it).

    ``event_types=[...]``: the only event types this bus receives. It then subscribes
    each type's channel exactly (``SUBSCRIBE event:{swarm}:{type}``) instead of the
    swarm's pattern: Redis matches every PUBLISH on the server against every pattern
    subscribed there (40-55 ns per pattern per PUBLISH measured on Redis 7.0, so 100
    agents' buses and inboxes double what each PUBLISH costs the server), but finds an
    exact channel's subscribers in one lookup. Handlers are still matched by their
    patterns, among these types; an event of another type (a critical event of the
    swarm's stream replayed by a catch-up) is not handed to them and is counted in
    ``stats()["other_types"]``. Publishing is not limited. On Redis Cluster the bus
    keeps its swarm's one shard channel and sets the other types aside the same way.
    A publisher numbers its events over every type, so an event of a type left out
    leaves a gap and is counted as ``lost``: list every type the swarm publishes.
    """

    def __init__(
        self,
        address: ServerAddress | str,
        swarm: str,
        agent: str,
        *,
        on_reconnect: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        options: BusOptions | None = None,
        critical: CriticalOptions | None = None,
        share: SharedConnections | None = None,
        event_types: Iterable[str] | None = None,
        **settings: Any,
    ) -> None:
        address = with_tls_options(  # takes the ssl_* settings out
            parse_redis_url(address) if isinstance(address, str) else address, settings
        )
        if options is None:
            options = bus_options(settings, ADDRESS_SETTINGS)
        elif settings:
            raise TypeError("pass either options= or keyword settings, not both")
        self.swarm = validate_swarm_id(swarm)
        self.agent = validate_agent_id(agent)
        self.event_types = validate_id_list(
            event_types, "event_types", "event type", validate_event_type
        )
        """The only types this bus receives (exact channels), or None: every type."""
        self.other_types = 0
        """Events of types outside ``event_types`` not handed to the handlers."""
        self.options = options
        self._handlers = HandlerRegistry()
        self._engine = BusEngine(
            address,
            kind="event",
            subsystem="events",
            swarm=self.swarm,
            agent=self.agent,
            options=options,
            deliver=self._deliver,
            on_reconnect=on_reconnect,
            on_error=on_error,
            share=share,
        )
        self.channels = self._engine.channels
        self.critical = critical if critical is not None else CriticalOptions()
        self._critical_stream: CriticalStream | None = None
        self._caught_up_at_start = False
        if self.critical.enabled:
            self._critical_stream = CriticalStream(self.channels, self.critical)
            self._engine.enable_catch_up(
                CatchUp(self.channels, self.swarm, self.agent, self.critical)
            )
        self.route_cache = RouteCache(options.route_cache_size, options.route_ttl)
        self._sharded: bool | None = None
        self._planner = self._new_planner()
        self.route_errors = 0
        self._asks: ShardSenders | None = None
        """On a cluster: where an ASK reply to the critical script is followed."""
        self._redirects_seen = 0
        """None until the server was asked; True on Redis Cluster (shard channels)."""

    def _new_planner(self) -> OutboundPlanner:
        options = self.options
        publisher = self._engine.publisher
        return OutboundPlanner(
            self._engine.codec,
            self.channels,
            self.swarm,
            self.agent,
            f"{self.agent}.{os.urandom(4).hex()}",
            route_cache=self.route_cache,
            throttle=PriorityThrottle(options.throttle_rate, options.throttle_burst),
            breaker=self._engine.breaker,
            max_message_bytes=options.max_message_bytes,
            signer=self._engine.signer,
            # One sequence number per publish, whatever the threads, taken under the
            # publisher's lock, which a plain publish then also holds to join the pending
            # write (not on Redis Cluster: those are sent as SPUBLISH).
            lock=publisher.plan_lock,
            offer=None if self._sharded else publisher.offer_held,
        )

    @classmethod
    def from_url(cls, url: str, swarm: str, agent: str, **settings: Any) -> EventBus:
        """``EventBus.from_url("redis://localhost:6379/0", swarm="s1", agent="a1")``."""
        return cls(parse_redis_url(url), swarm, agent, **settings)

    @property
    def publisher_id(self) -> str:
        return self._planner.publisher

    async def connect(self) -> None:
        """Open the publisher connection now rather than on the first publish."""
        self._engine.check_open()
        await self._ensure_layout()
        await self._engine.publisher.connect()

    async def _ensure_layout(self) -> None:
        """Before the first publish or subscribe: on Redis Cluster, use shard channels."""
        if self._sharded is not None:
            return
        found = await self._engine.detect_cluster(self.swarm)
        if found is None:  # not reachable now; one server's layout for this call
            return
        self._sharded = found
        if found:
            self._adopt_shard_layout()

    def _adopt_shard_layout(self) -> None:
        """Shard channel, hash-tagged stream and SPUBLISH (see ``_core.shard_layout``)."""
        if self.options.route_overrides:
            raise InvalidOptionError(
                "route_overrides=True is not supported on Redis Cluster yet (a route to "
                "another swarm is another shard); leave it off there"
            )
        channels = self._engine.channels
        assert isinstance(channels, ShardChannelNames)
        self.channels = channels
        if self._critical_stream is not None:
            self._critical_stream = ShardCriticalStream(channels, self.critical)
            self._engine.enable_catch_up(
                CatchUp(channels, self.swarm, self.agent, self.critical)
            )
        self.route_cache.clear()
        self._planner = self._new_planner()
        self._asks = ShardSenders(self._engine, connection_name(
            "events-pub", self.swarm, self.agent, self.options.namespace))
        self._asks.take_asks_from(self._engine.publisher)
        # the catch-up's XRANGE / cursor answered ASK mid-migration: read on the importing one
        self._engine.publisher.asked_calls = AskedCalls(self.options.socket_timeout)

    async def subscribe(self, pattern: str, handler: Handler) -> int:
        """Call ``handler(event)`` for every event of this swarm whose type matches
        ``pattern`` (``agent.*``, ``task.assign``, ``*``). Returns a token for
        :meth:`unsubscribe`. Returns once Redis has confirmed the subscription."""
        self._engine.check_open()
        await self._ensure_layout()
        token = self._handlers.add(pattern, handler)
        try:
            types = self.event_types
            if types is None or self._sharded:
                await self._engine.subscribe_pattern(self.channels.event_pattern(self.swarm))
            else:
                for event_type in sorted(types):
                    await self._engine.subscribe_pattern(
                        self.channels.event(self.swarm, event_type), exact=True
                    )
        except BaseException:
            self._handlers.remove(token)
            raise
        if not self._caught_up_at_start:
            self._caught_up_at_start = True
            self._engine.request_catch_up("start")
        return token

    def unsubscribe(self, token: int) -> bool:
        """Remove one handler; the swarm's subscription stays for the others."""
        return self._handlers.remove(token)

    async def publish(
        self,
        event_type: str,
        data: Any = None,
        priority: int = 5,
        *,
        correlation_id: str | None = None,
    ) -> str:
        """Publish one event on ``event:{swarm}:{type}``; returns its message id.

        Written to the socket at once (or when the enclosing :meth:`batch` ends);
        Redis's acknowledgement is read later (see :meth:`flush`).
        """
        engine = self._engine
        if engine.closed:
            engine.check_open()
        if self._sharded is None and self._planner.published == 0:
            await self._ensure_layout()
        planner = self._planner
        now = monotonic()
        if correlation_id is None and (
            self._critical_stream is None
            or (type(priority) is int and priority < CRITICAL_PRIORITY)
        ):
            # Only the PUBLISH command is needed (nothing stored): no Envelope is built.
            wire = planner.plan_command(event_type, data, priority, now, time_ns())
            if wire is None:  # not in the route cache (checked and admitted)
                channel = await self._resolve_route(event_type, now)
                wire = planner.plan_command(event_type, data, priority, now, time_ns(), channel)
                assert wire is not None  # given a channel, it always plans
            command, message_id = wire
            if command is not None:  # not taken into the pending write by the planner
                publisher = engine.publisher
                if self._sharded:
                    await publisher.send_publish(as_spublish(command), priority)
                elif not publisher.offer(command, priority):
                    await publisher.send_publish(command, priority)
            return message_id
        planned = planner.plan_cached(event_type, data, priority, now, time_ns(), correlation_id)
        if planned is None:  # not in the route cache (checked and admitted)
            channel = await self._resolve_route(event_type, now)
            planned = planner.plan(channel, event_type, data, priority, time_ns(), correlation_id)
        publisher = engine.publisher
        if priority >= CRITICAL_PRIORITY and self._critical_stream is not None:
            # Also kept in the swarm's stream, so a subscriber that missed it can replay it.
            await publisher.send_publish(
                self._critical_stream.append_and_publish(planned.channel, planned.payload),
                priority,
            )
            if self._asks is not None and self._asks.waiting:
                await self._asks.follow_redirects()
        elif self._sharded:
            await publisher.send_publish(as_spublish(planned.command), priority)
        elif not publisher.offer(planned.command, priority):
            await publisher.send_publish(planned.command, priority)
        return planned.envelope.id

    async def _resolve_route(self, event_type: str, now: float) -> str:
        """A cache miss: the default channel, or the swarm named by ``route:{type}``
        in Redis when ``route_overrides`` is on (the event then goes to that swarm)."""
        channel = self._planner.default_route(event_type)
        if self.options.route_overrides:
            override = await self._engine.publisher.call(
                "GET", self.channels.key("route", event_type)
            )
            if isinstance(override, bytes):
                target = override.decode("utf-8", "replace")
                try:
                    channel = self.channels.event(validate_swarm_id(target), event_type)
                except InvalidIdError:
                    self.route_errors += 1
                    log.warning(
                        "ignoring route override %s = %r: not a valid swarm id",
                        self.channels.key("route", event_type),
                        target,
                    )
        self._planner.learn_route(event_type, channel, now)
        return channel

    def invalidate_route(self, event_type: str | None = None) -> None:
        """Forget one cached route (or all), e.g. after changing ``route:{type}``."""
        if event_type is None:
            self.route_cache.clear()
        else:
            self.route_cache.invalidate(event_type)

    async def _deliver(self, events: list[Envelope]) -> None:
        types = self.event_types
        if types is not None:
            wanted = [event for event in events if event.type in types]
            self.other_types += len(events) - len(wanted)
            events = wanted
        match = self._handlers.match
        event_type: str | None = None
        handlers: tuple[Handler, ...] = ()
        for event in events:
            if event.type != event_type:  # a chunk is mostly runs of one type
                event_type = event.type
                handlers = match(event_type)
            for handler in handlers:
                try:
                    result = handler(event)
                    if result is not None:  # a coroutine handler's (asyncio)
                        await finish_handler(result)
                except Exception:
                    self._engine.handler_errors += 1
                    log.exception("handler failed for event %s (%s)", event.id, event.type)

    async def flush(self) -> int:
        """Write what is batched and wait until Redis has acknowledged every publish (on a
        cluster mid-migration, also the critical ones sent on to the importing master)."""
        acknowledged = await self._engine.publisher.flush()
        asks = self._asks
        if asks is not None:
            acknowledged += await asks.flush()
            if self._engine.publisher.redirects != self._redirects_seen:  # a migration ended
                self._redirects_seen = self._engine.publisher.redirects
                await asks.close_idle()
        return acknowledged

    async def close(self) -> None:
        """Flush, then close both connections and stop the workers."""
        if self._asks is not None and not self._engine.closed:
            try:
                await self.flush()
            except CfnError as exc:
                log.warning("could not flush before closing: %s", exc)
            abandoned = await self._asks.close()
            await super().close()
            if abandoned:
                raise PublishFailedError(
                    f"closed with {abandoned} priority 8-9 publish(es) sent on to an importing "
                    "master mid-migration and never acknowledged; they are lost"
                )
            return
        await super().close()

    def stats(self) -> dict[str, Any]:
        stats = self._engine.stats()
        if self._asks is not None:
            sent_on = self._asks.stats()
            stats["asks"] = self._asks.asks
            asked = self._engine.publisher.asked_calls
            stats["asked_calls"] = asked.followed if asked is not None else 0
            stats["critical_pending"] += sent_on["critical_pending"]
            stats["in_flight"] += sent_on["in_flight"]
            stats["connections"] += sent_on["connected"]
        cache = self.route_cache.stats()
        stats.update(
            published=self._planner.published,
            cache_hits=cache["hits"],
            cache_misses=cache["misses"],
            cache_hit_rate=cache["hit_rate"],
            cache_evictions=cache["evictions"],
            cache_expiries=cache["expiries"],
            throttled=self._planner.throttle.stats()["throttled"],
            handlers=len(self._handlers),
            route_errors=self.route_errors,
            other_types=self.other_types,
        )
        replay = self._engine.replay_stats()
        if replay is not None:
            stats.update(replay)
        return stats

