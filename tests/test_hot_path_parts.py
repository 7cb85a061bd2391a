"""The hot paths' parts, fed without a server where they can be: acknowledgements counted
in bulk, the asyncio publisher lock's fast path, the asyncio stream's EOF, errors and flow
control, and a chunk of messages checked in one call against one at a time."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import msgspec
import pytest

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._backends.async_backend import PublishLock, connect_stream
from pytest_cfn._backends.async_stream import READ_CHUNK
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.inbound import InboundProcessor
from pytest_cfn._core.resp import ReplyParser, ServerReplyError
from pytest_cfn._errors import ConnectionLostError, ReplyTimeoutError

CHANNEL = b"ns:event:s1:agent.spawn"


def test_a_run_of_integer_replies_is_counted_and_a_partial_one_waits() -> None:
    parser = ReplyParser()
    parser.feed(b":1\r\n:0\r\n:12\r\n:3")
    assert parser.take_integer_replies() == 3
    assert parser.take_integer_replies() == 0, "the partial reply is not counted"
    parser.feed(b"\r\n:4\r\n")
    assert parser.take_integer_replies() == 2, "the partial one completed, then one more"
    assert parser.get() is False


@pytest.mark.parametrize("chunk", [
    b":1\r\n-NOPERM no rights\r\n:2\r\n",
    b":1\r\n+OK\r\n",
    b"*2\r\n:1\r\n:2\r\n",
    b"$2\r\n12\r\n",
])
def test_anything_but_integer_replies_goes_to_the_parser_whole(chunk: bytes) -> None:
    parser = ReplyParser()
    parser.feed(chunk)
    assert parser.take_integer_replies() == 0
    replies = parser.get_many(10)
    assert replies, "nothing was lost"
    raw = b"".join(_encode(reply) for reply in replies)
    assert raw == chunk


def _encode(reply: Any) -> bytes:
    if isinstance(reply, ServerReplyError):
        return b"-%b\r\n" % str(reply).encode()
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join(_encode(item) for item in reply)
    if reply == b"OK":
        return b"+OK\r\n"
    return b"$%d\r\n%b\r\n" % (len(reply), reply)


def test_integer_replies_are_not_counted_while_a_reply_is_half_parsed() -> None:
    parser = ReplyParser()
    parser.feed(b"$5\r\nhel")
    assert parser.get() is False  # hiredis now holds half a reply
    parser.feed(b"lo\r\n:1\r\n")
    assert parser.take_integer_replies() == 0
    assert parser.get_many(5) == [b"hello", 1]


def test_the_publish_lock_is_taken_at_once_when_free_and_handed_over_in_order() -> None:
    async def main() -> list[str]:
        lock = PublishLock()
        order: list[str] = []
        assert lock.try_acquire() and lock.locked()
        assert not lock.try_acquire(), "held: the fast path refuses"

        async def waiter(name: str) -> None:
            async with lock:
                order.append(name)

        tasks = [asyncio.ensure_future(waiter(name)) for name in "abc"]
        await asyncio.sleep(0)
        assert not lock.try_acquire(), "others wait: the fast path does not jump them"
        lock.release()
        await asyncio.gather(*tasks)
        assert not lock.locked()
        return order

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_a_cancelled_waiter_passes_the_publish_lock_on() -> None:
    async def main() -> bool:
        lock = PublishLock()
        await lock.acquire()
        first = asyncio.ensure_future(lock.acquire())
        second = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0)
        lock.release()  # hands the lock to `first`...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(second, 1.0)
        return lock.locked() and first.cancelled()

    assert asyncio.run(main())


def _listener() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server


def test_the_asyncio_stream_reads_what_arrived_then_eof_then_a_timeout() -> None:
    async def main() -> None:
        server = _listener()
        port = server.getsockname()[1]
        stream = await connect_stream(parse_redis_url(f"redis://127.0.0.1:{port}"), 2.0)
        peer, _ = server.accept()
        with pytest.raises(ReplyTimeoutError):
            await stream.read(0.05)
        peer.sendall(b"first")
        peer.sendall(b"second")
        got = b""
        while len(got) < 11:
            got += await stream.read(1.0)
        assert got == b"firstsecond"
        peer.close()
        assert await stream.read(1.0) == b"", "a clean EOF reads as b''"
        with pytest.raises(ConnectionLostError):
            await stream.write(b"PING\r\n")
        await stream.close()
        server.close()

    asyncio.run(main())


def test_the_asyncio_stream_reports_a_reset_as_a_lost_connection() -> None:
    async def main() -> None:
        server = _listener()
        port = server.getsockname()[1]
        stream = await connect_stream(parse_redis_url(f"redis://127.0.0.1:{port}"), 2.0)
        peer, _ = server.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await stream.write(b"x" * 10)
        peer.close()  # linger 0: a reset
        with pytest.raises(ConnectionLostError, match="broke") as caught:
            await stream.read(1.0)
        assert isinstance(caught.value.__cause__, ConnectionResetError)
        await stream.close()
        server.close()

    asyncio.run(main())


def test_the_asyncio_stream_pauses_reading_while_much_is_unread_and_loses_nothing() -> None:
    async def main() -> None:
        server = _listener()
        port = server.getsockname()[1]
        stream = await connect_stream(parse_redis_url(f"redis://127.0.0.1:{port}"), 2.0)
        peer, _ = server.accept()
        peer.setblocking(False)
        total = 6 * READ_CHUNK
        payload = bytes(range(256)) * (total // 256)
        sent = 0
        protocol = stream._protocol
        deadline = time.monotonic() + 5
        while sent < total and time.monotonic() < deadline:
            try:
                sent += peer.send(payload[sent:])
            except BlockingIOError:
                pass
            await asyncio.sleep(0.001)
            if protocol.buffered > 2 * READ_CHUNK:
                break
        assert protocol.buffered <= 2 * READ_CHUNK + 256 * 1024, "reading paused"
        got = bytearray()
        while len(got) < total:
            while sent < total:
                try:
                    sent += peer.send(payload[sent:])
                except BlockingIOError:
                    break
            got += await stream.read(2.0)
        assert bytes(got) == payload
        peer.close()
        await stream.close()
        server.close()

    asyncio.run(main())


def _encoded(seq: int, *, priority: int = 5, publisher: str = "p") -> bytes:
    return msgspec.json.encode(Envelope(
        id=f"{publisher}-{seq}", swarm="s1", source="a", type="agent.spawn",
        priority=priority, seq=seq, ts=time.time_ns(), publisher=publisher,
    ))


def _processor() -> InboundProcessor:
    return InboundProcessor(Codec("json"), ChannelNames("ns"), "event", "s1")


def test_a_chunk_checked_in_one_call_gives_what_one_at_a_time_gives() -> None:
    items = [
        (CHANNEL, _encoded(1)), (CHANNEL, _encoded(2)), (CHANNEL, _encoded(2)),  # a duplicate
        (CHANNEL, b"{not json"), (b"ns:event:other:agent.spawn", _encoded(3)),
        (CHANNEL, _encoded(5)), (CHANNEL, _encoded(4)),  # a gap, then the late one
        (CHANNEL, _encoded(1, publisher="q")), (CHANNEL, _encoded(6, priority=9)),
    ]
    one, many = _processor(), _processor()
    singles = [env for channel, payload in items
               if (env := one.process(channel, payload)) is not None]
    batch = many.process_many(items)
    assert [(e.publisher, e.seq) for e in batch] == [(e.publisher, e.seq) for e in singles]
    assert [(e.publisher, e.seq) for e in batch] == [
        ("p", 1), ("p", 2), ("p", 5), ("p", 4), ("q", 1), ("p", 6)]
    assert many.stats() == one.stats()
    assert many.stats()["duplicates"] == 1 and many.stats()["malformed"] == 2
    assert many.tracker.received == one.tracker.received == 7


def test_a_check_that_raises_sets_that_message_aside_and_the_chunk_goes_on() -> None:
    inbound = _processor()

    def intercept(env: Envelope) -> bool:
        if env.seq == 2:
            raise RuntimeError("boom")
        return env.seq == 3

    out = inbound.process_many([(CHANNEL, _encoded(n)) for n in (1, 2, 3, 4)], intercept)
    assert [env.seq for env in out] == [1, 4], "2 set aside, 3 taken by intercept"
    assert inbound.stats()["malformed"] == 1
    assert "RuntimeError: boom" in inbound.malformed[0].reason
