"""Messenger delivered messages/s (5 KB) next to the Event Bus's events/s (200 B), one run.

    python scripts/bench_messenger.py                 # starts its own redis-server
    python scripts/bench_messenger.py --redis URL --count 100000

Method: for each layer, one receiver process subscribes (a Messenger listening
to its swarm's inbox, or an EventBus subscribed to ``*``) and one sender
process (this one) sends ``--count`` payloads as fast as it can, in ``batch()``
blocks of 1,000, then flushes. So that the rate measured is one the receiver
sustains, the sender stays at most ``--window-mb`` of payload ahead of it (the
receiver reports its count every 500 deliveries in a Redis key): without that,
the server cuts a subscriber off at its 32 MB pub/sub output-buffer limit and
the figure would be of messages lost, not delivered (``--unpaced`` shows it).
Delivered/s = payloads the receiver's handler got, divided by the time from
the sender's first send to the receiver's last delivery (one host, one clock).
Loss is printed, not hidden. redis-benchmark's pipelined PUBLISH of the same
sizes (no subscriber) is the server's ceiling on this machine in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any

EVENT_BYTES = 200
MESSAGE_BYTES = 5 * 1024
BATCH = 1000


def receive(args: argparse.Namespace) -> None:
    import redis

    from pytest_cfn import EventBus, Messenger

    state: dict[str, Any] = {"n": 0, "first": 0.0, "last": 0.0}
    progress = redis.Redis.from_url(args.redis)
    progress_key = f"{args.namespace}:progress"

    def handler(_: Any) -> None:
        now = time.time()
        if not state["n"]:
            state["first"] = now
        state["n"] += 1
        state["last"] = now
        if state["n"] % 500 == 0:
            progress.set(progress_key, state["n"])

    endpoint: Any
    if args.kind == "messenger":
        endpoint = Messenger.from_url(args.redis, swarm="receiver", agent="r1",
                                      namespace=args.namespace, queue_size=1_000_000)
        endpoint.on_message(handler)
    else:
        endpoint = EventBus.from_url(args.redis, swarm="bench", agent="r1",
                                     namespace=args.namespace, queue_size=1_000_000)
        endpoint.subscribe("*", handler)
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    seen, quiet_since = 0, time.monotonic()
    while state["n"] < args.count and time.monotonic() < deadline:
        time.sleep(0.05)
        if state["n"] != seen:
            seen, quiet_since = state["n"], time.monotonic()
        elif state["n"] and time.monotonic() - quiet_since > 3:
            break
    stats = endpoint.stats()
    endpoint.close()
    print(json.dumps({"delivered": state["n"], "first": state["first"], "last": state["last"],
                      "lost": stats["lost"], "dropped": stats["dropped"],
                      "reconnects": stats["subscriber_reconnects"],
                      "cpu": time.process_time()}), flush=True)


def send(args: argparse.Namespace, kind: str, size: int) -> dict[str, Any]:
    import redis

    from pytest_cfn import EventBus, Messenger

    progress = redis.Redis.from_url(args.redis)
    progress_key = f"{args.namespace}:progress"
    progress.delete(progress_key)
    window = max(BATCH, int(args.window_mb * 1e6 / size))

    receiver = subprocess.Popen(
        [sys.executable, __file__, "--role", "receive", "--kind", kind, "--redis", args.redis,
         "--namespace", args.namespace, "--count", str(args.count)],
        stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    if receiver.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {kind} receiver did not start")
    payload = {"blob": "x" * (size - 40)}
    sender: Any
    if kind == "messenger":
        sender = Messenger.from_url(args.redis, swarm="sender", agent="s1",
                                    namespace=args.namespace)
        sender.connect()

        def one(i: int) -> None:
            sender.send("receiver", payload)
    else:
        sender = EventBus.from_url(args.redis, swarm="bench", agent="s1", namespace=args.namespace)
        sender.connect()

        def one(i: int) -> None:
            sender.publish("agent.tick", payload)
    start = time.time()
    cpu0 = time.process_time()
    sent = 0
    while sent < args.count:
        while not args.unpaced and sent - int(progress.get(progress_key) or 0) > window:
            time.sleep(0.0005)
        with sender.batch():
            for i in range(sent, min(sent + BATCH, args.count)):
                one(i)
        sent = min(sent + BATCH, args.count)
    sender.flush()
    send_seconds = time.time() - start
    send_cpu = time.process_time() - cpu0
    sender.close()
    out, _ = receiver.communicate(timeout=args.timeout + 30)
    result = json.loads(out.strip().splitlines()[-1])
    elapsed = max(result["last"] - start, 1e-9)
    return {
        "kind": kind, "bytes": size, "sent": args.count, "delivered": result["delivered"],
        "delivered_per_s": result["delivered"] / elapsed,
        "mb_per_s": result["delivered"] * size / elapsed / 1e6,
        "send_per_s": args.count / send_seconds, "send_cpu_s": send_cpu,
        "receiver_cpu_s": result["cpu"], "lost": result["lost"], "dropped": result["dropped"],
        "reconnects": result["reconnects"],
    }


def ceiling(args: argparse.Namespace, size: int) -> float | None:
    """redis-benchmark's pipelined PUBLISH of ``size`` bytes (no subscriber), requests/s."""
    binary = shutil.which("redis-benchmark")
    if binary is None or not args.redis.startswith("redis://"):
        return None
    host_port = args.redis[len("redis://"):].split("/")[0]
    host, _, port = host_port.rpartition(":")
    out = subprocess.run(
        [binary, "-h", host or "127.0.0.1", "-p", port or "6379", "-n", "200000", "-P", "100",
         "-q", "publish", "bench:ceiling", "x" * size],
        capture_output=True, text=True, timeout=120)
    for token in out.stdout.replace("\r", "\n").split():
        try:
            return float(token)
        except ValueError:
            continue
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="send", choices=("send", "receive"))
    parser.add_argument("--kind", default="messenger", choices=("messenger", "events"))
    parser.add_argument("--redis", default=None, help="server URL (default: start one)")
    parser.add_argument("--namespace", default="bench" + uuid.uuid4().hex[:8])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--window-mb", type=float, default=16.0,
                        help="most payload the sender may be ahead of the receiver (default 16)")
    parser.add_argument("--unpaced", action="store_true", help="no window: see the cut-offs")
    args = parser.parse_args()
    if args.role == "receive":
        receive(args)
        return 0
    server = None
    if args.redis is None:
        from pytest_cfn.server import RedisServer

        server = RedisServer().start()
        args.redis = server.url
    try:
        rows = [send(args, "events", EVENT_BYTES), send(args, "messenger", MESSAGE_BYTES)]
        ceilings = {size: ceiling(args, size) for size in (EVENT_BYTES, MESSAGE_BYTES)}
    finally:
        if server is not None:
            server.stop()
    pace = "unpaced" if args.unpaced else f"at most {args.window_mb:g} MB ahead of the receiver"
    print(f"# {args.count} payloads per layer, one sender and one receiver process, "
          f"batch() of {BATCH}, {pace}; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    for row in rows:
        top = ceilings[row["bytes"]]
        ratio = f"{row['delivered_per_s'] / top:.0%} of" if top else "no"
        print(f"{row['kind']:<9} {row['bytes']:>5} B: {row['delivered_per_s']:>9,.0f} delivered/s "
              f"({row['mb_per_s']:.1f} MB/s), sent {row['send_per_s']:,.0f}/s, "
              f"delivered {row['delivered']}/{row['sent']}, lost {row['lost']}, "
              f"dropped {row['dropped']}, reconnects {row['reconnects']}; "
              f"{ratio} redis-benchmark PUBLISH ceiling ({top and f'{top:,.0f}/s'})")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
