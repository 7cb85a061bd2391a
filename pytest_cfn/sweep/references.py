"""The server's own figures from the same run: the ceiling and floor every sweep figure is drawn
against.

* ``redis-benchmark`` PUBLISH, without and with pipelining: the most PUBLISHes/s this server
  takes on this machine (reusing :func:`pytest_cfn.bench.reference.run_redis_benchmark`);
* one connection's PUBLISH round trip (send, wait for the reply), as a latency floor: no
  delivery through Redis can be faster than the server answering one command.
"""

from __future__ import annotations

import time
from typing import Any

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn.bench.processes import StepFailedError, open_socket
from pytest_cfn.bench.reference import BENCHMARK_CLIENTS, run_redis_benchmark
from pytest_cfn.metrics.latency import LatencyHistogram

CEILING_RUNS = ((1, 100_000), (100, 1_000_000))
"""(pipeline depth, requests): about a second each on a 2-core machine."""
REDIS_BENCHMARK_TIMEOUT_S = 60.0


def server_ceiling(binary: str, url: str, channel: str, payload: int) -> list[dict[str, Any]]:
    """redis-benchmark PUBLISH at pipeline 1 and 100; each entry holds rate, command, method."""
    out = []
    for pipeline, requests in CEILING_RUNS:
        result = run_redis_benchmark(
            binary, url, requests=requests, pipeline=pipeline, channel=channel,
            payload=payload, timeout=REDIS_BENCHMARK_TIMEOUT_S,
        )
        result["method"] = (
            f"redis-benchmark's own count / its own wall time: {requests:,} PUBLISHes of "
            f"{payload} B from {BENCHMARK_CLIENTS} connections, pipeline {pipeline}, to a channel "
            "with no subscriber (the server's PUBLISH ceiling; no fan-out, no client decoding)"
        )
        out.append(result)
    return out


def publish_round_trip(url: str, channel: str, payload: int, count: int = 5_000) -> dict[str, Any]:
    """``count`` PUBLISHes on one raw socket, each waiting for its reply; percentiles in µs."""
    sock = open_socket(parse_redis_url(url), timeout=5.0)
    body = b"x" * payload
    command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel), channel.encode(), len(body), body,
    )
    histogram = LatencyHistogram()
    clock = time.perf_counter_ns
    try:
        for _ in range(count):
            started = clock()
            sock.sendall(command)
            reply = sock.recv(64)
            if not reply.startswith(b":"):
                raise StepFailedError(f"unexpected reply to PUBLISH: {reply[:40]!r}")
            histogram.record(clock() - started)
    finally:
        sock.close()
    summary = histogram.to_dict()
    summary.pop("encoded", None)
    return {
        **summary,
        "method": (
            f"{count:,} PUBLISHes of {payload} B on one connection, one at a time, from sending "
            "the command to its reply arriving (perf_counter in this process); no subscriber"
        ),
    }
