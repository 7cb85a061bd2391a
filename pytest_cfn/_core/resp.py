"""RESP2 command encoding and reply parsing (hiredis), free of IO.

The bus speaks RESP2 on purpose: it works with every server from 2.8 up (servers
before 6 refuse ``HELLO``), and RESP2 pub/sub replies are plain arrays that
hiredis parses in bulk at well under a microsecond each.
"""

from __future__ import annotations

from typing import Any

import hiredis

from pytest_cfn._errors import ServerReplyError

__all__ = ["ReplyParser", "ServerReplyError", "encode_command", "encode_publish"]

_PUBLISH_HEAD = b"*3\r\n$7\r\nPUBLISH\r\n$"


def encode_command(*args: str | bytes | int) -> bytes:
    """RESP2 multi-bulk encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            raw = arg.encode()
        elif isinstance(arg, int):
            raw = b"%d" % arg
        else:
            raw = arg
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


def encode_publish(channel: bytes, payload: bytes) -> bytes:
    """``PUBLISH channel payload``; the hot path, so one format operation."""
    return b"%b%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        _PUBLISH_HEAD,
        len(channel),
        channel,
        len(payload),
        payload,
    )


class ReplyParser:
    """Feeds raw bytes in, hands complete replies out. Error replies come back as
    :class:`ServerReplyError` instances (not raised) so a pipeline can match them
    to the command that caused them."""

    __slots__ = ("_gets", "_reader")

    NOT_ENOUGH = False

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ServerReplyError)
        self._gets = self._reader.gets

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def get(self) -> Any:
        """The next complete reply, or ``False`` when more bytes are needed."""
        return self._gets(False)

    def reset(self) -> None:
        self._reader = hiredis.Reader(replyError=ServerReplyError)
        self._gets = self._reader.gets
