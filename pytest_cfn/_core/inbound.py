"""Inbound processing: raw pub/sub message in, checked envelope (or nothing) out.

Signature checks, decoding, the channel/envelope consistency check, sequence
tracking and the set-aside of malformed and forged messages all happen here, so
both front ends count loss, duplicates, malformed and forged input the same way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.critical_log import CRITICAL_PRIORITY
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.sequence import SequenceTracker, Verdict
from pytest_cfn._core.signing import EnvelopeSigner, describe_undecodable
from pytest_cfn._errors import ForgedMessageError

Kind = Literal["event", "message"]
_MAX_KEPT_BYTES = 4096


@dataclass(frozen=True)
class MalformedMessage:
    """A message set aside instead of crashing the subscriber."""

    channel: str
    payload: bytes
    reason: str


class InboundProcessor:
    """Decodes and checks messages that arrive on one bus's subscription."""

    __slots__ = (
        "_channel_cache",
        "_channels",
        "_codec",
        "_decode",
        "_kind",
        "_signer",
        "_swarm",
        "_tracker_observe",
        "after_tracking",
        "before_tracking",
        "forged_count",
        "malformed",
        "malformed_count",
        "received",
        "tracker",
    )

    def __init__(
        self,
        codec: Codec,
        channels: ChannelNames,
        kind: Kind,
        swarm: str,
        *,
        keep_malformed: int = 100,
        sequence_window: int = 1024,
        signer: EnvelopeSigner | None = None,
    ) -> None:
        self._codec = codec
        self._decode = codec.raw_decode
        self._signer = signer
        self._channels = channels
        self._kind = kind
        self._swarm = swarm
        self.tracker = SequenceTracker(window=sequence_window)
        self._tracker_observe = self.tracker.observe
        self._channel_cache: dict[bytes, tuple[str, str] | None] = {}
        self.malformed: deque[MalformedMessage] = deque(maxlen=keep_malformed)
        self.malformed_count = 0
        self.forged_count = 0
        self.received = 0
        self.before_tracking: Callable[[Envelope], bool] | None = None
        """Optional check of critical envelopes between decoding and sequence tracking;
        False drops the envelope untracked (a live copy of a critical event a catch-up
        handed on)."""
        self.after_tracking: Callable[[Envelope], bool] | None = None
        """Optional check of critical envelopes after sequence tracking; False drops the
        envelope (a catch-up already replayed it)."""

    def process(self, channel: bytes, payload: bytes) -> Envelope | None:
        """The envelope to dispatch, or None if it was set aside or a duplicate."""
        out = self.process_many([(channel, payload)])
        return out[0] if out else None

    def process_many(
        self,
        items: list[tuple[bytes, bytes]],
        intercept: Callable[[Envelope], bool] | None = None,
    ) -> list[Envelope]:
        """The envelopes to dispatch of a chunk's ``(channel, payload)`` messages, in order
        (one call per chunk: the reader's hot path). ``intercept(env)`` sees each checked
        envelope; True takes it away. Whatever a message's checks raise sets that message
        aside; the rest go on."""
        out: list[Envelope] = []
        append = out.append
        cache = self._channel_cache
        decode = self._decode
        signer = self._signer
        events = self._kind == "event"
        before = self.before_tracking
        after = self.after_tracking
        observe = self._tracker_observe
        next_seq = self.tracker.next_seq
        duplicate = Verdict.DUPLICATE
        received = 0
        in_order = 0
        for channel, payload in items:
            try:
                try:
                    parsed = cache[channel]
                except KeyError:
                    parsed = self._parse_channel(channel)
                if parsed is None:
                    self._set_aside(
                        channel, payload, "channel name is not a valid channel of this bus"
                    )
                    continue
                body = payload
                if signer is not None:
                    try:
                        kid, body = signer.open_frame(channel, payload)
                    except ForgedMessageError as exc:
                        self._forged(channel, payload, exc)
                        continue
                try:
                    env = decode(body)
                except Exception as exc:
                    error = self._codec.malformed(exc)
                    self._set_aside(channel, payload, describe_undecodable(payload, error))
                    continue
                if signer is not None and signer.binds_keys:
                    try:
                        signer.check_sender(kid, env.swarm)
                    except ForgedMessageError as exc:
                        self._forged(channel, payload, exc)
                        continue
                if events:
                    # The channel's swarm is ours (checked when it was parsed); the envelope's
                    # swarm is the sender's, which differs when a route override sent it here.
                    # "": a shard channel, whose type is in the envelope alone.
                    if parsed[1] and env.type != parsed[1]:
                        self._set_aside(
                            channel,
                            payload,
                            f"envelope says type {env.type!r}, channel says type {parsed[1]!r}",
                        )
                        continue
                elif parsed[0] and env.swarm != parsed[0]:  # "": an inbox shard channel
                    self._set_aside(
                        channel,
                        payload,
                        f"envelope says sender swarm {env.swarm!r}, channel says {parsed[0]!r}",
                    )
                    continue
                critical = env.priority >= CRITICAL_PRIORITY
                if critical and before is not None and not before(env):
                    continue
                publisher = env.publisher
                seq = env.seq
                if next_seq.get(publisher) == seq:  # observe()'s in-order path, inline
                    next_seq[publisher] = seq + 1
                    in_order += 1
                elif observe(publisher, seq) is duplicate:
                    continue
                received += 1
                if critical and after is not None and not after(env):
                    continue
                if intercept is not None and intercept(env):
                    continue
            except Exception as exc:
                self.set_aside(channel, payload, exc)
                continue
            append(env)
        self.received += received
        self.tracker.received += in_order
        return out

    def use_channels(self, channels: ChannelNames) -> None:
        """Switch channel layout (to Redis Cluster's shard channels, before any message)."""
        self._channels = channels
        self._channel_cache.clear()

    def _parse_channel(self, channel: bytes) -> tuple[str, str] | None:
        try:
            text = channel.decode()
        except UnicodeDecodeError:
            parsed = None
        else:
            if self._kind == "event":
                parsed = self._channels.parse_event(text)
                if parsed is not None and parsed[0] != self._swarm:
                    parsed = None
            else:
                parsed = self._channels.parse_message(text)
                if parsed is not None and parsed[1] != self._swarm:
                    parsed = None
        if len(self._channel_cache) > 10_000:
            self._channel_cache.clear()
        self._channel_cache[channel] = parsed
        return parsed

    def _set_aside(self, channel: bytes, payload: bytes, reason: str) -> None:
        self.malformed_count += 1
        self._keep(channel, payload, reason)

    def set_aside(self, channel: bytes, payload: bytes, error: BaseException) -> None:
        """Count and keep a message whose processing raised (never kill the reader)."""
        reason = f"could not be processed: {type(error).__name__}: {error}"
        self._set_aside(channel, payload, reason)

    def _forged(self, channel: bytes, payload: bytes, error: ForgedMessageError) -> None:
        self.forged_count += 1
        self._keep(channel, payload, f"forged: {error}")

    def _keep(self, channel: bytes, payload: bytes, reason: str) -> None:
        self.malformed.append(
            MalformedMessage(channel.decode("utf-8", "replace"), payload[:_MAX_KEPT_BYTES], reason)
        )

    def stats(self) -> dict[str, int]:
        seq = self.tracker.stats()
        return {
            "received": self.received,
            "malformed": self.malformed_count,
            "forged": self.forged_count,
            "anomalies": int(seq["anomalies"]),
            "resyncs": int(seq["resyncs"]),
            "lost": int(seq["lost"]),
            "duplicates": int(seq["duplicates"]),
            "reordered": int(seq["reordered"]),
        }
