"""Outbound planning: what to publish, where, and whether it may go at all.

Everything a publish decides (priority range, throttle, circuit breaker, route,
sequence number, envelope, size limit, the RESP bytes) is decided here; the
transports only write the bytes and report success or failure back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from pytest_cfn._core.breaker import CircuitBreaker
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.ids import validate_event_type
from pytest_cfn._core.publish_template import TS_DIGITS, TS_HIGH, TS_LOW, PublishTemplate, ts_digits
from pytest_cfn._core.resp import publish_prefix
from pytest_cfn._core.route_cache import RouteCache
from pytest_cfn._core.signing import EnvelopeSigner
from pytest_cfn._core.throttle import PriorityThrottle
from pytest_cfn._errors import (
    CircuitOpenError,
    InvalidOptionError,
    MessageTooLargeError,
    ThrottledError,
)

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
_MAX_PREFIXES = 10_000
_KEEP_DATA_BUFFER = 64 * 1024
"""A planner keeps its data buffer for messages up to this size (bytes)."""


class PlanLock(Protocol):
    """What a planner holds while it takes a sequence number (``threading.Lock``)."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


def check_priority(priority: object) -> int:
    """The priority if it is an integer 1-9, else InvalidOptionError saying so (the
    check ``OutboundPlanner.admit`` makes inline, for calls that must fail before IO)."""
    if type(priority) is not int or not 1 <= priority <= 9:
        raise InvalidOptionError(
            f"priority {priority!r} is out of range; priorities are integers "
            "1 (low) to 9 (critical)"
        )
    return priority


class PlannedPublish(msgspec.Struct, frozen=True, gc=False):
    """One encoded ``PUBLISH`` ready for the wire, and its payload (signed when the
    bus signs) for the commands that also store it (critical stream, history). A
    Struct: built in C, once per publish."""

    command: bytes
    envelope: Envelope
    priority: int
    payload: bytes
    channel: str


class OutboundPlanner:
    """Builds envelopes and ``PUBLISH`` commands for one publishing stream. Given a
    ``lock``, publishes from several threads each take their own sequence number."""

    __slots__ = (
        "_channels",
        "_data_buffer",
        "_encode",
        "_encode_into",
        "_hot",
        "_id_head",
        "_large",
        "_lock",
        "_max_bytes",
        "_offer",
        "_prefixes",
        "_publisher",
        "_seq",
        "_signer",
        "_source",
        "_swarm",
        "_templated",
        "_templates",
        "_type_templates",
        "breaker",
        "codec",
        "route_cache",
        "throttle",
    )

    def __init__(
        self,
        codec: Codec,
        channels: ChannelNames,
        swarm: str,
        source: str,
        publisher: str,
        *,
        route_cache: RouteCache,
        throttle: PriorityThrottle,
        breaker: CircuitBreaker,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        signer: EnvelopeSigner | None = None,
        lock: PlanLock | None = None,
        offer: Callable[[bytes, int], bool] | None = None,
    ) -> None:
        if max_message_bytes <= 0:
            raise InvalidOptionError(
                f"max_message_bytes must be a positive number of bytes, got {max_message_bytes}"
            )
        self.codec = codec
        self._encode = codec.raw_encode
        self._encode_into = codec.raw_encode_into
        self._data_buffer = bytearray()
        """:meth:`plan_command` encodes data here (under the lock, if any), then copies it
        into the command: no bytes object per publish for the data alone."""
        self._channels = channels
        self._swarm = swarm
        self._source = source
        self._publisher = publisher
        self._id_head = f"{publisher}-"
        """Every message id is this and the sequence number."""
        self._seq = 0
        self._max_bytes = max_message_bytes
        self._large = min(max_message_bytes, _KEEP_DATA_BUFFER)
        """Sizes above this are checked further (one comparison per publish below it)."""
        self._prefixes: dict[str, bytes] = {}
        self._templates: dict[tuple[str, str, int], PublishTemplate] = {}
        self._type_templates: dict[str, PublishTemplate] = {}
        """The template each event type used last (a publisher mostly repeats its
        channel and priority): one lookup by a string instead of by a tuple."""
        self._hot: PublishTemplate | None = None
        """The template the last templated publish used (see :meth:`plan_command`)."""
        self._templated = codec.format == "json" and signer is None
        """:meth:`plan_command` fills a :class:`PublishTemplate` (else: the Envelope path)."""
        self._signer = signer
        self._lock = lock
        """Held while a sequence number is taken and its envelope built, where publishes
        can come from several threads (None: one event loop, nothing to hold)."""
        self._offer = offer
        """Takes a command from :meth:`plan_command` into the publisher's pending write,
        called holding ``lock`` (True: taken). Given one, ``lock`` must be the one it
        expects held (``Publisher.plan_lock`` for ``Publisher.offer_held``)."""
        self.route_cache = route_cache
        self.throttle = throttle
        self.breaker = breaker

    @property
    def publisher(self) -> str:
        return self._publisher

    @property
    def published(self) -> int:
        """Publishes planned so far: each took the next sequence number."""
        return self._seq

    def admit(self, priority: object, now: float) -> int:
        """Check priority, throttle and breaker; returns the priority or raises."""
        checked = check_priority(priority)
        if not self.throttle.allow(checked, now):
            raise self._throttled(checked)
        if not self.breaker.allow(now, checked):
            raise self._refused_open(now)
        return checked

    def _throttled(self, priority: object) -> ThrottledError:
        return ThrottledError(
            f"priority {priority} publish throttled (rate {self.throttle.stats()['rate']}/s "
            "for priorities 1-5); use priority 6 or higher, or raise the throttle rate"
        )

    def _refused_open(self, now: float) -> CircuitOpenError:
        breaker = self.breaker
        return CircuitOpenError(
            f"circuit breaker is open after {breaker.failure_threshold} failed publish "
            f"calls in a row; it lets a trial publish through in "
            f"{breaker.retry_after(now):.1f} s (then {breaker.success_threshold} "
            "successes close it); priorities 8-9 still go through, others are refused "
            "until then"
        )

    def admit_cached(self, priority: object, event_type: str, now: float) -> str | None:
        """:meth:`admit`, then the cached channel of ``event_type`` (None on a miss): the
        two checks every publish makes, in one call."""
        self.admit(priority, now)
        return self.route_cache.get(event_type, now)

    def plan_cached(
        self,
        event_type: str,
        data: Any,
        priority: int,
        now: float,
        wall_ns: int,
        correlation_id: str | None = None,
        channel: str | None = None,
    ) -> PlannedPublish | None:
        """:meth:`admit`, the cached route and :meth:`plan` in one call (a publish's hot
        path: one frame); None on a route-cache miss, admitted: find the route, then
        :meth:`plan`. Given ``channel`` (that route), it only plans: no second admission."""
        if channel is None:
            if type(priority) is not int or not 1 <= priority <= 9:
                check_priority(priority)
            throttle = self.throttle
            if throttle.enabled and not throttle.allow(priority, now):
                raise self._throttled(priority)
            breaker = self.breaker
            if not breaker.closed and not breaker.allow(now, priority):
                raise self._refused_open(now)
            channel = self.route_cache.get(event_type, now)
            if channel is None:
                return None
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            seq = self._seq + 1
            env = Envelope(
                id=f"{self._publisher}-{seq}",
                swarm=self._swarm,
                source=self._source,
                type=event_type,
                priority=priority,
                seq=seq,
                ts=wall_ns,
                publisher=self._publisher,
                correlation_id=correlation_id,
                data=data,
            )
            try:
                payload = self._encode(env)
            except (TypeError, ValueError) as exc:
                raise InvalidOptionError(
                    f"data for {event_type!r} cannot be encoded as {self.codec.format}: {exc}"
                ) from exc
            if len(payload) > self._max_bytes:
                raise MessageTooLargeError(
                    f"encoded message is {len(payload)} bytes; the limit is "
                    f"{self._max_bytes} bytes (set max_message_bytes to change it)"
                )
            if self._signer is not None:
                payload = self._signer.seal(channel.encode(), payload)
            self._seq = seq  # taken only now: a message refused above leaves no gap
        finally:
            if lock is not None:
                lock.release()
        prefix = self._prefixes.get(channel)
        if prefix is None:
            if len(self._prefixes) >= _MAX_PREFIXES:
                self._prefixes.clear()
            prefix = self._prefixes[channel] = publish_prefix(channel.encode())
        # encode_publish_after(prefix, payload), without its frame
        command = b"%b%d\r\n%b\r\n" % (prefix, len(payload), payload)
        return PlannedPublish(command, env, priority, payload, channel)

    def plan_command(
        self,
        event_type: str,
        data: Any,
        priority: int,
        now: float,
        wall_ns: int,
        channel: str | None = None,
    ) -> tuple[bytes | None, str] | None:
        """:meth:`plan_cached` for a publish that needs only its ``PUBLISH`` command and
        id (no correlation id, not stored): ``(command, id)``, or None on a route-cache
        miss, admitted. The same bytes, without building an Envelope, its payload and a
        PlannedPublish: a :class:`PublishTemplate` of the route is filled in. The
        command is None when the planner's ``offer`` took it (under the lock that the
        sequence number was taken under: one lock per publish).

        The hot path is a publisher repeating its last event type and priority: the
        template it used last (``_hot``) vouches for the priority (the same int object,
        checked when the template was made), and the route cache's last hit is checked
        here rather than in a call."""
        template = self._hot
        if channel is None:
            if (template is None or template.priority is not priority) and (
                type(priority) is not int or not 1 <= priority <= 9
            ):
                check_priority(priority)
            throttle = self.throttle
            if throttle.enabled and not throttle.allow(priority, now):
                raise self._throttled(priority)
            breaker = self.breaker
            if not breaker.closed and not breaker.allow(now, priority):
                raise self._refused_open(now)
            cache = self.route_cache
            last = cache.last_hit
            if last is not None and last[0] == event_type and now < last[2]:
                cache.hits += 1  # RouteCache.get's repeated hit, without its frame
                channel = last[1]
            else:
                channel = cache.get(event_type, now)
                if channel is None:
                    return None
        if (
            template is None
            or template.event_type != event_type
            or template.priority is not priority
            or template.channel != channel
        ):
            if not self._templated:
                planned = self.plan_cached(
                    event_type, data, priority, now, wall_ns, None, channel
                )
                assert planned is not None  # given a channel, it always plans
                return planned.command, planned.envelope.id
            template = self._template(channel, event_type, priority)
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            data_json: bytes | bytearray
            if data is None:
                data_json = b""
            else:
                data_json = self._data_buffer
                try:
                    self._encode_into(data, data_json)
                except (TypeError, ValueError) as exc:
                    if data is not msgspec.UNSET:
                        raise InvalidOptionError(
                            f"data for {event_type!r} cannot be encoded as "
                            f"{self.codec.format}: {exc}"
                        ) from exc
                    data_json = b""  # the Envelope omits UNSET data, as it omits None
            if data_json:  # encoded data is never empty
                fmt = template.with_data
                size = template.with_data_base + len(data_json)
            else:
                fmt = template.without_data
                size = template.without_data_base
            size += TS_DIGITS if TS_LOW <= wall_ns < TS_HIGH else ts_digits(wall_ns)
            seq = self._seq + 1
            ident = f"{self._id_head}{seq}"
            size += 2 * len(ident)
            if size > self._large:
                if size > _KEEP_DATA_BUFFER:
                    self._data_buffer = bytearray()  # a large message's buffer is not kept
                if size > self._max_bytes:
                    raise MessageTooLargeError(
                        f"encoded message is {size} bytes; the limit is "
                        f"{self._max_bytes} bytes (set max_message_bytes to change it)"
                    )
            command = fmt % (size, seq, seq, wall_ns, data_json)
            self._seq = seq  # taken only now: a message refused above leaves no gap
            offer = self._offer
            if offer is not None and offer(command, priority):
                return None, ident
        finally:
            if lock is not None:
                lock.release()
        return command, ident

    def _template(self, channel: str, event_type: str, priority: int) -> PublishTemplate:
        """The template of (channel, event type, priority): the one this type used last,
        or the one made for the three before, or a new one (``priority`` is valid)."""
        template = self._type_templates.get(event_type)
        if template is not None and template.channel == channel and (
            template.priority == priority
        ):
            self._hot = template
            return template
        templates = self._templates
        template = templates.get((channel, event_type, priority))
        if template is None:
            if len(templates) >= _MAX_PREFIXES:
                templates.clear()
                self._type_templates.clear()
            template = templates[(channel, event_type, priority)] = PublishTemplate(
                self._encode, channel, self._swarm, self._source, self._publisher, event_type,
                priority,
            )
        self._type_templates[event_type] = template
        self._hot = template
        return template

    def cached_route(self, event_type: str, now: float) -> str | None:
        return self.route_cache.get(event_type, now)

    def default_route(self, event_type: str) -> str:
        """The channel of an event type with no override; validates the type."""
        validate_event_type(event_type)
        return self._channels.event(self._swarm, event_type)

    def learn_route(self, event_type: str, channel: str, now: float) -> None:
        self.route_cache.put(event_type, channel, now)

    def plan(
        self,
        channel: str,
        event_type: str,
        data: Any,
        priority: int,
        wall_ns: int,
        correlation_id: str | None = None,
    ) -> PlannedPublish:
        """Envelope + ``PUBLISH`` command on ``channel``, for a publish already admitted;
        assigns the next sequence number (under the planner's lock, if it has one)."""
        planned = self.plan_cached(event_type, data, priority, 0.0, wall_ns, correlation_id,
                                   channel)
        assert planned is not None  # given a channel, it always plans
        return planned

    def record_success(self, now: float) -> None:
        self.breaker.record_success(now)

    def record_failure(self, now: float) -> None:
        self.breaker.record_failure(now)
