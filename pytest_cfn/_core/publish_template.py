"""``PUBLISH`` commands written straight from an event's fields (the Event Bus's hot path).

Theory of operation. Building an :class:`~pytest_cfn._core.envelope.Envelope` struct,
encoding it, and then formatting the ``PUBLISH`` command around the JSON costs three
objects and two copies of the payload per publish. For one (channel, event type,
priority) every byte of that command is the same each time except five: the payload's
length, the sequence number (twice: in ``id`` and ``seq``), the wall clock ``ts`` and
the encoded ``data``. So those bytes are encoded once, with the same msgspec JSON
encoder, into a bytes format with holes for the five (:class:`PublishTemplate`). A
publish then encodes only its data and fills the holes in one format operation.

The output is byte for byte what encoding the Envelope and :func:`encode_publish` give
(JSON codec, no signature, no correlation id, field order and ``omit_defaults`` as the
struct has them): ``tests/test_publish_template.py`` compares the two. Anything else
(MessagePack, a signing bus, a correlation id, a critical publish that is also stored)
takes the Envelope path in :class:`~pytest_cfn._core.outbound.OutboundPlanner`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_cfn._core.resp import publish_prefix

TS_DIGITS = 19
"""Digits of ``time.time_ns()`` from 2001-09-09 until 2286 (``TS_LOW <= ts < TS_HIGH``):
the length of nearly every publish's ``ts``; any other is measured (:func:`ts_digits`)."""
TS_LOW = 10 ** (TS_DIGITS - 1)
TS_HIGH = 10**TS_DIGITS


def ts_digits(ts: int) -> int:
    """How many bytes ``b"%d" % ts`` is."""
    if TS_LOW <= ts < TS_HIGH:
        return TS_DIGITS
    return len(b"%d" % ts)


class PublishTemplate:
    """The ``PUBLISH`` command of one (channel, event type, priority) with holes.

    ``with_data % (size, seq, seq, ts, data_json)`` is the whole command, where ``size``
    is the payload's length, ``with_data_base + 2 * len(id) + ts_digits(ts) +
    len(data_json)`` (``id`` being ``f"{publisher}-{seq}"``, whose length counts the
    sequence number's digits).
    ``without_data`` and its base are the same for ``data=None``, which the envelope
    omits (pass ``b""``)."""

    __slots__ = (
        "channel",
        "event_type",
        "priority",
        "with_data",
        "with_data_base",
        "without_data",
        "without_data_base",
    )

    def __init__(
        self,
        encode: Callable[[Any], bytes],
        channel: str,
        swarm: str,
        source: str,
        publisher: str,
        event_type: str,
        priority: int,
    ) -> None:
        self.channel = channel
        self.event_type = event_type
        self.priority = priority
        # {"id":"<publisher>-<seq>","swarm":..,"source":..,"type":..,"priority":<p>,
        #  "seq":<seq>,"ts":<ts>,"publisher":..[,"data":<data>]}   (Envelope's field order)
        head = b'{"id":"' + encode(publisher)[1:-1] + b"-"
        middle = (
            b'","swarm":' + encode(swarm)
            + b',"source":' + encode(source)
            + b',"type":' + encode(event_type)
            + b',"priority":' + encode(priority)
            + b',"seq":'
        )
        ts_key = b',"ts":'
        tail = b',"publisher":' + encode(publisher)
        data_key = b',"data":'
        command_head = _literal(publish_prefix(channel.encode())) + b"%d\r\n"
        holes = _literal(head) + b"%d" + _literal(middle) + b"%d" + ts_key + b"%d"
        self.without_data = command_head + holes + _literal(tail) + b"%b}\r\n"
        self.with_data = command_head + holes + _literal(tail + data_key) + b"%b}\r\n"
        # the id's text is publisher, "-", seq: 2 * len(id) counts seq's digits twice
        fixed = len(head) + len(middle) + len(ts_key) + len(tail) + 1 - 2 * (len(publisher) + 1)
        self.without_data_base = fixed
        self.with_data_base = fixed + len(data_key)


def _literal(raw: bytes) -> bytes:
    """``raw`` as literal text in a bytes format (``%`` doubled)."""
    return raw.replace(b"%", b"%%")
