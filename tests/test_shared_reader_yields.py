"""A shared subscriber whose reads never wait still yields every ~0.5 ms of hand-off.

A reader shared by several buses (``SharedConnections``) hands each chunk's messages to the
buses in slices and yields once it has held on for ``subscriber._HOLD_NS``. It must count
that hold across chunks: under steady overload every read finds a little more on the
socket, each chunk's hand-off is short, and a hold counted per chunk never ran out (traced
in a 250-agent shared harness process: reader runs of 2-7 ms without a switch).

Here the connection is a stand-in that always has five more messages buffered, and each
delivery takes ~20 µs, so a chunk is ~0.1 ms of work: 100 chunks are ~10 ms and should yield
about 20 times. Both front ends, with their ``yield_now`` counted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest_cfn._async.subscriber as async_subscriber
import pytest_cfn._sync.subscriber as sync_subscriber
from pytest_cfn._backends.address import parse_redis_url

CHUNKS = 100
PER_CHUNK = 5
SPIN_S = 20e-6


def _spin() -> None:
    end = time.perf_counter() + SPIN_S
    while time.perf_counter() < end:
        pass


class _AlwaysMore:
    """The connection of a reader whose socket always has five more messages."""

    def buffered_replies(self, limit: int) -> list[Any]:
        return [[b"pmessage", b"event:s1:*", b"event:s1:tick", b"{}"]] * PER_CHUNK


def test_the_sync_shared_reader_counts_its_hold_across_chunks(monkeypatch: Any) -> None:
    yields: list[int] = []
    monkeypatch.setattr(sync_subscriber, "yield_now", lambda: yields.append(1))
    handed: list[int] = []

    def sink(items: list[tuple[bytes, bytes]]) -> None:
        for _ in items:
            _spin()
        handed.append(len(items))

    sub = sync_subscriber.Subscriber(
        parse_redis_url("redis://127.0.0.1:1"), "shared", sink,
        routes={b"event:s1:*": [sink]},
    )
    sub._conn = _AlwaysMore()  # type: ignore[assignment]
    sub._held_since = time.time_ns()  # its last read waited just now
    for _ in range(CHUNKS):
        sub._drain_parser()
    assert sum(handed) == CHUNKS * PER_CHUNK
    assert len(yields) >= 5, len(yields)


def test_the_asyncio_shared_reader_counts_its_hold_across_chunks(monkeypatch: Any) -> None:
    yields: list[int] = []

    async def counted_yield() -> None:
        yields.append(1)

    monkeypatch.setattr(async_subscriber, "yield_now", counted_yield)
    handed: list[int] = []

    async def sink(items: list[tuple[bytes, bytes]]) -> None:
        for _ in items:
            _spin()
        handed.append(len(items))

    async def main() -> None:
        sub = async_subscriber.Subscriber(
            parse_redis_url("redis://127.0.0.1:1"), "shared", sink,
            routes={b"event:s1:*": [sink]},
        )
        sub._conn = _AlwaysMore()  # type: ignore[assignment]
        sub._held_since = time.time_ns()
        for _ in range(CHUNKS):
            await sub._drain_parser()

    asyncio.run(main())
    assert sum(handed) == CHUNKS * PER_CHUNK
    assert len(yields) >= 5, len(yields)
