"""``cfn_perf``: what a test measured, recorded against the ADR-002 targets.

A test either runs the built-in measured workload (:meth:`PerfRecorder.run_event_bus`) or
records its own samples: latencies into a histogram, events over measuring intervals,
loss, route cache lookups, and the connections the server sees (``CLIENT LIST``, counted
by the names the library sets, inside the test's namespace). The plugin gathers every
test's sample, merges them per scope across xdist workers, and judges them once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pytest_cfn._core.connection_names import parse_connection_name
from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.targets import Targets
from pytest_cfn.pytest_support.perf_sample import PerfSample, sample_metrics

if TYPE_CHECKING:
    from pytest_cfn.measure.results import Metric
    from pytest_cfn.pytest_support.endpoint import RedisEndpoint
    from pytest_cfn.pytest_support.workload import WorkloadResult

CRITICAL_PRIORITIES = (8, 9)


@dataclass(frozen=True)
class ConnectionCount:
    """This test's connections as the server lists them, and the server's totals."""

    total: int
    by_owner: dict[tuple[str, str, str], int]
    """``(subsystem, swarm, agent)`` -> connections, from ``cfn:{subsystem}-{pub|sub}:...``."""
    agents: int
    connected_clients: int
    maxclients: int | None
    """On Redis Cluster both are the fullest master's (the highest connected_clients /
    maxclients; each master refuses clients past its own maxclients), named by
    ``fullest_master``."""
    per_master: dict[tuple[str, str, str, str], int] | None = None
    """Redis Cluster: ``(subsystem, swarm, agent, master)`` -> connections."""
    fullest_master: str = ""

    @property
    def max_per_subsystem(self) -> int:
        """Per master on a cluster (a Messenger has a publisher on each master it sends to)."""
        counts = self.per_master if self.per_master is not None else self.by_owner
        return max(counts.values(), default=0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def count_connections(client: Any, namespace: str) -> ConnectionCount:
    """CLIENT LIST entries named ``cfn:{role}:{swarm}:{agent}@{namespace}``, grouped."""
    from pytest_cfn.cluster_nodes import each_master, fullest_master

    by_owner: dict[tuple[str, str, str], int] = {}
    per_master: dict[tuple[str, str, str, str], int] = {}
    entries: list[dict[str, Any]] = []
    clients: dict[str, tuple[int, int | None]] = {}
    with each_master(client) as nodes:  # one server: itself; a cluster: every master
        for where, node in nodes:
            listed = node.client_list()
            entries += [{**entry, "cfn_node": where} for entry in listed]
            clients[where] = (_connected(node, len(listed)), _maxclients(node))
    for entry in entries:
        name = parse_connection_name(entry.get("name", ""))
        if name is None or name.namespace != namespace:
            continue
        key = (name.subsystem, name.swarm, name.owner)
        by_owner[key] = by_owner.get(key, 0) + 1
        at = (name.subsystem, name.swarm, name.owner, entry["cfn_node"])
        per_master[at] = per_master.get(at, 0) + 1
    fullest = fullest_master(clients)
    return ConnectionCount(
        total=sum(by_owner.values()),
        by_owner=by_owner,
        agents=len({(swarm, agent) for _, swarm, agent in by_owner}),
        connected_clients=fullest.connected_clients,
        maxclients=fullest.maxclients,
        per_master=per_master if any(e["cfn_node"] for e in entries) else None,
        fullest_master=fullest.node,
    )


def _connected(node: Any, listed: int) -> int:
    import redis

    try:
        return int(node.info("clients").get("connected_clients", 0))
    except redis.ResponseError:  # fakeredis has no INFO: count CLIENT LIST's entries
        return listed


def _maxclients(node: Any) -> int | None:
    import redis

    try:
        reply = node.config_get("maxclients")
        return int(_text(reply.get("maxclients", 0))) or None
    except redis.ResponseError:
        return None


class PerfRecorder:
    """The ``cfn_perf`` fixture's object; one per test.

    Record from the test's thread; a handler running on another thread should fill its
    own :class:`LatencyHistogram` and hand it over with :meth:`add_histogram`.
    """

    def __init__(
        self,
        *,
        nodeid: str,
        worker: str,
        endpoint: RedisEndpoint,
        namespace: str,
        targets: Targets,
        client: Callable[[], Any],
        group: str | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.worker = worker
        self.endpoint = endpoint
        self.namespace = namespace
        self.group = group
        self._targets = targets
        self._client = client
        self._sample = PerfSample(scope=nodeid)
        self._histogram: LatencyHistogram | None = None

    @property
    def targets(self) -> Targets:
        """The targets this test is judged against (session ones plus marker and overrides)."""
        return self._targets

    def set_targets(self, **values: float) -> Targets:
        """Override targets for this test only: ``cfn_perf.set_targets(max_p99_ms=5)``."""
        self._targets = self._targets.override(values)
        return self._targets

    @property
    def scope(self) -> str:
        """The row this test's figures go to: its node id, or its group if it has one."""
        return self.group or self.nodeid

    @property
    def latency(self) -> LatencyHistogram:
        """End-to-end latencies in ns; ``cfn_perf.latency.record(ns)``."""
        if self._histogram is None:
            self._histogram = LatencyHistogram()
        return self._histogram

    def record_latency(self, ns: int) -> None:
        self.latency.record(ns)

    def add_histogram(self, histogram: LatencyHistogram) -> None:
        """Merge a histogram filled elsewhere (a handler thread, a subprocess)."""
        self.latency.merge(histogram)

    @contextmanager
    def measuring(self) -> Iterator[None]:
        """``with cfn_perf.measuring(): ...`` marks an interval events are counted over."""
        start = time.time()
        try:
            yield
        finally:
            self._sample.intervals.append((start, time.time()))

    def add_interval(self, start: float, end: float) -> None:
        """A measuring interval in wall-clock seconds (``time.time()``) measured elsewhere."""
        if end < start:
            raise ValueError(f"interval ends ({end}) before it starts ({start})")
        self._sample.intervals.append((float(start), float(end)))

    def add_events(self, count: int) -> None:
        """Count events (delivered ones, for throughput) inside :meth:`measuring` intervals."""
        self._sample.events += int(count)

    def record_throughput(self, events: int, seconds: float) -> None:
        """``events`` over an interval of ``seconds`` that has just ended."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        end = time.time()
        self._sample.events += int(events)
        self._sample.intervals.append((end - seconds, end))

    def record_loss(self, expected: int, delivered: int) -> None:
        """Loss is ``expected - delivered`` (never below zero)."""
        self._sample.loss_recorded = True
        self._sample.expected += int(expected)
        self._sample.lost += max(0, int(expected) - int(delivered))

    def record_critical(self, expected: int, delivered: int) -> None:
        """Priority 8-9 events expected and delivered; any shortfall is critical loss."""
        self._sample.critical_recorded = True
        self._sample.critical_expected += int(expected)
        self._sample.critical_lost += max(0, int(expected) - int(delivered))

    def record_cache(self, hits: int, misses: int) -> None:
        self._sample.cache_hits += int(hits)
        self._sample.cache_misses += int(misses)

    def record_bus(self, *buses: Any) -> None:
        """Route cache lookups, detected loss and priority 8-9 drops from ``bus.stats()``."""
        lost = critical = 0
        for bus in buses:
            stats = bus.stats()
            self.record_cache(stats.get("cache_hits", 0), stats.get("cache_misses", 0))
            lost += int(stats.get("lost", 0)) + int(stats.get("dropped", 0))
            by_priority = stats.get("dropped_by_priority", {})
            critical += sum(int(by_priority.get(p, 0)) for p in CRITICAL_PRIORITIES)
        self._sample.loss_recorded = True
        self._sample.lost += lost
        self._sample.critical_recorded = True
        self._sample.critical_lost += critical
        self.describe(
            "loss", "sequence gaps + dispatch queue drops counted by the subscribing buses"
        )
        self.describe("critical_loss", "priority 8-9 dispatch queue drops counted by the buses")

    def sample_connections(self) -> ConnectionCount:
        """Count this test's connections on the server now and record the figures."""
        client = self._client()
        try:
            counts = count_connections(client, self.namespace)
        finally:
            client.close()
        sample = self._sample
        sample.connections_sampled = True
        sample.max_connections_per_subsystem = max(
            sample.max_connections_per_subsystem, counts.max_per_subsystem
        )
        sample.connections_total = max(sample.connections_total, counts.total)
        sample.agents = max(sample.agents, counts.agents)
        sample.connected_clients = max(sample.connected_clients, counts.connected_clients)
        sample.maxclients = counts.maxclients
        if counts.fullest_master:
            sample.clients_node = "the fullest master's"
        return counts

    def describe(self, metric: str, method: str) -> None:
        """Say how a figure was measured; shown in the table and stored in the JSON."""
        self._sample.methods[metric] = method

    def run_event_bus(self, **workload: Any) -> WorkloadResult:
        """Run the built-in Event Bus workload (see ``EventBusWorkload``) and record it."""
        from pytest_cfn.pytest_support.workload import EventBusWorkload

        return EventBusWorkload(**workload).run(self)

    def sample(self) -> PerfSample:
        """Everything recorded so far, as a sample of this test's scope."""
        sample = self._sample
        histogram = self._histogram
        return PerfSample(
            scope=self.scope,
            backend=self.endpoint.backend,
            redis_version=self.endpoint.version,
            workers=[self.worker],
            tests=[self.nodeid],
            targets={k: float(v) for k, v in asdict(self._targets).items()},
            methods=dict(sample.methods),
            latency=histogram.encode() if histogram is not None and histogram.count else None,
            latency_clamped=histogram.clamped if histogram is not None else 0,
            latency_synthetic=histogram.synthetic if histogram is not None else 0,
            events=sample.events,
            intervals=list(sample.intervals),
            loss_recorded=sample.loss_recorded,
            expected=sample.expected,
            lost=sample.lost,
            critical_recorded=sample.critical_recorded,
            critical_expected=sample.critical_expected,
            critical_lost=sample.critical_lost,
            cache_hits=sample.cache_hits,
            cache_misses=sample.cache_misses,
            connections_sampled=sample.connections_sampled,
            max_connections_per_subsystem=sample.max_connections_per_subsystem,
            connections_total=sample.connections_total,
            agents=sample.agents,
            connected_clients=sample.connected_clients,
            maxclients=sample.maxclients,
        )

    def metrics(self) -> list[Metric]:
        """This test's own figures, judged now (the session table merges and judges again)."""
        return sample_metrics(self.sample())
