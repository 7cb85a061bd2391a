"""Per-test namespaces, and deleting exactly one namespace's keys.

Redis database numbers do not isolate pub/sub, so tests sharing a server (xdist workers,
several CI jobs) are kept apart by a namespace prefix on every channel and key. The name
joins the run id, the xdist worker and the test, so it is unique on a shared server and a
leftover key says which test left it. Teardown deletes only keys under that prefix, found
with SCAN; the plugin never sends FLUSHALL or FLUSHDB. On Redis Cluster every master is
scanned (each holds its own slots' keys) and keys are unlinked one slot at a time.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from pytest_cfn._core.ids import MAX_ID_LENGTH, validate_namespace

if TYPE_CHECKING:
    import redis

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_SLUG_LENGTH = 48
_SCAN_COUNT = 1000


def _slug(text: str) -> str:
    cleaned = _UNSAFE.sub("-", text).strip("-.") or "test"
    return cleaned[:_SLUG_LENGTH].rstrip("-.")


def make_namespace(run_id: str, worker: str, nodeid: str) -> str:
    """``cfn-{run}-{worker}-{test name}-{hash of the node id}``, a valid namespace id.

    The hash of the full node id keeps two tests of the same name in different modules
    or with different parameters apart; the readable part is only a hint.
    """
    name = nodeid.rsplit("::", 1)[-1]
    digest = hashlib.sha1(nodeid.encode("utf-8")).hexdigest()[:8]
    namespace = f"cfn-{_slug(run_id)[:12]}-{_slug(worker)[:16]}-{_slug(name)}-{digest}"
    return validate_namespace(namespace[:MAX_ID_LENGTH])


def namespace_match(namespace: str) -> str:
    """The SCAN pattern of every key inside ``namespace`` (ids hold no glob characters)."""
    return f"{validate_namespace(namespace)}:*"


def delete_namespace_keys(client: redis.Redis | Any, namespace: str) -> int:
    """SCAN for ``{namespace}:*`` and UNLINK what is found; returns how many were deleted."""
    from pytest_cfn.cluster_nodes import each_master

    deleted = 0
    with each_master(client) as nodes:
        for where, node in nodes:
            deleted += _delete_on_node(node, namespace, by_slot=bool(where))
    return deleted


def _delete_on_node(client: redis.Redis | Any, namespace: str, by_slot: bool = False) -> int:
    """One server's (or one cluster master's) keys of ``namespace``; a cluster refuses a
    multi-key UNLINK across slots, so there the keys go one slot at a time."""
    if by_slot:
        from redis.crc import key_slot

        slots: dict[int, list[Any]] = {}
        for key in client.scan_iter(match=namespace_match(namespace), count=_SCAN_COUNT):
            raw = key if isinstance(key, bytes) else str(key).encode()
            slots.setdefault(key_slot(raw), []).append(key)
        return sum(int(client.unlink(*keys)) for keys in slots.values())
    deleted = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=namespace_match(namespace), count=_SCAN_COUNT):
        batch.append(key)
        if len(batch) >= _SCAN_COUNT:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted
