"""The server's own figures from the same run: the ceiling and floor every sweep figure is drawn
against (on a Redis Cluster node: SPUBLISH of a shard channel at the master of its slot, see
:mod:`pytest_cfn.measure.sweep.cluster_target`).

* ``redis-benchmark`` PUBLISH, without and with pipelining: the most PUBLISHes/s this server
  takes on this machine (reusing
  :func:`pytest_cfn.measure.microbench.reference.run_redis_benchmark`);
* one connection's PUBLISH round trip (send, wait for the reply), as a latency floor: no
  delivery through Redis can be faster than the server answering one command.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._core.resp import encode_command, encode_publish
from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.microbench.reference import BENCHMARK_CLIENTS, run_redis_benchmark
from pytest_cfn.measure.results import Metric
from pytest_cfn.measure.worker_processes import StepFailedError, open_socket

CEILING_RUNS = ((1, 100_000), (100, 1_000_000))
"""(pipeline depth, requests): about a second each on a 2-core machine."""
REDIS_BENCHMARK_TIMEOUT_S = 60.0


def server_ceiling(
    binary: str, url: str, channel: str, payload: int, *, sharded: bool = False,
    method_suffix: str = "",
) -> list[dict[str, Any]]:
    """redis-benchmark PUBLISH (``sharded``: SPUBLISH, sent to ``url``, the master of the
    channel's slot) at pipeline 1 and 100; each entry holds rate, command, method."""
    out = []
    verb = "SPUBLISH" if sharded else "PUBLISH"
    for pipeline, requests in CEILING_RUNS:
        result = run_redis_benchmark(
            binary, url, requests=requests, pipeline=pipeline, channel=channel,
            payload=payload, timeout=REDIS_BENCHMARK_TIMEOUT_S,
            command="spublish" if sharded else "publish",
        )
        result["verb"] = verb
        result["method"] = (
            f"redis-benchmark's own count / its own wall time: {requests:,} {verb}es of "
            f"{payload} B from {BENCHMARK_CLIENTS} connections, pipeline {pipeline}, to a channel "
            f"with no subscriber (the server's {verb} ceiling; no fan-out, no client decoding)"
            + method_suffix
        )
        out.append(result)
    return out


def publish_round_trip(
    url: str, channel: str, payload: int, count: int = 5_000, *, sharded: bool = False,
    method_suffix: str = "",
) -> dict[str, Any]:
    """``count`` PUBLISHes (``sharded``: SPUBLISHes, to ``url``, the master of the channel's
    slot) on one raw socket, each waiting for its reply; percentiles in µs."""
    sock = open_socket(parse_redis_url(url), timeout=5.0)
    body = b"x" * payload
    verb = "SPUBLISH" if sharded else "PUBLISH"
    command = (encode_command(b"SPUBLISH", channel.encode(), body) if sharded
               else encode_publish(channel.encode(), body))
    histogram = LatencyHistogram()
    clock = time.perf_counter_ns
    try:
        for _ in range(count):
            started = clock()
            sock.sendall(command)
            reply = sock.recv(64)
            if not reply.startswith(b":"):
                raise StepFailedError(f"unexpected reply to {verb}: {reply[:40]!r}")
            histogram.record(clock() - started)
    finally:
        sock.close()
    summary = histogram.to_dict()
    summary.pop("encoded", None)
    return {
        **summary,
        "verb": verb,
        "method": (
            f"{count:,} {verb}es of {payload} B on one connection, one at a time, from sending "
            "the command to its reply arriving (perf_counter in this process); no subscriber"
            + method_suffix
        ),
    }


REFERENCE_EVENTS = 20_000
REFERENCE_TRIPS = 1_000
REFERENCE_ROUNDS = 3


def same_run_reference(url: str, channel: str) -> dict[str, Any]:
    """What a single figure is judged against when compared with a baseline: this server's
    and this machine's speed now, without the library. ``events_per_s``: one raw connection
    publishing to itself, 100 PUBLISHes per write, parsed by hiredis; ``round_trip_ms``: the
    PUBLISH round trip p50 on one connection; each the median of three short rounds. On a
    Redis Cluster node: SPUBLISH / SSUBSCRIBE of a shard channel at the master of its slot."""
    from pytest_cfn.measure.sweep.client_models import single_connection
    from pytest_cfn.measure.sweep.cluster_target import SweepServer

    server = SweepServer.detect(url)
    if server.cluster:
        where = server.reference(channel.replace(":", "-"))
        url, channel = where.url, where.channel
    verb = "SPUBLISH" if server.cluster else "PUBLISH"
    rates, trips = [], []
    for _ in range(REFERENCE_ROUNDS):
        burst = single_connection(url, channel, REFERENCE_EVENTS, 100, sharded=server.cluster)
        rates.append(burst["delivered"] / burst["seconds"] if burst["seconds"] > 0 else 0.0)
        trips.append(float(publish_round_trip(url, channel, 200, REFERENCE_TRIPS,
                                              sharded=server.cluster)["p50_us"]))
    return {
        "events_per_s": statistics.median(rates),
        "round_trip_ms": statistics.median(trips) / 1000.0,
        "method": (
            f"median of {REFERENCE_ROUNDS} rounds, each {REFERENCE_EVENTS:,} {verb}es of 200 B "
            "on one raw connection subscribed to their channel (100 per write, hiredis), and "
            f"{REFERENCE_TRIPS:,} {verb} round trips on one connection (p50)"
            + server.method_suffix()
        ),
    }


def attach_reference(metrics: list[Metric], reference: dict[str, Any]) -> None:
    """Give each rate (events/s) and latency (ms) figure the same-run reference of its unit."""
    by_unit = {"events/s": reference.get("events_per_s"), "ms": reference.get("round_trip_ms")}
    for metric in metrics:
        value = by_unit.get(metric.unit)
        if value:
            metric.reference = float(value)
