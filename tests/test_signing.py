"""Signed envelopes: the sans-IO signer, then spoofing attempts against real servers.

Every attack is made with a plain redis-py client that has channel rights but
not the key: a spoofed source agent, a spoofed sender swarm, a forged seq, a
forged reply, a genuine frame replayed onto another channel, forged stream and
history entries. Each is counted as ``forged`` and set aside; genuine traffic
goes on. Sync and asyncio front ends alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import msgspec
import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn import BusOptions, Envelope, InvalidOptionError, Message
from pytest_cfn._core.signing import EnvelopeSigner, SigningKeys, signed_decoder, signing_keys
from pytest_cfn._errors import ForgedMessageError

KEY = b"0123456789abcdef0123456789abcdef"
OTHER = b"fedcba9876543210fedcba9876543210"
CHANNEL = b"event:s1:agent.spawn"


def envelope(seq: int, *, publisher: str = "p", swarm: str = "s1", type_: str = "agent.spawn",
             source: str = "intruder", correlation_id: str | None = None,
             data: Any = None) -> Envelope:
    return Envelope(id=f"{publisher}-{seq}", swarm=swarm, source=source, type=type_, priority=5,
                    seq=seq, ts=time.time_ns(), publisher=publisher,
                    correlation_id=correlation_id, data=data)


# sans-IO

def test_seal_then_open_gives_the_envelope_back() -> None:
    signer = EnvelopeSigner(SigningKeys({"k1": KEY}))
    body = msgspec.json.encode(envelope(1))
    frame = signer.seal(CHANNEL, body)
    assert frame.startswith(b"!k1:") and frame.endswith(body)
    assert len(frame) == len(body) + 4 + 32
    assert signer.open(CHANNEL, frame) == body


@pytest.mark.parametrize(("tamper", "reason"), [
    (lambda f: f[:-2] + b"9}", "bad signature"),
    (lambda f: f[:10] + bytes([f[10] ^ 1]) + f[11:], "bad signature"),
    (lambda f: f[4 + 32:], "unsigned envelope"),
    (lambda f: b"!k9:" + f[4:], "key id 'k9'"),
    (lambda f: f[:20], "truncated"),
    (lambda f: b"!" + b"x" * 300, "truncated"),
])
def test_a_tampered_frame_is_forged(tamper: Any, reason: str) -> None:
    signer = EnvelopeSigner(SigningKeys({"k1": KEY}))
    frame = signer.seal(CHANNEL, msgspec.json.encode(envelope(1)))
    with pytest.raises(ForgedMessageError, match=reason):
        signer.open(CHANNEL, tamper(frame))


def test_a_frame_replayed_onto_another_channel_is_forged() -> None:
    signer = EnvelopeSigner(SigningKeys({"k1": KEY}))
    frame = signer.seal(CHANNEL, msgspec.json.encode(envelope(1)))
    with pytest.raises(ForgedMessageError, match="bad signature"):
        signer.open(b"event:s2:agent.spawn", frame)


def test_a_frame_signed_with_another_secret_is_forged() -> None:
    frame = EnvelopeSigner(SigningKeys({"k1": OTHER})).seal(CHANNEL, b"{}")
    with pytest.raises(ForgedMessageError, match="bad signature"):
        EnvelopeSigner(SigningKeys({"k1": KEY})).open(CHANNEL, frame)


def test_key_rotation_accepts_every_key_of_the_ring_and_signs_with_the_current() -> None:
    old = EnvelopeSigner(SigningKeys({"old": KEY}))
    ring = EnvelopeSigner(SigningKeys({"old": KEY, "new": OTHER}, current="new"))
    new_only = EnvelopeSigner(SigningKeys({"new": OTHER}))
    assert ring.open(CHANNEL, old.seal(CHANNEL, b"{}")) == b"{}"
    assert new_only.open(CHANNEL, ring.seal(CHANNEL, b"{}")) == b"{}"
    with pytest.raises(ForgedMessageError, match="key id 'old'"):
        new_only.open(CHANNEL, old.seal(CHANNEL, b"{}"))


def test_signed_decoder_checks_the_channel_rebuilt_from_the_envelope() -> None:
    signer = EnvelopeSigner(SigningKeys({"k1": KEY}))
    body = msgspec.json.encode(envelope(1))
    decode = signed_decoder(signer, msgspec.json.Decoder(Envelope).decode,
                            lambda env: f"event:s1:{env.type}")
    assert decode(signer.seal(CHANNEL, body)).seq == 1
    with pytest.raises(ForgedMessageError):
        decode(signer.seal(b"event:s1:other", body))
    with pytest.raises(ForgedMessageError, match="unsigned"):
        decode(body)


@pytest.mark.parametrize(("option", "message"), [
    (b"short", "is 5 bytes; use at least 16"),
    ({}, "at least one key"),
    ({"k1": KEY, "k2": OTHER}, "say which one signs with current="),
    ({"a:b": KEY}, "signing key id 'a:b' contains ':'"),
    (12345, "signing_key must be bytes"),
    ({"k1": 5}, "must be bytes or str"),
])
def test_bad_signing_keys_are_refused_with_a_clear_message(option: object, message: str) -> None:
    with pytest.raises((InvalidOptionError, ValueError), match=message):
        signing_keys(option)
    with pytest.raises((InvalidOptionError, ValueError), match=message):
        BusOptions(signing_key=option)  # type: ignore[arg-type]


def test_keys_never_show_in_a_repr() -> None:
    assert KEY.decode() not in repr(BusOptions(signing_key=KEY))
    ring = SigningKeys({"old": KEY, "new": OTHER}, current="new")
    assert repr(ring) == "SigningKeys(key_ids=['new', 'old'], current='new')"
    assert SigningKeys({"k": KEY.decode()}).keys == {"k": KEY}


# real servers

def test_signed_buses_talk_and_unsigned_spoofs_are_forged(fe: Frontend, redis_server: Any,
                                                          ns: str, raw: redis.Redis) -> None:
    got: list[Any] = []
    sub = fe.event_bus(redis_server.url, "s1", "reviewer", namespace=ns, signing_key=KEY)
    sub.subscribe("*", got.append)
    wire = raw.pubsub()
    wire.psubscribe(f"{ns}:event:s1:*")
    assert wire.get_message(timeout=2)["type"] == "psubscribe"
    pub = fe.event_bus(redis_server.url, "s1", "coder", namespace=ns, signing_key=KEY)
    pub.publish("agent.spawn", 0)
    pub.flush()
    assert wait_until(lambda: len(got) == 1)
    frame = wire.get_message(timeout=2)["data"]
    wire.close()
    assert frame.startswith(b"!k1:")
    channel = f"{ns}:event:s1:agent.spawn"
    spoofs = [
        msgspec.json.encode(envelope(2, publisher=pub.publisher_id, source="coder")),  # forged seq
        msgspec.json.encode(envelope(10**12, publisher=pub.publisher_id)),  # forged far seq
        msgspec.json.encode(envelope(1, publisher="intruder", source="coder")),  # spoofed source
        frame[:-3] + b"99}",  # a genuine frame, tampered
    ]
    for spoof in spoofs:
        raw.publish(channel, spoof)
    raw.publish(f"{ns}:event:s1:task.assign", frame)  # a genuine frame on another channel
    for n in range(1, 21):
        pub.publish("agent.spawn", n)
    pub.flush()
    assert wait_until(lambda: len(got) == 21), f"{len(got)} of 21"
    assert [e.data for e in got] == list(range(21))
    assert {e.source for e in got} == {"coder"}
    stats = sub.stats()
    assert (stats["forged"], stats["malformed"], stats["anomalies"]) == (5, 0, 0)
    assert (stats["lost"], stats["duplicates"]) == (0, 0)
    assert [m.reason.split(":")[0] for m in sub.malformed] == ["forged"] * 5


def test_a_bus_without_a_key_says_a_signed_envelope_reached_it(fe: Frontend, redis_server: Any,
                                                               ns: str) -> None:
    plain = fe.event_bus(redis_server.url, "s1", "plain", namespace=ns)
    plain.subscribe("*", print)
    signed = fe.event_bus(redis_server.url, "s1", "signed", namespace=ns, signing_key=KEY)
    signed.publish("agent.spawn", 1)
    signed.flush()
    assert wait_until(lambda: plain.stats()["malformed"] == 1)
    assert "a signed envelope, and this bus has no signing_key" in plain.malformed[0].reason


def test_key_rotation_across_buses(fe: Frontend, redis_server: Any, ns: str) -> None:
    got: dict[str, list[str]] = {"ring": [], "new_only": []}
    ring = {"old": KEY, "new": OTHER}
    fe.event_bus(redis_server.url, "s1", "r1", namespace=ns,
                 signing_key=SigningKeys(ring, current="new")).subscribe(
        "*", lambda e: got["ring"].append(e.source))
    fe.event_bus(redis_server.url, "s1", "r2", namespace=ns,
                 signing_key={"new": OTHER}).subscribe(
        "*", lambda e: got["new_only"].append(e.source))
    for agent, key in (("old-signer", SigningKeys(ring, current="old")),
                       ("new-signer", SigningKeys(ring, current="new"))):
        bus = fe.event_bus(redis_server.url, "s1", agent, namespace=ns, signing_key=key)
        bus.publish("agent.spawn", agent)
        bus.flush()
    assert wait_until(lambda: len(got["ring"]) == 2 and len(got["new_only"]) == 1)
    assert sorted(got["ring"]) == ["new-signer", "old-signer"]
    assert got["new_only"] == ["new-signer"]


def test_spoofed_sender_swarm_and_forged_reply_are_rejected(fe: Frontend, redis_server: Any,
                                                            ns: str, raw: redis.Redis) -> None:
    got: list[Message] = []
    b = fe.make("Messenger", redis_server.url, "b", "lead", namespace=ns, signing_key=KEY)
    b.on_message(got.append)
    release = threading.Event()

    def slow_answer(msg: Message) -> Any:
        release.wait(5)
        return {"genuine": True}

    async def slow_async_answer(msg: Message) -> Any:
        while not release.is_set():
            await asyncio.sleep(0.005)
        return {"genuine": True}

    b.on_request(slow_answer if fe.kind == "sync" else slow_async_answer)
    a = fe.make("Messenger", redis_server.url, "a", "coder", namespace=ns, signing_key=KEY)
    a.listen()
    raw.publish(f"{ns}:message:evil:b", msgspec.json.encode(
        envelope(1, swarm="evil", type_="message", data="spoofed sender")))
    raw.publish(f"{ns}:message:a:b", msgspec.json.encode(
        envelope(1, publisher=a.publisher_id("b"), swarm="a", type_="message", data="spoof")))
    wire = raw.pubsub()
    wire.psubscribe(f"{ns}:message:a:b")
    assert wire.get_message(timeout=2)["type"] == "psubscribe"
    answer: list[Any] = []
    requester = threading.Thread(target=lambda: answer.append(a.request("b", {"q": 1}, timeout=5)))
    requester.start()
    request_frame = wire.get_message(timeout=3)["data"]
    wire.close()
    body = request_frame[len(b"!k1:") + 32:]
    request = msgspec.json.decode(body, type=Envelope)
    forged_reply = envelope(1, publisher="intruder", swarm="b", type_="reply",
                            correlation_id=request.correlation_id, data={"genuine": False})
    raw.publish(f"{ns}:message:b:a", msgspec.json.encode(forged_reply))
    assert wait_until(lambda: a.stats()["forged"] == 1)
    release.set()
    requester.join(6)
    assert answer and answer[0].data == {"genuine": True}
    a.send("b", "genuine")
    a.flush()
    assert wait_until(lambda: [m.data for m in got] == ["genuine"])
    assert b.stats()["forged"] == 2
    assert a.stats()["unmatched_replies"] == 0


def test_forged_critical_entries_and_history_entries_are_skipped(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    pub = fe.event_bus(redis_server.url, "s1", "lead", namespace=ns, signing_key=KEY)
    pub.publish("cfn.loop.phase", 0, priority=9)
    pub.flush()
    forged = Envelope(id="x-1", swarm="s1", source="intruder", type="cfn.loop.phase",
                      priority=9, seq=1, ts=time.time_ns(), publisher="x", data="forged")
    raw.xadd(f"{ns}:critical:s1", {"envelope": msgspec.json.encode(forged)})
    pub.publish("cfn.loop.phase", 1, priority=9)
    pub.flush()
    got: list[Any] = []
    late = fe.event_bus(redis_server.url, "s1", "late", namespace=ns, signing_key=KEY)
    late.subscribe("*", got.append)
    assert wait_until(lambda: len(got) == 2)
    assert late.wait_idle()
    assert [e.data for e in got] == [0, 1]
    stats = late.stats()
    assert (stats["replayed"], stats["replay_forged"], stats["forged"]) == (2, 1, 1)

    a = fe.make("Messenger", redis_server.url, "a", "coder", namespace=ns, signing_key=KEY,
                persist_history=True)
    a.send("b", "kept")
    a.flush()
    raw.lpush(f"{ns}:history:b", msgspec.json.encode(
        envelope(2, publisher=a.publisher_id("b"), swarm="a", type_="message", data="forged")))
    b = fe.make("Messenger", redis_server.url, "b", "lead", namespace=ns, signing_key=KEY)
    assert [m.data for m in b.stored_history()] == ["kept"]


def test_a_key_bound_to_a_swarm_cannot_sign_for_another() -> None:
    ring = SigningKeys({"ka": KEY, "kb": OTHER}, current="ka", owners={"ka": "a", "kb": "b"})
    signer = EnvelopeSigner(ring)
    channel = b"message:c:b"
    frame = signer.seal(channel, msgspec.json.encode(envelope(1, swarm="c", type_="message")))
    kid, _ = signer.open_frame(channel, frame)  # the tag itself is fine
    with pytest.raises(ForgedMessageError, match="belongs to swarm 'a'"):
        signer.check_sender(kid, "c")
    signer.check_sender(kid, "a")
    with pytest.raises(InvalidOptionError, match="belongs to swarm 'a'"):
        ring.check_signer("c")
    with pytest.raises(InvalidOptionError, match="not in the ring"):
        SigningKeys({"ka": KEY}, owners={"kz": "a"})
    assert "owners={'ka': 'a', 'kb': 'b'}" in repr(ring)


def test_per_swarm_keys_reject_an_insider_posing_as_another_swarm(
        fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis) -> None:
    keys = {"ka": KEY, "kb": OTHER, "kc": b"c" * 32}
    owners = {"ka": "a", "kb": "b", "kc": "c"}
    got: list[Message] = []
    b = fe.make("Messenger", redis_server.url, "b", "lead", namespace=ns,
                signing_key=SigningKeys(keys, current="kb", owners=owners))
    b.on_message(got.append)
    a = fe.make("Messenger", redis_server.url, "a", "coder", namespace=ns,
                signing_key=SigningKeys({"ka": KEY}, owners={"ka": "a"}))
    a.send("b", "from a")
    a.flush()
    assert wait_until(lambda: [m.data for m in got] == ["from a"])
    insider = EnvelopeSigner(SigningKeys({"ka": KEY}))  # swarm a's key, posing as swarm c
    channel = f"{ns}:message:c:b"
    raw.publish(channel, insider.seal(channel.encode(), msgspec.json.encode(
        envelope(1, publisher="c.x>b", swarm="c", type_="message", data="posing as c"))))
    assert wait_until(lambda: b.stats()["forged"] == 1)
    assert [m.data for m in got] == ["from a"]
    assert "belongs to swarm 'a'" in b.malformed[0].reason
    with pytest.raises(InvalidOptionError, match="must sign with a key of its own"):
        fe.make("Messenger", redis_server.url, "c", "x", namespace=ns,
                signing_key=SigningKeys({"ka": KEY}, owners={"ka": "a"}))
