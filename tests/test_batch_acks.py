"""A batch's acknowledgements are read back a little at a time, in step with its size.

The load harness writes a round of ten publishes per batch, a thousand rounds a second. The
publisher used to let 4,000 commands go unacknowledged whatever the batch size and then read
2,000 of them in one go: every 200th write held the sender 0.5 ms (traced in the harness, the
latency's p99 tail). Now a batch keeps a few of its own size in flight (at least 256 commands)
and each write reads back at most two batches' worth, sync and asyncio alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from frontends import Frontend

ROUNDS = 600
PER_ROUND = 10
LIMIT = 256  # AUTO_MAX_COMMANDS: the least a batch may keep in flight
ACK_WINDOW = 64


def test_small_batches_read_their_acknowledgements_a_little_at_a_time(
    fe: Frontend, redis_server: Any, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    pub.connect()
    publisher = (pub if fe.loop is None else pub._target)._engine.publisher
    cls = type(publisher)
    original = cls._read_acks
    reads: list[int] = []  # acknowledgements taken by each read between the batches

    def note(me: Any, before: int) -> None:
        if me is publisher:
            reads.append(before - len(me._in_flight))

    if asyncio.iscoroutinefunction(original):
        async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            before = len(self._in_flight)
            try:
                return await original(self, *args, **kwargs)
            finally:
                note(self, before)

        monkeypatch.setattr(cls, "_read_acks", counted_async)
    else:
        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            before = len(self._in_flight)
            try:
                return original(self, *args, **kwargs)
            finally:
                note(self, before)

        monkeypatch.setattr(cls, "_read_acks", counted)
    peak = 0
    for round_index in range(ROUNDS):
        with pub.batch():
            for i in range(PER_ROUND):  # one critical publish a round: acks parsed one by one
                pub.publish("tick", [round_index, i], priority=9 if i == 0 else 5)
        peak = max(peak, len(publisher._in_flight))
    during = list(reads)
    pub.flush()
    assert pub.stats()["acknowledged"] == ROUNDS * PER_ROUND
    assert during, "acknowledgements were read while the batches went out"
    assert max(during) <= 2 * PER_ROUND + ACK_WINDOW // 2, max(during)
    assert peak <= LIMIT + PER_ROUND, peak
