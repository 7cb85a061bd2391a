"""The inbound core fed bytes alone, no server: hostile payloads, forged seqs, signatures.

``InboundProcessor`` is where a live message is decoded, checked and tracked;
``CatchUp.take`` and ``decode_stored`` do the same for stream entries and stored
history. Each must set a bad message aside, count it and go on.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.critical_log import CatchUp, CriticalOptions
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.inbound import InboundProcessor
from pytest_cfn._core.message import decode_stored
from pytest_cfn._core.sequence import SequenceTracker
from pytest_cfn._core.signing import EnvelopeSigner, SigningKeys, signed_decoder

DEPTH = 200_000
KEY = b"0123456789abcdef0123456789abcdef"
CHANNEL = b"ns:event:s1:agent.spawn"


def envelope(seq: int, *, publisher: str = "p", priority: int = 5, swarm: str = "s1",
             type_: str = "agent.spawn") -> Envelope:
    return Envelope(id=f"{publisher}-{seq}", swarm=swarm, source="a", type=type_,
                    priority=priority, seq=seq, ts=time.time_ns(), publisher=publisher)


def encoded(seq: int, **kwargs: Any) -> bytes:
    return msgspec.json.encode(envelope(seq, **kwargs))


def deep(**kwargs: Any) -> bytes:
    head = encoded(1, **kwargs)[:-1]
    return head + b',"data":' + b"[" * DEPTH + b"]" * DEPTH + b"}"


def processor(signer: EnvelopeSigner | None = None) -> InboundProcessor:
    return InboundProcessor(Codec("json"), ChannelNames("ns"), "event", "s1", signer=signer)


@pytest.mark.parametrize("payload", [
    deep(),
    b"[" * DEPTH,
    b'{"id":' * 50_000,
    b"\xff\xfe" * 1000,
    b"",
])
def test_any_decode_failure_is_set_aside_and_the_next_message_goes_through(
        payload: bytes) -> None:
    inbound = processor()
    assert inbound.process(CHANNEL, payload) is None
    assert inbound.process(CHANNEL, encoded(1)) is not None
    assert inbound.stats()["malformed"] == 1
    assert len(inbound.malformed[0].payload) <= 4096


def test_deep_nesting_is_named_in_the_reason() -> None:
    inbound = processor()
    inbound.process(CHANNEL, deep())
    assert "RecursionError" in inbound.malformed[0].reason


def test_forged_far_seq_is_an_anomaly_and_genuine_seqs_go_on() -> None:
    inbound = processor()
    assert inbound.process(CHANNEL, encoded(1)) is not None
    assert inbound.process(CHANNEL, encoded(10**12)) is not None
    assert all(inbound.process(CHANNEL, encoded(n)) is not None for n in range(2, 52))
    stats = inbound.stats()
    assert (stats["anomalies"], stats["lost"], stats["duplicates"]) == (1, 0, 0)


def test_set_aside_keeps_whatever_raised() -> None:
    inbound = processor()
    inbound.set_aside(CHANNEL, b"x", MemoryError("no room"))
    assert inbound.stats()["malformed"] == 1
    assert inbound.malformed[0].reason == "could not be processed: MemoryError: no room"


def test_signed_processor_rejects_unsigned_and_forged_before_tracking() -> None:
    signer = EnvelopeSigner(SigningKeys({"k1": KEY}))
    inbound = processor(signer)
    assert inbound.process(CHANNEL, encoded(1)) is None
    assert inbound.process(CHANNEL, signer.seal(b"ns:event:s1:other", encoded(2))) is None
    env = inbound.process(CHANNEL, signer.seal(CHANNEL, encoded(3)))
    assert env is not None and env.seq == 3
    stats = inbound.stats()
    assert (stats["forged"], stats["malformed"], stats["received"]) == (2, 0, 1)
    assert inbound.tracker.received == 1  # the forged ones never reached the tracker
    assert [m.reason.split(":")[0] for m in inbound.malformed] == ["forged", "forged"]


def test_catch_up_skips_deep_and_forged_entries() -> None:
    signer = EnvelopeSigner(SigningKeys({"k1": KEY}))
    channels = ChannelNames("ns")
    codec = Codec("json")
    catch_up = CatchUp(channels, "s1", "w", CriticalOptions(batch=10))
    catch_up.start_from(None, [b"1000", b"0"])
    decode = signed_decoder(signer, codec.decode,
                            lambda env: channels.event("s1", env.type))
    good = signer.seal(CHANNEL, encoded(1, priority=9))
    reply = [
        (b"1-1", [b"envelope", good]),
        (b"1-2", [b"envelope", deep(priority=9)]),
        (b"1-3", [b"envelope", encoded(2, priority=9)]),
        (b"1-4", [b"envelope", signer.seal(CHANNEL, encoded(3, priority=9))]),
    ]
    out, more = catch_up.take(reply, decode, SequenceTracker())
    assert [env.seq for env in out] == [1, 3]
    assert not more
    stats = catch_up.stats()
    assert (stats["replay_forged"], stats["replay_malformed"], stats["replay_cursor"]) == (
        2, 0, "1-4")
    unsigned = CatchUp(channels, "s1", "w", CriticalOptions(batch=10))
    unsigned.start_from(None, [b"1000", b"0"])
    out, _ = unsigned.take(reply[1:3], codec.decode, SequenceTracker())
    assert [env.seq for env in out] == [2]
    assert unsigned.stats()["replay_malformed"] == 1


def test_stored_history_decoding_skips_deep_entries() -> None:
    codec = Codec("json")
    entries = [encoded(2, type_="message"), deep(type_="message"), encoded(1, type_="message")]
    assert [m.seq for m in decode_stored(entries, codec.decode, "b")] == [1, 2]
