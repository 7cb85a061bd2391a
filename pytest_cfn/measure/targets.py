"""ADR-002's targets, the default gates of the plugin and the load harness.

Each can be overridden (pyproject ``[tool.cfn.targets]``, ini, command line or per
test). The ADR's headline figures (398,373 events/s, 2.5 µs) are *not* targets: they
were measured in-process without Redis; see ``ADR_CLAIMS``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from pytest_cfn._errors import InvalidOptionError


@dataclass(frozen=True)
class Targets:
    min_throughput: float = 10_000.0
    """Delivered events/s sustained (ADR: "10,000+ events/sec for 100-agent swarms")."""
    max_p99_ms: float = 1.0
    """End-to-end delivery p99 in ms (ADR: "sub-millisecond" Redis pub/sub latency)."""
    min_cache_hit_rate: float = 0.99
    """Route cache hit rate with a 10,000-entry cache (ADR claims 99.87 %)."""
    max_connections_per_subsystem: int = 2
    """Connections per subsystem per swarm (publisher + subscriber)."""
    max_maxclients_fraction: float = 0.2
    """Share of ``maxclients`` in use (ADR: 2,000 of 10,000 for 500 agents)."""
    max_critical_loss: int = 0
    """Priority 8-9 events lost."""

    def override(self, values: dict[str, Any]) -> Targets:
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                raise InvalidOptionError(
                    f"unknown target {key!r}; targets are: {', '.join(sorted(known))}"
                )
            try:
                value = float(raw)
            except (TypeError, ValueError) as exc:
                raise InvalidOptionError(f"target {key} must be a number, got {raw!r}") from exc
            if value < 0:
                raise InvalidOptionError(f"target {key} must be >= 0, got {value}")
            changes[key] = int(value) if known[key].type in ("int", int) else value
        return replace(self, **changes)


ADR_CONNECTION_TABLE: dict[int, int] = {10: 40, 50: 200, 100: 400, 500: 2000}
"""ADR-002's "Connection Scaling Analysis": total connections for N agents
(2 per subsystem, Event Bus + Messenger, per agent)."""

ADR_CLAIMS: dict[str, tuple[float, str, str]] = {
    "event_bus_throughput": (
        398_373.0,
        "events/s",
        "in-process EventEmitter + JSON.stringify, no Redis (Sprint 1.2)",
    ),
    "event_bus_avg_latency": (0.0025, "ms", "in-process, no Redis round trip"),
    "concurrent_100_agents": (
        7_083_543.0,
        "events/s",
        "100 'agents' run one after another in-process, no Redis",
    ),
    "messenger_throughput": (21_894.0, "messages/s", "in-process marshaling of 5 KB messages"),
    "cache_hit_rate": (0.9987, "fraction", "5 event types over 10,000 events"),
    "single_client": (4_800.0, "events/s", "Sprint 1.1 single-client prototype"),
}
