"""A publish's PUBLISH command filled into a template is byte for byte the one the
Envelope path builds, takes one sequence number per publish (threads included) and
refuses what the Envelope path refuses; then the same through a real server, for both
front ends."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import msgspec
import pytest
import redis
from frontends import Frontend, wait_until

from pytest_cfn._core.breaker import CircuitBreaker
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.outbound import OutboundPlanner
from pytest_cfn._core.publish_template import PublishTemplate, ts_digits
from pytest_cfn._core.resp import encode_publish
from pytest_cfn._core.route_cache import RouteCache
from pytest_cfn._core.signing import EnvelopeSigner, SigningKeys
from pytest_cfn._core.throttle import PriorityThrottle
from pytest_cfn._errors import (
    CircuitOpenError,
    InvalidOptionError,
    MessageTooLargeError,
    ThrottledError,
)

NOW = 100.0
TS = 1_764_000_000_123_456_789

DATA = [
    None,
    {"agent": "coder-1", "n": 3},
    {"t": TS, "p": "x" * 168},
    [1, 2.5, True, None, "two"],
    "a \"quoted\" string with \\ and \n and \x01 and % and %d",
    "unicode: é ü 中文 🚀",
    0,
    -17,
    2**63,
    3.25,
    {"nested": {"deep": [{"a": [1, {"b": "c"}]}]}},
    {},
    [],
    "",
    msgspec.UNSET,
]


def planner(
    *,
    codec: str = "json",
    publisher: str = "coder-1.0a1b2c3d",
    swarm: str = "swarm-1",
    source: str = "coder-1",
    signer: EnvelopeSigner | None = None,
    max_message_bytes: int = 1024 * 1024,
    lock: Any = None,
) -> OutboundPlanner:
    return OutboundPlanner(
        Codec(codec), ChannelNames("ns"), swarm, source, publisher,
        route_cache=RouteCache(), throttle=PriorityThrottle(), breaker=CircuitBreaker(),
        max_message_bytes=max_message_bytes, signer=signer, lock=lock,
    )


def enveloped(plan: OutboundPlanner, channel: str, event_type: str, data: Any, priority: int,
              ts: int) -> tuple[bytes, str]:
    planned = plan.plan(channel, event_type, data, priority, ts)
    return planned.command, planned.envelope.id


@pytest.mark.parametrize("data", DATA, ids=repr)
@pytest.mark.parametrize("priority", [1, 5, 9])
def test_the_filled_template_is_the_envelope_path_byte_for_byte(data: Any, priority: int) -> None:
    templated, reference = planner(), planner()
    channel = "ns:event:swarm-1:agent.spawn"
    for _ in range(3):
        got = templated.plan_command("agent.spawn", data, priority, NOW, TS, channel)
        assert got == enveloped(reference, channel, "agent.spawn", data, priority, TS)


@pytest.mark.parametrize("ts", [0, 7, -5, 10**18 - 1, 10**18, TS, 10**19 - 1, 10**19, 10**25])
def test_every_length_of_the_clock_gives_the_right_payload_length(ts: int) -> None:
    assert ts_digits(ts) == len(b"%d" % ts)
    templated, reference = planner(), planner()
    got = templated.plan_command("a.b", {"k": 1}, 5, NOW, ts, "ch")
    assert got == enveloped(reference, "ch", "a.b", {"k": 1}, 5, ts)


def test_sequence_numbers_across_digit_boundaries_give_the_right_payload_length() -> None:
    templated, reference = planner(), planner()
    for seq in range(1, 1_002):
        got = templated.plan_command("a.b", None if seq % 2 else seq, 5, NOW, TS, "ch")
        assert got == enveloped(reference, "ch", "a.b", None if seq % 2 else seq, 5, TS), seq


@pytest.mark.parametrize("names", [
    {"publisher": 'p"%d\\-é', "swarm": "s%%1", "source": 'a"b'},
    {"publisher": "p", "swarm": "s", "source": "x"},
])
def test_names_that_need_escaping_are_encoded_as_msgspec_does(names: dict[str, str]) -> None:
    templated, reference = planner(**names), planner(**names)
    for event_type, channel in [("t%s", "c%d:é"), ('q"uote', "ch"), ("a.b", "ns:event:x:a.b")]:
        got = templated.plan_command(event_type, {"%": "%b"}, 6, NOW, TS, channel)
        assert got == enveloped(reference, channel, event_type, {"%": "%b"}, 6, TS)


def test_a_type_moving_between_channels_and_priorities_gets_each_ones_command() -> None:
    templated, reference = planner(), planner()
    for channel, priority in [("c1", 5), ("c2", 5), ("c1", 7), ("c1", 5), ("c2", 7), ("c2", 7)]:
        got = templated.plan_command("a.b", [channel, priority], priority, NOW, TS, channel)
        assert got == enveloped(reference, channel, "a.b", [channel, priority], priority, TS)


def test_the_template_alone_fills_what_the_envelope_encodes() -> None:
    encode = msgspec.json.Encoder().encode
    template = PublishTemplate(encode, "ch", "s", "src", "pub", "a.b", 4)
    payload = encode(Envelope(id="pub-12", swarm="s", source="src", type="a.b", priority=4,
                              seq=12, ts=TS, publisher="pub", data=[1]))
    size = template.with_data_base + 2 * len("pub-12") + ts_digits(TS) + len(b"[1]")
    assert size == len(payload)
    assert template.with_data % (size, 12, 12, TS, b"[1]") == encode_publish(b"ch", payload)


@pytest.mark.parametrize("settings", [
    {"codec": "msgpack"},
    {"signer": EnvelopeSigner(SigningKeys({"k1": b"0123456789abcdef0123456789abcdef"}))},
], ids=["msgpack", "signed"])
def test_msgpack_and_signing_buses_take_the_envelope_path(settings: dict[str, Any]) -> None:
    templated, reference = planner(**settings), planner(**settings)
    command, message_id = templated.plan_command("a.b", {"k": 1}, 5, NOW, TS, "ch")  # type: ignore[misc]
    assert (command, message_id) == enveloped(reference, "ch", "a.b", {"k": 1}, 5, TS)


def test_a_route_cache_miss_is_none_and_a_hit_plans() -> None:
    plan = planner()
    assert plan.plan_command("a.b", None, 5, NOW, TS) is None
    assert plan.published == 0, "a miss takes no sequence number"
    plan.learn_route("a.b", "ns:event:swarm-1:a.b", NOW)
    command, message_id = plan.plan_command("a.b", None, 5, NOW, TS)  # type: ignore[misc]
    assert message_id == "coder-1.0a1b2c3d-1"
    assert b"ns:event:swarm-1:a.b" in command


@pytest.mark.parametrize("priority", [0, 10, "5", 5.0, True, None, [5]])
def test_a_bad_priority_is_refused_as_before(priority: Any) -> None:
    plan = planner()
    plan.learn_route("a.b", "ch", NOW)
    with pytest.raises(InvalidOptionError, match="priorities are integers 1"):
        plan.plan_command("a.b", None, priority, NOW, TS)
    assert plan.published == 0


@pytest.mark.parametrize("priority", [0, 10, "5", 5.0, True, None, [5]])
def test_a_bad_priority_after_good_ones_is_refused_on_the_hot_path(priority: Any) -> None:
    plan = planner()
    plan.learn_route("a.b", "ch", NOW)
    for _ in range(3):  # the template of (a.b, 5) is the last one used: the hot path
        assert plan.plan_command("a.b", None, 5, NOW, TS) is not None
    with pytest.raises(InvalidOptionError, match="priorities are integers 1"):
        plan.plan_command("a.b", None, priority, NOW, TS)
    assert plan.published == 3


def test_the_hot_path_counts_route_hits_and_follows_a_changed_or_expired_route() -> None:
    cache = RouteCache(ttl=10.0)
    plan = OutboundPlanner(
        Codec("json"), ChannelNames("ns"), "swarm-1", "coder-1", "coder-1.0a1b2c3d",
        route_cache=cache, throttle=PriorityThrottle(), breaker=CircuitBreaker(),
    )
    plan.learn_route("a.b", "c1", NOW)
    for _ in range(4):
        command, _ = plan.plan_command("a.b", [1], 5, NOW, TS)  # type: ignore[misc]
        assert command.startswith(b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nc1\r\n")
    assert (cache.hits, cache.misses) == (4, 0)
    cache.invalidate("a.b")
    assert plan.plan_command("a.b", [1], 5, NOW, TS) is None
    plan.learn_route("a.b", "c2", NOW)
    command, _ = plan.plan_command("a.b", [1], 5, NOW, TS)  # type: ignore[misc]
    assert command.startswith(b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nc2\r\n")
    assert plan.plan_command("a.b", [1], 5, NOW + 10.0, TS) is None, "the route expired"
    assert (cache.hits, cache.misses, plan.published) == (5, 2, 5)


def test_an_open_breaker_and_the_throttle_refuse_on_the_hot_path() -> None:
    breaker = CircuitBreaker(failure_threshold=2)
    plan = OutboundPlanner(
        Codec("json"), ChannelNames("ns"), "swarm-1", "coder-1", "coder-1.0a1b2c3d",
        route_cache=RouteCache(), throttle=PriorityThrottle(rate=1.0, burst=1),
        breaker=breaker,
    )
    plan.learn_route("a.b", "ch", NOW)
    assert plan.plan_command("a.b", None, 5, NOW, TS) is not None
    with pytest.raises(ThrottledError):
        plan.plan_command("a.b", None, 5, NOW, TS)
    assert plan.plan_command("a.b", None, 7, NOW, TS) is not None  # 6-9 are not throttled
    breaker.record_failure(NOW)
    breaker.record_failure(NOW)
    with pytest.raises(CircuitOpenError):
        plan.plan_command("a.b", None, 7, NOW, TS)
    assert plan.published == 2


@pytest.mark.parametrize("takes", [True, False])
def test_an_offer_given_to_the_planner_gets_the_command_under_its_lock(takes: bool) -> None:
    lock = threading.RLock()
    taken: list[tuple[bytes, int, bool]] = []

    def offer(command: bytes, priority: int) -> bool:
        taken.append((command, priority, lock._is_owned()))  # type: ignore[attr-defined]
        return takes

    plan = OutboundPlanner(
        Codec("json"), ChannelNames("ns"), "swarm-1", "coder-1", "coder-1.0a1b2c3d",
        route_cache=RouteCache(), throttle=PriorityThrottle(), breaker=CircuitBreaker(),
        lock=lock, offer=offer,
    )
    reference = planner()
    for seq in (1, 2):
        want = enveloped(reference, "ch", "a.b", {"n": seq}, 6, TS)
        got = plan.plan_command("a.b", {"n": seq}, 6, NOW, TS, "ch")
        assert got == ((None, want[1]) if takes else want)
        assert taken[-1] == (want[0], 6, True), "offered the same bytes, holding the lock"
    assert plan.published == 2 and not lock._is_owned()  # type: ignore[attr-defined]


def test_refused_publishes_leave_no_gap_in_the_sequence() -> None:
    reference = planner()
    ref_command, _ = enveloped(reference, "ch", "a.b", "x" * 50, 5, TS)
    exact = len(msgspec.json.encode(Envelope(
        id="coder-1.0a1b2c3d-1", swarm="swarm-1", source="coder-1", type="a.b", priority=5,
        seq=1, ts=TS, publisher="coder-1.0a1b2c3d", data="x" * 50)))
    plan = planner(max_message_bytes=exact)
    with pytest.raises(MessageTooLargeError, match=f"is {exact + 1} bytes; the limit is {exact}"):
        plan.plan_command("a.b", "x" * 51, 5, NOW, TS, "ch")
    with pytest.raises(InvalidOptionError, match="cannot be encoded as json"):
        plan.plan_command("a.b", {"x": object()}, 5, NOW, TS, "ch")
    assert plan.plan_command("a.b", "x" * 50, 5, NOW, TS, "ch") == (ref_command,
                                                                     "coder-1.0a1b2c3d-1")
    assert plan.published == 1


def test_eight_threads_each_get_their_own_sequence_numbers_and_their_own_data() -> None:
    plan = planner(lock=threading.Lock())
    per_thread = 2_000
    seen: list[list[tuple[int, bytes, str]]] = [[] for _ in range(8)]

    def publish(thread: int, out: list[tuple[int, bytes, str]]) -> None:
        for n in range(per_thread):
            data = {"thread": thread, "n": n, "pad": "x" * (n % 50)}
            got = plan.plan_command("a.b", data, 5, NOW, TS, "ch")
            assert got is not None
            out.append((thread * per_thread + n, *got))

    threads = [threading.Thread(target=publish, args=(i, out)) for i, out in enumerate(seen)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    planned = [item for out in seen for item in out]
    seqs = sorted(int(message_id.rsplit("-", 1)[1]) for _, _, message_id in planned)
    assert seqs == list(range(1, 8 * per_thread + 1))
    for key, command, message_id in planned:  # each command carries its own id, seq, data
        envelope = msgspec.json.decode(command.split(b"\r\n")[-2], type=Envelope)
        assert envelope.id == message_id
        assert envelope.seq == int(message_id.rsplit("-", 1)[1])
        assert divmod(key, per_thread) == (envelope.data["thread"], envelope.data["n"])
        assert command == encode_publish(b"ch", msgspec.json.encode(envelope))


def test_a_large_message_is_planned_whole_and_its_buffer_not_kept() -> None:
    templated, reference = planner(), planner()
    for data in ("x" * 200_000, {"small": 1}, "y" * 70_000, None, [2]):
        got = templated.plan_command("a.b", data, 5, NOW, TS, "ch")
        assert got == enveloped(reference, "ch", "a.b", data, 5, TS)
    # msgspec keeps a buffer's capacity: after a large message the planner drops it
    assert sys.getsizeof(templated._data_buffer) < 64 * 1024


@pytest.mark.parametrize("data", [None, {"agent": "coder-1"}, "a \"quoted\" é"], ids=repr)
def test_the_server_relays_what_the_envelope_path_would_send(
    fe: Frontend, redis_server: Any, ns: str, raw: redis.Redis, data: Any
) -> None:
    pubsub = raw.pubsub()
    pubsub.psubscribe(f"{ns}:event:s1:*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"  # type: ignore[index]
    got: list[Envelope] = []
    sub = fe.event_bus(redis_server.url, "s1", "reviewer", namespace=ns)
    sub.subscribe("agent.*", got.append)
    pub = fe.event_bus(redis_server.url, "s1", "coder", namespace=ns)
    before = time.time_ns()
    ids = [pub.publish("agent.spawn", data, priority=p) for p in (3, 7, 9)]
    ids.append(pub.publish("agent.spawn", data, priority=5, correlation_id="req-1"))
    with pub.batch():
        ids.extend(pub.publish("agent.done", data) for _ in range(3))
    assert pub.flush() == 7
    assert wait_until(lambda: len(got) == 7)
    by_id = {event.id: event for event in got}
    payloads = []
    while len(payloads) < 7:
        message = pubsub.get_message(timeout=5)
        assert message is not None, f"only {len(payloads)} of 7 relayed"
        payloads.append(message["data"])
    pubsub.close()
    for seq, (message_id, payload) in enumerate(zip(ids, payloads, strict=True), 1):
        decoded = msgspec.json.decode(payload, type=Envelope)
        assert decoded == by_id[message_id], "the subscriber got what the server relayed"
        assert decoded.id == message_id and decoded.seq == seq
        assert before <= decoded.ts <= time.time_ns()
        expected = Envelope(
            id=message_id, swarm="s1", source="coder", type=decoded.type,
            priority=decoded.priority, seq=seq, ts=decoded.ts, publisher=decoded.publisher,
            correlation_id="req-1" if seq == 4 else None, data=data,
        )
        assert payload == msgspec.json.encode(expected), "byte for byte the Envelope's JSON"
    assert [by_id[message_id].priority for message_id in ids] == [3, 7, 9, 5, 5, 5, 5]
