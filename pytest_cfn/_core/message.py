"""What a Messenger handler receives: an envelope plus who sent it and to whom.

Inter-swarm messages travel in the same :class:`Envelope` as events; the
envelope's ``type`` says which of the Messenger's three kinds it is, so a
request, its reply and a plain message can share one channel. The sender swarm
is the envelope's ``swarm``, which the inbound check has already matched
against the ``message:{from}:{to}`` channel it arrived on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.envelope import Envelope
from pytest_cfn._core.resp import encode_command
from pytest_cfn._errors import InvalidOptionError, MalformedMessageError

MESSAGE = "message"
REQUEST = "request"
REPLY = "reply"
REPLY_ERROR = "reply.error"
MESSAGE_TYPES = (MESSAGE, REQUEST, REPLY, REPLY_ERROR)
DEFAULT_HISTORY_SIZE = 100


class Message:
    """One message sent or received by a Messenger (read-only)."""

    __slots__ = ("envelope", "to")

    def __init__(self, envelope: Envelope, to: str) -> None:
        self.envelope = envelope
        self.to = to

    @property
    def sender(self) -> str:
        """The swarm that sent it (checked against the channel it came on)."""
        return self.envelope.swarm

    @property
    def agent(self) -> str:
        """The agent within the sender swarm."""
        return self.envelope.source

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def data(self) -> Any:
        return self.envelope.data

    @property
    def priority(self) -> int:
        return self.envelope.priority

    @property
    def seq(self) -> int:
        return self.envelope.seq

    @property
    def ts(self) -> int:
        """The sender's wall clock at send, in ns since the epoch."""
        return self.envelope.ts

    @property
    def publisher(self) -> str:
        return self.envelope.publisher

    @property
    def correlation_id(self) -> str | None:
        return self.envelope.correlation_id

    @property
    def is_request(self) -> bool:
        return self.envelope.type == REQUEST

    @property
    def is_reply(self) -> bool:
        return self.envelope.type in (REPLY, REPLY_ERROR)

    def to_dict(self) -> dict[str, Any]:
        """Plain fields, e.g. for ``json.dumps`` or a log line."""
        env = self.envelope
        return {
            "id": env.id,
            "sender": env.swarm,
            "to": self.to,
            "agent": env.source,
            "type": env.type,
            "priority": env.priority,
            "seq": env.seq,
            "ts": env.ts,
            "correlation_id": env.correlation_id,
            "data": env.data,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.envelope == other.envelope and self.to == other.to

    def __hash__(self) -> int:
        return hash((self.envelope.id, self.to))

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id!r}, sender={self.sender!r}, to={self.to!r}, "
            f"type={self.type!r}, priority={self.priority}, data={self.data!r})"
        )


class MessageHistory:
    """The last ``size`` messages sent and received, oldest first."""

    __slots__ = ("_items",)

    def __init__(self, size: int = DEFAULT_HISTORY_SIZE) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidOptionError(
                f"history_size must be an integer >= 0 (0 keeps no history), got {size!r}"
            )
        self._items: deque[Message] = deque(maxlen=size)

    @property
    def size(self) -> int:
        return self._items.maxlen or 0

    def add(self, message: Message) -> None:
        self._items.append(message)

    def discard(self, message: Message) -> None:
        """Take back ``message`` (added, then never sent), if it is still kept: searched from
        the newest end, where it is unless other messages came in meanwhile."""
        items = self._items
        for index in range(len(items) - 1, -1, -1):
            if items[index] is message:
                del items[index]
                return

    def snapshot(self) -> list[Message]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


def decode_stored(
    entries: list[bytes], decode: Callable[[bytes], Envelope], to: str
) -> list[Message]:
    """Messages from an ``LRANGE`` of a history list (newest first there), oldest first,
    with undecodable entries and repeats (a retried push) left out."""
    out: list[Message] = []
    seen: set[str] = set()
    for raw in reversed(entries):
        try:
            env = decode(raw)
        except MalformedMessageError:
            continue
        if env.id in seen:
            continue
        seen.add(env.id)
        out.append(Message(env, to))
    return out


HISTORY_SCRIPT = """\
local n = redis.call('PUBLISH', ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return n
"""


def history_key(channels: ChannelNames, swarm: str) -> str:
    """The Redis list of the last messages addressed to ``swarm``."""
    return channels.key("history", swarm)


def publish_with_history(
    key: str, channel: str, payload: bytes, size: int, ttl: float
) -> bytes:
    """One command that publishes and keeps the message in the recipient's history list
    (LPUSH + LTRIM + EXPIRE), so a restarted recipient can read what it missed."""
    return encode_command("EVAL", HISTORY_SCRIPT, 1, key, channel, payload, max(size, 1), int(ttl))
