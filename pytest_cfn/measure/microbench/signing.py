"""The cost of signed envelopes: end to end with and without ``signing_key``, same run.

Each round runs an unsigned pair (one publisher process, one subscriber process,
unpaced, as the end-to-end step) and then a signed pair with the same workload;
the median of the rounds is reported for each, with CPU per event in both
processes. The signing cost per event is the signed pair's publisher + subscriber
CPU per event minus the unsigned pair's, from the same rounds: the HMAC-SHA256
seal on one side, the check on the other, and the 36 bytes more on the wire.
"""

from __future__ import annotations

import statistics
import time
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

from pytest_cfn.measure.microbench.config import BenchConfig, Target
from pytest_cfn.measure.microbench.pacing import StopRule
from pytest_cfn.measure.microbench.printout import Figure, StepFailure
from pytest_cfn.measure.microbench.workloads import PATTERN, TICK, event_data, lean_stats
from pytest_cfn.measure.worker_processes import StepFailedError

if TYPE_CHECKING:
    from pytest_cfn.measure.microbench.runner import BenchRun

Item = Figure | StepFailure
BENCH_KEY = b"cfn-bench-signing-key-0123456789"
VARIANTS = ("unsigned", "signed")
LOSS_COUNTERS = ("lost", "dropped", "reconnects")
"""The subscriber bus's own counters, so a round that fell behind says how."""


def signing_publisher(
    url: str, swarm: str, events: int, payload: int, signing_key: bytes | None
) -> dict[str, Any]:
    """Worker: publish ``events`` inside ``batch()`` as fast as it goes, then ``flush()``."""
    from pytest_cfn import EventBus

    data = event_data(payload)
    with EventBus.from_url(url, swarm=swarm, agent="publisher", signing_key=signing_key) as bus:
        bus.connect()
        publish = bus.publish
        cpu = time.process_time()
        started = time.perf_counter()
        with bus.batch():
            for _ in range(events):
                publish(TICK, data)
        bus.flush()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        stats = bus.stats()
    return {
        "published": stats["published"],
        "seconds": seconds,
        "cpu_us_per_event": cpu / events * 1e6,
        "stats": lean_stats(stats),
    }


def signing_subscriber(
    url: str,
    swarm: str,
    expected: int,
    ready: Event,
    publisher_done: Event,
    deadline: float,
    signing_key: bytes | None,
) -> dict[str, Any]:
    """Worker: one EventBus subscriber counting deliveries at its handler."""
    from pytest_cfn import EventBus

    seen = [0, 0.0, 0.0]  # count, first, last

    def count(event: Any) -> None:
        now = time.perf_counter()
        if not seen[0]:
            seen[1] = now
        seen[0] += 1
        seen[2] = now

    with EventBus.from_url(url, swarm=swarm, agent="subscriber", signing_key=signing_key) as bus:
        bus.subscribe(PATTERN, count)
        cpu = time.process_time()
        ready.set()
        StopRule(expected, publisher_done, deadline).wait(lambda: int(seen[0]))
        bus.wait_idle(1.0)
        cpu = time.process_time() - cpu
        stats = bus.stats()
    delivered = int(seen[0])
    seconds = seen[2] - seen[1]
    return {
        "delivered": delivered,
        "seconds": seconds,
        "rate": delivered / seconds if seconds > 0 else 0.0,
        "cpu_us_per_event": cpu / delivered * 1e6 if delivered else 0.0,
        "forged": stats.get("forged", 0),
        "stats": lean_stats(stats),
    }


def signing_step(run: BenchRun) -> list[Item]:
    """Interleaved unsigned and signed end-to-end rounds; the figures."""
    cfg = run.config
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    errors: dict[str, str] = {}
    for round_index in range(cfg.repeat):
        for variant in VARIANTS:
            key = BENCH_KEY if variant == "signed" else None
            swarm = run._next_swarm()
            try:
                sent, received = run._pair(
                    (f"{variant} subscriber", signing_subscriber,
                     {"swarm": swarm, "signing_key": key}),
                    (f"{variant} publisher", signing_publisher,
                     {"swarm": swarm, "events": cfg.events, "payload": cfg.payload,
                      "signing_key": key}),
                    cfg.events, cfg.step_budget(cfg.events),
                )
            except StepFailedError as exc:
                errors.setdefault(variant, str(exc))
                continue
            result = {
                "round": round_index + 1,
                "rate": received["rate"],
                "published": sent["published"],
                "delivered": received["delivered"],
                "forged": received["forged"],
                **{key: received["stats"].get(key, 0) for key in LOSS_COUNTERS},
                "publisher_cpu_us_per_event": sent["cpu_us_per_event"],
                "subscriber_cpu_us_per_event": received["cpu_us_per_event"],
            }
            runs[variant].append(result)
            run._record(f"signing_{variant}", result)
    return signing_figures(runs, errors, cfg, run.target)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(run[key]) for run in runs))


def _cpu(runs: list[dict[str, Any]]) -> tuple[float, float]:
    return _median(runs, "publisher_cpu_us_per_event"), _median(runs, "subscriber_cpu_us_per_event")


def signing_figures(
    runs: dict[str, list[dict[str, Any]]], errors: dict[str, str], cfg: BenchConfig,
    target: Target,
) -> list[Item]:
    missing = [v for v in VARIANTS if not runs[v]]
    if missing:
        return [StepFailure(f"end to end, {v}", errors.get(v, "no round ran")) for v in missing]
    unsigned, signed = runs["unsigned"], runs["signed"]
    method = (
        f"one publisher process (EventBus.publish in batch(), then flush()) and one "
        f"subscriber process (EventBus, one handler), unpaced, {cfg.events:,} events of "
        f"{cfg.payload} B per round; delivered / (last delivery - first delivery) at the "
        f"subscriber's handler; CPU = process_time per event in each process; unsigned and "
        f"signed rounds interleaved, median of {cfg.repeat} round(s). {target.method_tail}"
    )
    items: list[Item] = []
    for variant, title in (("unsigned", "end to end, unsigned"),
                           ("signed", "end to end, signed (HMAC-SHA256)")):
        pub, sub = _cpu(runs[variant])
        delivered = sum(r["delivered"] for r in runs[variant])
        published = sum(r["published"] for r in runs[variant])
        items.append(Figure(
            key=f"signing_e2e_{variant}", title=title, value=_median(runs[variant], "rate"),
            unit="events/s", method=method,
            reference_title="unsigned" if variant == "signed" else None,
            reference_value=_median(unsigned, "rate") if variant == "signed" else None,
            notes=[
                "rounds: " + ", ".join(f"{r['rate']:,.0f}" for r in runs[variant]),
                f"CPU per event (median): publisher {pub:.2f} µs, subscriber {sub:.2f} µs; "
                f"delivered {delivered:,} of {published:,} published; the subscriber bus "
                f"counted "
                + ", ".join(f"{key} {sum(r[key] for r in runs[variant]):,}"
                            for key in (*LOSS_COUNTERS, "forged")),
            ],
        ))
    pub_u, sub_u = _cpu(unsigned)
    pub_s, sub_s = _cpu(signed)
    items.append(Figure(
        key="signing_cost_us_per_event", title="signing cost per event (CPU, both ends)",
        value=(pub_s + sub_s) - (pub_u + sub_u), unit="µs/event", better="lower",
        notes=[
            f"publisher +{pub_s - pub_u:.2f} µs ({pub_u:.2f} -> {pub_s:.2f}), subscriber "
            f"+{sub_s - sub_u:.2f} µs ({sub_u:.2f} -> {sub_s:.2f})",
        ],
        method=(
            "the signed rounds' publisher + subscriber CPU per event minus the unsigned "
            "rounds' (medians, same run, same workload): seal on one end, check on the "
            "other. " + method
        ),
    ))
    return items
