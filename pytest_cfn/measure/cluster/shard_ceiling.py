"""``python -m pytest_cfn.measure.cluster.shard_ceiling``: what one Redis Cluster shard
carries, measured.

The figures behind ``docs/scaling.md``. One redis-server started here with
``cluster-enabled yes`` and every slot assigned to it — one shard, as a master of
a cluster runs it — and, in the same run:

1. ``redis-benchmark`` SPUBLISH, no subscriber, pipeline 1 and 100 (the publish
   ceiling of one shard);
2. SPUBLISH fan-out: ``redis-benchmark -P 100`` publishing to one shard channel
   read by K raw SSUBSCRIBE sockets (in two reader processes, counting bytes,
   every message the same size; the pub/sub output-buffer limit raised so that no
   reader is cut off); deliveries/s = messages read by all subscribers / (last
   byte - first byte), and the server's CPU per delivery from ``INFO cpu`` — the
   figure that holds when readers are on other machines;
3. our Event Bus end to end on the same shard (the bench's end-to-end pair:
   one publisher process, one subscriber process, counted at the handler).

Everything runs on this machine at once (server, publisher and readers share its
cores), so the figures are what one such machine gives, stated with the core count.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from typing import Any

import redis

from pytest_cfn._core.resp import encode_command
from pytest_cfn.measure.metrics.machine import machine_info
from pytest_cfn.measure.microbench.config import BenchConfig, Target
from pytest_cfn.measure.microbench.reference import run_redis_benchmark
from pytest_cfn.measure.microbench.runner import BenchRun
from pytest_cfn.measure.microbench.workloads import wire_size
from pytest_cfn.measure.worker_processes import StepFailedError, Worker, new_event, wait_ready
from pytest_cfn.server import RedisServer, _free_port

CHANNEL = "event:{shard-ceiling}"
BENCHMARK_TIMEOUT = 180.0
MAX_FANOUT_DELIVERIES = 2_000_000
"""Deliveries per fan-out run (messages = this / subscribers): at most ~0.5 GB of backlog."""


def start_one_shard() -> RedisServer:
    """A cluster-enabled redis-server owning all 16,384 slots (a one-master cluster)."""
    server = RedisServer(extra_args=[
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-require-full-coverage", "no", "--cluster-port", str(_free_port()),
        # Readers in Python on a shared 2-core machine lag the server; a bounded run
        # must not have them cut off at the default 32 MB pub/sub limit.
        "--client-output-buffer-limit", "pubsub 2gb 2gb 0",
    ]).start()
    client = redis.Redis(server.host, server.port, protocol=2)
    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in client.execute_command(  # type: ignore[no-untyped-call]
            "CLUSTER", "INFO"
        ):
            if time.monotonic() > deadline:
                raise StepFailedError("the one-shard cluster did not reach cluster_state:ok")
            time.sleep(0.05)
    finally:
        client.close()
    return server


def _message_size(channel: str, payload: int) -> int:
    """Bytes of one ``smessage`` push as RESP2 sends it."""
    return len(encode_command(b"smessage", channel.encode(), b"x" * payload))


def fanout_reader(
    host: str, port: int, channel: str, sockets: int, ready: Event, stop: Event
) -> dict[str, Any]:
    """Worker: ``sockets`` raw SSUBSCRIBE connections; bytes read and first/last byte times."""
    selector = selectors.DefaultSelector()
    conns: list[socket.socket] = []
    for _ in range(sockets):
        sock = socket.create_connection((host, port), timeout=5)
        command = f"*2\r\n$10\r\nSSUBSCRIBE\r\n${len(channel)}\r\n{channel}\r\n".encode()
        sock.sendall(command)
        confirmation = b""
        while confirmation.count(b"\r\n") < 6:  # *3, $10 ssubscribe, $N channel, :1
            confirmation += sock.recv(4096)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock)
        conns.append(sock)
    ready.set()
    received, first, last, closed = 0, 0.0, 0.0, 0
    while not stop.is_set() or (received and time.perf_counter() - last < 0.5):
        for key, _ in selector.select(0.05):
            conn: socket.socket = key.data
            try:
                data = conn.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                closed += 1
                selector.unregister(conn)
                continue
            now = time.perf_counter()
            if not received:
                first = now
            received += len(data)
            last = now
        if stop.is_set() and not received:
            break
    for sock in conns:
        sock.close()
    return {"bytes": received, "first": first, "last": last, "closed": closed}


def _server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure_fanout(
    server: RedisServer, benchmark: str, subscribers: int, messages: int, payload: int
) -> dict[str, Any]:
    """SPUBLISH -P 100 to one shard channel read by ``subscribers`` sockets."""
    ready_events = [new_event(), new_event()]
    stop = new_event()
    halves = [subscribers // 2, subscribers - subscribers // 2]
    readers = [
        Worker(f"fan-out reader {i}", fanout_reader, host=server.host, port=server.port,
               channel=CHANNEL, sockets=count, ready=ready_events[i], stop=stop).start()
        for i, count in enumerate(halves) if count
    ]
    client = redis.Redis(server.host, server.port, protocol=2)
    try:
        for reader, ready in zip(readers, ready_events, strict=False):
            wait_ready(ready, 30.0, reader)
        cpu_before = _server_cpu(client)
        published = run_redis_benchmark(
            benchmark, server.url, requests=messages, pipeline=100, channel=CHANNEL,
            payload=payload, timeout=BENCHMARK_TIMEOUT, command="spublish",
        )
        stop.set()
        results = [reader.result(60.0) for reader in readers]
        cpu = _server_cpu(client) - cpu_before
    finally:
        stop.set()
        for reader in readers:
            reader.stop()
        client.close()
    size = _message_size(CHANNEL, payload)
    delivered = sum(r["bytes"] for r in results) // size
    first = min(r["first"] for r in results if r["bytes"])
    last = max(r["last"] for r in results)
    seconds = last - first
    return {
        "subscribers": subscribers,
        "published": messages,
        "publish_rate": published["rate"],
        "delivered": delivered,
        "expected": messages * subscribers,
        "deliveries_per_s": delivered / seconds if seconds > 0 else 0.0,
        "server_cpu_us_per_delivery": cpu / delivered * 1e6 if delivered else 0.0,
        "cut_off": sum(r["closed"] for r in results),
        "command": published["command"],
    }


def our_bus_on_the_shard(server: RedisServer, events: int, payload: int) -> dict[str, Any]:
    """The bench's end-to-end pair (EventBus publisher and subscriber processes) on the shard."""
    config = BenchConfig(
        redis_url=server.url, events=events, rate=1000.0, duration=1.0, payload=payload,
        repeat=1, idle_buses=1, json_path=None, quick=False,
    )
    target = Target(url=server.url, version=server.version, redis_benchmark=None,
                    clients="", wire_bytes=wire_size("cfnbench-000000-1", payload))
    return BenchRun(config, target, stream=sys.stderr)._e2e_once("sync", False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_cfn.measure.cluster.shard_ceiling",
        description="Measure one Redis Cluster shard: redis-benchmark SPUBLISH, SPUBLISH "
        "fan-out to K subscribers, and our Event Bus end to end, on a cluster-enabled "
        "redis-server started here (the figures of docs/scaling.md).",
    )
    parser.add_argument("--messages", type=int, default=200_000,
                        help="messages per redis-benchmark run (default 200000)")
    parser.add_argument("--payload", type=int, default=200, help="payload bytes (default 200)")
    parser.add_argument("--subscribers", default="10,100",
                        help="fan-out runs, subscribers per channel (default 10,100)")
    args = parser.parse_args(argv)
    fanouts = [int(n) for n in args.subscribers.split(",") if n]
    server = start_one_shard()
    try:
        benchmark = server.redis_benchmark
        if benchmark is None:
            print("error: no redis-benchmark binary", file=sys.stderr)
            return 2
        machine = machine_info()
        print(f"one shard: redis-server {server.version} pid {server.pid}, cluster-enabled, "
              f"all 16384 slots; {machine['cpu_usable']} CPUs ({machine['cpu_model']}), "
              f"load average {machine['load_average']}; {args.payload} B payloads; server, "
              "publishers and readers share the machine")
        for pipeline in (1, 100):
            result = run_redis_benchmark(
                benchmark, server.url, requests=args.messages, pipeline=pipeline,
                channel=CHANNEL, payload=args.payload, timeout=BENCHMARK_TIMEOUT,
                command="spublish",
            )
            print(f"  SPUBLISH -P {pipeline:<3} no subscriber: {result['rate']:>12,.0f} msgs/s"
                  f"   ({result['command']})")
        for subscribers in fanouts:
            messages = max(1000, min(args.messages, MAX_FANOUT_DELIVERIES // subscribers))
            fan = measure_fanout(server, benchmark, subscribers, messages, args.payload)
            print(f"  SPUBLISH -P 100 to {subscribers} subscribers: publish "
                  f"{fan['publish_rate']:,.0f} msgs/s, delivered {fan['deliveries_per_s']:,.0f}/s "
                  f"({fan['delivered']:,} of {fan['expected']:,}; {fan['cut_off']} cut off), "
                  f"server CPU {fan['server_cpu_us_per_delivery']:.2f} µs per delivery")
        ours = our_bus_on_the_shard(server, args.messages, args.payload)
        print(f"  our Event Bus end to end on the shard: {ours['rate']:,.0f} events/s delivered "
              f"({ours['delivered']:,} of {ours['published']:,}); CPU per event publisher "
              f"{ours['publisher_cpu_us_per_event']:.2f} µs, subscriber "
              f"{ours['subscriber_cpu_us_per_event']:.2f} µs (one publisher process, one "
              "subscriber process, unpaced, counted at the handler)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
