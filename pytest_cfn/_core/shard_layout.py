"""Channel and key layout on Redis Cluster: one shard channel per swarm, in the swarm's slot.

Theory of operation. Classic ``PUBLISH`` in a cluster is broadcast to every node
over the cluster bus, so its cost grows with the cluster instead of shrinking;
sharded pub/sub (``SPUBLISH`` / ``SSUBSCRIBE``, Redis 7) keeps a channel on the
shard that owns its slot. ``SSUBSCRIBE`` has no patterns, so the layout is:

- one shard channel per swarm, ``[ns:]event:{swarm}``: the hash tag ``{swarm}``
  puts it in slot ``key_slot(swarm)``; the event type travels in the envelope and
  handlers are matched locally, as on one server (where the bus already
  subscribes one pattern per swarm and filters types in-process);
- the swarm's keys — critical stream ``[ns:]critical:{swarm}`` and its cursors
  ``[ns:]critical-cursor:{swarm}:{agent}`` — carry the same hash tag, so the
  append-and-publish script (XADD + EXPIRE + SPUBLISH) touches one slot and stays
  one server-side step (one declared key, the stream; see the scripts below), and
  a catch-up reads the stream from the same shard;
- a bus therefore needs one shard per swarm: its publisher and subscriber both
  talk to the master that owns ``key_slot(swarm)``.

The Messenger's ``message:{from}:{to}`` becomes one inbox shard channel per
recipient, ``[ns:]message:{to}``: a receiver cannot subscribe a pattern over
senders, so the sender travels in the envelope (as the event type does) and
the channel names the recipient; its history list ``[ns:]history:{to}`` shares
the slot, so publish-and-keep stays one script. A Messenger's subscriber is on
its own swarm's master; its sends go to each recipient's master, one publisher
connection per master (``_async.shard_senders``). What a single server's channel
name enforced (the sender swarm, and ACL rules per sender) is then the
envelope's word only: sign envelopes (``signing_key``) where senders must be
proved.

A redirect (``MOVED`` / ``ASK``) or a ``sunsubscribe`` push (Redis 7 sends it
when the slot of a subscribed shard channel moves) means: ask the cluster again
who owns the slot and reconnect there.
"""

from __future__ import annotations

from redis.crc import key_slot

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.critical_log import CriticalOptions, CriticalStream
from pytest_cfn._core.ids import validate_swarm_id
from pytest_cfn._core.resp import encode_command

SLOTS = 16384
SWARM_KEYS = frozenset({"critical", "critical-cursor", "history"})
"""Keys whose second part is a swarm id and that live in the swarm's slot."""
_PUBLISH_HEAD = b"*3\r\n$7\r\nPUBLISH\r\n"
_SPUBLISH_HEAD = b"*3\r\n$8\r\nSPUBLISH\r\n"
# One declared key each (the stream, the history list); the shard channel, in the same
# slot, is an argument. Declared as a second key it would be a key that never exists, and
# during a slot migration Redis answers a command with a missing key among several
# TRYAGAIN on both masters until the migration ends; with one key it answers ASK and
# the importing master runs it after ASKING.
APPEND_AND_SPUBLISH = """\
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'envelope', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('SPUBLISH', ARGV[4], ARGV[3])
"""
HISTORY_AND_SPUBLISH = """\
local n = redis.call('SPUBLISH', ARGV[4], ARGV[1])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return n
"""


def swarm_slot(swarm: str) -> int:
    """The cluster slot of a swarm's shard channel and keys (``CLUSTER KEYSLOT {swarm}``)."""
    return int(key_slot(f"{{{swarm}}}".encode()))


class ShardChannelNames(ChannelNames):
    """``[ns:]event:{swarm}`` shard channels and hash-tagged swarm keys (see module doc)."""

    def event(self, swarm: str, event_type: str) -> str:
        return f"{self.prefix}event:{{{swarm}}}"

    def event_pattern(self, swarm: str) -> str:
        """Not a pattern on a cluster: the swarm's one shard channel (SSUBSCRIBE)."""
        return f"{self.prefix}event:{{{swarm}}}"

    def message(self, from_swarm: str, to_swarm: str) -> str:
        """The recipient's inbox shard channel; the sender is the envelope's swarm."""
        return f"{self.prefix}message:{{{to_swarm}}}"

    def inbox_pattern(self, to_swarm: str) -> str:
        """Not a pattern on a cluster: the recipient's one inbox shard channel."""
        return f"{self.prefix}message:{{{to_swarm}}}"

    def parse_message(self, channel: str) -> tuple[str, str] | None:
        """``("", to_swarm)`` of an inbox shard channel: the sender is the envelope's."""
        swarm = self._tagged(self._strip(channel, "message:"))
        return None if swarm is None else ("", swarm)

    def key(self, *parts: str) -> str:
        if len(parts) >= 2 and parts[0] in SWARM_KEYS:
            parts = (parts[0], f"{{{parts[1]}}}", *parts[2:])
        return super().key(*parts)

    def parse_event(self, channel: str) -> tuple[str, str] | None:
        """``(swarm, "")`` of a shard channel: the type is the envelope's."""
        swarm = self._tagged(self._strip(channel, "event:"))
        return None if swarm is None else (swarm, "")

    @staticmethod
    def _tagged(rest: str | None) -> str | None:
        """The valid swarm id of a ``{swarm}`` channel tail, else None."""
        if rest is None or len(rest) < 3 or rest[0] != "{" or rest[-1] != "}":
            return None
        try:
            return validate_swarm_id(rest[1:-1])
        except ValueError:
            return None


class ShardCriticalStream(CriticalStream):
    """Append-and-publish with SPUBLISH on the stream's slot (the channel is an argument)."""

    def __init__(self, channels: ShardChannelNames, options: CriticalOptions) -> None:
        super().__init__(channels, options)

    def append_and_publish(self, channel: str, payload: bytes) -> bytes:
        return encode_command(
            "EVAL", APPEND_AND_SPUBLISH, 1, self.key_for(channel),
            self._length, self._ttl, payload, channel,
        )


def publish_with_shard_history(
    key: str, channel: str, payload: bytes, size: int, ttl: float
) -> bytes:
    """SPUBLISH to an inbox and keep the message in its history list, in one script on
    the list's slot (the recipient's, as the channel's)."""
    return encode_command(
        "EVAL", HISTORY_AND_SPUBLISH, 1, key, payload, max(size, 1), int(ttl), channel
    )


def as_spublish(command: bytes) -> bytes:
    """A ``PUBLISH channel payload`` command rewritten as ``SPUBLISH`` (same arguments)."""
    if not command.startswith(_PUBLISH_HEAD):
        raise ValueError("not an encoded PUBLISH command")
    return _SPUBLISH_HEAD + command[len(_PUBLISH_HEAD):]


def redirect(reply: object) -> tuple[str, int, str] | None:
    """``(kind, slot, "host:port")`` of a ``MOVED`` / ``ASK`` error reply, else None."""
    text = str(reply)
    if not text.startswith(("MOVED ", "ASK ")):
        return None
    parts = text.split()
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= SLOTS:
        return None
    port = parts[2].rpartition(":")[2]
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return parts[0], int(parts[1]), parts[2]


def redirect_target(where: str, default_host: str) -> tuple[str, int]:
    """``(host, port)`` of a redirect's ``host:port``; an empty or ``?`` host (a node that
    announces no endpoint) means the host of the node that answered."""
    host, _, port = where.rpartition(":")
    return (host if host not in ("", "?") else default_host), int(port)
