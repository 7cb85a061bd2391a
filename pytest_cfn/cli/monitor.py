"""``cfn monitor``: a decoded live stream of events and messages.

What ``redis-cli monitor`` would show, but one readable line per event or
message (or one JSON object per line with ``--json``):

    cfn monitor                                   # every swarm
    cfn monitor --swarm S --type 'cfn.loop.*'     # one swarm's loop events and messages
    cfn monitor --swarm S --json --count 10       # stop after 10

On Redis Cluster (any node's URL) it needs ``--swarm``: sharded pub/sub has no
patterns, so it SSUBSCRIBEs the swarm's event shard channel and its inbox on the
master of the swarm's slot (messages the swarm sends go to the recipients' inboxes).

Runs until Ctrl-C, ``--count`` lines or ``--duration`` seconds. Messages
published while it is reconnecting are lost, as for any pub/sub subscriber.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.ids import type_matches, validate_swarm_id, validate_type_pattern
from pytest_cfn._core.shard_layout import ShardChannelNames
from pytest_cfn._errors import (
    CfnError,
    ConnectionLostError,
    InvalidOptionError,
    MalformedMessageError,
)

if TYPE_CHECKING:
    from pytest_cfn._sync.shard_route import ShardRoute
from pytest_cfn.cli._swarm_args import (
    add_namespace,
    clock,
    parse_count,
    parse_seconds,
    require_url,
)

MAX_DATA_CHARS = 300
_RECENT_IDS = 4096


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "monitor",
        parents=[common],
        help="watch events and messages live, decoded",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--swarm", help="only this swarm's events and messages to or from it")
    parser.add_argument(
        "--type", dest="type_pattern", default="*",
        help="only events whose type matches this pattern ('agent.*', 'cfn.loop.phase.start'; "
        "default '*'); messages are all shown, --no-messages leaves them out",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", help="stop after this many lines")
    parser.add_argument("--duration", help="stop after this many seconds")
    parser.add_argument("--no-events", action="store_true", help="leave out Event Bus events")
    parser.add_argument("--no-messages", action="store_true", help="leave out Messenger messages")
    add_namespace(parser)
    parser.set_defaults(func=run)


class LineMaker:
    """Turns raw pub/sub messages into output lines (decoding JSON and MessagePack)."""

    def __init__(self, channels: ChannelNames, type_pattern: str, as_json: bool) -> None:
        self._channels = channels
        self._type_pattern = type_pattern
        self._as_json = as_json
        self._codecs = {b"json": Codec("json"), b"msgpack": Codec("msgpack")}
        self._recent: deque[str] = deque(maxlen=_RECENT_IDS)
        self._recent_set: set[str] = set()

    def line(self, channel: bytes, payload: bytes) -> str | None:
        name = channel.decode("utf-8", "replace")
        event = self._channels.parse_event(name)
        if event is not None:
            kind, where = "event", {"channel_swarm": event[0]}
        else:
            message = self._channels.parse_message(name)
            if message is None:
                return self._malformed(name, "not an event or message channel")
            kind, where = "message", {"from": message[0], "to": message[1]}
        try:
            env = self._decode(payload)
        except MalformedMessageError as exc:
            return self._malformed(name, str(exc))
        if kind == "event" and not type_matches(self._type_pattern, env.type):
            return None
        if kind == "message":
            if env.id in self._recent_set:
                return None  # a message within one swarm matches both of its patterns
            self._remember(env.id)
        return self._format(kind, env, where)

    def _decode(self, payload: bytes) -> Envelope:
        fmt = b"json" if payload[:1] in (b"{", b" ") else b"msgpack"
        return self._codecs[fmt].decode(payload)

    def _remember(self, message_id: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(message_id)
        self._recent_set.add(message_id)

    def _format(self, kind: str, env: Envelope, where: dict[str, str]) -> str:
        if self._as_json:
            record: dict[str, Any] = {"kind": kind, **where}
            record.update(
                id=env.id, swarm=env.swarm, source=env.source, type=env.type,
                priority=env.priority, seq=env.seq, ts=env.ts, publisher=env.publisher,
                correlation_id=env.correlation_id, data=env.data,
            )
            return json.dumps(record, default=repr)
        data = json.dumps(env.data, default=repr, separators=(",", ":"))
        if len(data) > MAX_DATA_CHARS:
            data = data[: MAX_DATA_CHARS - 3] + "..."
        if kind == "event":
            route = env.swarm if where["channel_swarm"] == env.swarm else (
                f"{env.swarm}->{where['channel_swarm']}"
            )
        else:
            route = f"{where['from'] or env.swarm}->{where['to']}"  # cluster: the envelope's
        cid = f"  cid={env.correlation_id}" if env.correlation_id else ""
        return (
            f"{clock(env.ts)}  {kind:<7}  {route}  {env.type}  p{env.priority}  "
            f"{env.source}#{env.seq}{cid}  {data}"
        )

    def _malformed(self, channel: str, reason: str) -> str:
        if self._as_json:
            return json.dumps({"kind": "malformed", "channel": channel, "reason": reason})
        return f"{time.strftime('%H:%M:%S')}  malformed  {channel}  {reason}"


def patterns_for(
    channels: ChannelNames, swarm: str | None, type_pattern: str, events: bool, messages: bool
) -> list[str]:
    prefix = channels.prefix
    out: list[str] = []
    if events:
        out.append(f"{prefix}event:{swarm or '*'}:{type_pattern}")
    if messages:
        if swarm:
            out += [f"{prefix}message:{swarm}:*", f"{prefix}message:*:{swarm}"]
        else:
            out.append(f"{prefix}message:*")
    return out


def _cluster_route(address: ServerAddress, swarm: str | None) -> ShardRoute | None:
    """On Redis Cluster, the route to ``swarm``'s master (``--swarm`` required there)."""
    from pytest_cfn._sync.shard_route import ShardRoute, is_cluster

    try:
        found = is_cluster(address, 3.0)
    except (OSError, TimeoutError, CfnError) as exc:
        raise ConnectionLostError(f"cannot reach Redis at {address.describe()}: {exc}") from None
    if not found:
        return None
    if swarm is None:
        raise InvalidOptionError(
            "on Redis Cluster give --swarm SWARM: sharded pub/sub has no patterns, so one "
            "monitor watches one swarm's events and inbox"
        )
    return ShardRoute(address, swarm, 3.0)


def run(args: argparse.Namespace) -> int:
    from pytest_cfn._sync.subscriber import Subscriber

    swarm = validate_swarm_id(args.swarm) if args.swarm is not None else None
    type_pattern = validate_type_pattern(args.type_pattern)
    count = parse_count(args.count, "--count") if args.count is not None else None
    duration = parse_seconds(args.duration, "--duration") if args.duration is not None else None
    if args.no_events and args.no_messages:
        raise InvalidOptionError("--no-events and --no-messages together leave nothing to show")
    _, address = require_url(args)
    channels = ChannelNames(args.namespace)
    route = _cluster_route(address, swarm)
    if route is not None:
        channels = ShardChannelNames(args.namespace)
    maker = LineMaker(channels, type_pattern, args.json)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()

    def sink(items: list[tuple[bytes, bytes]]) -> None:
        for channel, payload in items:
            line = maker.line(channel, payload)
            if line is not None:
                lines.put(line)

    def reconnected(_: int) -> None:
        print("cfn monitor: reconnected; anything published meanwhile was missed",
              file=sys.stderr, flush=True)

    if route is not None and swarm is not None:
        patterns = [name for name, wanted in (
            (channels.event_pattern(swarm), not args.no_events),
            (channels.inbox_pattern(swarm), not args.no_messages),
        ) if wanted]
    else:
        patterns = patterns_for(channels, swarm, type_pattern, not args.no_events,
                                not args.no_messages)
    subscriber = Subscriber(
        address, f"cfn:monitor:{swarm or 'all'}", sink, on_reconnect=reconnected,
        connect_timeout=3.0, route=route,
    )
    try:
        try:
            for pattern in patterns:
                subscriber.psubscribe(pattern, timeout=3.0)
        except (OSError, TimeoutError) as exc:
            raise ConnectionLostError(
                f"cannot reach Redis at {address.describe()}: {exc}"
            ) from None
        print(f"cfn monitor: watching {', '.join(patterns)} on {address.describe()}",
              file=sys.stderr, flush=True)
        return _print_lines(lines, count, duration)
    finally:
        subscriber.close()


def _print_lines(lines: queue.SimpleQueue[str], count: int | None, duration: float | None) -> int:
    deadline = None if duration is None else time.monotonic() + duration
    printed = 0
    while count is None or printed < count:
        wait = 0.5
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = min(wait, left)
        try:
            line = lines.get(timeout=wait)
        except queue.Empty:
            continue
        print(line, flush=True)
        printed += 1
    return 0
