"""What one test measured, as plain data that merges across tests and xdist workers.

Theory of operation: a test's ``cfn_perf`` recorder produces one ``PerfSample`` per scope
(the test's node id unless the test names a group). Samples travel from workers to the
controller as builtins (``to_builtins``) and are merged per scope there: latency
histograms are merged bucket by bucket (never percentiles averaged), counters are summed,
measuring intervals are united, connection counts keep their maximum. Only then are the
figures computed and judged against the targets, once.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.results import Metric, judge
from pytest_cfn.measure.targets import ADR_CONNECTION_TABLE, Targets

CONNECTIONS_PER_AGENT = ADR_CONNECTION_TABLE[10] // 10
FAKE_PREFIX = "[fakeredis, not a real server: figure not representative, never gated] "


class PerfSample(msgspec.Struct, kw_only=True):
    """Raw figures of one scope; every field merges without losing information."""

    scope: str
    backend: str = "redis-server"
    redis_version: str = ""
    workers: list[str] = msgspec.field(default_factory=list)
    tests: list[str] = msgspec.field(default_factory=list)
    targets: dict[str, float] = msgspec.field(default_factory=dict)
    methods: dict[str, str] = msgspec.field(default_factory=dict)
    latency: str | None = None
    latency_clamped: int = 0
    latency_synthetic: int = 0
    events: int = 0
    intervals: list[tuple[float, float]] = msgspec.field(default_factory=list)
    loss_recorded: bool = False
    expected: int = 0
    lost: int = 0
    critical_recorded: bool = False
    critical_expected: int = 0
    critical_lost: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    connections_sampled: bool = False
    max_connections_per_subsystem: int = 0
    connections_total: int = 0
    agents: int = 0
    connected_clients: int = 0
    maxclients: int | None = None
    clients_node: str = ""
    """Whose connected_clients / maxclients these are: "" for the one server, "the fullest
    master's" on Redis Cluster."""

    @property
    def is_fake(self) -> bool:
        return self.backend == "fakeredis"

    def histogram(self) -> LatencyHistogram | None:
        if self.latency is None:
            return None
        return LatencyHistogram.decode(self.latency)

    def busy_seconds(self) -> float:
        """Length of the union of the measuring intervals (wall clock, same host)."""
        total = 0.0
        end = float("-inf")
        for start, stop in sorted(self.intervals):
            if stop <= end:
                continue
            total += stop - max(start, end)
            end = stop
        return total

    def is_empty(self) -> bool:
        return not (
            self.latency is not None
            or self.events
            or self.loss_recorded
            or self.critical_recorded
            or self.cache_hits
            or self.cache_misses
            or self.connections_sampled
        )


def to_builtins(sample: PerfSample) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(sample)
    return data


def from_builtins(data: Any) -> PerfSample:
    return msgspec.convert(data, PerfSample)


def _union(first: list[str], second: list[str]) -> list[str]:
    return first + [item for item in second if item not in first]


def merge_samples(samples: list[PerfSample]) -> PerfSample:
    """One sample holding everything in ``samples`` (all of one scope)."""
    first = samples[0]
    merged = msgspec.structs.replace(
        first,
        workers=list(first.workers),
        tests=list(first.tests),
        targets=dict(first.targets),
        methods=dict(first.methods),
        intervals=list(first.intervals),
    )
    histogram = first.histogram()
    for sample in samples[1:]:
        merged.workers = _union(merged.workers, sample.workers)
        merged.tests = _union(merged.tests, sample.tests)
        for name, method in sample.methods.items():
            merged.methods.setdefault(name, method)
        other = sample.histogram()
        if other is not None:
            if histogram is None:
                histogram = LatencyHistogram()
            histogram.merge(other)
        merged.latency_clamped += sample.latency_clamped
        merged.latency_synthetic += sample.latency_synthetic
        merged.events += sample.events
        merged.intervals.extend(sample.intervals)
        merged.loss_recorded = merged.loss_recorded or sample.loss_recorded
        merged.expected += sample.expected
        merged.lost += sample.lost
        merged.critical_recorded = merged.critical_recorded or sample.critical_recorded
        merged.critical_expected += sample.critical_expected
        merged.critical_lost += sample.critical_lost
        merged.cache_hits += sample.cache_hits
        merged.cache_misses += sample.cache_misses
        if sample.connections_sampled:
            merged.connections_sampled = True
            merged.max_connections_per_subsystem = max(
                merged.max_connections_per_subsystem, sample.max_connections_per_subsystem
            )
            merged.connections_total = max(merged.connections_total, sample.connections_total)
            merged.agents = max(merged.agents, sample.agents)
            merged.connected_clients = max(merged.connected_clients, sample.connected_clients)
            merged.maxclients = sample.maxclients or merged.maxclients
            merged.clients_node = sample.clients_node or merged.clients_node
        if sample.is_fake:
            merged.backend = sample.backend
    merged.latency = histogram.encode() if histogram is not None else None
    return merged


def merge_by_scope(samples: list[PerfSample]) -> list[PerfSample]:
    """Merge samples that share a scope, keeping the order scopes first appeared in."""
    groups: dict[str, list[PerfSample]] = {}
    for sample in samples:
        groups.setdefault(sample.scope, []).append(sample)
    return [merge_samples(group) for group in groups.values()]


def _origin(sample: PerfSample) -> str:
    parts = []
    if len(sample.tests) > 1:
        parts.append(f"{len(sample.tests)} tests")
    if len(sample.workers) > 1:
        parts.append(f"workers {', '.join(sorted(sample.workers))}")
    return f"; merged from {' and '.join(parts)}" if parts else ""


def sample_metrics(sample: PerfSample) -> list[Metric]:
    """The figures of one (merged) sample, each judged against the sample's targets."""
    targets = Targets().override(sample.targets) if sample.targets else Targets()
    prefix = FAKE_PREFIX if sample.is_fake else ""
    origin = _origin(sample)
    rows: list[Metric] = []

    def add(
        name: str,
        value: float,
        unit: str,
        target: float | None,
        op: Any,
        better: Any,
        default_method: str,
        latency: dict[str, Any] | None = None,
    ) -> None:
        method = prefix + sample.methods.get(name, default_method) + origin
        verdict = "info" if sample.is_fake else judge(value, target, op)
        rows.append(
            Metric(
                name=name,
                value=value,
                unit=unit,
                method=method,
                target=target,
                op=op if target is not None else None,
                verdict=verdict,
                better=better,
                scope=sample.scope,
                latency=latency,
            )
        )

    busy = sample.busy_seconds()
    if sample.events and busy > 0:
        add(
            "throughput", sample.events / busy, "events/s", targets.min_throughput, ">=",
            "higher", "events counted by the test / union of its measuring intervals (wall clock)",
        )
    histogram = sample.histogram()
    if histogram is not None and histogram.count:
        summary = histogram.to_dict()
        summary["clamped"] = sample.latency_clamped
        summary["synthetic"] = sample.latency_synthetic
        add(
            "latency_p99", summary["p99_us"] / 1000.0, "ms", targets.max_p99_ms, "<=", "lower",
            f"p99 of {histogram.count} latencies recorded by the test (HdrHistogram, 3 digits)",
            latency=summary,
        )
    lookups = sample.cache_hits + sample.cache_misses
    if lookups:
        add(
            "cache_hit_rate", sample.cache_hits / lookups, "fraction",
            targets.min_cache_hit_rate, ">=", "higher",
            f"route cache hits / lookups over {lookups} lookups",
        )
    if sample.loss_recorded:
        add(
            "loss", float(sample.lost), "events", None, None, "lower",
            f"events not delivered (expected {sample.expected})" if sample.expected
            else "events counted as lost (sequence gaps and queue drops)",
        )
    if sample.critical_recorded:
        add(
            "critical_loss", float(sample.critical_lost), "events",
            float(targets.max_critical_loss), "<=", "lower",
            f"priority 8-9 events not delivered (expected {sample.critical_expected})",
        )
    if sample.connections_sampled:
        add(
            "connections_per_subsystem", float(sample.max_connections_per_subsystem),
            "connections", float(targets.max_connections_per_subsystem), "<=", "lower",
            "largest CLIENT LIST count of this test's connections sharing one "
            "(subsystem, swarm, agent), from the names the library sets",
        )
        agents = sample.agents
        add(
            "connections_total", float(sample.connections_total), "connections",
            float(CONNECTIONS_PER_AGENT * agents) if agents else None, "<=", "lower",
            f"CLIENT LIST count of this test's connections; target from ADR-002's table, "
            f"{CONNECTIONS_PER_AGENT} per agent, for {agents} agents",
        )
        if sample.maxclients:
            add(
                "maxclients_fraction", sample.connected_clients / sample.maxclients, "fraction",
                targets.max_maxclients_fraction, "<=", "lower",
                f"INFO connected_clients ({sample.connected_clients}, everyone's) / "
                f"maxclients ({sample.maxclients})"
                + (f", {sample.clients_node} (Redis Cluster: each master refuses clients past "
                   "its own maxclients)" if sample.clients_node else ""),
            )
    return rows
