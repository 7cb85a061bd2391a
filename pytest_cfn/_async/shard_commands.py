"""Commands of one swarm on Redis Cluster, and a SCAN over every master (SwarmState).

A swarm's state keys are hash-tagged into its slot (``_core.swarm_state.ShardStateKeys``),
so the commands of one call touch one slot and go, pipelined, to the master that owns
it. The slot table comes from redis-py's topology discovery and is asked again after a
``MOVED`` reply (a migrated slot) or a lost connection (a failover), with a short pause
between attempts while the cluster elects a new master. Listing swarms SCANs every
master (never KEYS), each with its own cursor, so every node's keys are seen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pytest_cfn._async.connection import RespConnection
from pytest_cfn._backends.address import ServerAddress
from pytest_cfn._backends.async_backend import Lock, cluster_slot_table, sleep
from pytest_cfn._core.resp import ServerReplyError, encode_command
from pytest_cfn._core.shard_layout import redirect, redirect_target, swarm_slot
from pytest_cfn._errors import ConnectionFailedError, ConnectionLostError, reply_error

log = logging.getLogger("pytest_cfn.cluster")

Arg = str | bytes | int
ATTEMPTS = 6
PAUSE = 0.25
_SCAN_COUNT = 500
_ASKING = encode_command("ASKING")


def _redirect_kind(reply: object) -> str | None:
    """"MOVED" or "ASK" for a redirect reply, else None."""
    if not isinstance(reply, ServerReplyError):
        return None
    parsed = redirect(reply)
    return parsed[0] if parsed is not None else None


class ClusterCommands:
    """Pipelined commands to the owner of a swarm's slot; SCAN across the masters."""

    def __init__(self, seed: ServerAddress, name: str, timeout: float) -> None:
        if seed.db:
            raise ConnectionLostError(
                f"Redis Cluster has only database 0; the URL selects database {seed.db}"
            )
        self._seeds = [seed]
        self._name = name
        self._timeout = timeout
        self._owners: list[tuple[str, int] | None] = []
        self._masters: list[tuple[str, int]] = []
        self._conns: dict[tuple[str, int], RespConnection] = {}
        self._lock = Lock()
        self.refreshes = 0
        self.asks = 0

    async def run(self, *commands: Sequence[Arg], swarm: str | None = None) -> list[Any]:
        """Send ``commands`` (all of ``swarm``'s slot) in one write to its owner; error
        replies raise. A MOVED reply or a lost node: ask for the slot table, try again."""
        if swarm is None:
            raise ValueError("a command on Redis Cluster names the swarm whose slot it uses")
        payload = b"".join(encode_command(*c) for c in commands)
        slot = swarm_slot(swarm)
        async with self._lock:
            for attempt in range(1, ATTEMPTS + 1):
                if attempt > 1 or not self._owners:
                    if attempt > 2:
                        await sleep(PAUSE)
                    await self._refresh()
                owner = self._owners[slot]
                if owner is None:
                    continue
                conn = self._conn(owner)
                try:
                    if not conn.connected:
                        await conn.connect()
                    await conn.write(payload)
                    replies = [await conn.read_reply(conn.socket_timeout) for _ in commands]
                except ConnectionFailedError as exc:
                    await conn.close()
                    if attempt == ATTEMPTS:
                        raise
                    log.debug("state connection to %s failed (%s); asking again", owner, exc)
                    continue
                kinds = [_redirect_kind(r) for r in replies]
                if "MOVED" in kinds:
                    continue  # the slot moved: ask who owns it now
                if "ASK" in kinds:
                    await self._ask(commands, replies, kinds)
                    self.asks += 1
                break
            else:
                raise ConnectionLostError(
                    f"slot {slot} of swarm {swarm!r} has no reachable master after "
                    f"{ATTEMPTS} attempts"
                )
        for reply in replies:
            if isinstance(reply, ServerReplyError):
                raise reply_error(reply, str(commands[0][0]))
        return replies

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching ``pattern`` on every master (SCAN, one cursor per master)."""
        async with self._lock:
            await self._refresh()
            masters = list(self._masters)
        found: list[bytes] = []
        for master in masters:
            cursor: Any = b"0"
            while True:
                async with self._lock:
                    conn = self._conn(master)
                    if not conn.connected:
                        await conn.connect()
                    reply = await conn.call("SCAN", cursor, "MATCH", pattern, "COUNT",
                                            _SCAN_COUNT)
                if isinstance(reply, ServerReplyError):
                    raise reply_error(reply, "SCAN")
                cursor, keys = reply
                found.extend(keys)
                if cursor in (b"0", 0, "0"):
                    break
        return found

    async def _ask(self, commands: Sequence[Sequence[Arg]], replies: list[Any],
                   kinds: list[str | None]) -> None:
        """The slot is being migrated and these keys are on the importing master already:
        send each such command there once, after ``ASKING``, and take its reply."""
        asked = [i for i, kind in enumerate(kinds) if kind == "ASK"]
        parsed = redirect(replies[asked[0]])
        assert parsed is not None
        conn = self._conn(redirect_target(parsed[2], self._seeds[0].host))
        if not conn.connected:
            await conn.connect()
        await conn.write(b"".join(_ASKING + encode_command(*commands[i]) for i in asked))
        for i in asked:
            await conn.read_reply(conn.socket_timeout)  # +OK of ASKING
            replies[i] = await conn.read_reply(conn.socket_timeout)

    @property
    def masters(self) -> list[tuple[str, int]]:
        return list(self._masters)

    async def close(self) -> None:
        async with self._lock:
            for conn in self._conns.values():
                await conn.close()
            self._conns.clear()

    def _conn(self, node: tuple[str, int]) -> RespConnection:
        conn = self._conns.get(node)
        if conn is None:
            address = replace(self._seeds[0], host=node[0], port=node[1], db=0)
            conn = self._conns[node] = RespConnection(
                address, self._name, connect_timeout=self._timeout,
                socket_timeout=self._timeout,
            )
        return conn

    async def _refresh(self) -> None:
        """Ask any known node for the slot table (the URL's node first)."""
        last: BaseException | None = None
        for seed in list(self._seeds):
            try:
                owners, masters = await cluster_slot_table(seed, self._timeout)
            except Exception as exc:  # redis-py raises its own classes; try the next node
                last = exc
                continue
            self.refreshes += 1
            self._owners, self._masters = owners, masters
            for host, port in masters:
                node = replace(seed, host=host, port=port, db=0)
                if node not in self._seeds:
                    self._seeds.append(node)
            return
        raise ConnectionLostError(f"no node of the Redis Cluster answered CLUSTER SLOTS: {last}")
