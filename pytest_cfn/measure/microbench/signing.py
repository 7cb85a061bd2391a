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
from typing import TYPE_CHECKING, Any

from pytest_cfn.measure.microbench.config import BenchConfig, Target
from pytest_cfn.measure.microbench.printout import Figure, StepFailure
from pytest_cfn.measure.microbench.workloads import our_subscriber, our_unpaced_publisher
from pytest_cfn.measure.worker_processes import StepFailedError

if TYPE_CHECKING:
    from pytest_cfn.measure.microbench.runner import BenchRun

Item = Figure | StepFailure
BENCH_KEY = b"cfn-bench-signing-key-0123456789"
VARIANTS = ("unsigned", "signed")
LOSS_COUNTERS = ("lost", "dropped", "reconnects")
"""The subscriber bus's own counters, so a round that fell behind says how."""


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
                    (f"{variant} subscriber", our_subscriber,
                     {"swarm": swarm, "signing_key": key}),
                    (f"{variant} publisher", our_unpaced_publisher,
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
