"""The masters of a Redis Cluster as a redis-py client of one node sees them.

For the parts that talk to Redis through redis-py rather than the bus's own
connections — the plugin's namespace cleanup, the load harness's connection
count — and that must look at every master, since each holds its own slots' keys
and its own clients. A server that is not a cluster node (or refuses ``INFO
cluster``, as fakeredis does) is one node: these helpers then give it alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Fullest", "client_list_of_every_master", "cluster_masters", "each_master",
           "fullest_master"]


def cluster_masters(client: Any) -> list[tuple[str, int]] | None:
    """``(host, port)`` of every master when ``client``'s server is a Redis Cluster node,
    else None."""
    try:
        info = client.info("cluster")
        if not int(info.get("cluster_enabled", 0)):
            return None
        shards = client.execute_command("CLUSTER", "SLOTS")
    except Exception:  # redis-py's errors, or fakeredis refusing the command
        return None
    masters = set()
    for entry in shards:
        host, port = entry[2][0], entry[2][1]
        masters.add((host.decode() if isinstance(host, bytes) else str(host), int(port)))
    return sorted(masters)


@contextmanager
def each_master(client: Any) -> Iterator[list[tuple[str, Any]]]:
    """``[("host:port", client of that master), ...]``: redis-py clients with ``client``'s
    login and TLS settings, closed on exit; ``[("", client)]`` for a single server."""
    masters = cluster_masters(client)
    if masters is None:
        yield [("", client)]
        return
    import redis

    pool = client.connection_pool
    settings = {k: v for k, v in pool.connection_kwargs.items() if k not in ("host", "port")}
    made: list[tuple[str, Any]] = []
    try:
        for host, port in masters:
            node_pool = redis.ConnectionPool(
                connection_class=pool.connection_class, **{**settings, "host": host,
                                                           "port": port, "db": 0}
            )
            made.append((f"{host}:{port}", redis.Redis(connection_pool=node_pool)))
        yield made
    finally:
        for _, node in made:
            node.close()
            node.connection_pool.disconnect()


def client_list_of_every_master(client: Any) -> list[dict[str, Any]]:
    """``CLIENT LIST`` of every master (one server: its own), each entry with the node's
    ``host:port`` under ``cfn_node`` ("" on a single server)."""
    entries: list[dict[str, Any]] = []
    with each_master(client) as nodes:
        for where, node in nodes:
            for entry in node.client_list():
                entries.append({**entry, "cfn_node": where})
    return entries


@dataclass(frozen=True)
class Fullest:
    """The node whose clients fill the largest share of its own ``maxclients``."""

    node: str
    """"host:port" ("" on a single server)."""
    connected_clients: int
    maxclients: int | None

    @property
    def fraction(self) -> float | None:
        return self.connected_clients / self.maxclients if self.maxclients else None


def fullest_master(counts: dict[str, tuple[int, int | None]]) -> Fullest:
    """Of ``{"host:port": (connected_clients, maxclients)}``, the master nearest its limit:
    each master of a cluster refuses clients past its own ``maxclients``, so the fullest one,
    not the cluster's sum, is what a ``maxclients`` gate must judge. Masters whose
    ``maxclients`` is unknown (CONFIG GET refused) are judged by count only when none is
    known."""
    if not counts:
        return Fullest("", 0, None)
    known = {node: pair for node, pair in counts.items() if pair[1]}
    if known:
        node, (connected, limit) = max(known.items(), key=lambda kv: kv[1][0] / (kv[1][1] or 1))
        return Fullest(node, connected, limit)
    node, (connected, _) = max(counts.items(), key=lambda kv: kv[1][0])
    return Fullest(node, connected, None)
