"""The Messenger's publishers on Redis Cluster: one connection per master it sends to.

Theory of operation. A message to swarm ``B`` is SPUBLISHed on B's inbox shard
channel ``[ns:]message:{B}`` (see ``_core.shard_layout``), which lives on the
master that owns ``key_slot(B)``. A Messenger sending to swarms on three masters
holds three publisher connections, one per master, shared by every recipient
there. Each follows the owner of the slot it was made for (its *home* slot): a
failover moves every slot of a master to its replica, so that is where its
recipients went, and the connection reconnects there on its own.

A ``MOVED`` reply to a publish (the recipient's slot went to another master)
does not make that connection reconnect, since its other recipients did not
move. The publish is taken off it (``Publisher.on_redirect``), the recipient's
route learns the new owner from the reply, and the next call of the Messenger
(a send, ``flush`` or ``close``) sends it again on the new owner's connection
(``redirected``). A connection whose home slot has moved is flushed (its other
publishes are taken along the same way) and closed (``retired``), so a
Messenger keeps about one connection per master it uses. An ``ASK`` reply (the
slot is being migrated and a key it names, the recipient's history list, is on
the importing master already) sends ``ASKING`` and the publish to the importing
master once (``asks``); the slot's owner is not changed by it. An Event Bus keeps
its one publisher (a MOVED makes it reconnect to its swarm's new owner) and uses this
only to follow an ASK to its critical script (``take_asks_from``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pytest_cfn._async.engine import BusEngine
from pytest_cfn._async.publisher import INTERNAL, Publisher
from pytest_cfn._async.shard_route import ShardRoute
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import Lock
from pytest_cfn._core.backoff import ExponentialWithJitterBackoff, RetryPolicy
from pytest_cfn._core.resp import encode_command
from pytest_cfn._core.shard_layout import redirect, redirect_target, swarm_slot
from pytest_cfn._errors import CfnError

log = logging.getLogger("pytest_cfn.cluster")

_ASKING = encode_command("ASKING")
_MAX_ROUNDS = 16
_COUNTERS = (
    "retries", "failed", "give_ups", "reply_errors", "acknowledged", "critical_resent",
    "coalesced_writes", "redirects", "reconnects",
)
_SUMMED = (*_COUNTERS, "in_flight", "critical_pending", "pending")


class ShardSenders:
    """Publisher connections of one Messenger, one per master it sends to (and, for an
    Event Bus, the connection an ASK reply is followed on: ``take_asks_from``)."""

    def __init__(self, engine: BusEngine, name: str) -> None:
        self._engine = engine
        self._name = name
        if engine.route is None:
            raise ValueError("ShardSenders needs a bus that found a Redis Cluster")
        self._home: ShardRoute = engine.route
        """The route of the Messenger's own swarm: the cluster nodes it knows."""
        self._routes: dict[int, ShardRoute] = {}
        """Recipient slot -> the route to its owner."""
        self._by_slot: dict[int, Publisher] = {}
        self._publishers: list[Publisher] = []
        self._moved: deque[tuple[int, bytes, str, Publisher]] = deque()
        self._lock = Lock()
        self._batch_depth = 0
        self._batched: list[Publisher] = []
        self.redirected = 0
        self.asks = 0
        self.retired = 0
        self._retired_counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    @property
    def publishers(self) -> list[Publisher]:
        return list(self._publishers)

    @property
    def waiting(self) -> bool:
        """Redirected publishes are waiting for :meth:`follow_redirects`."""
        return bool(self._moved)

    def take_asks_from(self, publisher: Publisher) -> None:
        """An Event Bus's own publisher: ASK replies (its critical script mid-migration) are
        sent on to the importing master from here; MOVED still makes it reconnect."""

        def take(priority: int, command: bytes, reply: str) -> bool:
            if not reply.startswith("ASK "):
                return False
            self._moved.append((priority, command, reply, publisher))
            return True

        publisher.on_redirect = take

    async def close_idle(self) -> None:
        """Close the connections with nothing in flight (an ASK's, once the migration ended)."""
        async with self._lock:
            for publisher in [p for p in self._publishers if not p.in_flight]:
                self._publishers.remove(publisher)
                for key in _COUNTERS:
                    self._retired_counts[key] += int(getattr(publisher, key))
                self.retired += 1
                await publisher.close()
            self._by_slot.clear()

    async def publisher_for(self, to_swarm: str) -> Publisher:
        """The connection to the master of ``to_swarm``'s slot (made on first use)."""
        slot = swarm_slot(to_swarm)
        publisher = self._by_slot.get(slot)
        if publisher is None:
            async with self._lock:
                publisher = await self._publisher_for_slot(slot)
        if self._batch_depth and publisher not in self._batched:
            self._batched.append(publisher)
            await publisher.begin_batch()
        return publisher

    async def begin_batch(self) -> None:
        """What is sent until :meth:`end_batch` is written per connection in one go."""
        self._batch_depth += 1

    async def end_batch(self) -> None:
        self._batch_depth -= 1
        if self._batch_depth:
            return
        batched, self._batched = self._batched, []
        for publisher in batched:
            await publisher.end_batch()
        if self._moved:
            await self.follow_redirects()

    async def send(self, to_swarm: str, command: bytes, priority: int, confirm: bool) -> None:
        """SPUBLISH (or the history script) to ``to_swarm``; with ``confirm``, wait for
        Redis's reply, so a redirect is followed before this returns (requests, replies)."""
        publisher = await self.publisher_for(to_swarm)
        await publisher.send_publish(command, priority)
        if confirm:
            await publisher.flush()
        if self._moved:
            await self.follow_redirects()

    async def flush(self) -> int:
        """Flush every connection, following redirects until none is left."""
        acknowledged = 0
        for _ in range(_MAX_ROUNDS):
            for publisher in list(self._publishers):
                acknowledged += await publisher.flush()
            if not self._moved:
                break
            await self.follow_redirects()
        return acknowledged

    async def follow_redirects(self) -> None:
        """Send the publishes taken off a connection by a MOVED / ASK reply again, on the
        owner (or, for ASK, the importing master) of their slot."""
        async with self._lock:
            stale: list[Publisher] = []
            while self._moved:
                source = await self._resend(*self._moved.popleft())
                if source is not None and source not in stale:
                    stale.append(source)
            for publisher in stale:
                await self._retire_if_moved(publisher)
                while self._moved:  # what its last flush handed over
                    await self._resend(*self._moved.popleft())

    async def _resend(
        self, priority: int, command: bytes, reply: str, source: Publisher
    ) -> Publisher | None:
        """Send one redirected publish; returns the connection a MOVED came from."""
        parsed = redirect(reply)
        if parsed is None:  # on_redirect is only called with a redirect
            raise AssertionError(f"not a redirect: {reply}")
        kind, slot, where = parsed
        answered = source.route.owner if source.route is not None else None
        host, port = redirect_target(
            where, answered.host if answered is not None else self._engine.address.host
        )
        target = replace(self._engine.address, host=host, port=port, db=0)
        if kind == "ASK":
            self.asks += 1
            publisher = await self._publisher_at(target, slot)
            await publisher.begin_batch()
            try:
                await publisher.send_publish(_ASKING, INTERNAL)
                await publisher.send_publish(command, priority)
            finally:
                await publisher.end_batch()
            return None
        self.redirected += 1
        route = self._routes.get(slot)
        if route is not None:
            route.learn(target)
        publisher = await self._publisher_at(target, slot)
        self._by_slot[slot] = publisher
        await publisher.send_publish(command, priority)
        return source

    async def close(self) -> int:
        """Flush (following redirects), close every connection; returns how many priority
        8-9 publishes were never acknowledged."""
        try:
            await self.flush()
        except CfnError as exc:
            log.warning("could not flush the Messenger's cluster publishers: %s", exc)
        abandoned = 0
        for publisher in self._publishers:
            abandoned += publisher.critical_pending
            await publisher.close()
        self._publishers = []
        self._by_slot.clear()
        return abandoned

    def stats(self) -> dict[str, Any]:
        """The connections' counters summed (retired ones included)."""
        total = dict.fromkeys(_SUMMED, 0)
        total.update(self._retired_counts)
        dropped: dict[int, int] = {}
        for publisher in self._publishers:
            for key in _SUMMED:
                total[key] += int(getattr(publisher, key))
            for priority, count in publisher.dropped_by_priority.items():
                dropped[priority] = dropped.get(priority, 0) + count
        total["dropped_by_priority"] = dropped  # type: ignore[assignment]
        total["connected"] = sum(1 for p in self._publishers if p.connected)
        return total

    def _taken(self, source: Publisher) -> Callable[[int, bytes, str], bool]:
        def take(priority: int, command: bytes, reply: str) -> bool:
            self._moved.append((priority, command, reply, source))
            return True

        return take

    def _new_route(self, slot: int) -> ShardRoute:
        return self._home.for_slot(slot)

    async def _publisher_for_slot(self, slot: int) -> Publisher:
        publisher = self._by_slot.get(slot)
        if publisher is not None:
            return publisher
        route = self._routes.get(slot)
        if route is None:
            route = self._routes[slot] = self._new_route(slot)
        owner = await route.resolve()
        if self._owned_by(owner) is None:  # a cached owner may be gone: ask again
            owner = await route.resolve(refresh=True)
        publisher = await self._publisher_at(owner, slot)
        self._by_slot[slot] = publisher
        return publisher

    def _owned_by(self, owner: ServerAddress) -> Publisher | None:
        for publisher in self._publishers:
            if publisher.route is not None and publisher.route.owner == owner:
                return publisher
        return None

    async def _publisher_at(self, owner: ServerAddress, slot: int) -> Publisher:
        """The connection to ``owner``, made with home slot ``slot`` if there is none."""
        found = self._owned_by(owner)
        if found is not None:
            return found
        engine = self._engine
        options = engine.options
        publisher = Publisher(
            owner,
            self._name,
            retry=RetryPolicy(
                retries=options.retries,
                backoff=ExponentialWithJitterBackoff(
                    base=options.backoff_base, cap=options.backoff_cap
                ),
            ),
            breaker=engine.breaker,
            connect_timeout=options.connect_timeout,
            socket_timeout=options.socket_timeout,
            ack_window=options.ack_window,
            critical_buffer=options.critical_buffer,
            on_error=engine.report_error,
        )
        route = self._new_route(slot)
        route.learn(owner)
        publisher.route = route
        publisher.on_redirect = self._taken(publisher)
        self._publishers.append(publisher)
        log.info("messenger %s: a publisher connection to %s", self._name, owner.describe())
        return publisher

    async def _retire_if_moved(self, publisher: Publisher) -> None:
        """A connection whose home slot has moved: take its publishes along, close it."""
        route = publisher.route
        if route is None or publisher not in self._publishers:
            return
        before = route.owner
        if await route.resolve(refresh=True) == before:
            return
        try:
            await publisher.flush()  # MOVED replies read here are taken to their owners
        except CfnError as exc:
            log.warning("retiring a publisher of %s: %s", self._name, exc)
        self._publishers.remove(publisher)
        for slot in [s for s, p in self._by_slot.items() if p is publisher]:
            del self._by_slot[slot]
        for key in _COUNTERS:
            self._retired_counts[key] += int(getattr(publisher, key))
        self.retired += 1
        await publisher.close()
