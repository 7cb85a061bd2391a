"""Swarm state with TTL, checkpoints and recovery (ADR-002's ``swarm:{id}`` keys).

The rules (key names, what counts as interrupted, the claim script) live in
:mod:`pytest_cfn._core.swarm_state`; this is the connection that runs them. One
connection of its own, named ``cfn:state:...`` in ``CLIENT LIST``; commands of
one call are pipelined; a broken connection is re-made once per call.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from pytest_cfn._async.connection import RespConnection
from pytest_cfn._async.shard_commands import ClusterCommands
from pytest_cfn._async.shard_route import is_cluster
from pytest_cfn._backends.address import ServerAddress, parse_redis_url, with_tls_options
from pytest_cfn._backends.async_backend import Lock, Signal, Worker, spawn
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.ids import validate_agent_id, validate_swarm_id
from pytest_cfn._core.resp import ServerReplyError, encode_command
from pytest_cfn._core.swarm_state import (
    ALIVE,
    CLAIM_SCRIPT,
    DEFAULT_CHECKPOINTS,
    DEFAULT_MAX_AGE,
    DEFAULT_TTL,
    HEARTBEAT_SCRIPT,
    NOT_FOUND,
    TERMINAL,
    TERMINAL_STATUSES,
    RecoveredSwarm,
    ShardStateKeys,
    StateKeys,
    SwarmRecord,
    decode_checkpoints,
    encode_checkpoint,
    encode_fields,
    is_interrupted,
    parse_hash,
    record_fields,
    validate_seconds,
)
from pytest_cfn._errors import (
    CfnError,
    ConnectionFailedError,
    InvalidOptionError,
    RecoveryRefusedError,
    SwarmNotFoundError,
    reply_error,
)

log = logging.getLogger("pytest_cfn.state")

Arg = str | bytes | int
_SCAN_COUNT = 500
_LOAD_CHUNK = 100


class _Commands:
    """One connection for state commands, pipelined per call."""

    def __init__(self, address: ServerAddress, name: str, timeout: float) -> None:
        self._conn = RespConnection(address, name, connect_timeout=timeout, socket_timeout=timeout)
        self._lock = Lock()

    async def run(self, *commands: Sequence[Arg], swarm: str | None = None) -> list[Any]:
        """Send ``commands`` in one write, return their replies; error replies raise
        (``swarm``: the one whose keys they touch; a cluster routes by it)."""
        payload = b"".join(encode_command(*c) for c in commands)
        conn = self._conn
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if not conn.connected:
                        await conn.connect()
                    await conn.write(payload)
                    replies = [await conn.read_reply(conn.socket_timeout) for _ in commands]
                    break
                except ConnectionFailedError as exc:
                    # Never reached: ServerUnavailableError; it broke: ConnectionLostError.
                    await conn.close()
                    if attempt == 2:
                        raise
                    log.debug("state connection failed (%s); trying once more", exc)
        for reply in replies:
            if isinstance(reply, ServerReplyError):
                raise reply_error(reply, str(commands[0][0]))
        return replies

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching ``pattern`` (SCAN, never KEYS)."""
        found: list[bytes] = []
        cursor: Any = b"0"
        while True:
            ((cursor, keys),) = await self.run(
                ("SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT)
            )
            found.extend(keys)
            if cursor in (b"0", 0, "0"):
                return found

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()


class SwarmState:
    """Read and write swarm state; find interrupted swarms and claim them for recovery."""

    def __init__(
        self,
        address: ServerAddress | str,
        *,
        namespace: str = "",
        ttl: float = DEFAULT_TTL,
        keep_checkpoints: int = DEFAULT_CHECKPOINTS,
        checkpoint_ttl: float = 86_400.0,
        max_age: float = DEFAULT_MAX_AGE,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        **tls: Any,
    ) -> None:
        """``tls``: the ``ssl_*`` options of a TLS connection (see ``ServerAddress``)."""
        address = with_tls_options(
            parse_redis_url(address) if isinstance(address, str) else address, tls
        )
        if tls:
            raise TypeError(f"SwarmState() got unexpected keyword argument(s) {', '.join(tls)}")
        self.ttl = validate_seconds("ttl", ttl, minimum=1)
        self.checkpoint_ttl = validate_seconds("checkpoint_ttl", checkpoint_ttl, minimum=1)
        self.max_age = validate_seconds("max_age", max_age)
        validate_seconds("timeout", timeout, minimum=0.001)
        if (
            isinstance(keep_checkpoints, bool)
            or not isinstance(keep_checkpoints, int)
            or keep_checkpoints < 1
        ):
            raise InvalidOptionError(
                f"keep_checkpoints must be an integer >= 1, got {keep_checkpoints!r}"
            )
        self.keep_checkpoints = keep_checkpoints
        self.channels = ChannelNames(namespace)
        self.keys = StateKeys(self.channels)
        self._clock = clock
        name = f"cfn:state:{os.getpid()}" + (f"@{namespace}" if namespace else "")
        self._address = address
        self._name = name
        self._timeout = timeout
        self._redis: _Commands | ClusterCommands = _Commands(address, name, timeout)
        self.cluster: bool | None = None
        """None until the server was asked; True on Redis Cluster (keys in the swarm's slot,
        SCAN on every master)."""
        self._beats: dict[str, tuple[Signal, Worker]] = {}

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> SwarmState:
        """``SwarmState.from_url("redis://localhost:6379/0", ttl=3600)``."""
        return cls(parse_redis_url(url), **settings)

    async def _ready(self) -> None:
        """Before the first command: on Redis Cluster, hash-tagged keys and per-slot routing."""
        if self.cluster is not None:
            return
        try:
            found = await is_cluster(self._address, self._timeout)
        except (OSError, TimeoutError, ConnectionFailedError):
            return  # the command that follows reports the server as unreachable
        if found:
            self.keys = ShardStateKeys(self.channels)
            self._redis = ClusterCommands(self._address, self._name, self._timeout)
        self.cluster = found

    async def save(
        self,
        swarm: str,
        *,
        status: str | None = None,
        loop: int | None = None,
        phase: str | None = None,
        agents: dict[str, str] | None = None,
        data: Any = None,
    ) -> None:
        """Write the given parts (None = leave as is), beat the heart, refresh the TTL.
        A new swarm starts as ``running``."""
        await self._ready()
        key = self.keys.state(validate_swarm_id(swarm))
        now = self._clock()
        fields = encode_fields(now, status=status, loop=loop, phase=phase, agents=agents,
                               data=data)
        await self._redis.run(
            ("HSET", key, *fields),
            ("HSETNX", key, "created", repr(now)),
            ("HSETNX", key, "status", "running"),
            ("EXPIRE", key, int(self.ttl)),
            swarm=swarm,
        )

    async def set_agent(self, swarm: str, agent: str, status: str) -> None:
        """Record one agent's status (``spawned``, ``working``, ``done``...)."""
        await self.save(swarm, agents={validate_agent_id(agent): status})

    async def finish(self, swarm: str, status: str = "finished") -> None:
        """Mark the swarm done, so recovery leaves it alone."""
        if status not in TERMINAL_STATUSES:
            raise InvalidOptionError(
                f"finish status {status!r} is not terminal; use one of {TERMINAL_STATUSES}"
            )
        await self.save(swarm, status=status)

    async def heartbeat(self, swarm: str) -> bool:
        """Refresh the heartbeat and the TTL; False if the swarm has no state (any more)."""
        await self._ready()
        key = self.keys.state(validate_swarm_id(swarm))
        (found,) = await self._redis.run(
            ("EVAL", HEARTBEAT_SCRIPT, 1, key, repr(self._clock()), int(self.ttl)), swarm=swarm
        )
        return bool(found)

    async def start_heartbeat(self, swarm: str, interval: float = 10.0) -> None:
        """Beat every ``interval`` seconds in the background until :meth:`stop_heartbeat`
        or :meth:`close` (a thread for the sync class, a task for the asyncio one)."""
        validate_swarm_id(swarm)
        validate_seconds("interval", interval, minimum=0.001)
        if swarm in self._beats:
            return
        stop = Signal()
        worker = spawn(lambda: self._beat(swarm, interval, stop), name=f"cfn-heartbeat:{swarm}")
        self._beats[swarm] = (stop, worker)

    async def stop_heartbeat(self, swarm: str) -> bool:
        beat = self._beats.pop(swarm, None)
        if beat is None:
            return False
        stop, worker = beat
        stop.set()
        await worker.join(2.0)
        return True

    async def _beat(self, swarm: str, interval: float, stop: Signal) -> None:
        while not stop.is_set():
            try:
                await self.heartbeat(swarm)
            except (CfnError, OSError) as exc:
                log.warning("heartbeat of swarm %s failed: %s", swarm, exc)
            if await stop.wait(interval):
                return

    async def load(self, swarm: str) -> SwarmRecord | None:
        """The swarm's state, or None if there is none (never written, or expired)."""
        await self._ready()
        key = self.keys.state(validate_swarm_id(swarm))
        flat, ttl = await self._redis.run(("HGETALL", key), ("TTL", key), swarm=swarm)
        return parse_hash(swarm, flat, ttl)

    async def checkpoint(self, swarm: str) -> SwarmRecord:
        """Keep a copy of the current state (the last ``keep_checkpoints`` are kept)."""
        record = await self.load(swarm)
        if record is None:
            raise SwarmNotFoundError(f"swarm {swarm!r} has no state to checkpoint")
        key = self.keys.checkpoints(swarm)
        await self._redis.run(
            ("LPUSH", key, encode_checkpoint(record, self._clock())),
            ("LTRIM", key, 0, self.keep_checkpoints - 1),
            ("EXPIRE", key, int(self.checkpoint_ttl)),
            swarm=swarm,
        )
        return record

    async def checkpoints(self, swarm: str) -> list[SwarmRecord]:
        """The kept checkpoints, newest first."""
        await self._ready()
        key = self.keys.checkpoints(validate_swarm_id(swarm))
        (entries,) = await self._redis.run(("LRANGE", key, 0, -1), swarm=swarm)
        return decode_checkpoints(list(entries or []))

    async def delete(self, swarm: str) -> bool:
        """Remove the state and checkpoints; True if there was state."""
        validate_swarm_id(swarm)
        await self._ready()
        removed, _ = await self._redis.run(
            ("DEL", self.keys.state(swarm)), ("DEL", self.keys.checkpoints(swarm)), swarm=swarm
        )
        return bool(removed)

    async def swarms(self) -> list[SwarmRecord]:
        """Every swarm with state, found with SCAN (never KEYS; on a cluster, on every
        master), sorted by id."""
        await self._ready()
        ids: set[str] = set()
        for found in await self._redis.scan(self.keys.scan_pattern()):
            swarm = self.keys.swarm_of(found)
            if swarm is not None:
                ids.add(swarm)
        ordered = sorted(ids)
        records: list[SwarmRecord] = []
        if isinstance(self._redis, ClusterCommands):  # one slot per swarm: one call each
            for swarm in ordered:
                key = self.keys.state(swarm)
                flat, ttl = await self._redis.run(("HGETALL", key), ("TTL", key), swarm=swarm)
                record = parse_hash(swarm, flat, ttl)
                if record is not None:
                    records.append(record)
            return records
        for start in range(0, len(ordered), _LOAD_CHUNK):
            chunk = ordered[start : start + _LOAD_CHUNK]
            commands: list[tuple[Arg, ...]] = []
            for swarm in chunk:
                commands += [("HGETALL", self.keys.state(swarm)), ("TTL", self.keys.state(swarm))]
            replies = await self._redis.run(*commands)
            for i, swarm in enumerate(chunk):
                record = parse_hash(swarm, replies[2 * i], replies[2 * i + 1])
                if record is not None:
                    records.append(record)
        return records

    async def interrupted(self, max_age: float | None = None) -> list[SwarmRecord]:
        """Swarms not finished whose heartbeat is at least ``max_age`` seconds old
        (default: this object's ``max_age``), the longest silent first."""
        age = self.max_age if max_age is None else validate_seconds("max_age", max_age)
        now = self._clock()
        found = [r for r in await self.swarms() if is_interrupted(r, now, age)]
        return sorted(found, key=lambda r: r.heartbeat or 0.0)

    async def recover(
        self,
        swarm: str,
        *,
        max_age: float | None = None,
        force: bool = False,
        recoverer: str | None = None,
    ) -> RecoveredSwarm:
        """Claim an interrupted swarm: load its state (or, if that expired, its newest
        checkpoint), mark it ``recovering`` with a fresh heartbeat, and hand it back.

        Refuses a finished swarm, and one whose heartbeat is younger than ``max_age``
        (still running, or being recovered by someone else) unless ``force``.
        """
        validate_swarm_id(swarm)
        age = self.max_age if max_age is None else validate_seconds("max_age", max_age)
        state = await self.load(swarm)
        checkpoints = await self.checkpoints(swarm)
        if state is None and not checkpoints:
            raise SwarmNotFoundError(
                f"swarm {swarm!r} has no state and no checkpoint (never written, or expired)"
            )
        restore: list[str | bytes] = []
        if state is None:
            if checkpoints[0].finished:
                raise RecoveryRefusedError(
                    f"swarm {swarm!r} is {checkpoints[0].status}; a finished swarm is not "
                    "recovered"
                )
            restore = record_fields(checkpoints[0])
        who = recoverer or f"{socket.gethostname()}:{os.getpid()}"
        now = self._clock()
        (outcome,) = await self._redis.run(
            (
                "EVAL", CLAIM_SCRIPT, 1, self.keys.state(swarm), repr(now),
                "-1" if force else repr(age), int(self.ttl), who, *restore,
            ),
            swarm=swarm,
        )
        if outcome == TERMINAL:
            status = state.status if state else "finished"
            raise RecoveryRefusedError(
                f"swarm {swarm!r} is {status}; a finished swarm is not recovered"
            )
        if outcome == ALIVE:
            beat = state.heartbeat_age(now) if state else None
            seen = f"{beat:.1f} s ago" if beat is not None else "just now"
            raise RecoveryRefusedError(
                f"swarm {swarm!r} beat its heart {seen}, less than max_age {age:g} s: it is "
                "still running or already being recovered (force it to take it anyway)"
            )
        if outcome == NOT_FOUND:
            raise SwarmNotFoundError(f"swarm {swarm!r} expired while it was being recovered")
        recovered = await self.load(swarm)
        if recovered is None:
            raise SwarmNotFoundError(f"swarm {swarm!r} expired while it was being recovered")
        return RecoveredSwarm(
            swarm, recovered, "state" if state is not None else "checkpoint", checkpoints
        )

    async def recover_interrupted(
        self, max_age: float | None = None, recoverer: str | None = None
    ) -> list[RecoveredSwarm]:
        """Claim every interrupted swarm that no one else claims first."""
        out: list[RecoveredSwarm] = []
        for record in await self.interrupted(max_age):
            try:
                out.append(await self.recover(record.swarm, max_age=max_age, recoverer=recoverer))
            except (RecoveryRefusedError, SwarmNotFoundError) as exc:
                log.info("not recovering %s: %s", record.swarm, exc)
        return out

    async def close(self) -> None:
        """Stop the background heartbeats and close the connection."""
        for swarm in list(self._beats):
            await self.stop_heartbeat(swarm)
        await self._redis.close()

    async def __aenter__(self) -> SwarmState:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
