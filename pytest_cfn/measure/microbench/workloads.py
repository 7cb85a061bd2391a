"""Our figures' workers: publish rate, end-to-end delivery rate and paced latency.

Each function here runs in a spawned process of its own (see ``processes``) and
returns plain data. Every event carries ``data = {"t": <ns>, "p": "xxx..."}``
whose JSON is ``payload`` bytes: ``t`` is the intended send time (wall clock,
ns) where latency is measured, a fixed stamp elsewhere.
"""

from __future__ import annotations

import time
from array import array
from multiprocessing.synchronize import Event
from typing import Any

from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.microbench.pacing import StopRule, send_paced

TICK = "bench.tick"
WARM = "bench.warm"
"""Warm-up events: delivered like the rest, left out of the latency histogram.
Same length as TICK so both are the same size on the wire."""
PATTERN = "bench.*"
_DATA_OVERHEAD = len('{"t":1000000000000000000,"p":""}')
_STAMP = 1_000_000_000_000_000_000


def event_data(payload: int, stamp: int = _STAMP) -> dict[str, Any]:
    """Event data whose JSON is ``payload`` bytes (or the smallest possible, 32 B)."""
    return {"t": stamp, "p": "x" * max(0, payload - _DATA_OVERHEAD)}


def wire_size(swarm: str, payload: int, event_type: str = TICK) -> int:
    """Bytes of one encoded envelope as our publisher sends it (the PUBLISH payload)."""
    from pytest_cfn._core.envelope import Codec, Envelope

    publisher = "publisher.0123abcd"
    envelope = Envelope(
        id=f"{publisher}-1000000",
        swarm=swarm,
        source="publisher",
        type=event_type,
        priority=5,
        seq=1_000_000,
        ts=time.time_ns(),
        publisher=publisher,
        data=event_data(payload),
    )
    return len(Codec("json").encode(envelope))


def our_publish(url: str, swarm: str, events: int, payload: int, warmup: int) -> dict[str, Any]:
    """Worker: ``EventBus.publish`` inside ``batch()``, then ``flush()``.

    Timed from the first publish to ``flush()`` returning, i.e. until Redis has
    acknowledged every publish.
    """
    from pytest_cfn import EventBus

    data = event_data(payload)
    with EventBus.from_url(url, swarm=swarm, agent="publisher") as bus:
        bus.connect()
        _publish_timed(bus, warmup, data, plain=False)
        seconds, cpu = _publish_timed(bus, events, data, plain=False)
        stats = bus.stats()
    return {"rate": events / seconds, "events": events,
            **unpaced_result(events, seconds, cpu, stats)}


def _publish_timed(bus: Any, events: int, data: dict[str, Any], plain: bool) -> tuple[float, float]:
    """(wall s, CPU s) of publishing ``events`` inside ``batch()`` (``plain``: a plain
    ``publish()`` loop, auto-pipelined) until ``flush()`` returned: Redis acknowledged all."""
    publish = bus.publish
    cpu = time.process_time()
    started = time.perf_counter()
    if plain:
        for _ in range(events):
            publish(TICK, data)
    else:
        with bus.batch():
            for _ in range(events):
                publish(TICK, data)
    bus.flush()
    return time.perf_counter() - started, time.process_time() - cpu


def unpaced_result(
    events: int, seconds: float, cpu: float, stats: dict[str, Any]
) -> dict[str, Any]:
    """An unpaced publisher's report (sync and asyncio alike)."""
    return {
        "published": stats["published"],
        "seconds": seconds,
        "cpu_us_per_event": cpu / events * 1e6,
        "stats": lean_stats(stats),
    }


def subscriber_result(
    counter: DeliveryCounter, cpu: float, stats: dict[str, Any]
) -> dict[str, Any]:
    """A counting subscriber's report (sync and asyncio alike): the rate is deliveries over
    the time from the first to the last delivery at the handler."""
    seconds = counter.last - counter.first
    return {
        "delivered": counter.count,
        "seconds": seconds,
        "rate": counter.count / seconds if seconds > 0 else 0.0,
        "cpu_us_per_event": cpu / counter.count * 1e6 if counter.count else 0.0,
        "forged": stats.get("forged", 0),
        "stats": lean_stats(stats),
    }


class DeliveryCounter:
    """The benchmark's handler: counts deliveries and notes the first and last time."""

    __slots__ = ("count", "first", "last")

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def __call__(self, event: Any) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now


def our_subscriber(
    url: str, swarm: str, expected: int, ready: Event, publisher_done: Event, deadline: float,
    signing_key: bytes | None = None,
) -> dict[str, Any]:
    """Worker: one EventBus subscriber counting deliveries at its handler (see StopRule);
    with ``signing_key``, checking every envelope's signature (forgeries are counted)."""
    from pytest_cfn import EventBus

    counter = DeliveryCounter()
    with EventBus.from_url(url, swarm=swarm, agent="subscriber",
                           signing_key=signing_key) as bus:
        bus.subscribe(PATTERN, counter)
        cpu = time.process_time()
        ready.set()
        StopRule(expected, publisher_done, deadline).wait(lambda: counter.count)
        bus.wait_idle(1.0)
        cpu = time.process_time() - cpu
        stats = bus.stats()
    return subscriber_result(counter, cpu, stats)


def our_unpaced_publisher(
    url: str, swarm: str, events: int, payload: int, plain: bool = False,
    signing_key: bytes | None = None,
) -> dict[str, Any]:
    """Worker: publish ``events`` as fast as ``batch()`` allows (or, ``plain``, as a
    plain ``publish()`` loop with no ``batch()``: auto-pipelined), then ``flush()``; with
    ``signing_key``, every envelope signed."""
    from pytest_cfn import EventBus

    data = event_data(payload)
    with EventBus.from_url(url, swarm=swarm, agent="publisher", signing_key=signing_key) as bus:
        bus.connect()
        seconds, cpu = _publish_timed(bus, events, data, plain)
        stats = bus.stats()
    return unpaced_result(events, seconds, cpu, stats)


class LatencyRecorder:
    """The latency handler: handler wall time minus the event's intended send time.

    ``from_send`` also records the time since the publish call itself (the
    envelope's ``ts``), which separates the sender's own lateness from transport.
    With ``explain``, every measured event's ``seq -> (intended, publish call,
    handler)`` wall-clock ns is kept as well (see ``explain``).
    """

    __slots__ = ("count", "from_send", "histogram", "stamps", "warm")

    def __init__(self, explain: bool = False) -> None:
        # Raw ns in integer arrays, folded into histograms after the run: folding in the
        # handler (LatencyHistogram.record, every 8,192 values) stalls it about 1 ms, a
        # pause of the measurement's own in the very tail it measures.
        self.histogram = array("q")
        self.from_send = array("q")
        self.count = 0
        self.warm = 0
        # seq, intended, publish call, handler: flat integers, nothing for the GC to walk
        self.stamps: array[int] | None = array("q") if explain else None

    def __call__(self, event: Any) -> None:
        received = time.time_ns()
        self.count += 1
        if event.type == TICK:
            intended = event.data["t"]
            self.histogram.append(received - intended)
            self.from_send.append(received - event.ts)
            if self.stamps is not None:
                self.stamps.extend((event.seq, intended, event.ts, received))
        else:
            self.warm += 1

    def result(self, stats: dict[str, Any], probe: Any, cpu: float = 0.0) -> dict[str, Any]:
        """The worker's report; with ``explain``, the per-stage stamps joined by seq. ``cpu``:
        the subscriber process's CPU seconds (all its threads) from ready to the last event."""
        out: dict[str, Any] = {
            "delivered": self.count,
            "cpu_us_per_event": cpu / self.count * 1e6 if self.count else 0.0,
            "warmup_delivered": self.warm,
            "histogram": histogram_of(self.histogram),
            "from_send": histogram_of(self.from_send),
            "stats": lean_stats(stats),
        }
        if self.stamps is not None and probe is not None:
            read = probe.stamps()
            flat = self.stamps
            out["stages"] = {
                flat[i]: (flat[i + 1], flat[i + 2], flat[i + 3], *read.get(flat[i], (0, 0)))
                for i in range(0, len(flat), 4)
            }
        return out


def histogram_of(values: array[int]) -> LatencyHistogram:
    """A histogram of latencies noted during a run (negative clock steps clamp to 1 ns)."""
    histogram = LatencyHistogram()
    histogram.record_many(values)
    return histogram


def latency_subscriber(
    url: str,
    swarm: str,
    expected: int,
    ready: Event,
    publisher_done: Event,
    deadline: float,
    explain: bool = False,
) -> dict[str, Any]:
    """Worker: an EventBus subscriber recording latency from the intended send time."""
    from pytest_cfn import EventBus
    from pytest_cfn._core.stages import StageProbe

    recorder = LatencyRecorder(explain)
    probe = StageProbe() if explain else None
    with EventBus.from_url(url, swarm=swarm, agent="subscriber") as bus:
        bus.attach_stage_probe(probe)
        bus.subscribe(PATTERN, recorder)
        cpu = time.process_time()
        ready.set()
        StopRule(expected, publisher_done, deadline).wait(lambda: recorder.count)
        bus.wait_idle(1.0)
        cpu = time.process_time() - cpu
        stats = bus.stats()
    return recorder.result(stats, probe, cpu)


def seq_of(message_id: str) -> int:
    """The sequence number in a message id ``{publisher}-{seq}``."""
    return int(message_id.rpartition("-")[2])


def paced_publisher(
    url: str,
    swarm: str,
    rate: float,
    duration: float,
    warmup: float,
    payload: int,
    explain: bool = False,
) -> dict[str, Any]:
    """Worker: EventBus.publish() at a fixed rate on an open schedule (see ``pacing``).

    One event due: ``publish()`` writes it at once. Several due after a late
    wake-up: they go out in one ``batch()`` (one write), acknowledgements read later.
    With ``explain``, the wall-clock ns when each publish's write had returned.
    """
    from pytest_cfn import EventBus

    pad = event_data(payload)["p"]
    written: array[int] | None = array("q") if explain else None
    with EventBus.from_url(url, swarm=swarm, agent="publisher") as bus:
        bus.connect()
        publish = bus.publish

        def send(due: list[tuple[int, bool]]) -> None:
            if len(due) == 1:
                intended_ns, measured = due[0]
                sent_id = publish(TICK if measured else WARM, {"t": intended_ns, "p": pad})
                if written is not None:
                    written.extend((seq_of(sent_id), time.time_ns()))
                return
            ids = []
            with bus.batch():
                for intended_ns, measured in due:
                    ids.append(publish(TICK if measured else WARM, {"t": intended_ns, "p": pad}))
            if written is not None:
                now = time.time_ns()
                for sent_id in ids:
                    written.extend((seq_of(sent_id), now))

        run = send_paced(rate, duration, warmup, send)
        bus.flush()
        stats = bus.stats()
    return paced_result(run, stats, written)


def paced_result(run: Any, stats: dict[str, Any], written: array[int] | None) -> dict[str, Any]:
    """A paced publisher's report (sync and asyncio alike)."""
    out: dict[str, Any] = {
        "published": stats["published"],
        **run.schedule_report(),
        "stats": lean_stats(stats),
    }
    if written is not None:
        out["written"] = {written[i]: written[i + 1] for i in range(0, len(written), 2)}
    return out


def lean_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The counters worth keeping from ``bus.stats()`` (plain ints and strings)."""
    keep = (
        "published", "delivered", "received", "dropped", "lost", "duplicates", "reordered",
        "malformed", "handler_errors", "reconnects", "retries", "publish_failed",
        "acknowledged", "breaker_state", "connections",
    )
    return {key: stats[key] for key in keep if key in stats}
