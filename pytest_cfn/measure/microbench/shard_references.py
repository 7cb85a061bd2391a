"""The micro-benchmark's references on Redis Cluster: the same channel kind as our bus.

Given the URL of a cluster node, our Event Bus publishes with ``SPUBLISH`` to the
swarm's shard channel ``event:{swarm}`` on the master that owns the swarm's slot
(``_core.shard_layout``). A reference measured with classic ``PUBLISH`` /
``PSUBSCRIBE`` on the node of the URL would measure something else: a cluster
broadcasts a classic publish to every node over the cluster bus, and the node of
the URL need not be the one our bus talks to. So on a cluster every reference
(redis-benchmark, redis-py's drain, pipeline, end to end and latency, the sink
subscriber) uses ``SPUBLISH`` / ``SSUBSCRIBE`` of the swarm's shard channel, sent
to the master that owns its slot, as our bus does: ratios compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._sync.shard_route import ShardRoute, is_cluster
from pytest_cfn.measure.microbench.workloads import TICK

__all__ = ["ReferenceChannel", "cluster_masters_count", "node_url", "reference_channel",
           "server_is_cluster"]

LOOKUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class ReferenceChannel:
    """Where a reference publishes and subscribes for one swarm."""

    url: str
    """The server to send to: the URL's own server, or on a cluster the slot's master."""
    channel: str
    """``event:SWARM:bench.tick`` (one server) or the shard channel ``event:{SWARM}``."""
    pattern: str
    """What the sink subscriber reads: ``event:SWARM:*`` or the shard channel itself."""
    sharded: bool
    """SPUBLISH / SSUBSCRIBE instead of PUBLISH / (P)SUBSCRIBE."""

    @property
    def publish_command(self) -> str:
        return "spublish" if self.sharded else "publish"


def server_is_cluster(url: str) -> bool:
    """True when the server of ``url`` is a Redis Cluster node (``INFO cluster``)."""
    return is_cluster(parse_redis_url(url), LOOKUP_TIMEOUT)


def node_url(url: str, host: str, port: int) -> str:
    """``url`` with its host and port replaced (credentials, TLS query options kept; db 0)."""
    parts = urlsplit(url)
    login = parts.netloc.rpartition("@")[0]
    where = f"[{host}]" if ":" in host else host
    netloc = f"{login}@{where}:{port}" if login else f"{where}:{port}"
    return urlunsplit((parts.scheme, netloc, "/0", parts.query, ""))


def reference_channel(url: str, swarm: str, cluster: bool) -> ReferenceChannel:
    """The channel a reference uses for ``swarm``: our bus's kind and server."""
    if not cluster:
        return ReferenceChannel(url, f"event:{swarm}:{TICK}", f"event:{swarm}:*", False)
    owner = ShardRoute(parse_redis_url(url), swarm, LOOKUP_TIMEOUT).resolve()
    channel = f"event:{{{swarm}}}"
    return ReferenceChannel(node_url(url, owner.host, owner.port), channel, channel, True)


def cluster_masters_count(url: str) -> int:
    """How many masters serve slots, as the node of ``url`` sees them (``CLUSTER SLOTS``)."""
    import redis

    from pytest_cfn.cluster_nodes import cluster_masters

    client = redis.Redis.from_url(url, protocol=2, socket_connect_timeout=LOOKUP_TIMEOUT,
                                  socket_timeout=LOOKUP_TIMEOUT)
    try:
        return len(cluster_masters(client) or ())
    finally:
        client.close()
