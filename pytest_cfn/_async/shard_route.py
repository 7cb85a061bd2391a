"""Where a swarm lives on Redis Cluster: detection from any node, and the slot's owner.

A bus is given the URL of any node — the same ``redis://host:port`` a user has for
one server. Before its first publish or subscribe it asks that node ``INFO
cluster``; on a cluster it switches to the shard layout (``_core.shard_layout``)
and both of its connections follow a :class:`ShardRoute`: on every (re)connect
they ask for the master that owns the swarm's slot, so a MOVED reply, a migrated
slot or a failover ends with a reconnect to the new owner, counted as a reconnect.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pytest_cfn._async.connection import RespConnection
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import cluster_slot_owner
from pytest_cfn._core.resp import ServerReplyError
from pytest_cfn._core.shard_layout import swarm_slot
from pytest_cfn._errors import ConnectionLostError

log = logging.getLogger("pytest_cfn.cluster")


async def is_cluster(address: ServerAddress, timeout: float) -> bool:
    """True when the server at ``address`` runs with ``cluster-enabled yes``."""
    if address.unix_path:
        return False
    conn = RespConnection(address, "cfn:probe", connect_timeout=timeout, socket_timeout=timeout)
    try:
        await conn.connect()
        info = await conn.call("INFO", "cluster")
    except ServerReplyError:  # INFO refused (an ACL user, fakeredis): not a cluster we can use
        return False
    finally:
        await conn.close()
    return b"cluster_enabled:1" in info if isinstance(info, bytes) else False


class ShardRoute:
    """The master that owns one swarm's slot, asked again after every loss of it."""

    __slots__ = ("_owner", "_seeds", "lookups", "slot", "timeout")

    def __init__(self, seed: ServerAddress, swarm: str, timeout: float) -> None:
        if seed.db:
            raise ConnectionLostError(
                f"Redis Cluster has only database 0; the URL selects database {seed.db}"
            )
        self._seeds = [seed]
        self.slot = swarm_slot(swarm)
        self.timeout = timeout
        self._owner: ServerAddress | None = None
        self.lookups = 0

    @property
    def owner(self) -> ServerAddress | None:
        return self._owner

    def for_slot(self, slot: int) -> ShardRoute:
        """A route to the owner of another slot, asking the nodes this one knows."""
        route = ShardRoute(self._seeds[0], "x", self.timeout)
        route.slot = slot
        route._seeds = list(self._seeds)
        return route

    def learn(self, owner: ServerAddress) -> None:
        """Take ``owner`` (from a MOVED reply) as the slot's owner without asking."""
        self._owner = owner

    async def resolve(self, refresh: bool = False) -> ServerAddress:
        """The owner of the slot (asked again with ``refresh``); any known node may answer."""
        if self._owner is not None and not refresh:
            return self._owner
        last: BaseException | None = None
        candidates = ([self._owner] if self._owner else []) + self._seeds
        for seed in candidates:
            try:
                (host, port), nodes = await cluster_slot_owner(seed, self.slot, self.timeout)
            except Exception as exc:  # redis-py raises its own classes; try the next node
                last = exc
                continue
            self.lookups += 1
            owner = replace(seed, host=host, port=port, db=0)
            if owner != self._owner:
                log.info("slot %d is served by %s", self.slot, owner.describe())
            self._owner = owner
            for node_host, node_port in nodes:  # any of them may answer after a failover
                node = replace(seed, host=node_host, port=node_port, db=0)
                if node not in self._seeds:
                    self._seeds.append(node)
            return owner
        raise ConnectionLostError(
            f"no node of the Redis Cluster answered who owns slot {self.slot}: {last}"
        )
