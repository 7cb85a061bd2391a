"""Helpers of the cluster tests: a cluster of their own, swarms placed by slot, and who is
connected where."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pytest_cfn._core.shard_layout import swarm_slot
from pytest_cfn.cluster_server import LocalCluster, cluster_available


def local_cluster(**settings: Any) -> Iterator[LocalCluster]:
    """For a fixture (``yield from local_cluster()``): a local cluster started for it and
    stopped after; the test is skipped, with the reason, where none can start here."""
    why = cluster_available()
    if why is not None:
        pytest.skip(why)
    with LocalCluster(**settings) as local:
        yield local


def swarms_on_every_master(cluster: LocalCluster, prefix: str = "sw") -> dict[int, str]:
    """One swarm id per master (port -> swarm), found by slot."""
    found: dict[int, str] = {}
    masters = set(cluster.masters())
    n = 0
    while set(found) != masters:
        swarm = f"{prefix}{n}"
        found.setdefault(cluster.owner(swarm_slot(swarm)).port, swarm)
        n += 1
    return found


def client_names(port: int, contains: str) -> list[str]:
    """Names of the clients connected to the node at ``port`` whose name holds ``contains``."""
    client = redis.Redis("127.0.0.1", port, protocol=2)
    try:
        return sorted(c["name"] for c in client.client_list() if contains in c["name"])
    finally:
        client.close()


def names_by_master(cluster: LocalCluster, contains: str) -> dict[int, list[str]]:
    """``client_names`` of every running master."""
    return {port: client_names(port, contains) for port in cluster.masters()}
