"""End-to-end figures: our bus's delivered rate per front end and publish style, CPU per
publish and per delivery against redis-py's, the plain loop against batch(), and loss.

One publisher process and one subscriber process per run (``runner``); the helpers
here (medians of rounds, the per-event CPU note) serve the other step figures too.
"""

from __future__ import annotations

import statistics
from typing import Any

from pytest_cfn.measure.microbench.config import (
    CPU_TARGET_FACTOR,
    E2E_TARGET_FACTOR,
    PLAIN_TARGET_FACTOR,
    BenchConfig,
    Target,
)
from pytest_cfn.measure.microbench.printout import Figure, StepFailure

Item = Figure | StepFailure


def _median(runs: list[dict[str, Any]], key: str = "rate") -> float | None:
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else None


def _rounds(runs: list[dict[str, Any]]) -> str:
    return "rounds: " + ", ".join(f"{run['rate']:,.0f}" for run in runs)


def _runs_note(runs: list[dict[str, Any]]) -> str:
    note = _rounds(runs)
    cpu = _median(runs, "cpu_us_per_event")
    if cpu is not None:
        note += f"; CPU {cpu:.2f} µs per message in the measured process (median)"
    return note


def _pair_cpu_note(runs: list[dict[str, Any]]) -> str:
    publisher = _median(runs, "publisher_cpu_us_per_event") or 0.0
    subscriber = _median(runs, "subscriber_cpu_us_per_event") or 0.0
    note = (
        f"{_rounds(runs)}; CPU per event (median): publisher {publisher:.2f} µs, "
        f"subscriber {subscriber:.2f} µs"
    )
    server = _median(runs, "server_cpu_us_per_event")
    if server is not None:
        # Three busy processes share the machine's cores: their CPU per event bounds the rate.
        note += (f", redis-server {server:.2f} µs (the three: "
                 f"{publisher + subscriber + server:.2f} µs)")
    return note


_E2E_TITLES = {
    "e2e": ("", "sync", "publish() in batch()"),
    "e2e_plain": ("plain ", "sync", "a plain publish() loop, no batch() (auto-pipelined)"),
    "aio_e2e": ("asyncio ", "asyncio", "await publish() in async with batch()"),
    "aio_e2e_plain": (
        "asyncio plain ", "asyncio",
        "a plain await publish() loop, no batch() (auto-pipelined)",
    ),
}


def our_e2e_figures(
    runs: dict[str, list[dict[str, Any]]],
    errors: dict[str, str],
    drain: float | None,
    cfg: BenchConfig,
    target: Target,
    pair: str,
    rounds: str,
) -> list[Item]:
    """Our end to end per front end and publish style, CPU per publish and per delivery
    against redis-py's, the plain loop against batch(), and what went missing."""
    reference = runs["redis_py_e2e"]
    reference_e2e = _median(reference)
    items: list[Item] = []
    for name, (label, front, style) in _E2E_TITLES.items():
        prefix = "" if front == "sync" else "aio_"
        title = f"our {label}end-to-end delivered (EventBus)"
        if not runs.get(name):
            items.append(StepFailure(title, errors.get(name, "no round ran")))
            continue
        rate = _median(runs[name])
        assert rate is not None
        notes = [_pair_cpu_note(runs[name])]
        plain = name.endswith("_plain")
        if plain:
            batched = _median(runs[name.removesuffix("_plain")])
            reference_title, reference_value = "our batch()", batched
            notes.append(_plain_rounds_note(runs[name], runs[name.removesuffix("_plain")]))
            target_value = None if batched is None else batched * PLAIN_TARGET_FACTOR
            target_text = f">= {PLAIN_TARGET_FACTOR:g}x our batch() end to end"
        else:
            reference_title, reference_value = "redis-py end to end", reference_e2e
            target_value = None if reference_e2e is None else reference_e2e * E2E_TARGET_FACTOR
            target_text = f">= {E2E_TARGET_FACTOR:g}x redis-py end to end"
            if drain:
                notes.append(f"{rate / drain:.2f}x redis-py's PubSub drain (a backlog, no sender)")
        items.append(Figure(
            key=f"{name}_delivered", title=title, value=rate, unit="events/s",
            reference_title=reference_title, reference_value=reference_value,
            target=target_value, op=None if target_value is None else ">=",
            target_text=target_text, notes=notes,
            method=(
                f"{pair}: {front} EventBus publisher ({style}) and {front} EventBus "
                f"subscriber with one handler on 'bench.*', counted at the handler; "
                f"{cfg.events:,} events of {cfg.payload} B data ({target.wire_bytes} B on the "
                f"wire) per round; {rounds}. {target.method_tail}"
            ),
        ))
        if not plain:
            items.extend(_cpu_figures(prefix, front, runs[name], reference, cfg))
    items.append(_e2e_missing_figure(runs, cfg))
    return items


def _plain_rounds_note(plain: list[dict[str, Any]], batched: list[dict[str, Any]]) -> str:
    """Each round's plain rate over the batch() run just before it, and the publisher's CPU
    per publish of each: the rates of single runs move with the machine's load (a run is
    under a second), the CPU per publish is the steady figure of what plain costs more."""
    by_round = {run.get("round"): run for run in batched}
    pairs = [f"{run['rate'] / by_round[run.get('round')]['rate']:.2f}" for run in plain
             if run.get("round") in by_round and by_round[run.get("round")]["rate"]]
    key = "publisher_cpu_us_per_event"
    cpu_plain, cpu_batch = _median(plain, key), _median(batched, key)
    note = f"plain / batch() per round (the batch() run just before): {', '.join(pairs)}"
    if cpu_plain and cpu_batch:
        note += (f"; publisher CPU per publish {cpu_plain:.2f} µs plain, {cpu_batch:.2f} µs "
                 f"batch() ({cpu_batch / cpu_plain:.2f}x)")
    return note


def _cpu_figures(
    prefix: str, front: str, runs: list[dict[str, Any]], reference: list[dict[str, Any]],
    cfg: BenchConfig,
) -> list[Figure]:
    out = []
    for side, what in (("publisher", "publish"), ("subscriber", "delivery")):
        key = f"{side}_cpu_us_per_event"
        ours, theirs = _median(runs, key), _median(reference, key)
        assert ours is not None
        out.append(Figure(
            key=f"{prefix}cpu_per_{what}_us", title=f"{front} CPU per {what}", value=ours,
            unit="us", better="lower", reference_title=f"redis-py {side}",
            reference_value=theirs,
            target=None if theirs is None else theirs * CPU_TARGET_FACTOR,
            op=None if theirs is None else "<=",
            target_text=f"<= {CPU_TARGET_FACTOR:g}x redis-py's",
            method=(
                f"the end-to-end runs above: time.process_time() of the {side} process (all "
                f"its threads) over the run / events, median of {cfg.repeat} round(s); "
                f"redis-py's from its end-to-end runs in the same rounds."
            ),
        ))
    return out


def _e2e_missing_figure(runs: dict[str, list[dict[str, Any]]], cfg: BenchConfig) -> Figure:
    """Loss is a figure: what the publishers sent and the handlers never saw, all rounds."""
    ours = [run for name in _E2E_TITLES for run in runs.get(name, [])]
    published = sum(int(run["published"]) for run in ours)
    delivered = sum(int(run["delivered"]) for run in ours)
    counters = {
        key: sum(int(run["subscriber_stats"].get(key, 0)) for run in ours)
        for key in ("lost", "dropped", "duplicates", "reconnects", "malformed")
    }
    return Figure(
        key="e2e_missing", title="our end-to-end missing (EventBus)",
        value=float(published - delivered), unit="events", better="lower",
        notes=[
            f"published {published:,}, delivered {delivered:,} over {len(ours)} run(s) "
            "(sync and asyncio, batch() and plain); the subscriber buses' own counters: "
            + ", ".join(f"{key} {value:,}" for key, value in counters.items())
        ],
        method=(
            "the end-to-end runs above: published (the publisher bus's count, all acknowledged "
            "by Redis) minus delivered (handler calls), summed over the rounds; the bus's "
            "counters say where it saw loss (sequence gaps, queue drops, reconnects)."
        ),
    )
