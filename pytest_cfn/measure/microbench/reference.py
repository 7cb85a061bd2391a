"""Reference figures measured in the same run: the server's own ceiling and redis-py's.

Every figure of ours is quoted as a ratio to one of these, taken on the same
machine, against the same server, minutes apart: on a noisy shared machine an
absolute events/s means little, a ratio to what redis-py or ``redis-benchmark``
reach at the same moment means more.
"""

from __future__ import annotations

import re
import subprocess
import time
from array import array
from multiprocessing.synchronize import Event
from typing import Any

from pytest_cfn._backends.address import ServerAddress, parse_redis_url
from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.microbench.pacing import StopRule, send_paced
from pytest_cfn.measure.worker_processes import StepFailedError

BENCHMARK_CLIENTS = 50
_RPS = re.compile(rb"([0-9]+(?:\.[0-9]+)?) requests per second")
DRAIN_BACKLOG_MAX = 50_000
"""Messages left waiting for the redis-py subscriber at once: about 12 MB at 200 B,
well under the default ``client-output-buffer-limit pubsub 32mb`` hard limit."""
PIPELINE_DEPTH = 1000


def parse_redis_benchmark(output: bytes) -> float:
    """The last ``N requests per second`` in ``redis-benchmark -q`` output (progress
    lines are separated by carriage returns)."""
    found = _RPS.findall(output)
    if not found:
        tail = output[-300:].decode("utf-8", "replace").replace("\r", "\n").strip()
        raise StepFailedError(f"redis-benchmark printed no 'requests per second' line: {tail!r}")
    return float(found[-1])


def redis_benchmark_command(
    binary: str, address: ServerAddress, requests: int, pipeline: int, channel: str, payload: int,
    command_name: str = "publish",
) -> list[str]:
    """``redis-benchmark ... -q publish CHANNEL PAYLOAD`` (``-t publish`` prints nothing on 7.0);
    ``command_name="spublish"`` for sharded pub/sub."""
    command = [binary]
    if address.unix_path:
        command += ["-s", address.unix_path]
    else:
        command += ["-h", address.host, "-p", str(address.port)]
    if address.password is not None:
        if address.username:
            command += ["--user", address.username]
        command += ["-a", address.password]
    tls = address.tls
    if tls is not None:
        command += ["--tls", "--sni", address.host]
        if tls.ca_certs is not None:
            command += ["--cacert", tls.ca_certs]
        if tls.certfile is not None:
            command += ["--cert", tls.certfile, "--key", tls.keyfile or tls.certfile]
        if tls.cert_reqs == "none":
            command += ["--insecure"]
    command += [
        "-n", str(requests),
        "-c", str(BENCHMARK_CLIENTS),
        "-P", str(pipeline),
        "-q",
        command_name, channel, "x" * payload,
    ]
    return command


def run_redis_benchmark(
    binary: str,
    url: str,
    *,
    requests: int,
    pipeline: int,
    channel: str,
    payload: int,
    timeout: float,
    command: str = "publish",
) -> dict[str, Any]:
    """Run redis-benchmark's PUBLISH (or ``command``) once; its own count over its own wall time."""
    address = parse_redis_url(url)
    command_line = redis_benchmark_command(
        binary, address, requests, pipeline, channel, payload, command
    )
    try:
        done = subprocess.run(command_line, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise StepFailedError(f"redis-benchmark -P {pipeline} ran over {timeout:.0f} s") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()[-300:]
        raise StepFailedError(f"redis-benchmark exited with {done.returncode}: {message}")
    shown = [part if part != "x" * payload else f"<{payload} B>" for part in command_line]
    shown = [part if part != address.password else "***" for part in shown]
    return {
        "rate": parse_redis_benchmark(done.stdout),
        "requests": requests,
        "pipeline": pipeline,
        "command": " ".join(shown),
    }


def redis_py_drain(
    url: str, channel: str, events: int, payload: int, sharded: bool = False
) -> dict[str, Any]:
    """Worker: how fast one redis-py PubSub (``get_message`` loop) drains a backlog
    (``sharded``: SSUBSCRIBE / SPUBLISH of a shard channel, on its master).

    In rounds of at most DRAIN_BACKLOG_MAX: a redis-py pipeline publishes the round
    while the subscriber reads nothing, then the subscriber drains it; only the
    drain is timed (first ``get_message`` call to the round's last message).
    """
    import redis

    client: Any = redis.Redis.from_url(url, protocol=2)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    publisher = redis.Redis.from_url(url, protocol=2)
    message = b"x" * payload
    try:
        _subscribe(pubsub, channel, sharded)
        drained = 0
        drain_seconds = 0.0
        drain_cpu = 0.0
        while drained < events:
            round_size = min(DRAIN_BACKLOG_MAX, events - drained)
            _pipeline_publish(publisher, channel, message, round_size, sharded)
            got = 0
            get_message = pubsub.get_message
            cpu_started = time.process_time()
            started = time.perf_counter()
            deadline = started + 30.0
            last = started
            while got < round_size:
                if get_message(timeout=1.0) is not None:
                    got += 1
                    last = time.perf_counter()
                elif time.perf_counter() > deadline:
                    raise StepFailedError(
                        f"redis-py drained {got} of {round_size} backlogged messages in 30 s"
                    )
            drain_seconds += last - started
            drain_cpu += time.process_time() - cpu_started
            drained += got
        parser = type(pubsub.connection._parser).__name__ if pubsub.connection else "?"
        return {
            "rate": drained / drain_seconds if drain_seconds > 0 else 0.0,
            "messages": drained,
            "seconds": drain_seconds,
            "cpu_us_per_event": drain_cpu / drained * 1e6 if drained else 0.0,
            "parser": parser,
        }
    finally:
        pubsub.close()
        publisher.close()
        client.close()


def _subscribe(pubsub: Any, channel: str, sharded: bool) -> None:
    """SUBSCRIBE (``sharded``: SSUBSCRIBE) ``channel`` and wait for the confirmation."""
    if sharded:
        pubsub.ssubscribe(channel)
    else:
        pubsub.subscribe(channel)
    _wait_subscribed(pubsub)


def _wait_subscribed(pubsub: Any) -> None:
    deadline = time.monotonic() + 5.0
    while not pubsub.subscribed or pubsub.connection is None:
        if time.monotonic() > deadline:
            raise StepFailedError("redis-py did not confirm SUBSCRIBE within 5 s")
        pubsub.get_message(timeout=0.1)
    pubsub.get_message(timeout=0.1)


def _pipeline_publish(
    client: Any, channel: str, message: bytes, count: int, sharded: bool = False
) -> None:
    pipe = client.pipeline(transaction=False)
    publish = pipe.spublish if sharded else pipe.publish
    left = count
    while left:
        chunk = min(PIPELINE_DEPTH, left)
        for _ in range(chunk):
            publish(channel, message)
        pipe.execute()
        left -= chunk


def redis_py_pipeline_publish(
    url: str, channel: str, events: int, payload: int, warmup: int, sharded: bool = False
) -> dict[str, Any]:
    """Worker: redis-py publishing through ``pipeline(transaction=False)``, 1,000 per execute.

    Timed from the first command queued to the last ``execute()`` returning, i.e.
    until Redis has acknowledged every publish.
    """
    import redis

    client = redis.Redis.from_url(url, protocol=2)
    message = b"x" * payload
    try:
        client.ping()
        _pipeline_publish(client, channel, message, warmup, sharded)
        started = time.perf_counter()
        _pipeline_publish(client, channel, message, events, sharded)
        seconds = time.perf_counter() - started
        return {"rate": events / seconds, "events": events, "seconds": seconds}
    finally:
        client.close()


def redis_py_unpaced_publisher(
    url: str, channel: str, events: int, payload: int, sharded: bool = False
) -> dict[str, Any]:
    """Worker: the publisher half of redis-py's end to end: pipelines of 1,000, unpaced."""
    import redis

    client = redis.Redis.from_url(url, protocol=2)
    try:
        client.ping()
        cpu = time.process_time()
        started = time.perf_counter()
        _pipeline_publish(client, channel, b"x" * payload, events, sharded)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        client.close()
    return {"published": events, "seconds": seconds, "cpu_us_per_event": cpu / events * 1e6}


def redis_py_subscriber(
    url: str,
    channel: str,
    expected: int,
    ready: Event,
    publisher_done: Event,
    deadline: float,
    latency: bool = False,
    sharded: bool = False,
) -> dict[str, Any]:
    """Worker: a redis-py PubSub ``get_message`` loop counting messages as they arrive.

    With ``latency``, each message starts with ``t`` (measured) or ``w`` (warm-up)
    and 19 digits of intended send time (ns), and the time from it to the loop's
    receipt is recorded, as our latency subscriber does at its handler.
    """
    import redis

    client: Any = redis.Redis.from_url(url, protocol=2)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    raw = array("q")  # folded into the histogram after the run, as our recorder does
    count = first = last = 0.0
    try:
        _subscribe(pubsub, channel, sharded)
        rule = StopRule(expected, publisher_done, deadline)
        cpu = time.process_time()
        ready.set()
        get_message = pubsub.get_message
        perf = time.perf_counter
        while not rule.should_stop(int(count)):
            message = get_message(timeout=0.2)
            if message is None:
                continue
            if latency:
                data = message["data"]
                if data[:1] == b"t":
                    raw.append(time.time_ns() - int(data[1:20]))
            now = perf()
            if not count:
                first = now
            count += 1
            last = now
        cpu = time.process_time() - cpu
    finally:
        pubsub.close()
        client.close()
    seconds = last - first
    histogram = LatencyHistogram()
    histogram.record_many(raw)
    return {
        "delivered": int(count),
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else 0.0,
        "cpu_us_per_event": cpu / count * 1e6 if count else 0.0,
        "histogram": histogram,
    }


def latency_message(intended_ns: int, measured: bool, payload: int) -> bytes:
    """``t``/``w`` + 19-digit intended send time + padding: ``payload`` bytes (at least 20)."""
    return b"%s%019d" % (b"t" if measured else b"w", intended_ns) + b"x" * max(0, payload - 20)


def redis_py_paced_publisher(
    url: str, channel: str, rate: float, duration: float, warmup: float, payload: int,
    sharded: bool = False,
) -> dict[str, Any]:
    """Worker: redis-py on the open schedule: ``publish()`` when one event is due, one
    ``pipeline(transaction=False).execute()`` for several (a round trip per wake-up)."""
    import redis

    client = redis.Redis.from_url(url, protocol=2)
    try:
        client.ping()
        publish = client.spublish if sharded else client.publish

        def send(due: list[tuple[int, bool]]) -> None:
            if len(due) == 1:
                publish(channel, latency_message(due[0][0], due[0][1], payload))
                return
            pipe = client.pipeline(transaction=False)
            pipe_publish = pipe.spublish if sharded else pipe.publish
            for intended_ns, measured in due:
                pipe_publish(channel, latency_message(intended_ns, measured, payload))
            pipe.execute()

        run = send_paced(rate, duration, warmup, send)
    finally:
        client.close()
    return {"published": run.sent, **run.schedule_report()}
