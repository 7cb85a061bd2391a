"""The envelope every event and message travels in, and its codec.

Encoders and decoders are built once per codec; msgspec validates types and the
priority range while decoding, so a malformed message fails in one place: every
decode failure (a RecursionError from 200k-deep nesting included) comes out as
:class:`MalformedMessageError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from pytest_cfn._errors import InvalidOptionError, MalformedMessageError

Priority = Annotated[int, msgspec.Meta(ge=1, le=9)]
Format = Literal["json", "msgpack"]
FORMATS: tuple[str, ...] = ("json", "msgpack")


class Envelope(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True, gc=False):
    """One event or message.

    ``publisher`` identifies one publishing stream (a bus instance, or a messenger
    and its destination); ``seq`` counts 1, 2, 3... within it, so a receiver can
    count gaps (loss), duplicates and reordering. ``id`` is unique per message and
    stays the same when a publish is retried, so a retry can be de-duplicated.
    ``ts`` is the sender's wall clock in ns (``time.time_ns()``) at publish.

    Not tracked by the garbage collector (``gc=False``): decoding is then some 30 %
    cheaper while envelopes pile up in a queue or a backlog, and there are fewer
    collections. An envelope never refers to itself; do not put one inside its own
    ``data`` (such a cycle would never be collected).
    """

    id: str
    swarm: str
    source: str
    type: str
    priority: Priority
    seq: int
    ts: int
    publisher: str
    correlation_id: str | None = None
    data: Any = None


class Codec:
    """Encodes and decodes envelopes as JSON (default) or MessagePack."""

    __slots__ = ("_decode", "_encode", "_encode_into", "format")

    _encode: Callable[[Any], bytes]
    _encode_into: Callable[[Any, bytearray], None]
    _decode: Callable[[bytes], Envelope]

    def __init__(self, format: str = "json") -> None:
        if format not in FORMATS:
            raise InvalidOptionError(f"codec {format!r} is not known; use one of {FORMATS}")
        self.format = format
        if format == "json":
            encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.json.Encoder()
            self._decode = msgspec.json.Decoder(Envelope).decode
        else:
            encoder = msgspec.msgpack.Encoder()
            self._decode = msgspec.msgpack.Decoder(Envelope).decode
        self._encode = encoder.encode
        self._encode_into = encoder.encode_into

    @property
    def raw_encode(self) -> Callable[[Any], bytes]:
        """msgspec's encoder itself (no wrapper frame per publish)."""
        return self._encode

    @property
    def raw_encode_into(self) -> Callable[[Any, bytearray], None]:
        """msgspec's ``encode_into``: encodes into a reused buffer (no bytes object made)."""
        return self._encode_into

    def encode(self, envelope: Envelope) -> bytes:
        return self._encode(envelope)

    def encode_data(self, data: Any) -> bytes:
        """Encode a payload alone (to check it is serialisable and measure its size)."""
        return self._encode(data)

    @property
    def raw_decode(self) -> Callable[[bytes], Envelope]:
        """msgspec's decoder itself, for a loop that maps its errors with :meth:`malformed`."""
        return self._decode

    def decode(self, payload: bytes) -> Envelope:
        try:
            return self._decode(payload)
        except Exception as exc:
            raise self.malformed(exc) from exc

    def malformed(self, exc: Exception) -> MalformedMessageError:
        """What a failed decode is reported as: every failure is malformed input (a
        RecursionError from deeply nested input or a MemoryError too), never a dead reader."""
        if isinstance(exc, (msgspec.DecodeError, msgspec.ValidationError)):
            error = MalformedMessageError(f"not a valid {self.format} envelope: {exc}")
        else:
            error = MalformedMessageError(
                f"cannot decode as a {self.format} envelope: {type(exc).__name__}: {exc}"
            )
        error.__cause__ = exc
        return error
