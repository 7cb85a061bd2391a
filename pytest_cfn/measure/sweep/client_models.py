"""Single client vs separated publisher/subscriber vs shared connections, measured through Redis.

ADR-002 says separating the publisher from the subscriber took the Event Bus from 4,800 to
398,373 events/s ("83x"). Its 398,373 was measured in-process, without Redis. Here each
connection layout publishes the same events to a real server and counts them where a
subscriber receives them, unpaced, one layout per fresh process:

* ``single-wait``: one connection both subscribed and publishing (RESP3 allows PUBLISH on a
  subscribed connection), each PUBLISH waiting for its reply: the ADR's blocked prototype;
* ``single-pipelined``: the same one connection, 100 PUBLISHes per write;
* ``separated``: one EventBus (a publisher and a subscriber connection), publish() per event;
* ``per-agent``: 10 agents in one swarm, each with its own EventBus (20 connections);
* ``shared``: the same 10 agents sharing one EventBus (2 connections).

The first two use a raw socket and hiredis, so they measure the layout, not a library.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import hiredis

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._core.resp import encode_command
from pytest_cfn.measure.worker_processes import StepFailedError, open_socket, read_reply

AGENTS = 10
PIPELINE = 100
PAYLOAD = 200
ADR_SINGLE = 4_800.0
ADR_SEPARATED = 398_373.0


def single_connection(
    url: str, channel: str, events: int, pipeline: int, payload: int = PAYLOAD,
    deadline_s: float = 60.0, sharded: bool = False,
) -> dict[str, Any]:
    """Worker: one RESP3 connection SUBSCRIBEd to ``channel`` and publishing to it
    (``sharded``: SSUBSCRIBE / SPUBLISH of a shard channel, ``url`` its slot's master)."""
    sock = open_socket(parse_redis_url(url), timeout=5.0)
    reader = hiredis.Reader()
    try:
        sock.sendall(encode_command(b"HELLO", b"3"))
        if not isinstance(read_reply(sock, reader), dict):
            raise StepFailedError("the server did not switch to RESP3 (HELLO 3)")
        subscribe, publish = (b"SSUBSCRIBE", b"SPUBLISH") if sharded else (b"SUBSCRIBE",
                                                                            b"PUBLISH")
        sock.sendall(encode_command(subscribe, channel.encode()))
        confirmed = read_reply(sock, reader)
        if not (isinstance(confirmed, list) and confirmed and isinstance(confirmed[0], bytes)
                and confirmed[0].lower() == subscribe.lower()):
            raise StepFailedError(f"{subscribe.decode()} {channel} was answered {confirmed!r}")
        command = encode_command(publish, channel.encode(), b"x" * payload)
        acked = delivered = 0
        last = 0.0
        cpu = time.process_time()
        started = time.perf_counter()
        deadline = started + deadline_s
        recv, feed, gets, clock = sock.recv, reader.feed, reader.gets, time.perf_counter
        sent = 0
        while delivered < events:
            if sent < events and acked == sent:
                batch = min(pipeline, events - sent)
                sock.sendall(command * batch)
                sent += batch
            chunk = recv(1 << 20)
            if not chunk:
                raise StepFailedError("the server closed the single connection")
            feed(chunk)
            reply = gets()
            while reply is not False:
                if isinstance(reply, int):
                    acked += 1
                else:
                    delivered += 1
                    last = clock()
                reply = gets()
            if clock() > deadline:
                raise StepFailedError(f"single connection: {delivered} of {events} in time")
        cpu = time.process_time() - cpu
    finally:
        sock.close()
    seconds = last - started
    return {"delivered": delivered, "deliveries": delivered, "seconds": seconds,
            "cpu_s": cpu}


def bus_agents(
    url: str, swarm: str, namespace: str, agents: int, shared: bool, events: int,
    payload: int = PAYLOAD, deadline_s: float = 60.0,
) -> dict[str, Any]:
    """Worker: ``agents`` agents in one swarm, each subscribed to every event of the swarm,
    publishing ``events`` in turn with publish() (no batch); on their own buses or one shared."""
    from pytest_cfn import EventBus
    from pytest_cfn._core.options import BusOptions

    options = BusOptions(namespace=namespace)
    buses = [EventBus.from_url(url, swarm=swarm, agent="shared", options=options)] if shared \
        else [EventBus.from_url(url, swarm=swarm, agent=f"agent-{i}", options=options)
              for i in range(agents)]
    counts = [0] * agents
    lasts = [0.0] * agents
    done = threading.Event()
    remaining = [agents]
    lock = threading.Lock()

    def handler_for(index: int) -> Any:
        clock = time.perf_counter

        def handle(event: Any) -> None:
            counts[index] += 1
            lasts[index] = clock()
            if counts[index] == events:
                with lock:
                    remaining[0] -= 1
                    if not remaining[0]:
                        done.set()

        return handle

    try:
        for index in range(agents):
            buses[0 if shared else index].subscribe("*", handler_for(index))
        for bus in buses:
            bus.connect()
        data = {"p": "x" * max(0, payload - 130)}
        publishers = [buses[0 if shared else i % agents].publish for i in range(agents)]
        cpu = time.process_time()
        started = time.perf_counter()
        for i in range(events):
            publishers[i % agents]("bench.model", data)
        for bus in buses:
            bus.flush()
        finished = done.wait(deadline_s)
        cpu = time.process_time() - cpu
        if not finished:
            raise StepFailedError(
                f"{sum(counts):,} of {events * agents:,} deliveries within {deadline_s:.0f} s"
            )
    finally:
        for bus in buses:
            bus.close()
    seconds = max(lasts) - started
    return {"delivered": events, "deliveries": sum(counts), "seconds": seconds, "cpu_s": cpu}


MODELS: tuple[dict[str, Any], ...] = (
    {"key": "single-wait", "label": "single connection,\na reply awaited per publish",
     "agents": 1, "connections": 1, "events": 20_000,
     "method": "one raw RESP3 connection SUBSCRIBEd to a channel and PUBLISHing to it, one "
               "PUBLISH at a time (the next is sent once the reply has arrived); delivered = "
               "messages pushed back on the same connection"},
    {"key": "single-pipelined", "label": "single connection,\n100 publishes per write",
     "agents": 1, "connections": 1, "events": 200_000,
     "method": f"the same single RESP3 connection, {PIPELINE} PUBLISHes per write, the next "
               "write once every reply of the last has arrived"},
    {"key": "separated", "label": "separated pub + sub\n(one EventBus)",
     "agents": 1, "connections": 2, "events": 50_000,
     "method": "one sync EventBus (a publisher and a subscriber connection) subscribed to '*' "
               "of its swarm, publish() per event (written at once, replies read lazily), "
               "counted at the handler"},
    {"key": "per-agent", "label": f"{AGENTS} agents, each\nits own EventBus",
     "agents": AGENTS, "connections": 2 * AGENTS, "events": 20_000,
     "method": f"{AGENTS} sync EventBuses in one swarm, each subscribed to '*'; the agents "
               "publish() in turn; an event counts once every agent's handler has it"},
    {"key": "shared", "label": f"{AGENTS} agents sharing\none EventBus",
     "agents": AGENTS, "connections": 2, "events": 50_000,
     "method": f"one sync EventBus with {AGENTS} handlers on '*' (one per agent); the agents "
               "publish() through it in turn; an event counts once every handler has it"},
)


def model_row(model: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One layout's figures: delivered events/s (each event once) and CPU per delivery."""
    seconds = float(result["seconds"])
    deliveries = int(result["deliveries"])
    return {
        **{k: v for k, v in model.items() if k != "method"},
        "events": int(result["delivered"]),
        "deliveries": deliveries,
        "seconds": seconds,
        "rate": result["delivered"] / seconds if seconds > 0 else 0.0,
        "deliveries_per_s": deliveries / seconds if seconds > 0 else 0.0,
        "cpu_us_per_delivery": float(result["cpu_s"]) / deliveries * 1e6 if deliveries else 0.0,
        "method": (
            f"{model['method']}; {model['events']:,} events of ~{PAYLOAD} B, unpaced, in a fresh "
            "process; rate = events / (last delivery - first publish), perf_counter; one run"
        ),
    }


RAW_LAYOUT = "single-pipelined"
"""The layout without the library (a raw socket, hiredis) that every library layout's rate is
divided by, pass by pass: what the machine and the server gave at that moment."""


def with_raw_ratio(passes: list[dict[str, dict[str, Any]]]) -> list[dict[str, dict[str, Any]]]:
    """Each pass's rows (layout key -> row) with ``vs_raw``: the row's rate / the raw layout's
    rate of the same pass (None without a raw row in that pass)."""
    out = []
    for rows in passes:
        raw = rows.get(RAW_LAYOUT)
        raw_rate = float(raw["rate"]) if raw else 0.0
        out.append({key: {**row, "vs_raw": float(row["rate"]) / raw_rate if raw_rate else None}
                    for key, row in rows.items()})
    return out


def combine_model_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One layout from its runs (:func:`model_row` each): the median rate with its min-max,
    and the median and min-max of its ratio to the raw layout of the same pass."""
    rates = [float(r["rate"]) for r in runs]
    middle = sorted(runs, key=lambda r: float(r["rate"]))[(len(runs) - 1) // 2]
    ratios = [float(r["vs_raw"]) for r in runs if r.get("vs_raw") is not None]
    ratio = ({"vs_raw": statistics.median(ratios), "vs_raw_low": min(ratios),
              "vs_raw_high": max(ratios)} if ratios else {"vs_raw": None})
    return {**middle, **ratio, "rate": statistics.median(rates), "rate_low": min(rates),
            "rate_high": max(rates), "runs": len(runs),
            "deliveries_per_s": statistics.median(float(r["deliveries_per_s"]) for r in runs),
            "cpu_us_per_delivery": statistics.median(float(r["cpu_us_per_delivery"])
                                                     for r in runs),
            "method": middle["method"].replace("; one run", f"; median of {len(runs)} runs, "
                                               "each in a fresh process, with their min-max")}


CLUSTER_BUS_METHOD = (
    "; on a Redis Cluster of {masters} masters: the EventBus SPUBLISHes to its swarm's shard "
    "channel event:{{swarm}} on the master of its slot (each bus its own connections there)"
)
CLUSTER_RAW_METHOD = (
    "; on a Redis Cluster of {masters} masters: SSUBSCRIBE / SPUBLISH of a shard channel "
    "event:{{name}} on the master that owns its slot, in place of SUBSCRIBE / PUBLISH"
)


def run_model(
    url: str, key: str, swarm: str, namespace: str, masters: int = 0
) -> dict[str, Any]:
    """Worker: the layout ``key`` of :data:`MODELS`, as one row of :func:`model_row`
    (``masters`` > 0: the server is a node of a Redis Cluster of that many masters)."""
    model = next((m for m in MODELS if m["key"] == key), None)
    if model is None:
        raise StepFailedError(f"unknown client model {key!r}")
    events = int(model["events"])
    suffix = ""
    if key.startswith("single"):
        pipeline = 1 if key == "single-wait" else PIPELINE
        if masters:
            from pytest_cfn.measure.sweep.cluster_target import reference_for

            where = reference_for(url, f"{namespace}-{swarm}", True)
            result = single_connection(where.url, where.channel, events, pipeline,
                                       sharded=True)
            suffix = CLUSTER_RAW_METHOD.format(masters=masters)
        else:
            channel = f"{namespace}:event:{swarm}:bench.model"
            result = single_connection(url, channel, events, pipeline)
    else:
        result = bus_agents(url, swarm, namespace, int(model["agents"]), key == "shared", events)
        suffix = CLUSTER_BUS_METHOD.format(masters=masters) if masters else ""
    row = model_row(model, result)
    row["method"] += suffix
    return row
