"""The server a ``cfn bench`` run measures: one Redis server, or a Redis Cluster seen from
the URL of any of its nodes, and where the sweep's references publish on each.

On one server a reference publishes with classic ``PUBLISH`` on the URL's server. On a
cluster that would measure something our bus never does: a cluster broadcasts a classic
publish over its bus to every node, and the node of the URL need not own the swarm our bus
talks to. So on a cluster every reference of the sweep (redis-benchmark's ceiling, the round
trip, the raw-socket client models) uses ``SPUBLISH`` / ``SSUBSCRIBE`` of a shard channel
``event:{name}`` sent to the master that owns its slot, as our Event Bus does with its
swarm's channel (``_core.shard_layout``): ratios compare like with like.

What the sweep cannot do on a cluster is said, not faked: the calibration's delay proxy
fronts one node, and a cluster client learns every master's own address from ``CLUSTER
SLOTS`` and connects to it directly, around the proxy (:data:`CALIBRATION_ON_CLUSTER`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from pytest_cfn.measure.microbench.shard_references import (
    ReferenceChannel,
    node_url,
    server_is_cluster,
)

__all__ = ["CALIBRATION_ON_CLUSTER", "SweepServer", "reference_for", "server_limits"]

LOOKUP_TIMEOUT = 5.0
CALIBRATION_ON_CLUSTER = (
    "the calibration's delay proxy fronts one node, and a cluster client (our buses, the "
    "harness) learns every master's own address from CLUSTER SLOTS and connects to it "
    "directly, around the proxy, so no delay or drop could be injected on its path; "
    "calibrate the instrument on one server (cfn calibrate --redis redis://ONE-SERVER)"
)
"""Why ``cfn bench`` / ``cfn calibrate`` do not calibrate on a cluster."""


def reference_for(url: str, name: str, cluster: bool) -> ReferenceChannel:
    """Where a reference called ``name`` publishes: on one server the channel ``name`` with
    PUBLISH; on a cluster the shard channel ``event:{name}`` on the master of its slot."""
    if not cluster:
        return ReferenceChannel(url, name, name, False)
    from pytest_cfn._backends.address import parse_redis_url
    from pytest_cfn._sync.shard_route import ShardRoute

    owner = ShardRoute(parse_redis_url(url), name, LOOKUP_TIMEOUT).resolve()
    channel = f"event:{{{name}}}"
    return ReferenceChannel(node_url(url, owner.host, owner.port), channel, channel, True)


@dataclass(frozen=True)
class SweepServer:
    """One server (``masters`` 0) or a cluster of ``masters`` masters, with their
    ``maxclients`` ("host:port" -> value; None where CONFIG GET is refused)."""

    url: str
    masters: int = 0
    maxclients_by_node: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def detect(cls, url: str) -> SweepServer:
        """Ask the server of ``url`` (``INFO cluster``) what it is."""
        if not server_is_cluster(url):
            return cls(url)
        limits = server_limits(url)
        return cls(url, len(limits), limits)

    @property
    def cluster(self) -> bool:
        return self.masters > 0

    def reference(self, name: str) -> ReferenceChannel:
        return reference_for(self.url, name, self.cluster)

    @property
    def maxclients(self) -> int | None:
        """On a cluster: the smallest master's ``maxclients`` (each master holds its own
        clients, so a fraction of it is judged per master)."""
        limits = [limit for limit in self.maxclients_by_node.values() if limit is not None]
        return min(limits) if limits else None

    def describe(self) -> str:
        if not self.cluster:
            return "one server"
        return (f"a Redis Cluster node ({self.masters} masters): sharded pub/sub, every "
                "reference SPUBLISHes to a shard channel on the master that owns its slot")

    def method_suffix(self) -> str:
        """Appended to every reference's method on a cluster ("" on one server)."""
        if not self.cluster:
            return ""
        return (f"; on a Redis Cluster of {self.masters} masters: SPUBLISH / SSUBSCRIBE of a "
                "shard channel event:{name} on the master that owns its slot, in place of "
                "each PUBLISH / SUBSCRIBE named (a cluster broadcasts a classic PUBLISH to "
                "every node; our bus SPUBLISHes)")

    def facts(self) -> dict[str, object]:
        """The JSON the sweep keeps under ``extra["cluster"]`` (None on one server)."""
        return {"masters": self.masters, "maxclients_by_node": dict(self.maxclients_by_node),
                "layout": "sharded pub/sub: SPUBLISH / SSUBSCRIBE of event:{swarm} on the "
                          "master of the swarm's slot"}


def server_limits(url: str) -> dict[str, int | None]:
    """``maxclients`` of every master of the cluster ``url`` is a node of."""
    from pytest_cfn.cluster_nodes import each_master

    client = redis.Redis.from_url(url, protocol=2, socket_connect_timeout=LOOKUP_TIMEOUT,
                                  socket_timeout=LOOKUP_TIMEOUT)
    limits: dict[str, int | None] = {}
    try:
        with each_master(client) as nodes:
            for where, node in nodes:
                try:
                    limits[where] = int(str(node.config_get("maxclients")["maxclients"]))
                except (redis.ResponseError, KeyError, ValueError):
                    limits[where] = None
    finally:
        client.close()
    return limits
