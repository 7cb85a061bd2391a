"""A command answered ``ASK`` mid-migration, sent on to the importing master after ``ASKING``.

While a slot migrates, its owner answers ``ASK slot host:port`` for a key it no longer has
(already moved to the importing master). The calls a bus makes on its publisher connection
and waits for — the catch-up's reads (``XRANGE`` of the critical stream, ``GET`` of the
stored cursor) and the Messenger's ``stored_history`` (``LRANGE`` of the history list) —
used to treat that like a ``MOVED``: reconnect to the owner and send again, which answered
``ASK`` again, until the migration ended (converging with backoff, or failing once the
retries ran out); so did the catch-up's write of its cursor (``SET``). Now the publisher
hands such a command here (``Publisher.asked_calls``): it
is sent once to the importing master on a short-lived connection, ``ASKING`` and the command
in one write, both replies read, the connection closed, and its reply is the call's. No
connection is kept: migrations are rare and short, and a bus keeps its two connections
between them. Anything else (a ``MOVED``, the importing master unreachable, ``ASKING``
refused) returns ``(False, None)`` and the publisher takes its old path.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from pytest_cfn._async.connection import RespConnection
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._core.resp import ServerReplyError, encode_command
from pytest_cfn._core.shard_layout import redirect, redirect_target
from pytest_cfn._errors import CfnError

log = logging.getLogger("pytest_cfn.cluster")

_ASKING = encode_command("ASKING")


class AskedCalls:
    """Follows ASK replies to a publisher's calls (see the module docstring)."""

    __slots__ = ("failed", "followed", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.followed = 0
        """Calls answered by the importing master."""
        self.failed = 0
        """ASK replies that could not be followed (left to the reconnect-and-retry path)."""

    async def follow(
        self, command: bytes, reply: str, answered: ServerAddress, name: str
    ) -> tuple[bool, Any]:
        """``(True, the command's reply from the importing master)`` for an ``ASK`` reply
        from the node at ``answered`` (its login and TLS settings are kept), else
        ``(False, None)``. ``name`` names the short-lived connection (the publisher's)."""
        parsed = redirect(reply)
        if parsed is None or parsed[0] != "ASK":
            return False, None
        host, port = redirect_target(parsed[2], answered.host)
        target = replace(answered, host=host, port=port, db=0)
        conn = RespConnection(target, name, connect_timeout=self.timeout,
                              socket_timeout=self.timeout)
        try:
            await conn.connect()
            await conn.write(_ASKING + command)
            asking = await conn.read_reply(self.timeout)
            answer = await conn.read_reply(self.timeout)
        except (CfnError, OSError) as exc:
            self.failed += 1
            log.info("could not follow %s to %s: %s", reply, target.describe(), exc)
            return False, None
        finally:
            await conn.close()
        if isinstance(asking, ServerReplyError):
            self.failed += 1
            log.info("%s refused ASKING: %s", target.describe(), asking)
            return False, None
        self.followed += 1
        return True, answer
