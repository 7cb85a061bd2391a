"""What a benchmark run measures, and against which server and clients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_IDLE_BUS_BYTES = 1024 * 1024
"""The memory target: under 1 MB of memory per idle bus beyond its sockets."""
MAX_P99_US = 1000.0
"""ADR-002's target: sub-millisecond delivery at p99."""
E2E_TARGET_FACTOR = 2.0
"""The end-to-end target: delivered >= 2x redis-py's end to end in the same run."""
CPU_TARGET_FACTOR = 0.5
"""The CPU target: CPU per publish and per delivery <= 0.5x redis-py's, same run."""
PLAIN_TARGET_FACTOR = 0.7
"""The plain-publish target: a plain publish() loop (auto-pipelined) >= 0.7x the batch() rate."""
MAX_P99_9_US = 3000.0
"""The tail target: p99.9 under 3 ms at each offered rate."""
STEPS = ("ceiling", "throughput", "tls", "latency", "memory", "messenger", "signing")
"""The run's steps in order: redis-benchmark; drain, pipeline, publish and end to end;
TLS's cost per event (only when the server is reached over TLS); latency at a fixed
rate; memory per idle bus; the Messenger beside the Event Bus; end to end with and
without signed envelopes."""
MESSAGE_BYTES = 5 * 1024
"""The Messenger figure's message size: delivered messages/s for 5 KB messages."""
WINDOW_BYTES = 16 * 1024 * 1024
"""How far (bytes on the wire) the sender may run ahead of the receiver in the Messenger
step: half the server's default ``client-output-buffer-limit pubsub 32mb``."""


@dataclass(frozen=True)
class BenchConfig:
    """What to run; built from the command line (see ``command``)."""

    redis_url: str | None
    events: int
    rate: float
    duration: float
    payload: int
    repeat: int
    idle_buses: int
    json_path: Path | None
    quick: bool
    steps: tuple[str, ...] = STEPS
    message_bytes: int = MESSAGE_BYTES
    window_bytes: int = WINDOW_BYTES
    tls: bool = False
    """Start the embedded server with a TLS port and measure through it."""
    plain_redis_url: str | None = None
    """The plain-text URL of the ``rediss://`` server: the TLS step's reference."""
    also_rates: tuple[float, ...] = ()
    """Offered rates measured after ``rate`` in the latency step (by default 1,000 and 20,000)."""
    explain: bool = False
    """Per-stage timestamps of our latency runs, printed under each figure (``--explain``)."""
    min_latency_events: int = 0
    """Each latency run records at least this many events (longer than ``duration`` at a
    low rate), so its p99.9 rests on enough of them; 0 when ``--duration`` was given."""

    def latency_duration(self, rate: float) -> float:
        """Seconds recorded at ``rate``: ``duration``, or longer to reach min_latency_events."""
        return max(self.duration, self.min_latency_events / rate)

    @property
    def warmup_events(self) -> int:
        """Events published untimed before a publish rate is timed."""
        return min(1000, self.events)

    @property
    def latency_warmup(self) -> float:
        """Seconds sent at the same rate before recording starts (not in the histogram)."""
        return min(0.5, self.duration / 5)

    def step_budget(self, events: int) -> float:
        """Seconds a throughput step may take: generous, at a floor of 5,000 events/s."""
        return 30.0 + events / 5000.0


@dataclass(frozen=True)
class Target:
    """The server under test and the clients, named in every method line."""

    url: str
    version: str
    redis_benchmark: str | None
    clients: str
    wire_bytes: int
    plain_url: str | None = None
    """When ``url`` is TLS: the same server in plain text (the TLS step's reference)."""
    cluster_masters: int = 0
    """On Redis Cluster (``url`` one of its nodes): how many masters serve slots; else 0."""

    @property
    def cluster(self) -> bool:
        return self.cluster_masters > 0

    @property
    def method_tail(self) -> str:
        if self.cluster:
            return (
                f"Redis {self.version} Cluster ({self.cluster_masters} masters), sharded "
                "pub/sub: each PUBLISH / SUBSCRIBE / PSUBSCRIBE named above is SPUBLISH / "
                "SSUBSCRIBE of the swarm's shard channel event:{swarm} on the master that owns "
                f"its slot, for our bus and the references alike; {self.clients}."
            )
        return f"Redis {self.version}; {self.clients}."
