"""The library alone at a per-agent run's load: the floor under the harness's figures.

    python loadtests/bare_agents.py --agents 100 --processes 2 --redis redis://127.0.0.1:6379

The same agents as ``locust -f loadtests/swarm.py --cfn-model per-agent`` (each with an Event
Bus and a Messenger of its own: 2 + 2 connections, subscribed to its swarm and its inbox),
dealt the same way (swarms of 10, each process a block of whole swarms, roles 7:2:1 as the
locustfile's user weights), sending the same traffic (each role's mix, the same event sizes,
messages to the next swarm) on the same schedule (one pacing loop per process, the swarm's
phase, ADR-002's 100 events/s per agent), in gevent processes on the same libev ``select``
loop, with the same preemption points (a delivery that finds the pacing loop overdue takes
its due sends, once per sleep of the loop). What it leaves out is everything of the
harness's own: Locust, its statistics and heartbeats, the taps and their folds, the
accounting. A handler appends the delivery to a list and reads the clock.

Per process it measures, between the window's marks: its CPU (``time.process_time``), the
deliveries its agents' handlers received, and each send's lag (its write time minus its
intended time) into an HdrHistogram. It prints delivered/s, CPU per delivery and send lag
p50/p99/p99.9 over all processes, and with ``--json`` writes them.

When the harness's CPU per delivery is about this figure and the harness's send lag is no
worse than this one's, the load generator is not the limit: the library's own cost per
connection, on this machine, is.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

ROLE_WEIGHTS = (("implementer", 7), ("validator", 2), ("coordinator", 1))
"""The locustfile's user classes and their weights."""
SWARM_SIZE = 10
CATCH_UP_LIMIT = 24
"""Due sends a delivery takes at once, as the harness's per-agent taps do."""
READY_TIMEOUT_S = 120.0
"""How long the processes may take to connect their agents, beyond the run itself."""


def role_order(weights: tuple[tuple[str, int], ...] = ROLE_WEIGHTS) -> list[str]:
    """One period of roles by smooth weighted round robin (7:2:1 -> ten slots)."""
    total = sum(w for _, w in weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        for i, (_, w) in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=current.__getitem__)
        current[best] -= total
        order.append(weights[best][0])
    return order


def process_slots(agents: int, processes: int, index: int) -> range:
    """The consecutive slots of process ``index`` (whole blocks, as the harness deals them)."""
    block = math.ceil(agents / processes)
    return range(index * block, min(agents, (index + 1) * block))


def lag_histogram(lag_ns: array[int]) -> Any:
    from pytest_cfn.measure.metrics.latency import LatencyHistogram

    histogram = LatencyHistogram()
    histogram.record_many(lag_ns)
    return histogram


def child(args: argparse.Namespace) -> int:
    """One process's agents; reads the start time on stdin, prints one JSON line."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from cfn_harness.timers import loop_backend

    from pytest_cfn import CfnError, EventBus, Messenger
    from pytest_cfn._backends.sync_backend import yield_now
    from pytest_cfn.measure.loadgen.pacing import NEVER_NS, Deadline, ProcessSchedule, swarm_phase
    from pytest_cfn.measure.loadgen.traffic import (
        event_data,
        event_types_of,
        padding_for,
        role_mix,
        traffic_cycle,
    )
    from pytest_cfn.measure.timer_slack import tighten_timer_slack
    exact = args.channels == "exact"  # as the harness's --cfn-channels
    event_types = event_types_of()
    swarms = math.ceil(args.agents / SWARM_SIZE)
    roles = role_order()
    received: list[list[Any]] = []
    owned: list[Any] = []
    schedule: ProcessSchedule[Any] = ProcessSchedule(args.rate, 0)
    time_ns = time.time_ns
    deadline = Deadline()  # the pacing loop's, as the harness's taps hold it
    due = deadline.due
    ticking = [False]
    stop = [NEVER_NS]

    def catch_up(now: int) -> None:
        if ticking[0]:
            return
        due[0] = NEVER_NS
        ticking[0] = True
        try:
            schedule.run_due(now, stop[0], send, CATCH_UP_LIMIT)
        finally:
            ticking[0] = False

    def handler(into: list[Any]) -> Any:
        append = into.append

        def on_delivery(item: Any) -> None:
            append(item)
            now = time_ns()
            if now >= due[0]:
                deadline.catch_up(now)

        return on_delivery

    deadline.catch_up = catch_up
    try:
        for slot in process_slots(args.agents, args.processes, args.child):
            swarm_index = slot // SWARM_SIZE
            swarm = f"bare-{swarm_index:03d}"
            peer = f"bare-{(swarm_index + 1) % swarms:03d}"
            agent = f"bare-agent-{slot}"
            bus = EventBus(args.redis, swarm, agent, event_types=event_types if exact else None)
            sender = f"bare-{swarm_index - 1:03d}" if exact and swarm_index else None
            messenger = Messenger(args.redis, swarm, agent,
                                  from_swarms=[sender] if sender else None)
            owned += [bus, messenger]
            events: list[Any] = []
            messages: list[Any] = []
            bus.subscribe("*", handler(events))
            messenger.on_message(handler(messages))
            received += [events, messages]
            padding = padding_for(args.payload, swarm, agent, f"{agent}.00000000", "state.update")
            mix = role_mix(roles[slot % len(roles)])
            steps: list[tuple[Any, str, int, str]] = []
            period = sum(e.weight for e in mix if e.weight)
            for entry in itertools.islice(traffic_cycle(mix), period):
                if entry.message:
                    steps.append((messenger.send, peer, entry.priority, entry.type))
                else:
                    steps.append((bus.publish, entry.type, entry.priority, ""))
            schedule.add((agent, padding, steps, [0]), swarm_phase(swarm_index))
    except CfnError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    print("ready", flush=True)
    start_ns = int(sys.stdin.readline())
    gc.freeze()  # as the harness does when its window opens: the agents live for the run
    window_from = start_ns + int(args.warmup * 1e9)
    window_until = window_from + int(args.duration * 1e9)
    lag_ns = array("q")  # folded into the histogram after the window, as the harness's are
    record = lag_ns.append
    marks: dict[str, tuple[float, int]] = {}

    def send(member: Any, t: int) -> None:
        agent, padding, steps, turn = member
        target, first, priority, kind = steps[turn[0] % len(steps)]
        turn[0] += 1
        data = event_data(t, True, agent, padding)
        if kind:
            data["k"] = kind
        now = time_ns()
        if window_from <= t < window_until:
            record(max(1, now - t))
        target(first, data, priority)

    counted = [0]

    def delivered() -> int:
        return counted[0] + sum(len(r) for r in received)

    def empty_lists() -> None:
        # every 0.1 s: a list holding a run's envelopes would make the collector's passes
        # (their ``data`` dicts are tracked) ever longer
        while True:
            gevent.sleep(0.1)
            for r in received:
                counted[0] += len(r)
                r.clear()

    def mark(name: str, at_ns: int) -> None:
        gevent.sleep(max(0.0, (at_ns - time_ns()) / 1e9))
        marks[name] = (time.process_time(), delivered())

    gevent.spawn(empty_lists)
    gevent.spawn(mark, "from", window_from)
    until = gevent.spawn(mark, "until", window_until)
    tighten_timer_slack()  # as the harness's pacing loop and the benchmark's senders
    schedule.base_ns = start_ns
    stop[0] = stop_ns = window_until + int(0.5e9)
    while True:
        nxt = schedule.next_ns()
        if nxt is None or nxt >= stop_ns:
            break
        wait = nxt - time_ns()
        if wait > 0:
            due[0] = nxt
            gevent.sleep(wait / 1e9)
            due[0] = NEVER_NS
        else:  # behind its schedule: let the readers run between the sends
            yield_now()
        if ticking[0]:  # a delivery is taking the due sends (and waits on a socket)
            gevent.sleep(0.0002)
            continue
        ticking[0] = True
        try:
            schedule.run_due(time_ns(), stop_ns, send, 2000)
        finally:
            ticking[0] = False
    until.join()
    (cpu0, n0), (cpu1, n1) = marks["from"], marks["until"]
    print(json.dumps({
        "process": args.child, "agents": len(process_slots(args.agents, args.processes,
                                                             args.child)),
        "cpu_s": cpu1 - cpu0, "deliveries": n1 - n0, "seconds": args.duration,
        "lag": lag_histogram(lag_ns).encode(), "loop": loop_backend(),
    }), flush=True)
    os._exit(0)  # the buses' sockets go with the process; closing 200 costs seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the processes, open their common window, gather their figures."""
    from pytest_cfn.measure.metrics.latency import LatencyHistogram

    env = dict(os.environ, GEVENT_BACKEND=os.environ.get("GEVENT_BACKEND", "select"))
    base = [sys.executable, str(Path(__file__).resolve()), "--agents", str(args.agents),
            "--processes", str(args.processes), "--rate", f"{args.rate:g}", "--redis",
            args.redis, "--duration", f"{args.duration:g}", "--warmup", f"{args.warmup:g}",
            "--payload", str(args.payload), "--channels", args.channels]
    procs = [subprocess.Popen([*base, "--child", str(i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
             for i in range(args.processes)]
    def kill_all() -> None:
        for proc in procs:
            proc.kill()

    # a process that hangs is killed, so every read below ends (with '')
    watchdog = threading.Timer(READY_TIMEOUT_S + args.warmup + args.duration + 30.0, kill_all)
    watchdog.daemon = True
    watchdog.start()
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.startswith("error: "):
                raise RuntimeError(f"a bare-agents process could not start its agents: "
                                   f"{line[7:].strip()}")
            if line.strip() != "ready":
                raise RuntimeError(f"a bare-agents process did not get ready (said {line!r}, "
                                   f"exit {proc.poll()})")
        start_ns = time.time_ns() + int(0.2e9)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_ns}\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            try:
                reports.append(json.loads(line))
            except ValueError:
                raise RuntimeError(f"a bare-agents process reported {line!r} "
                                   f"(exit {proc.wait(10)})") from None
    finally:
        watchdog.cancel()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    lags = LatencyHistogram()
    for report in reports:
        lags.merge(LatencyHistogram.decode(report["lag"]))
    deliveries = sum(r["deliveries"] for r in reports)
    cpu_s = sum(r["cpu_s"] for r in reports)
    return {
        "agents": args.agents, "processes": args.processes, "rate_per_agent": args.rate,
        "offered_per_s": args.agents * args.rate, "seconds": args.duration,
        "delivered_per_s": deliveries / args.duration,
        "cpu_us_per_delivery": cpu_s / deliveries * 1e6 if deliveries else None,
        "cpu_percent": 100 * cpu_s / args.duration,
        "busiest_process_percent": max(100 * r["cpu_s"] / args.duration for r in reports),
        "send_lag_p50_ms": lags.percentile(50) / 1e6,
        "send_lag_p99_ms": lags.percentile(99) / 1e6,
        "send_lag_p999_ms": lags.percentile(99.9) / 1e6,
        "sends": lags.count, "loop": reports[0]["loop"],
        "redis_version": server_version(args.redis),
        "channels": args.channels,
    }


def server_version(url: str) -> str:
    """The server's ``redis_version`` (INFO server), for the method line."""
    import redis

    client = redis.Redis.from_url(url, protocol=2, socket_timeout=5)
    try:
        return str(client.info("server").get("redis_version", "?"))
    except redis.RedisError:
        return "?"
    finally:
        client.close()


def positive(kind: type, what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{what} must be above 0, got {text!r}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python loadtests/bare_agents.py",
        description="The library alone at a per-agent harness run's load (the same agents, "
                    "connections, traffic and pacing, without Locust or the harness's "
                    "accounting): CPU per delivery and send lag, the floor under the harness's "
                    "figures. See the module docstring.")
    parser.add_argument("--redis", metavar="URL", required=True, help="the server (e.g. the "
                        "one the harness run used; nothing is written but pub/sub and the "
                        "critical events' streams)")
    parser.add_argument("--agents", type=positive(int, "--agents"), default=100,
                        help="agents in all (default 100)")
    parser.add_argument("--processes", type=positive(int, "--processes"), default=2,
                        help="gevent processes, each a block of whole swarms (default 2)")
    parser.add_argument("--rate", type=positive(float, "--rate"), default=100.0,
                        help="events/s per agent (default 100, ADR-002's)")
    parser.add_argument("--duration", type=positive(float, "--duration"), default=20.0,
                        help="measured window, seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of traffic before the window opens (default 2)")
    parser.add_argument("--payload", type=positive(int, "--payload"), default=200,
                        help="bytes per encoded event (default 200, the harness's)")
    parser.add_argument("--channels", choices=("exact", "patterns"), default="exact",
                        help="what the buses subscribe, as the harness's --cfn-channels: "
                             "'exact' (the mixes' event types, the inbox's one sender swarm) "
                             "or 'patterns' (the library's default); default exact")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.processes > args.agents:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: --warmup is 0 or more, --processes at most --agents",
              file=sys.stderr)
        return 2
    if args.child is not None:
        return child(args)
    try:
        figures = run(args)
    except RuntimeError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    if figures["cpu_us_per_delivery"] is None:
        print(f"{parser.prog}: error: no delivery arrived in the window", file=sys.stderr)
        return 1
    processes = f"{args.processes} process{'es' if args.processes > 1 else ''}"
    print(f"bare library, {args.agents} per-agent agents over {processes}, "
          f"{figures['offered_per_s']:,.0f} events/s offered, {args.duration:g} s window "
          f"({figures['loop']} loop, {figures['channels']} channels, "
          f"Redis {figures['redis_version']}):")
    print(f"  delivered {figures['delivered_per_s']:,.0f}/s; CPU "
          f"{figures['cpu_us_per_delivery']:.2f} µs per delivery "
          f"({figures['cpu_percent']:.0f} % of a core, busiest process "
          f"{figures['busiest_process_percent']:.0f} %); send lag p50 "
          f"{figures['send_lag_p50_ms']:.2f} ms, p99 {figures['send_lag_p99_ms']:.2f} ms, "
          f"p99.9 {figures['send_lag_p999_ms']:.2f} ms ({figures['sends']:,} sends)")
    print("  method: CPU of every process between the window's marks over the deliveries its "
          "handlers got in it; send lag = write time - intended time of each send intended "
          "in the window")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
