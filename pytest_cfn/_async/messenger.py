"""The Messenger (ADR-002, inter-swarm): ``message:{from}:{to}`` over Redis pub/sub."""

from __future__ import annotations

import inspect
import itertools
import logging
import os
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from pytest_cfn._async.asked_calls import AskedCalls
from pytest_cfn._async.connection_share import SharedConnections
from pytest_cfn._async.engine import BusEngine
from pytest_cfn._async.frontend import EngineFrontend
from pytest_cfn._async.publisher import PublishBatch
from pytest_cfn._async.shard_senders import ShardSenders
from pytest_cfn._backends.address import (
    ADDRESS_SETTINGS,
    ServerAddress,
    parse_redis_url,
    with_tls_options,
)
from pytest_cfn._backends.async_backend import (
    QueueLock,
    Signal,
    call_handler,
    monotonic,
    time_ns,
)
from pytest_cfn._core.connection_names import connection_name
from pytest_cfn._core.envelope import Envelope
from pytest_cfn._core.handlers import Handler
from pytest_cfn._core.ids import validate_agent_id, validate_id_list, validate_swarm_id
from pytest_cfn._core.message import (
    DEFAULT_HISTORY_SIZE,
    MESSAGE,
    REPLY,
    REPLY_ERROR,
    REQUEST,
    Message,
    MessageHistory,
    decode_stored,
    history_key,
    publish_with_history,
)
from pytest_cfn._core.options import BusOptions, bus_options
from pytest_cfn._core.outbound import OutboundPlanner, PlannedPublish, check_priority
from pytest_cfn._core.route_cache import RouteCache
from pytest_cfn._core.shard_layout import as_spublish, publish_with_shard_history
from pytest_cfn._core.signing import signed_decoder
from pytest_cfn._core.throttle import PriorityThrottle
from pytest_cfn._errors import (
    BusClosedError,
    CfnError,
    InvalidOptionError,
    PublishFailedError,
    RequestFailedError,
    RequestTimeoutError,
)

log = logging.getLogger("pytest_cfn.messenger")


class _Pending:
    """A request waiting for its reply."""

    __slots__ = ("reply", "signal", "to")

    def __init__(self, to: str) -> None:
        self.to = to
        self.reply: Envelope | None = None
        self.signal = Signal()


class Messenger(EngineFrontend):
    """Send messages to other swarms, receive the ones addressed to this swarm.

    Two connections, as for the Event Bus: a publisher (made on the first send)
    and a subscriber (made when a handler is registered or a request is made),
    which subscribes ``message:*:{swarm}`` once. Sequence numbers count per
    destination, since a receiver only sees what is addressed to it.

    On Redis Cluster (found from the URL of any node) each swarm's inbox is the
    shard channel ``message:{swarm}`` on the master of its slot: the subscriber is
    there, and sends go out on one publisher connection per master they reach
    (see ``_async.shard_senders`` for redirects and failovers).

    ``from_swarms=[...]``: the only swarms whose messages (requests and replies included)
    reach this inbox. It then subscribes ``message:{sender}:{swarm}`` exactly for each,
    instead of the pattern: Redis matches every PUBLISH against every pattern
    subscribed on the server, but finds an exact channel's subscribers in one lookup
    (see ``EventBus``'s ``event_types``). On Redis Cluster the inbox stays the one
    shard channel, and a message from another swarm is set aside and counted in
    ``stats()["other_swarms"]``.
    """

    def __init__(
        self,
        address: ServerAddress | str,
        swarm: str,
        agent: str,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        persist_history: bool = False,
        history_ttl: float = 3600.0,
        on_reconnect: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        options: BusOptions | None = None,
        share: SharedConnections | None = None,
        from_swarms: Iterable[str] | None = None,
        **settings: Any,
    ) -> None:
        address = with_tls_options(  # takes the ssl_* settings out
            parse_redis_url(address) if isinstance(address, str) else address, settings
        )
        if options is None:
            options = bus_options(settings, ADDRESS_SETTINGS)
        elif settings:
            raise TypeError("pass either options= or keyword settings, not both")
        if isinstance(history_ttl, bool) or not isinstance(history_ttl, (int, float)) or not (
            history_ttl >= 1
        ):
            raise InvalidOptionError(f"history_ttl must be >= 1 second, got {history_ttl!r}")
        self.swarm = validate_swarm_id(swarm)
        self.agent = validate_agent_id(agent)
        self.from_swarms = validate_id_list(from_swarms, "from_swarms", "swarm id",
                                            validate_swarm_id)
        """The only swarms whose messages reach this inbox (exact channels), or None."""
        self.other_swarms = 0
        """Messages from swarms outside ``from_swarms`` not handed on (Redis Cluster)."""
        self.options = options
        self._history = MessageHistory(history_size)
        self._persist = bool(persist_history)
        self._history_ttl = float(history_ttl)
        self._engine = BusEngine(
            address,
            kind="message",
            subsystem="messages",
            swarm=self.swarm,
            agent=self.agent,
            options=options,
            deliver=self._deliver,
            on_reconnect=on_reconnect,
            intercept=self._take_reply,
            on_error=on_error,
            share=share,
        )
        self.channels = self._engine.channels
        self._instance = f"{self.agent}.{os.urandom(4).hex()}"
        self._route_cache = RouteCache(options.route_cache_size, options.route_ttl)
        self._throttle = PriorityThrottle(options.throttle_rate, options.throttle_burst)
        self._destinations: dict[str, tuple[OutboundPlanner, str]] = {}
        self._handlers: list[tuple[int, Handler]] = []
        self._next_token = 1
        self._request_handler: Handler | None = None
        self._pending: dict[str, _Pending] = {}
        self._request_numbers = itertools.count(1)
        self._plan_lock = QueueLock()  # one sequence number per message, whatever the threads
        self._listening = False
        self._closing = False
        self._sharded: bool | None = None
        self._senders: ShardSenders | None = None
        self.requests_sent = 0
        self.replies_received = 0
        self.request_timeouts = 0
        self.unmatched_replies = 0
        self.requests_answered = 0
        self.unhandled_requests = 0

    @classmethod
    def from_url(cls, url: str, swarm: str, agent: str, **settings: Any) -> Messenger:
        """``Messenger.from_url("redis://localhost:6379/0", swarm="s1", agent="a1")``."""
        return cls(parse_redis_url(url), swarm, agent, **settings)

    def publisher_id(self, to_swarm: str) -> str:
        """The sequence stream of this messenger towards ``to_swarm`` (as receivers see it)."""
        return f"{self._instance}>{validate_swarm_id(to_swarm)}"

    async def connect(self) -> None:
        """Open the publisher connection now rather than on the first send (on a cluster:
        the one to this swarm's own master)."""
        self._engine.check_open()
        await self._ensure_layout()
        if self._senders is not None:
            await (await self._senders.publisher_for(self.swarm)).connect()
            return
        await self._engine.publisher.connect()

    async def _ensure_layout(self) -> None:
        """Before the first send or subscribe: on Redis Cluster, use inbox shard channels."""
        if self._sharded is not None:
            return
        found = await self._engine.detect_cluster(self.swarm)
        if found is None:  # not reachable now; one server's layout for this call
            return
        if found:
            self.channels = self._engine.channels
            self._senders = ShardSenders(
                self._engine,
                connection_name("messages-pub", self.swarm, self.agent, self.options.namespace),
            )
            # stored_history's LRANGE answered ASK mid-migration: read on the importing master
            self._engine.publisher.asked_calls = AskedCalls(self.options.socket_timeout)
            for to_swarm, (planner, _) in list(self._destinations.items()):
                self._destinations[to_swarm] = (planner, self.channels.message(self.swarm,
                                                                               to_swarm))
        self._sharded = found

    async def listen(self) -> None:
        """Subscribe to this swarm's inbox (done by :meth:`on_message`, :meth:`on_request`
        and :meth:`request` too); returns once Redis has confirmed it."""
        self._engine.check_open()
        await self._ensure_layout()
        if not self._listening:
            from_swarms = self.from_swarms
            if from_swarms is None or self._sharded:
                await self._engine.subscribe_pattern(self.channels.inbox_pattern(self.swarm))
            else:
                for sender in sorted(from_swarms):
                    await self._engine.subscribe_pattern(
                        self.channels.message(sender, self.swarm), exact=True
                    )
            self._listening = True

    async def on_message(self, handler: Handler) -> int:
        """Call ``handler(message)`` for every message addressed to this swarm (requests
        and replies excepted). Returns a token for :meth:`remove_handler`."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        token = self._next_token
        self._next_token += 1
        self._handlers.append((token, handler))
        await self.listen()
        return token

    async def on_request(self, handler: Handler) -> None:
        """Answer requests with ``handler(message)``'s return value (replacing any earlier
        request handler). If it raises, the requester gets :class:`RequestFailedError`."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        self._request_handler = handler
        await self.listen()

    def remove_handler(self, token: int) -> bool:
        before = len(self._handlers)
        self._handlers = [h for h in self._handlers if h[0] != token]
        return len(self._handlers) != before

    async def send(self, to_swarm: str, data: Any = None, priority: int = 5) -> str:
        """Send ``data`` to every listener of ``to_swarm`` on ``message:{me}:{to}``;
        returns the message id. Written at once (or when :meth:`batch` ends)."""
        env = await self._send(to_swarm, MESSAGE, data, priority, None)
        return env.id

    async def request(
        self, to_swarm: str, data: Any = None, timeout: float = 5.0, priority: int = 5
    ) -> Message:
        """Send a request and wait for its reply (``reply.data`` is what the other swarm's
        request handler returned). Raises :class:`RequestTimeoutError` after ``timeout``
        seconds, leaving nothing pending. Do not call it inside :meth:`batch`."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidOptionError(f"request timeout must be > 0 seconds, got {timeout!r}")
        # Every argument is checked before any IO (the subscription below connects).
        validate_swarm_id(to_swarm)
        check_priority(priority)
        await self.listen()
        correlation_id = f"{self._instance}:{next(self._request_numbers)}"
        pending = _Pending(to_swarm)
        self._pending[correlation_id] = pending
        try:
            await self._send(to_swarm, REQUEST, data, priority, correlation_id)
            self.requests_sent += 1
            answered = await pending.signal.wait(timeout)
            reply = pending.reply
            if reply is None:
                if self._closing:
                    raise BusClosedError("the messenger was closed while a request was waiting")
                if not answered:
                    self.request_timeouts += 1
                raise RequestTimeoutError(
                    f"no reply from swarm {to_swarm!r} within {timeout} s "
                    f"(request {correlation_id}); is a request handler registered there?"
                )
        finally:
            self._pending.pop(correlation_id, None)
        if reply.type == REPLY_ERROR:
            raise RequestFailedError(
                f"swarm {reply.swarm!r} could not answer the request: {reply.data}"
            )
        return Message(reply, self.swarm)

    async def _send(
        self,
        to_swarm: str,
        message_type: str,
        data: Any,
        priority: int,
        correlation_id: str | None,
    ) -> Envelope:
        engine = self._engine
        if engine.closed:
            engine.check_open()
        if self._sharded is None:
            await self._ensure_layout()
        destination = self._destinations.get(to_swarm)
        if destination is None:
            destination = self._add_destination(to_swarm)
        planner, channel = destination
        planner.admit(priority, monotonic())
        with self._plan_lock:
            planned = planner.plan(
                channel, message_type, data, priority, time_ns(), correlation_id
            )
        # Kept before the write: a reply can arrive (and be kept) before the write returns,
        # and the history is in the order things happened.
        sent = Message(planned.envelope, to_swarm)
        self._history.add(sent)
        try:
            await self._write(to_swarm, channel, message_type, planned, priority)
        except BaseException:
            self._history.discard(sent)
            raise
        return planned.envelope

    async def _write(
        self, to_swarm: str, channel: str, message_type: str, planned: PlannedPublish,
        priority: int,
    ) -> None:
        """Write one planned message (a shard's sender on a cluster; with its history
        push when ``persist_history``)."""
        engine = self._engine
        senders = self._senders
        if senders is not None:
            if self._persist:
                command = publish_with_shard_history(
                    history_key(self.channels, to_swarm), channel, planned.payload,
                    self._history.size, self._history_ttl,
                )
            else:
                command = as_spublish(planned.command)
            # A request or a reply waits for Redis's answer, so a redirect is followed now.
            await senders.send(to_swarm, command, priority, confirm=message_type != MESSAGE)
        elif self._persist:
            await engine.publisher.send_publish(
                publish_with_history(
                    history_key(self.channels, to_swarm),
                    channel,
                    planned.payload,
                    self._history.size,
                    self._history_ttl,
                ),
                priority,
            )
        else:
            await engine.publisher.send_publish(planned.command, priority)

    def _add_destination(self, to_swarm: str) -> tuple[OutboundPlanner, str]:
        validate_swarm_id(to_swarm)
        planner = OutboundPlanner(
            self._engine.codec,
            self.channels,
            self.swarm,
            self.agent,
            f"{self._instance}>{to_swarm}",
            route_cache=self._route_cache,
            throttle=self._throttle,
            breaker=self._engine.breaker,
            max_message_bytes=self.options.max_message_bytes,
            signer=self._engine.signer,
        )
        destination = (planner, self.channels.message(self.swarm, to_swarm))
        # setdefault: two threads adding one destination at once share one sequence stream
        return self._destinations.setdefault(to_swarm, destination)

    def _take_reply(self, env: Envelope) -> bool:
        """On the reader: hand a reply straight to its waiting request (so a request made
        from inside a handler does not wait on the dispatcher it is blocking)."""
        if env.type != REPLY and env.type != REPLY_ERROR:
            return False
        self._history.add(Message(env, self.swarm))
        pending = self._pending.get(env.correlation_id or "")
        if pending is None or pending.reply is not None or pending.to != env.swarm:
            self.unmatched_replies += 1
            return True
        pending.reply = env
        self.replies_received += 1
        pending.signal.set()
        return True

    async def _deliver(self, envelopes: list[Envelope]) -> None:
        from_swarms = self.from_swarms
        if from_swarms is not None:
            wanted = [env for env in envelopes if env.swarm in from_swarms]
            self.other_swarms += len(envelopes) - len(wanted)
            envelopes = wanted
        for env in envelopes:
            message = Message(env, self.swarm)
            self._history.add(message)
            if env.type == REQUEST:
                try:
                    await self._answer(message)
                except Exception:
                    self._engine.handler_errors += 1
                    log.exception("answering request %s from %s failed", env.id, env.swarm)
                continue
            for _, handler in self._handlers:
                try:
                    await call_handler(handler, message)
                except Exception:
                    self._engine.handler_errors += 1
                    log.exception("message handler failed for %s from %s", env.id, env.swarm)

    async def _answer(self, request: Message) -> None:
        handler = self._request_handler
        if handler is None or not request.correlation_id:
            self.unhandled_requests += 1
            return
        reply_type = REPLY
        try:
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            self._engine.handler_errors += 1
            log.exception("request handler failed for %s from %s", request.id, request.sender)
            reply_type, result = REPLY_ERROR, f"{type(exc).__name__}: {exc}"
        try:
            await self._send(
                request.sender, reply_type, result, request.priority, request.correlation_id
            )
        except CfnError as exc:
            log.warning("could not reply to %s from %s: %s", request.id, request.sender, exc)
            await self._send(
                request.sender,
                REPLY_ERROR,
                f"the reply could not be sent: {exc}",
                request.priority,
                request.correlation_id,
            )
        self.requests_answered += 1

    @property
    def history(self) -> list[Message]:
        """The last ``history_size`` messages sent and received, oldest first."""
        return self._history.snapshot()

    async def stored_history(self, limit: int | None = None) -> list[Message]:
        """Messages addressed to this swarm kept in Redis (``persist_history=True`` on the
        senders), oldest first: what a restarted swarm missed."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise InvalidOptionError(f"limit must be an integer >= 1 or None, got {limit!r}")
        self._engine.check_open()
        await self._ensure_layout()
        stop = -1 if limit is None else limit - 1
        raw = await self._engine.publisher.call(
            "LRANGE", history_key(self.channels, self.swarm), 0, stop
        )
        decode: Callable[[bytes], Envelope] = self._engine.codec.decode
        signer = self._engine.signer
        if signer is not None:
            channels, me = self.channels, self.swarm
            decode = signed_decoder(signer, decode, lambda env: channels.message(env.swarm, me))
        return decode_stored(list(raw or []), decode, self.swarm)

    def batch(self) -> PublishBatch:
        """``async with m.batch():`` what is sent inside is written in one go at the end
        (per master on a cluster)."""
        return _MessengerBatch(self)

    async def flush(self) -> int:
        """Write what is batched and wait until Redis has acknowledged every send (on a
        cluster: on every master, following redirects)."""
        acknowledged = await self._engine.publisher.flush()
        if self._senders is not None:
            acknowledged += await self._senders.flush()
        return acknowledged

    def stats(self) -> dict[str, Any]:
        stats = self._engine.stats()
        if self._senders is not None:
            _add_sender_stats(stats, self._senders)
            asked = self._engine.publisher.asked_calls
            stats["asked_calls"] = asked.followed if asked is not None else 0
        stats.update(
            published=sum(p.published for p, _ in self._destinations.values()),
            destinations=len(self._destinations),
            throttled=self._throttle.stats()["throttled"],
            handlers=len(self._handlers) + int(self._request_handler is not None),
            history=len(self._history),
            requests_sent=self.requests_sent,
            other_swarms=self.other_swarms,
            replies_received=self.replies_received,
            request_timeouts=self.request_timeouts,
            requests_pending=len(self._pending),
            unmatched_replies=self.unmatched_replies,
            requests_answered=self.requests_answered,
            unhandled_requests=self.unhandled_requests,
        )
        return stats

    async def close(self) -> None:
        """Flush, close both connections, stop the workers; waiting requests get
        :class:`BusClosedError`."""
        self._closing = True
        for pending in list(self._pending.values()):
            pending.signal.set()
        abandoned = 0
        if self._senders is not None and not self._engine.closed:
            abandoned = await self._senders.close()
        await super().close()
        if abandoned:
            raise PublishFailedError(
                f"closed with {abandoned} priority 8-9 message(s) that the Redis Cluster "
                f"masters never acknowledged ({self._engine.last_error}); they are lost. "
                "flush() before close() waits for them while a master is away"
            )


class _MessengerBatch(PublishBatch):
    """A batch on the publisher of one server, or on every master's (found on entry)."""

    __slots__ = ("_messenger",)

    def __init__(self, messenger: Messenger) -> None:
        super().__init__(messenger._engine.publisher)
        self._messenger = messenger

    async def __aenter__(self) -> None:
        messenger = self._messenger
        await messenger._ensure_layout()
        if messenger._senders is not None:
            await messenger._senders.begin_batch()
        else:
            await super().__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        senders = self._messenger._senders
        if senders is not None:
            await senders.end_batch()
        else:
            await super().__aexit__(exc_type, exc, tb)


def _add_sender_stats(stats: dict[str, Any], senders: ShardSenders) -> None:
    """A Messenger on a cluster: its publishers' counters are those of every master's
    connection (the engine's own publisher only reads the stored history there)."""
    sent = senders.stats()
    mapping = {
        "retries": "retries", "publish_failed": "failed", "publish_give_ups": "give_ups",
        "publish_errors": "reply_errors", "acknowledged": "acknowledged",
        "in_flight": "in_flight", "critical_pending": "critical_pending",
        "critical_resent": "critical_resent", "coalesced_writes": "coalesced_writes",
        "pending_writes": "pending", "redirects": "redirects",
        "publisher_reconnects": "reconnects",
    }
    for key, field in mapping.items():
        stats[key] += sent[field]
    stats["reconnects"] += sent["reconnects"]
    stats["connections"] += sent["connected"]
    dropped = stats["publish_dropped_by_priority"]
    for priority, count in sent["dropped_by_priority"].items():
        dropped[priority] = dropped.get(priority, 0) + count
    stats.update(
        publisher_connections=sent["connected"],
        redirects_followed=senders.redirected,
        asks=senders.asks,
        publishers_retired=senders.retired,
    )
