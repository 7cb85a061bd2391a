"""Server-side figures from a real Redis: clients, output buffers, patterns, memory, ops/s.

`sample_server()` takes one sample (INFO, CONFIG GET maxclients, CLIENT LIST, PUBSUB NUMPAT and
PUBSUB CHANNELS); `ServerSampler` takes one every interval in a daemon thread and keeps a
summary. Given a Redis Cluster node, a sample covers every master (each holds its own
clients, memory and commands): counts, memory and rates are summed over the masters, the
largest output buffer is the largest of any, and `clients_by_node` keeps each master's
connected clients. Each master refuses clients past its own `maxclients`, so a sample also
names the fullest master (`fullest_*`: the highest connected_clients / maxclients), and the
summary's `maxclients` / `max_connected_clients` — what the `maxclients` gate divides — are
that master's, not the cluster's sums. Our connections are named
"cfn:{role}:{swarm}:{agent}" (CLIENT SETNAME), which is how they are told apart from
everyone else's. Plain threading: gevent's
monkey-patching makes the same code cooperative under Locust.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pytest_cfn._core.connection_names import OUR_PREFIX, parse_connection_name
from pytest_cfn._errors import InvalidOptionError

SAMPLER_CLIENT_NAME = "cfn-sampler"


class ServerSample(msgspec.Struct, frozen=True, kw_only=True):
    """One look at the server; sizes in bytes, times in seconds."""

    ts: float
    monotonic: float
    redis_version: str
    connected_clients: int
    maxclients: int | None
    our_clients: int
    our_clients_by_role: dict[str, int]
    max_omem: int
    max_omem_client: str | None
    pubsub_numpat: int
    pubsub_channels: int
    used_memory: int
    instantaneous_ops_per_sec: int
    total_commands_processed: int
    clients_by_node: dict[str, int] = msgspec.field(default_factory=dict)
    """On Redis Cluster: connected clients of each master ("host:port"); empty on one server."""
    fullest_node: str = ""
    """On Redis Cluster: the master with the highest connected_clients / maxclients."""
    fullest_connected_clients: int = 0
    fullest_maxclients: int | None = None
    """That master's connected clients and maxclients (one server: the server's own)."""

    @property
    def fullest_fraction(self) -> float | None:
        if self.fullest_maxclients:
            return self.fullest_connected_clients / self.fullest_maxclients
        return None


class ServerSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Extremes and rates over every sample a ServerSampler took (None before any sample).

    ``maxclients`` / ``max_connected_clients``: on one server its maxclients and its largest
    connected_clients; on Redis Cluster those of the fullest master in the sample where it
    was fullest (``fullest_node``), since each master holds its own clients;
    ``max_connected_clients_total`` is the largest count of everyone's clients (summed over
    the masters of a cluster)."""

    samples: int
    errors: int
    last_error: str | None
    redis_version: str | None
    maxclients: int | None
    max_connected_clients: int
    max_our_clients: int
    max_our_clients_by_role: dict[str, int]
    max_omem: int
    max_omem_client: str | None
    max_used_memory: int
    max_pubsub_numpat: int
    ops_per_sec_mean: float | None
    commands_per_sec: float | None
    max_connected_clients_total: int = 0
    fullest_node: str = ""


def _fuller(sample: ServerSample, than: ServerSample) -> bool:
    """True when ``sample``'s fullest node is nearer its maxclients than ``than``'s (by count
    where maxclients is unknown)."""
    mine, theirs = sample.fullest_fraction, than.fullest_fraction
    if mine is not None and theirs is not None:
        return mine > theirs
    if mine is None and theirs is None:
        return sample.fullest_connected_clients > than.fullest_connected_clients
    return mine is not None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _maxclients(client: redis.Redis) -> int | None:
    """CONFIG GET maxclients, or None where CONFIG is renamed away or denied by an ACL."""
    try:
        reply = client.config_get("maxclients")
    except redis.ResponseError:
        return None
    for key, value in reply.items():
        if key is not None and value is not None and _text(key) == "maxclients":
            return int(_text(value))
    return None


def _describe_client(entry: dict[str, str]) -> str:
    name = entry.get("name", "")
    return name or f"id={entry.get('id', '?')} addr={entry.get('addr', '?')}"


def sample_server(
    client: redis.Redis,
    name_prefix: str | None = None,
    *,
    swarm: str | None = None,
    channel_pattern: str = "*",
) -> ServerSample:
    """Take one sample of the server `client` talks to (on a cluster: of every master, summed).

    `our_clients` counts CLIENT LIST entries whose name starts with `name_prefix` (default
    "cfn:", every connection of ours) and, if `swarm` is given, whose third field is that swarm;
    `our_clients_by_role` splits them by the name's second field ("pub", "sub", ...).
    `pubsub_channels` counts active channels matching `channel_pattern`.
    """
    from pytest_cfn.cluster_nodes import each_master

    info = client.info()  # one server: the sample's own INFO; a server gone fails here, once
    if not int(info.get("cluster_enabled", 0)):
        return _sample_node(client, name_prefix, swarm, channel_pattern, info)
    with each_master(client) as nodes:
        parts = {where: _sample_node(node, name_prefix, swarm, channel_pattern)
                 for where, node in nodes}
    return _summed(parts)


def _summed(parts: dict[str, ServerSample]) -> ServerSample:
    """One sample of a whole cluster from one of each master."""
    samples = list(parts.values())
    by_role: dict[str, int] = {}
    for sample in samples:
        for role, count in sample.our_clients_by_role.items():
            by_role[role] = by_role.get(role, 0) + count
    from pytest_cfn.cluster_nodes import fullest_master

    fullest = max(samples, key=lambda sample: sample.max_omem)
    limits = [sample.maxclients for sample in samples]
    nearest = fullest_master({where: (sample.connected_clients, sample.maxclients)
                              for where, sample in parts.items()})
    return ServerSample(
        ts=min(sample.ts for sample in samples),
        monotonic=min(sample.monotonic for sample in samples),
        redis_version=samples[0].redis_version,
        connected_clients=sum(sample.connected_clients for sample in samples),
        maxclients=None if None in limits else sum(limit or 0 for limit in limits),
        our_clients=sum(sample.our_clients for sample in samples),
        our_clients_by_role=by_role,
        max_omem=fullest.max_omem,
        max_omem_client=fullest.max_omem_client,
        pubsub_numpat=sum(sample.pubsub_numpat for sample in samples),
        pubsub_channels=sum(sample.pubsub_channels for sample in samples),
        used_memory=sum(sample.used_memory for sample in samples),
        instantaneous_ops_per_sec=sum(sample.instantaneous_ops_per_sec for sample in samples),
        total_commands_processed=sum(sample.total_commands_processed for sample in samples),
        clients_by_node={where: sample.connected_clients for where, sample in parts.items()},
        fullest_node=nearest.node,
        fullest_connected_clients=nearest.connected_clients,
        fullest_maxclients=nearest.maxclients,
    )


def _sample_node(
    client: redis.Redis, name_prefix: str | None, swarm: str | None, channel_pattern: str,
    info: dict[str, Any] | None = None,
) -> ServerSample:
    prefix = OUR_PREFIX if name_prefix is None else name_prefix
    if info is None:
        info = client.info()
    maxclients = _maxclients(client)
    entries = client.client_list()
    numpat = int(client.pubsub_numpat())
    channels = len(client.pubsub_channels(channel_pattern))

    by_role: dict[str, int] = {}
    max_omem, max_omem_client = 0, None
    for entry in entries:
        omem = int(entry.get("omem", "0"))
        if omem > max_omem:
            max_omem, max_omem_client = omem, _describe_client(entry)
        raw = entry.get("name", "")
        name = parse_connection_name(raw) if raw.startswith(prefix) else None
        if name is None or (swarm is not None and name.swarm != swarm):
            continue
        by_role[name.role] = by_role.get(name.role, 0) + 1

    return ServerSample(
        ts=time.time(),
        monotonic=time.monotonic(),
        redis_version=_text(info.get("redis_version", "")),
        connected_clients=int(info.get("connected_clients", 0)),
        maxclients=maxclients,
        our_clients=sum(by_role.values()),
        our_clients_by_role=by_role,
        max_omem=max_omem,
        max_omem_client=max_omem_client,
        pubsub_numpat=numpat,
        pubsub_channels=channels,
        used_memory=int(info.get("used_memory", 0)),
        instantaneous_ops_per_sec=int(info.get("instantaneous_ops_per_sec", 0)),
        total_commands_processed=int(info.get("total_commands_processed", 0)),
        fullest_connected_clients=int(info.get("connected_clients", 0)),
        fullest_maxclients=maxclients,
    )


def numsub(client: redis.Redis, channels: Iterable[str]) -> dict[str, int]:
    """PUBSUB NUMSUB: subscribers (not pattern subscribers) of each channel."""
    names = list(channels)
    if not names:
        return {}
    return {_text(channel): int(count) for channel, count in client.pubsub_numsub(*names)}


class ServerSampler:
    """Samples the server every `interval` seconds in a daemon thread until stop().

    The first sample is taken at start(). Sampling errors (server gone, timeouts) are counted,
    not raised. stop() returns within its timeout as long as one sample does: a client given
    here keeps its own timeouts and retries (redis-py 8 retries a refused connection for about
    5 s by default), so prefer from_url(), whose own client gives up within `timeout`.
    """

    def __init__(
        self,
        client: redis.Redis,
        interval: float = 1.0,
        name_prefix: str | None = None,
        *,
        swarm: str | None = None,
        channel_pattern: str = "*",
        max_samples: int = 10_000,
    ) -> None:
        if not interval > 0:
            raise InvalidOptionError(f"sampling interval {interval!r} s must be above 0")
        if max_samples < 1:
            raise InvalidOptionError(f"max_samples {max_samples!r} must be at least 1")
        self._client = client
        self._owns_client = False
        self._interval = float(interval)
        self._name_prefix = name_prefix
        self._swarm = swarm
        self._channel_pattern = channel_pattern
        self._samples: deque[ServerSample] = deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._taken = 0
        self._errors = 0
        self._last_error: str | None = None
        self._first: ServerSample | None = None
        self._last: ServerSample | None = None
        self._max_connected = 0
        self._fullest: ServerSample | None = None
        self._max_ours = 0
        self._max_by_role: dict[str, int] = {}
        self._max_omem = 0
        self._max_omem_client: str | None = None
        self._max_used_memory = 0
        self._max_numpat = 0
        self._ops_total = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        interval: float = 1.0,
        name_prefix: str | None = None,
        *,
        swarm: str | None = None,
        channel_pattern: str = "*",
        max_samples: int = 10_000,
        timeout: float = 0.5,
    ) -> ServerSampler:
        """A sampler on its own connection, which gives up within `timeout` s and never retries.

        The connection is named "cfn-sampler" (not counted as ours) and closed by stop().
        """
        if not timeout > 0:
            raise InvalidOptionError(f"sampling timeout {timeout!r} s must be above 0")
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=SAMPLER_CLIENT_NAME,
        )
        sampler = cls(
            client,
            interval,
            name_prefix,
            swarm=swarm,
            channel_pattern=channel_pattern,
            max_samples=max_samples,
        )
        sampler._owns_client = True
        return sampler

    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def samples(self) -> list[ServerSample]:
        """The kept samples, oldest first (at most max_samples; the summary covers them all)."""
        with self._lock:
            return list(self._samples)

    def start(self) -> ServerSampler:
        """Start sampling; a sampler that is already running is left as it is."""
        if self.running:
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="cfn-server-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> bool:
        """Ask the thread to end and wait up to `timeout` s; True when it has ended."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        if self._owns_client:
            self._client.close()
        return True

    def sample_now(self) -> ServerSample | None:
        """Take one sample on the calling thread and keep it; None if the server failed."""
        try:
            sample = sample_server(
                self._client,
                self._name_prefix,
                swarm=self._swarm,
                channel_pattern=self._channel_pattern,
            )
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            return None
        self._keep(sample)
        return sample

    def summary(self) -> ServerSummary:
        """Maxima, mean of INFO's instantaneous ops/s, and commands/s from the counter's delta."""
        with self._lock:
            first, last, taken = self._first, self._last, self._taken
            commands_per_sec = None
            if first is not None and last is not None and last.monotonic > first.monotonic:
                commands = last.total_commands_processed - first.total_commands_processed
                commands_per_sec = commands / (last.monotonic - first.monotonic)
            return ServerSummary(
                samples=taken,
                errors=self._errors,
                last_error=self._last_error,
                redis_version=last.redis_version if last else None,
                maxclients=self._fullest.fullest_maxclients if self._fullest else None,
                max_connected_clients=(self._fullest.fullest_connected_clients
                                       if self._fullest else 0),
                max_connected_clients_total=self._max_connected,
                fullest_node=self._fullest.fullest_node if self._fullest else "",
                max_our_clients=self._max_ours,
                max_our_clients_by_role=dict(self._max_by_role),
                max_omem=self._max_omem,
                max_omem_client=self._max_omem_client,
                max_used_memory=self._max_used_memory,
                max_pubsub_numpat=self._max_numpat,
                ops_per_sec_mean=self._ops_total / taken if taken else None,
                commands_per_sec=commands_per_sec,
            )

    def to_dict(self) -> dict[str, Any]:
        """Summary and kept samples as plain JSON data."""
        result: dict[str, Any] = msgspec.to_builtins(
            {"summary": self.summary(), "samples": self.samples}
        )
        return result

    def __enter__(self) -> ServerSampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            self.sample_now()
            next_at += self._interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at, delay = time.monotonic(), 0.0
            if self._stopping.wait(delay):
                return

    def _keep(self, sample: ServerSample) -> None:
        with self._lock:
            self._samples.append(sample)
            self._taken += 1
            if self._first is None:
                self._first = sample
            self._last = sample
            self._max_connected = max(self._max_connected, sample.connected_clients)
            if self._fullest is None or _fuller(sample, self._fullest):
                self._fullest = sample
            self._max_ours = max(self._max_ours, sample.our_clients)
            for role, count in sample.our_clients_by_role.items():
                self._max_by_role[role] = max(self._max_by_role.get(role, 0), count)
            if sample.max_omem > self._max_omem:
                self._max_omem, self._max_omem_client = sample.max_omem, sample.max_omem_client
            self._max_used_memory = max(self._max_used_memory, sample.used_memory)
            self._max_numpat = max(self._max_numpat, sample.pubsub_numpat)
            self._ops_total += sample.instantaneous_ops_per_sec
