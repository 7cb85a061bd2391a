"""Counting one run's Redis connections by their names, as the server lists them.

Every connection of ours is named ``cfn:{subsystem}-{pub|sub}:{swarm}:{owner}@{namespace}``
(CLIENT SETNAME). Grouping by (subsystem, swarm, owner) gives connections per subsystem per
owner, where the owner is an agent (per-agent model) or a process (shared model): ADR-002's
rule is two per subsystem (one publisher, one subscriber).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pytest_cfn._core.connection_names import parse_connection_name


@dataclass
class ConnectionCount:
    """Connections of one namespace at one moment."""

    total: int = 0
    by_role: dict[str, int] = field(default_factory=dict)
    owners: int = 0
    max_per_subsystem: int = 0
    by_node: dict[str, int] = field(default_factory=dict)
    """Redis Cluster: connections per master (``host:port``); empty on one server."""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "total": self.total,
            "by_role": dict(sorted(self.by_role.items())),
            "owners": self.owners,
            "max_per_subsystem": self.max_per_subsystem,
        }
        if self.by_node:
            out["by_node"] = dict(sorted(self.by_node.items()))
        return out


def count_connections(entries: Iterable[Mapping[str, str]], namespace: str) -> ConnectionCount:
    """Count CLIENT LIST entries named ``cfn:...@{namespace}``."""
    per_unit: dict[tuple[str, str, str, str], int] = {}
    owners: set[tuple[str, str]] = set()
    count = ConnectionCount()
    for entry in entries:
        name = parse_connection_name(entry.get("name", ""))
        if name is None or name.namespace != namespace:
            continue
        count.total += 1
        count.by_role[name.role] = count.by_role.get(name.role, 0) + 1
        node = entry.get("cfn_node")
        if node:  # Redis Cluster: the master it is on (client_list_of_every_master)
            count.by_node[node] = count.by_node.get(node, 0) + 1
        # On a cluster, per master: a Messenger has one publisher on each master it sends to.
        unit = (name.subsystem, name.swarm, name.owner, node or "")
        per_unit[unit] = per_unit.get(unit, 0) + 1
        owners.add((name.swarm, name.owner))
    count.owners = len(owners)
    count.max_per_subsystem = max(per_unit.values(), default=0)
    return count


def keep_largest(current: ConnectionCount | None, sample: ConnectionCount) -> ConnectionCount:
    """The sample with the most connections (the run's peak)."""
    if current is None or sample.total > current.total:
        return sample
    if sample.total == current.total and sample.max_per_subsystem > current.max_per_subsystem:
        return sample
    return current
