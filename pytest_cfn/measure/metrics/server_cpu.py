"""The server's CPU over a window, per master on Redis Cluster, honest across a failover.

``used_cpu_sys + used_cpu_user`` (INFO cpu) is a process's own counter since it started. One
server's CPU over a window is the counter's change between two readings. A cluster's is the
sum of each master's change — but only over masters that were the same process and a master
at both ends: after a failover the promoted replica's counter covers its life as a replica
(not the window), a master that died took its counter with it, and a restarted process
(new ``run_id``) started again from zero. :func:`cpu_delta` sums the masters present at both
ends and names the others (``left``, ``joined``, ``restarted``), so a failover in the window
is reported, never summed wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

__all__ = ["CpuReading", "ServerCpuDelta", "cpu_delta", "read_cpu", "read_cpu_at"]


@dataclass(frozen=True)
class CpuReading:
    """One node's counter: its process (``run_id``) and its CPU seconds so far."""

    run_id: str
    cpu_s: float


@dataclass(frozen=True)
class ServerCpuDelta:
    """CPU seconds of the masters present at both ends of a window, and who was not."""

    cpu_s: float
    masters: list[str]
    """"host:port" of the masters summed ("" for a single server)."""
    left: list[str] = field(default_factory=list)
    """Masters at the start that were not masters (or not reachable) at the end."""
    joined: list[str] = field(default_factory=list)
    """Masters at the end that were not masters at the start (a promoted replica)."""
    restarted: list[str] = field(default_factory=list)
    """Same address, another process (its counter started again)."""

    @property
    def complete(self) -> bool:
        return not (self.left or self.joined or self.restarted)

    def note(self) -> str | None:
        """Why the figure does not cover every master of the window (None when it does)."""
        if self.complete:
            return None
        parts = []
        if self.left:
            parts.append(f"no longer a master at the window's end: {', '.join(self.left)}")
        if self.joined:
            parts.append(f"a master only at the window's end (promoted): {', '.join(self.joined)}")
        if self.restarted:
            parts.append(f"restarted in the window: {', '.join(self.restarted)}")
        return (f"server CPU covers {len(self.masters)} master(s) present at both ends of the "
                "window, summed per master, and leaves out the others (" + "; ".join(parts)
                + "): the topology changed in the window (a failover, a restart)")


def read_cpu(client: Any) -> dict[str, CpuReading]:
    """``{"host:port": reading}`` of every master (``{"": reading}`` for a single server)."""
    from pytest_cfn.cluster_nodes import each_master

    readings: dict[str, CpuReading] = {}
    with each_master(client) as nodes:
        for where, node in nodes:
            try:
                info = node.info("server")
                cpu = node.info("cpu")
            except (redis.RedisError, OSError):
                continue  # a master that is gone is missing from this reading
            readings[where] = CpuReading(
                str(info.get("run_id", "")),
                float(cpu.get("used_cpu_sys", 0.0)) + float(cpu.get("used_cpu_user", 0.0)),
            )
    return readings


def read_cpu_at(url: str) -> dict[str, CpuReading] | None:
    """:func:`read_cpu` of the server at ``url`` through a client of its own; None when
    it cannot be read."""
    try:
        client = redis.Redis.from_url(url, protocol=2, socket_timeout=5.0)
        try:
            return read_cpu(client)
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return None


def cpu_delta(start: dict[str, CpuReading], end: dict[str, CpuReading]) -> ServerCpuDelta:
    """The CPU seconds between two :func:`read_cpu` readings, master by master."""
    both = sorted(set(start) & set(end))
    same = [node for node in both if start[node].run_id == end[node].run_id]
    return ServerCpuDelta(
        cpu_s=sum(max(0.0, end[node].cpu_s - start[node].cpu_s) for node in same),
        masters=same,
        left=sorted(set(start) - set(end)),
        joined=sorted(set(end) - set(start)),
        restarted=sorted(set(both) - set(same)),
    )
