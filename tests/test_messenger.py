"""Messenger behaviour against a real redis-server, sync and asyncio front ends alike."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import msgspec
import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import (
    BusClosedError,
    Envelope,
    InvalidIdError,
    InvalidOptionError,
    Message,
    MessageTooLargeError,
    Messenger,
    RequestFailedError,
    RequestTimeoutError,
)


def messenger(fe: Frontend, url: str, swarm: str, agent: str = "coordinator-1",
              **settings: Any) -> Any:
    return fe.make("Messenger", url, swarm, agent, **settings)


def test_send_reaches_the_other_swarm_with_sender_and_fields(fe: Frontend, redis_server: Any,
                                                             ns: str, raw: redis.Redis) -> None:
    got: list[Message] = []
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns)
    b.on_message(got.append)
    a = messenger(fe, redis_server.url, "swarm-a", agent="validator-2", namespace=ns)
    message_id = a.send("swarm-b", {"phase": "auth"}, priority=8)
    assert a.flush() == 1
    assert wait_until(lambda: len(got) == 1)
    msg = got[0]
    assert (msg.sender, msg.to, msg.agent) == ("swarm-a", "swarm-b", "validator-2")
    assert (msg.id, msg.data, msg.priority, msg.type, msg.seq) == (
        message_id, {"phase": "auth"}, 8, "message", 1)
    assert msg.publisher == a.publisher_id("swarm-b")
    assert abs(msg.ts - time.time_ns()) < 5e9
    names = sorted(c["name"] for c in raw.client_list() if c["name"].endswith("@" + ns))
    assert names == [f"cfn:messages-pub:swarm-a:validator-2@{ns}",
                     f"cfn:messages-sub:swarm-b:coordinator-1@{ns}"]


def test_only_messages_addressed_to_this_swarm_arrive(fe: Frontend, redis_server: Any,
                                                      ns: str) -> None:
    got: dict[str, list[str]] = {"b": [], "b.x": []}
    messenger(fe, redis_server.url, "b", namespace=ns).on_message(
        lambda m: got["b"].append(m.data))
    messenger(fe, redis_server.url, "b.x", namespace=ns).on_message(
        lambda m: got["b.x"].append(m.data))
    a = messenger(fe, redis_server.url, "a", namespace=ns)
    a.send("b.x", "for b.x")
    a.send("b", "for b")
    a.flush()
    assert wait_until(lambda: got["b"] == ["for b"] and got["b.x"] == ["for b.x"])
    time.sleep(0.1)
    assert got == {"b": ["for b"], "b.x": ["for b.x"]}


def test_a_spoofed_sender_is_set_aside(fe: Frontend, redis_server: Any, ns: str,
                                       raw: redis.Redis) -> None:
    got: list[Message] = []
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns)
    b.on_message(got.append)
    env = Envelope(id="x-1", swarm="swarm-evil", source="m", type="message", priority=5, seq=1,
                   ts=time.time_ns(), publisher="x", data="hi")
    raw.publish(f"{ns}:message:swarm-a:swarm-b", msgspec.json.encode(env))
    assert wait_until(lambda: b.stats()["malformed"] == 1)
    assert got == []
    assert "channel says 'swarm-a'" in b.malformed[0].reason


def test_request_gets_the_handlers_return_value(fe: Frontend, redis_server: Any, ns: str) -> None:
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns)
    b.on_request(lambda msg: {"ok": True, "asked": msg.data, "by": msg.sender})
    a = messenger(fe, redis_server.url, "swarm-a", namespace=ns)
    reply = a.request("swarm-b", {"q": 1}, timeout=5.0)
    assert reply.data == {"ok": True, "asked": {"q": 1}, "by": "swarm-a"}
    assert (reply.sender, reply.type, reply.to) == ("swarm-b", "reply", "swarm-a")
    assert [a.request("swarm-b", n, timeout=5.0).data["asked"] for n in range(5)] == list(range(5))
    stats = a.stats()
    assert (stats["requests_sent"], stats["replies_received"]) == (6, 6)
    assert stats["requests_pending"] == 0
    # b counts an answer after writing the reply, so a may see the reply first
    assert wait_until(lambda: b.stats()["requests_answered"] == 6)


def test_request_timeout_is_clear_and_leaves_nothing_pending(fe: Frontend, redis_server: Any,
                                                             ns: str) -> None:
    gate = threading.Event()
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns)

    def slow(msg: Message) -> str:
        gate.wait(5)
        return "late"

    if fe.kind == "async":
        async def slow_async(msg: Message) -> str:
            while not gate.is_set():
                await asyncio.sleep(0.01)
            return "late"
        b.on_request(slow_async)
    else:
        b.on_request(slow)
    a = messenger(fe, redis_server.url, "swarm-a", namespace=ns)
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError, match=r"no reply from swarm 'swarm-b' within 0\.3 s"):
        a.request("swarm-b", "q", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert a.stats()["requests_pending"] == 0 and a.stats()["request_timeouts"] == 1
    gate.set()
    assert wait_until(lambda: a.stats()["unmatched_replies"] == 1), "the late reply is dropped"
    with pytest.raises(RequestTimeoutError, match="swarm 'nobody'"):
        a.request("nobody", "q", timeout=0.2)
    with pytest.raises(InvalidOptionError, match="timeout must be > 0"):
        a.request("swarm-b", "q", timeout=0)


def test_a_failing_request_handler_answers_with_an_error(fe: Frontend, redis_server: Any,
                                                         ns: str) -> None:
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns)
    b.on_request(lambda msg: 1 / 0)
    a = messenger(fe, redis_server.url, "swarm-a", namespace=ns)
    with pytest.raises(RequestFailedError, match="ZeroDivisionError"):
        a.request("swarm-b", "q", timeout=5.0)
    assert b.stats()["handler_errors"] == 1


def test_a_handler_may_make_a_request_itself(fe: Frontend, redis_server: Any, ns: str) -> None:
    c = messenger(fe, redis_server.url, "swarm-c", namespace=ns)
    c.on_request(lambda msg: "from c")
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns)
    answers: list[str] = []
    if fe.kind == "async":
        inner = b._target

        async def relay(msg: Message) -> None:
            answers.append((await inner.request("swarm-c", "q", timeout=5.0)).data)
        b.on_message(relay)
    else:
        b.on_message(lambda msg: answers.append(b.request("swarm-c", "q", timeout=5.0).data))
    a = messenger(fe, redis_server.url, "swarm-a", namespace=ns)
    a.send("swarm-b", "go")
    a.flush()
    assert wait_until(lambda: answers == ["from c"], timeout=6)


def test_history_keeps_the_last_n_sent_and_received_oldest_first(fe: Frontend, redis_server: Any,
                                                                 ns: str) -> None:
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns, history_size=5)
    b.on_message(lambda m: None)
    a = messenger(fe, redis_server.url, "swarm-a", namespace=ns, history_size=5)
    for n in range(8):
        a.send("swarm-b", n)
    a.flush()
    assert wait_until(lambda: b.stats()["delivered"] == 8)
    assert [m.data for m in a.history] == [3, 4, 5, 6, 7]
    assert [m.data for m in b.history] == [3, 4, 5, 6, 7]
    assert {(m.sender, m.to) for m in b.history} == {("swarm-a", "swarm-b")}
    assert len(messenger(fe, redis_server.url, "s", namespace=ns).history) == 0


def test_a_request_is_in_the_history_before_a_reply_that_beats_its_write(
    fe: Frontend, redis_server: Any, ns: str
) -> None:
    """The reply can arrive (on the reader) before the request's write returns: the
    history still reads request, then reply."""
    server = fe.make("Messenger", redis_server.url, "hb", "srv", namespace=ns)
    server.on_request(lambda message: "pong")
    client = fe.make("Messenger", redis_server.url, "ha", "cli", namespace=ns)
    client.listen()
    target = getattr(client, "_target", client)
    write = target._write  # the messenger's write of one planned message
    if fe.loop is None:
        def slow_write(*args: Any, **kwargs: Any) -> Any:
            result = write(*args, **kwargs)
            time.sleep(0.3)  # the reply is read and kept meanwhile
            return result
    else:
        async def slow_write(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            result = await write(*args, **kwargs)
            await asyncio.sleep(0.3)
            return result
    target._write = slow_write
    assert client.request("hb", "ping", timeout=5.0).data == "pong"
    assert [m.type for m in client.history] == ["request", "reply"], client.history


def test_history_in_redis_lets_a_restarted_swarm_read_what_it_missed(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    a = messenger(fe, redis_server.url, "swarm-a", namespace=ns, history_size=4,
                  persist_history=True, history_ttl=120)
    for n in range(6):
        a.send("swarm-b", {"n": n}, priority=7)
    assert a.flush() == 6
    restarted = messenger(fe, redis_server.url, "swarm-b", namespace=ns)
    stored = restarted.stored_history()
    assert [m.data["n"] for m in stored] == [2, 3, 4, 5]
    assert all(m.sender == "swarm-a" and m.to == "swarm-b" for m in stored)
    assert [m.data["n"] for m in restarted.stored_history(limit=2)] == [4, 5]
    key = f"{ns}:history:swarm-b"
    assert raw.llen(key) == 4
    assert 100 < raw.ttl(key) <= 120
    assert messenger(fe, redis_server.url, "swarm-c", namespace=ns).stored_history() == []


def test_oversized_message_is_refused_at_send(fe: Frontend, redis_server: Any, ns: str) -> None:
    got: list[Any] = []
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns)
    b.on_message(lambda m: got.append(m.seq))
    a = messenger(fe, redis_server.url, "swarm-a", namespace=ns, max_message_bytes=4096)
    with pytest.raises(MessageTooLargeError, match="limit is 4096 bytes"):
        a.send("swarm-b", "x" * 5000)
    a.send("swarm-b", "x" * 3000)
    a.flush()
    assert wait_until(lambda: got == [1]), "a refused message uses no sequence number"
    assert b.stats()["lost"] == 0
    default = messenger(fe, redis_server.url, "swarm-a", namespace=ns)
    with pytest.raises(MessageTooLargeError, match="limit is 1048576 bytes"):
        default.send("swarm-b", "x" * (1024 * 1024))


def test_messages_of_1_to_10_kb_arrive_intact_and_sequences_count_per_destination(
        fe: Frontend, redis_server: Any, ns: str) -> None:
    got: dict[str, list[Message]] = {"b": [], "c": []}
    messenger(fe, redis_server.url, "b", namespace=ns).on_message(got["b"].append)
    messenger(fe, redis_server.url, "c", namespace=ns).on_message(got["c"].append)
    a = messenger(fe, redis_server.url, "a", namespace=ns)
    sizes = [1024, 5 * 1024, 10 * 1024] * 10
    with a.batch():
        for i, size in enumerate(sizes):
            a.send("b" if i % 2 else "c", {"i": i, "blob": "z" * size})
    a.flush()
    assert wait_until(lambda: len(got["b"]) + len(got["c"]) == len(sizes))
    for swarm in ("b", "c"):
        assert [m.seq for m in got[swarm]] == list(range(1, 16))
        assert all(len(m.data["blob"]) == sizes[m.data["i"]] for m in got[swarm])
    assert a.stats()["published"] == 30 and a.stats()["destinations"] == 2


def test_bad_ids_and_settings_are_refused(fe: Frontend, redis_server: Any, ns: str) -> None:
    with pytest.raises(InvalidIdError, match="swarm id"):
        messenger(fe, redis_server.url, "*", namespace=ns)
    with pytest.raises(InvalidOptionError, match="history_size"):
        messenger(fe, redis_server.url, "a", namespace=ns, history_size=-1)
    with pytest.raises(InvalidOptionError, match="history_ttl"):
        messenger(fe, redis_server.url, "a", namespace=ns, history_ttl=0)
    a = messenger(fe, redis_server.url, "a", namespace=ns)
    with pytest.raises(InvalidIdError, match="swarm id 'b:c' contains ':'"):
        a.send("b:c", 1)
    with pytest.raises(InvalidOptionError, match="priorities are integers"):
        a.send("b", 1, priority=0)
    assert a.stats()["published"] == 0


def test_a_subscriber_reconnects_after_client_kill_and_counts_the_gap(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    reconnects: list[int] = []
    got: list[int] = []
    b = messenger(fe, redis_server.url, "swarm-b", namespace=ns, on_reconnect=reconnects.append)
    b.on_message(lambda m: got.append(m.seq))

    def raw_message(seq: int) -> bytes:
        return msgspec.json.encode(Envelope(
            id=f"p-{seq}", swarm="swarm-a", source="raw", type="message", priority=5, seq=seq,
            ts=time.time_ns(), publisher="p", data=seq))
    channel = f"{ns}:message:swarm-a:swarm-b"
    raw.publish(channel, raw_message(1))
    assert wait_until(lambda: got == [1])
    with raw.pipeline(transaction=True) as pipe:
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        pipe.publish(channel, raw_message(2))
        pipe.execute()
    assert wait_until(lambda: reconnects == [1])
    raw.publish(channel, raw_message(3))
    assert wait_until(lambda: got == [1, 3])
    assert b.stats()["lost"] == 1


def test_close_wakes_a_waiting_request(redis_server: Any, ns: str) -> None:
    a = Messenger.from_url(redis_server.url, swarm="swarm-a", agent="c1", namespace=ns)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            a.request("swarm-b", "q", timeout=10)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    assert wait_until(lambda: a.stats()["requests_pending"] == 1)
    a.close()
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], BusClosedError)


def test_close_leaves_no_connection_thread_or_task(fe: Frontend, redis_server: Any, ns: str,
                                                   raw: redis.Redis) -> None:
    baseline = fe.background_workers()
    for i in range(20):
        with messenger(fe, redis_server.url, f"s{i}", namespace=ns) as m:
            m.on_message(print)
            m.send("elsewhere", i)
    assert wait_until(
        lambda: [c for c in raw.client_list() if c["name"].endswith("@" + ns)] == [], timeout=5)
    assert wait_until(lambda: fe.background_workers() == baseline, timeout=5)


def test_a_message_taken_back_leaves_the_history_as_it_was() -> None:
    from pytest_cfn._core.envelope import Envelope
    from pytest_cfn._core.message import Message, MessageHistory

    history = MessageHistory(3)
    first, second = (Message(Envelope(id=f"m{n}", type="message", swarm="a", source="x",
                                      seq=n, ts=0, priority=5, publisher="p", data=n), "b")
                     for n in range(2))
    history.add(first)
    history.add(second)
    history.discard(first)
    history.discard(first)  # no longer kept: nothing happens
    assert history.snapshot() == [second]
