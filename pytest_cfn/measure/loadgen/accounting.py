"""Per-process delivery accounting, its snapshot, and the merge of snapshots from every process.

Handlers only append integers to lists (about 0.1 µs each); once a second ``flush`` folds the
lists into HdrHistograms and into one aggregate row per request type for Locust, so a process
never fires a Locust event per delivery. A snapshot is plain data (it travels from Locust
workers to the master); ``merge`` adds snapshots up and works out loss from counts:

* every publisher counts the measured events it sent, per destination swarm and priority;
* every subscriber (an agent's handler) counts the measured events it received, per priority;
* expected deliveries = measured events sent to a swarm x its subscribers that were listening
  before the window opened (later ones are reported, not counted); lost = expected - received.

Rates are counted by when things happened, not by when they were meant to: each process marks
the window's start and end on its own clock (``mark_window_start``/``mark_window_end``) and
counts the publishes and deliveries between the two marks, whatever their intended send time.
A load generator that falls behind its schedule thus lowers the rates instead of hiding in them.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_cfn.measure.loadgen.traffic import ScheduleLag
from pytest_cfn.measure.metrics.latency import LatencyHistogram

PRIORITIES = 10  # index 1..9; index 0 unused
BUS_COUNTERS = (
    "lost",
    "duplicates",
    "reordered",
    "dropped",
    "malformed",
    "reconnects",
    "handler_errors",
    "publish_failed",
    "cache_hits",
    "cache_misses",
)
Bucket = Callable[[float], int]
# Locust keeps whole milliseconds below 100 ms; integer rounding there avoids a call per value.
FLUSH_SLICE = 20_000
"""Send lags folded between two pauses (numpy: well under a millisecond)."""
WHOLE_MS_BELOW_NS = 99_500_000


@dataclass
class LocustRow:
    """One second's deliveries of one (request type, name), for Locust's statistics."""

    request_type: str
    name: str
    count: int
    total_ms: float
    min_ms: float
    max_ms: float
    buckets: dict[int, int]


class SubscriberTally:
    """What one subscribing agent received: measured events per priority, and when it started;
    ``arrivals`` counts every delivery (measured or not) so a window can be counted by receive
    time."""

    __slots__ = ("agent", "arrivals", "arrivals_at_start", "in_window", "ready_ns", "received",
                 "swarm")

    def __init__(self, swarm: str, agent: str, ready_ns: int) -> None:
        self.swarm = swarm
        self.agent = agent
        self.ready_ns = ready_ns
        self.received = [0] * PRIORITIES
        self.arrivals = 0
        self.arrivals_at_start = 0
        self.in_window = 0


class DeliveryRecorder:
    """Latencies and counts of one process; handlers append, ``flush`` folds once a second."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], list[int]] = {}
        self.latency: dict[tuple[str, str], LatencyHistogram] = {}
        self.transit = LatencyHistogram()
        self.lag_pending: array[int] = array("q")
        self.send_lag = LatencyHistogram()
        self.subscribers: list[SubscriberTally] = []
        self.published: dict[str, list[int]] = {}
        self.published_total = 0
        self.publish_errors = 0
        self.deliveries = 0
        self.start_mark_ns: int | None = None
        self.end_mark_ns: int | None = None
        self._published_at_start = 0
        self.sent_in_window = 0
        self.lag_at_end = ScheduleLag()

    def mark_window_start(self, now_ns: int) -> None:
        """The window starts now (this process's clock): remember every counter."""
        self.start_mark_ns = now_ns
        self._published_at_start = self.published_total
        for tally in self.subscribers:
            tally.arrivals_at_start = tally.arrivals

    def mark_window_end(self, now_ns: int, lag: ScheduleLag) -> None:
        """The window ends now: publishes and deliveries since the start mark, and how far
        behind their schedules this process's agents are."""
        if self.start_mark_ns is None:
            return
        self.end_mark_ns = now_ns
        self.sent_in_window = self.published_total - self._published_at_start
        for tally in self.subscribers:
            tally.in_window = tally.arrivals - tally.arrivals_at_start
        self.lag_at_end = lag

    def values_for(self, request_type: str, name: str) -> list[int]:
        """The list handlers append ``(request_type, name)`` latencies (ns) to; never replaced."""
        key = (request_type, name)
        values = self.pending.get(key)
        if values is None:
            values = self.pending[key] = []
            self.latency[key] = LatencyHistogram()
        return values

    def histogram(self, key: tuple[str, str]) -> LatencyHistogram:
        """The latency histogram of ``(request_type, name)``, made on first use."""
        histogram = self.latency.get(key)
        if histogram is None:
            histogram = self.latency[key] = LatencyHistogram()
        return histogram

    def published_counts(self, swarm: str) -> list[int]:
        """Measured events sent to ``swarm``, by priority; publishers increment it in place."""
        counts = self.published.get(swarm)
        if counts is None:
            counts = self.published[swarm] = [0] * PRIORITIES
        return counts

    def add_subscriber(self, swarm: str, agent: str, ready_ns: int) -> SubscriberTally:
        tally = SubscriberTally(swarm, agent, ready_ns)
        self.subscribers.append(tally)
        return tally

    def flush(self, bucket: Bucket, pause: Callable[[], None] | None = None) -> list[LocustRow]:
        """Fold pending values into the histograms; one row per key that had deliveries.

        ``pause`` is called between keys (the harness passes ``gevent.sleep(0)``) so a large
        flush does not hold up the agents' schedules.
        """
        rows: list[LocustRow] = []
        for key, values in list(self.pending.items()):
            if not values:
                continue
            batch = values[:]
            del values[:]
            self.latency[key].record_many(batch)
            self.deliveries += len(batch)
            low, high = min(batch), max(batch)
            if high < WHOLE_MS_BELOW_NS:
                counts = Counter([(v + 500_000) // 1_000_000 for v in batch])
            else:
                counts = Counter([bucket(v / 1e6) for v in batch])
            rows.append(
                LocustRow(
                    request_type=key[0],
                    name=key[1],
                    count=len(batch),
                    total_ms=sum(batch) / 1e6,
                    min_ms=low / 1e6,
                    max_ms=high / 1e6,
                    buckets=dict(counts),
                )
            )
            if pause is not None:
                pause()
        pending = self.lag_pending
        if pending:
            # the senders' lags, one machine integer each: numpy's bulk path, in slices (a
            # process sending 25,000 events/s gathers 5,000 between two flushes, whose fold
            # value by value held the loop for 3-6 ms)
            values = np.frombuffer(pending, dtype=np.int64).copy()
            del pending[:]
            for start in range(0, len(values), FLUSH_SLICE):
                self.send_lag.record_array(values[start:start + FLUSH_SLICE])
                if pause is not None:
                    pause()
        return rows

    def _window_marks(self) -> dict[str, int] | None:
        if self.start_mark_ns is None or self.end_mark_ns is None:
            return None
        return {
            "start_ns": self.start_mark_ns,
            "end_ns": self.end_mark_ns,
            "sent": self.sent_in_window,
            "lag_total_ns": self.lag_at_end.total_ns,
            "lag_max_ns": self.lag_at_end.max_ns,
            "lag_agents": self.lag_at_end.agents,
        }

    def snapshot(self, bus_stats: Iterable[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Everything this process measured, as plain data (call ``flush`` first)."""
        buses = list(bus_stats)
        counters = {name: sum(int(s.get(name, 0) or 0) for s in buses) for name in BUS_COUNTERS}
        worst = {
            f"max_{name}": max((int(s.get(name, 0) or 0) for s in buses), default=0)
            for name in ("lost", "duplicates", "reordered", "dropped")
        }
        return {
            "latency": {f"{k[0]}|{k[1]}": h.encode() for k, h in self.latency.items() if h.count},
            "transit": self.transit.encode(),
            "send_lag": self.send_lag.encode(),
            "published": {s: list(c) for s, c in self.published.items()},
            "published_total": self.published_total,
            "publish_errors": self.publish_errors,
            "deliveries": self.deliveries,
            "subscribers": [
                [t.swarm, t.agent, t.ready_ns, list(t.received), t.in_window]
                for t in self.subscribers
            ],
            "window_marks": self._window_marks(),
            "bus": {**counters, **worst, "buses": len(buses)},
            **extra,
        }


@dataclass
class RunTotals:
    """Snapshots of every process added up, and the figures derived from them."""

    processes: int = 0
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)
    all_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    transit: LatencyHistogram = field(default_factory=LatencyHistogram)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    published: dict[str, list[int]] = field(default_factory=dict)
    received: dict[str, list[int]] = field(default_factory=dict)
    listeners: dict[str, int] = field(default_factory=dict)
    per_subscriber: list[tuple[str, int]] = field(default_factory=list)
    late_subscribers: int = 0
    published_total: int = 0
    publish_errors: int = 0
    deliveries: int = 0
    bus: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    marked_processes: int = 0
    arrival_rate: dict[str, float] = field(default_factory=dict)
    sent_per_s: float = 0.0
    lag_at_end: ScheduleLag = field(default_factory=ScheduleLag)

    def expected(self, priorities: Iterable[int] = range(1, PRIORITIES)) -> int:
        wanted = list(priorities)
        return sum(
            counts[p] * self.listeners.get(swarm, 0)
            for swarm, counts in self.published.items()
            for p in wanted
        )

    def delivered(self, priorities: Iterable[int] = range(1, PRIORITIES)) -> int:
        wanted = list(priorities)
        return sum(counts[p] for counts in self.received.values() for p in wanted)

    def lost(self, priorities: Iterable[int] = range(1, PRIORITIES)) -> int:
        """Expected minus received deliveries, per swarm and priority, never below 0."""
        wanted = list(priorities)
        lost = 0
        for swarm, counts in self.published.items():
            listeners = self.listeners.get(swarm, 0)
            got = self.received.get(swarm, [0] * PRIORITIES)
            lost += sum(max(0, counts[p] * listeners - got[p]) for p in wanted)
        return lost

    def measured_events(self) -> int:
        return sum(sum(c) for c in self.published.values())

    def delivered_events(self) -> float:
        """Measured events counted once each, weighted by the share of listeners that got them."""
        total = 0.0
        for swarm in self.published:
            listeners = self.listeners.get(swarm, 0)
            if listeners:
                total += sum(self.received.get(swarm, [0])) / listeners
        return total

    def sustained_events_per_s(self) -> float:
        """Events delivered per second by receive time inside the window: each swarm's
        deliveries to on-time subscribers / its on-time subscribers, added over swarms."""
        return sum(
            rate / self.listeners[swarm]
            for swarm, rate in self.arrival_rate.items()
            if self.listeners.get(swarm)
        )

    def arrivals_per_s(self) -> float:
        """Deliveries to on-time subscribers per second, by receive time inside the window."""
        return sum(self.arrival_rate.values())

    def worst_subscriber_loss(self) -> int:
        """The most measured events any one on-time subscriber missed."""
        sent = {s: sum(c) for s, c in self.published.items()}
        return max((max(0, sent.get(s, 0) - got) for s, got in self.per_subscriber), default=0)


def merge(snapshots: Iterable[dict[str, Any]], window_start_ns: int) -> RunTotals:
    """Add up snapshots from every process; subscribers that started after the window opened
    are counted in ``late_subscribers`` and left out of the loss accounting. Each process's
    window counts are divided by its own marked span and the rates added up."""
    totals = RunTotals()
    for snap in snapshots:
        totals.processes += 1
        marks: dict[str, int] = snap.get("window_marks") or {}
        span_s = (marks["end_ns"] - marks["start_ns"]) / 1e9 if marks else 0.0
        if span_s > 0:
            totals.marked_processes += 1
            totals.sent_per_s += marks["sent"] / span_s
            totals.lag_at_end = totals.lag_at_end.merged(ScheduleLag(
                marks["lag_total_ns"], marks["lag_max_ns"], marks["lag_agents"]
            ))
        for key, encoded in snap.get("latency", {}).items():
            histogram = LatencyHistogram.decode(encoded)
            totals.latency.setdefault(key, LatencyHistogram()).merge(histogram)
            totals.all_latency.merge(histogram)
        totals.transit.merge(LatencyHistogram.decode(snap["transit"]))
        totals.send_lag.merge(LatencyHistogram.decode(snap["send_lag"]))
        for swarm, counts in snap.get("published", {}).items():
            mine = totals.published.setdefault(swarm, [0] * PRIORITIES)
            for p, n in enumerate(counts):
                mine[p] += n
        for swarm, _agent, ready_ns, received, in_window in snap.get("subscribers", []):
            if ready_ns > window_start_ns:
                totals.late_subscribers += 1
                continue
            totals.listeners[swarm] = totals.listeners.get(swarm, 0) + 1
            if span_s > 0:
                rates = totals.arrival_rate
                rates[swarm] = rates.get(swarm, 0.0) + in_window / span_s
            mine = totals.received.setdefault(swarm, [0] * PRIORITIES)
            for p, n in enumerate(received):
                mine[p] += n
            totals.per_subscriber.append((swarm, sum(received)))
        totals.published_total += int(snap.get("published_total", 0))
        totals.publish_errors += int(snap.get("publish_errors", 0))
        totals.deliveries += int(snap.get("deliveries", 0))
        for name, value in snap.get("bus", {}).items():
            if name.startswith("max_"):
                totals.bus[name] = max(totals.bus.get(name, 0), int(value))
            else:
                totals.bus[name] = totals.bus.get(name, 0) + int(value)
        for name, value in snap.get("sums", {}).items():
            totals.sums[name] = totals.sums.get(name, 0.0) + float(value)
    return totals
