"""The measured workload behind ``cfn_perf.run_event_bus()``: publish, deliver, time it.

Method: ``publishers`` Event Bus instances publish ``events`` events each on one swarm of
the test's namespace; ``subscribers`` instances receive every event. A handler records
receive time minus send time (one host, one wall clock) into its own histogram. Unpaced
(``rate=None``) the send time is the publish call and events go out in batches of
``batch``; paced, each event has an intended send time ``start + i / rate`` and latency is
measured from that intended time, so a publisher that falls behind shows up in the
latency (coordinated omission corrected as wrk2 does). Throughput is deliveries (events x
subscribers) over first send to last delivery.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.metrics.latency import LatencyHistogram, LatencyPercentiles

if TYPE_CHECKING:
    from pytest_cfn._sync.event_bus import EventBus
    from pytest_cfn.pytest_support.perf_recorder import ConnectionCount, PerfRecorder

EVENT_TYPE = "perf.tick"
CRITICAL = 9


@dataclass(frozen=True)
class WorkloadResult:
    """What one run of the workload measured (also recorded into ``cfn_perf``)."""

    published: int
    delivered: int
    expected: int
    seconds: float
    throughput: float
    latency: LatencyPercentiles
    cache_hits: int
    cache_misses: int
    connections: ConnectionCount | None

    @property
    def lost(self) -> int:
        return self.expected - self.delivered


class _Receiver:
    """One subscriber's handler: a histogram and counters written by its dispatcher only."""

    __slots__ = ("critical", "delivered", "histogram", "last_ns", "paced")

    def __init__(self, paced: bool) -> None:
        self.histogram = LatencyHistogram()
        self.delivered = 0
        self.critical = 0
        self.last_ns = 0
        self.paced = paced

    def __call__(self, event: Any) -> None:
        now = time.time_ns()
        sent = event.data["t"] if self.paced else event.ts
        self.histogram.record(now - sent)
        self.delivered += 1
        if event.priority >= 8:
            self.critical += 1
        self.last_ns = now


@dataclass(frozen=True)
class EventBusWorkload:
    """Settings of one run; checked when created."""

    events: int = 20_000
    publishers: int = 1
    subscribers: int = 1
    rate: float | None = None
    batch: int = 100
    payload_bytes: int = 200
    priority: int = 5
    critical_every: int = 0
    event_types: int = 1
    swarm: str = "perf"
    timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("events", "publishers", "subscribers", "batch", "event_types"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidOptionError(f"{name} must be an integer >= 1, got {value!r}")
        if self.rate is not None and not self.rate > 0:
            raise InvalidOptionError(f"rate must be > 0 events/s or None, got {self.rate!r}")
        if self.payload_bytes < 0 or self.critical_every < 0:
            raise InvalidOptionError("payload_bytes and critical_every must be >= 0")
        if not self.timeout > 0:
            raise InvalidOptionError(f"timeout must be > 0 s, got {self.timeout!r}")

    def method(self) -> str:
        if self.rate:
            pace = f"paced at {self.rate:g} events/s"
        else:
            pace = f"unpaced, batches of {self.batch}"
        return (
            f"Event Bus workload: {self.publishers} publisher(s) x {self.events} events of "
            f"{self.payload_bytes} B, {self.subscribers} subscriber(s), {pace}"
        )

    def run(self, recorder: PerfRecorder) -> WorkloadResult:
        from pytest_cfn._sync.event_bus import EventBus

        url = recorder.endpoint.url
        namespace = recorder.namespace
        paced = self.rate is not None
        receivers = [_Receiver(paced) for _ in range(self.subscribers)]
        buses: list[EventBus] = []
        try:
            subs = []
            for index, receiver in enumerate(receivers):
                bus = EventBus(url, self.swarm, f"sub-{index}", namespace=namespace)
                buses.append(bus)
                bus.subscribe(EVENT_TYPE.split(".")[0] + ".*", receiver)
                subs.append(bus)
            pubs = []
            for index in range(self.publishers):
                bus = EventBus(url, self.swarm, f"pub-{index}", namespace=namespace)
                buses.append(bus)
                bus.connect()
                pubs.append(bus)
            connections = recorder.sample_connections()
            start = time.time()
            published, critical_sent = self._publish_all(pubs)
            expected = published * self.subscribers
            deadline = time.monotonic() + self.timeout
            while sum(r.delivered for r in receivers) < expected and time.monotonic() < deadline:
                time.sleep(0.002)
            for bus in subs:
                bus.wait_idle(1.0)
            end_ns = max((r.last_ns for r in receivers), default=0)
            end = end_ns / 1e9 if end_ns else time.time()
            cache_hits = sum(int(bus.stats()["cache_hits"]) for bus in pubs)
            cache_misses = sum(int(bus.stats()["cache_misses"]) for bus in pubs)
        finally:
            for bus in buses:
                bus.close()
        return self._record(
            recorder, receivers, published, critical_sent, start, end,
            cache_hits, cache_misses, connections,
        )

    def _payload(self) -> str:
        return "x" * self.payload_bytes

    def _priority(self, index: int) -> int:
        if self.critical_every and index % self.critical_every == 0:
            return CRITICAL
        return self.priority

    def _type(self, index: int) -> str:
        return EVENT_TYPE if self.event_types == 1 else f"{EVENT_TYPE}{index % self.event_types}"

    def _publish_all(self, pubs: list[EventBus]) -> tuple[int, int]:
        pad = self._payload()
        published = critical = 0
        if self.rate is None:
            for first in range(0, self.events, self.batch):
                chunk = range(first, min(first + self.batch, self.events))
                for bus in pubs:
                    with bus.batch():
                        for index in chunk:
                            priority = self._priority(index)
                            bus.publish(self._type(index), pad, priority)
                            published += 1
                            critical += priority >= 8
            for bus in pubs:
                bus.flush()
            return published, critical
        interval_ns = int(1e9 / self.rate)
        start_ns = time.time_ns()
        index = 0
        while index < self.events:
            now = time.time_ns()
            due = min(self.events, (now - start_ns) // interval_ns + 1)
            if due <= index:
                time.sleep(min((start_ns + index * interval_ns - now) / 1e9, 0.001))
                continue
            for bus in pubs:
                with bus.batch():
                    for i in range(index, due):
                        priority = self._priority(i)
                        bus.publish(
                            self._type(i), {"t": start_ns + i * interval_ns, "p": pad}, priority
                        )
                        published += 1
                        critical += priority >= 8
            index = due
        for bus in pubs:
            bus.flush()
        return published, critical

    def _record(
        self,
        recorder: PerfRecorder,
        receivers: list[_Receiver],
        published: int,
        critical_sent: int,
        start: float,
        end: float,
        cache_hits: int,
        cache_misses: int,
        connections: ConnectionCount | None,
    ) -> WorkloadResult:
        histogram = LatencyHistogram()
        for receiver in receivers:
            histogram.merge(receiver.histogram)
        delivered = sum(r.delivered for r in receivers)
        expected = published * self.subscribers
        seconds = max(end - start, 1e-9)
        method = self.method()
        recorder.add_histogram(histogram)
        recorder.add_events(delivered)
        recorder.add_interval(start, end)
        recorder.record_loss(expected, delivered)
        recorder.record_critical(
            critical_sent * self.subscribers, sum(r.critical for r in receivers)
        )
        recorder.record_cache(cache_hits, cache_misses)
        sent_from = "intended send time" if self.rate else "publish call"
        recorder.describe(
            "throughput", f"deliveries / first send to last delivery (wall clock); {method}"
        )
        recorder.describe(
            "latency_p99", f"p99 of handler receive time - {sent_from}, {delivered} deliveries "
            f"(HdrHistogram); {method}",
        )
        recorder.describe("loss", f"deliveries expected - received within {self.timeout:g} s")
        recorder.describe("critical_loss", "priority 8-9 deliveries expected - received")
        recorder.describe(
            "cache_hit_rate", f"publishers' route cache hits / lookups over {self.event_types} "
            "event type(s)",
        )
        return WorkloadResult(
            published=published,
            delivered=delivered,
            expected=expected,
            seconds=seconds,
            throughput=delivered / seconds,
            latency=histogram.percentiles(),
            cache_hits=cache_hits,
            cache_misses=cache_misses,
            connections=connections,
        )
