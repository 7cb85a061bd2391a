"""Durable critical events: a per-swarm Redis Stream behind pub/sub, and catch-up from it.

Theory of operation. Pub/sub is at-most-once, which ADR-002 accepts for
priorities 1-7. Priorities 8 and 9 (phase transitions, critical coordination)
are also appended to the swarm's stream ``critical:{swarm}``, trimmed to a
settable length, in one server-side script together with the ``PUBLISH`` (so the
entry is in the stream before any receiver can see the live copy).

A subscriber keeps a cursor: the id of the last stream entry it has passed,
stored under ``critical-cursor:{swarm}:{agent}`` so a restarted agent resumes
where it stopped. It catches up (reads the stream after the cursor, hands on the
entries it has not seen, moves the cursor) when it starts, after a reconnect,
after its sequence tracking counted a gap, and every ``sync_interval`` seconds
while critical events arrive (which also keeps the stored cursor fresh). An
agent with no stored cursor starts ``replay_window`` seconds back. A catch-up
reads only entries at least ``settle_time`` old by the server's clock, so that
the live copy of a recent event arrives first and the catch-up does not race it
(which would count the live copy as a duplicate); a follow-up catch-up
``settle_time`` later takes the entries that were too new.

Each entry is handed on once, in stream order: the ids of critical envelopes
received live are remembered (a bounded map) with whether they have been handed
to the handlers yet. A catch-up skips the handed-on ones, hands on the ones
still queued (so they keep their place in the stream's order; the queued copy
is then skipped), and for the rest asks the sequence tracker, so a replayed
message that was counted lost turns into ``reordered``. Replayed entries of
publishers not yet seen live are not fed to the tracker: doing so would turn
the ordinary messages sent before this subscriber started into "lost" ones.

Exactly once holds while the subscriber runs and across a graceful restart (the
cursor is settled on close); after a crash, the critical events delivered in
the last ``sync_interval`` + ``settle_time`` may be delivered again.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.envelope import Envelope
from pytest_cfn._core.resp import encode_command
from pytest_cfn._core.sequence import SequenceTracker, Verdict
from pytest_cfn._errors import ForgedMessageError, InvalidOptionError, MalformedMessageError

CRITICAL_PRIORITY = 8
STREAM_FIELD = "envelope"
_REMEMBER_IDS = 100_000

APPEND_AND_PUBLISH = """\
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'envelope', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('PUBLISH', ARGV[4], ARGV[3])
"""

CATCH_UP_READ = """\
local now = redis.call('TIME')
local horizon = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[2])
if horizon < 0 then horizon = 0 end
return {now, redis.call('XRANGE', KEYS[1], ARGV[1], string.format('%d', horizon), 'COUNT', ARGV[3])}
"""
"""One round trip per catch-up: the server's TIME and the first page (ARGV[3] entries) of
entries at least ``settle_time`` (ARGV[2], ms) old after the position (ARGV[1]). Replies
``{TIME, XRANGE page}``."""


@dataclass(frozen=True)
class CriticalOptions:
    """How priority 8-9 events are kept and replayed (``enabled=False``: pub/sub only)."""

    enabled: bool = True
    stream_length: int = 10_000
    ttl: float = 86_400.0
    replay_window: float = 60.0
    sync_interval: float = 1.0
    retry_delay: float = 1.0
    batch: int = 500
    settle_time: float = 0.25
    """A catch-up reads only entries at least this old (by the server's clock), so the
    live copy of a recent event has had time to arrive and is not replayed as well;
    newer entries wait for the next catch-up, scheduled ``settle_time`` later."""

    def __post_init__(self) -> None:
        for name in ("stream_length", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOptionError(f"critical {name} must be an integer >= 1, got {value!r}")
        if not _finite(self.ttl) or self.ttl < 1:
            raise InvalidOptionError(f"critical ttl must be >= 1 second, got {self.ttl!r}")
        if not _finite(self.replay_window) or self.replay_window < 0:
            raise InvalidOptionError(
                f"critical replay_window must be >= 0 seconds, got {self.replay_window!r}"
            )
        if not _finite(self.settle_time) or self.settle_time < 0:
            raise InvalidOptionError(
                f"critical settle_time must be >= 0 seconds, got {self.settle_time!r}"
            )
        for name in ("sync_interval", "retry_delay"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise InvalidOptionError(f"critical {name} must be > 0 seconds, got {value!r}")


def _finite(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
    )


def stream_key(channels: ChannelNames, swarm: str) -> str:
    return channels.key("critical", swarm)


def cursor_key(channels: ChannelNames, swarm: str, agent: str) -> str:
    return channels.key("critical-cursor", swarm, agent)


def next_stream_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (an inclusive XRANGE start, any server)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class CriticalStream:
    """The publishing side: one command that appends to the stream and publishes.

    The stream is the receiving swarm's: the swarm of the channel, which a route
    override may have pointed at another swarm than the sender's.
    """

    __slots__ = ("_channels", "_keys", "_length", "_ttl")

    def __init__(self, channels: ChannelNames, options: CriticalOptions) -> None:
        self._channels = channels
        self._keys: dict[str, str] = {}
        self._length = options.stream_length
        self._ttl = int(options.ttl)

    def key_for(self, channel: str) -> str:
        key = self._keys.get(channel)
        if key is None:
            parsed = self._channels.parse_event(channel)
            if parsed is None:
                raise InvalidOptionError(f"{channel!r} is not an event channel")
            key = stream_key(self._channels, parsed[0])
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[channel] = key
        return key

    def append_and_publish(self, channel: str, payload: bytes) -> bytes:
        """``EVAL`` of XADD (exact MAXLEN) + EXPIRE + PUBLISH; replies like PUBLISH."""
        return encode_command(
            "EVAL",
            APPEND_AND_PUBLISH,
            1,
            self.key_for(channel),
            self._length,
            self._ttl,
            payload,
            channel,
        )


class CatchUp:
    """The subscribing side's bookkeeping (see the module docstring); no IO, time passed in."""

    def __init__(
        self, channels: ChannelNames, swarm: str, agent: str, options: CriticalOptions
    ) -> None:
        self.swarm = swarm
        self.stream_key = stream_key(channels, swarm)
        self.cursor_key = cursor_key(channels, swarm, agent)
        self.options = options
        self.cursor: str | None = None
        self._from: str | None = None
        self._until: str = "+"
        self._requested = False
        self._requested_run = False
        self._follow_up = False
        self._tail_due = False
        self._retry_at = -math.inf
        self._last_run = -math.inf
        self._live_since_run = 0
        self._lost_mark = 0
        self._seen: OrderedDict[str, bool] = OrderedDict()
        self.replayed = 0
        self.skipped = 0
        self.pulled_ahead = 0
        self.live_duplicates = 0
        self.malformed = 0
        self.forged = 0
        self.runs = 0
        self.failures = 0
        self.requests: dict[str, int] = {}

    @property
    def loaded(self) -> bool:
        return self._from is not None

    def request(self, reason: str) -> None:
        """Ask for a catch-up at the next chance (``start``, ``reconnect``, ``gap``)."""
        self._requested = True
        self._follow_up = False
        self._retry_at = -math.inf
        self.requests[reason] = self.requests.get(reason, 0) + 1

    def not_yet_handed_on(self, env: Envelope) -> bool:
        """Called for each live envelope before sequence tracking: False for a critical
        one a catch-up already handed on (the catch-up fed the tracker with it, so
        this live copy is not a duplicate publish; it is counted as a live duplicate)."""
        if env.priority < CRITICAL_PRIORITY or self._seen.get(env.id) is not True:
            return True
        self.live_duplicates += 1
        return False

    def observe_lost(self, lost: int) -> None:
        """Called after sequence tracking (``lost`` = its total): a new gap asks for a
        catch-up. Once per received chunk is enough; see :meth:`observe_live`."""
        if lost > self._lost_mark:
            self.request("gap")
        self._lost_mark = lost

    def observe_live(self, env: Envelope, lost: int) -> bool:
        """Called for each live envelope after sequence tracking (``lost`` = its total).
        False if it is a critical one already handed on by a replay."""
        self.observe_lost(lost)
        if env.priority < CRITICAL_PRIORITY:
            return True
        if env.id in self._seen:
            self.live_duplicates += 1
            return False
        self._remember(env.id, False)
        self._live_since_run += 1
        return True

    def claim(self, message_id: str) -> bool:
        """Called as a live critical envelope is about to be handed on; False if a
        catch-up has already handed it on (in its place in the stream)."""
        if self._seen.get(message_id):
            return False
        self._seen[message_id] = True
        return True

    @property
    def pending(self) -> bool:
        """A catch-up is asked for (maybe not due yet: a follow-up or a retry)."""
        return self._requested

    def due(self, now: float) -> bool:
        if now < self._retry_at:
            return False
        if self._requested:
            return True
        return (self._live_since_run > 0 or self._tail_due) and (
            now - self._last_run >= self.options.sync_interval
        )

    def seconds_until_due(self, now: float) -> float | None:
        """How long until :meth:`due` can turn true with no other event: 0 when it is due,
        None when only something new can make it due (a live critical event after the
        periodic interval has passed, a request), which the reader then reports."""
        if self._requested:
            return max(0.0, self._retry_at - now)
        periodic = max(self._retry_at, self._last_run + self.options.sync_interval)
        if periodic <= now:
            # due now if critical events came in; else the next one makes it due at once
            return 0.0 if self._live_since_run > 0 or self._tail_due else None
        return periodic - now

    def begin(self, now: float) -> None:
        # A follow-up (settle_time later) takes the entries that were too new for this run.
        # A follow-up gets none of its own: entries too new for it are the next periodic
        # run's (due while live critical events come in), so steady traffic costs one run
        # and one follow-up per sync_interval, not a run every settle_time.
        self._requested_run = not self._follow_up
        # critical events that came in before a follow-up may be too new for it: the next
        # periodic run is due for them even if no other event comes in
        self._tail_due = self._follow_up and self._live_since_run > 0
        self._follow_up = False
        self._requested = False
        self._live_since_run = 0
        self._last_run = now
        self.runs += 1

    def finished(self, now: float) -> None:
        """A catch-up ran to the end. Another follows once ``settle_time`` has passed,
        for the entries that were too new to read, unless none can be left."""
        if self._requested_run and self.options.settle_time > 0:
            self._requested = True
            self._follow_up = True
            self._retry_at = now + self.options.settle_time

    def set_horizon(self, server_time: Any) -> None:
        """Read entries up to ``settle_time`` before the server's ``TIME`` reply."""
        seconds, micros = int(server_time[0]), int(server_time[1])
        horizon_ms = seconds * 1000 + micros // 1000 - int(self.options.settle_time * 1000)
        self._until = str(max(0, horizon_ms))

    def failed(self, now: float) -> None:
        """A catch-up could not reach Redis: try again after ``retry_delay``."""
        self.failures += 1
        self._requested = True
        self._retry_at = now + self.options.retry_delay

    def start_from(self, stored: Any, server_time: Any) -> None:
        """Load the position: the stored cursor, else ``replay_window`` before the server's TIME."""
        if isinstance(stored, bytes) and stored:
            self.cursor = stored.decode()
            self._from = next_stream_id(self.cursor)
            return
        seconds, micros = int(server_time[0]), int(server_time[1])
        start_ms = max(0, seconds * 1000 + micros // 1000 - int(self.options.replay_window * 1000))
        self._from = f"{start_ms}-0"

    def first_page_args(self) -> tuple[str | int, ...]:
        """The catch-up's first command (:data:`CATCH_UP_READ`): TIME and the first page."""
        if self._from is None:
            raise RuntimeError("catch-up position not loaded; call start_from first")
        return (
            "EVAL", CATCH_UP_READ, 1, self.stream_key, self._from,
            int(self.options.settle_time * 1000), self.options.batch,
        )

    def range_args(self) -> tuple[str | int, ...]:
        if self._from is None:
            raise RuntimeError("catch-up position not loaded; call start_from first")
        return ("XRANGE", self.stream_key, self._from, self._until, "COUNT", self.options.batch)

    def settle_range_args(self) -> tuple[str | int, ...]:
        """On close: every entry after the cursor, however new."""
        if self._from is None:
            raise RuntimeError("catch-up position not loaded; call start_from first")
        return ("XRANGE", self.stream_key, self._from, "+", "COUNT", self.options.batch)

    def take(
        self,
        reply: list[Any],
        decode: Callable[[bytes], Envelope],
        tracker: SequenceTracker,
    ) -> tuple[list[Envelope], bool]:
        """The entries of one XRANGE reply to hand on, in stream order, and whether to read on.

        ``replayed`` counts the ones that had been missed; ``pulled_ahead`` the ones
        received live but still queued, handed on now to keep the stream's order."""
        out: list[Envelope] = []
        for entry_id, env in self._entries(reply, decode):
            self._pass(entry_id)
            if env is None:
                continue
            handed_on = self._seen.get(env.id)
            if handed_on:
                self.skipped += 1
                continue
            if (
                handed_on is None
                and tracker.expected(env.publisher) is not None
                and tracker.observe(env.publisher, env.seq) is Verdict.DUPLICATE
            ):
                self.skipped += 1
                continue
            if handed_on is None:
                self.replayed += 1
            else:
                self.pulled_ahead += 1
            self._remember(env.id, True)
            out.append(env)
        return out, len(reply) >= self.options.batch

    def settle(self, reply: list[Any], decode: Callable[[bytes], Envelope]) -> bool:
        """On close: move the cursor over the entries already handed on, up to the first
        that was not (it is replayed at the next start). True if the cursor moved."""
        moved = False
        for entry_id, env in self._entries(reply, decode):
            if env is not None and not self._seen.get(env.id):
                break
            self._pass(entry_id)
            moved = True
        return moved

    def cursor_command(self) -> bytes | None:
        if self.cursor is None:
            return None
        return encode_command(
            "SET", self.cursor_key, self.cursor, "EX", int(self.options.ttl)
        )

    def _entries(
        self, reply: list[Any], decode: Callable[[bytes], Envelope]
    ) -> list[tuple[str, Envelope | None]]:
        out: list[tuple[str, Envelope | None]] = []
        for raw_id, fields in reply:
            entry_id = raw_id.decode()
            env: Envelope | None = None
            payload = _field(fields, STREAM_FIELD)
            if payload is not None:
                try:
                    env = decode(payload)
                except ForgedMessageError:
                    self.forged += 1
                    out.append((entry_id, None))
                    continue
                except MalformedMessageError:
                    env = None
            if env is not None and env.priority < CRITICAL_PRIORITY:
                env = None
            if env is None:
                self.malformed += 1
            out.append((entry_id, env))
        return out

    def _pass(self, entry_id: str) -> None:
        self.cursor = entry_id
        self._from = next_stream_id(entry_id)

    def _remember(self, message_id: str, handed_on: bool) -> None:
        seen = self._seen
        seen[message_id] = handed_on
        if len(seen) > _REMEMBER_IDS:
            seen.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "replay_skipped": self.skipped,
            "replay_pulled_ahead": self.pulled_ahead,
            "replay_runs": self.runs,
            "replay_failures": self.failures,
            "replay_malformed": self.malformed,
            "replay_forged": self.forged,
            "replay_live_duplicates": self.live_duplicates,
            "replay_cursor": self.cursor,
        }


def _field(fields: list[bytes], name: str) -> bytes | None:
    wanted = name.encode()
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == wanted:
            value = fields[i + 1]
            return value if isinstance(value, bytes) else None
    return None
