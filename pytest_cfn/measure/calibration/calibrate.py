"""The instrument's calibration: the Locust harness measured through faults of a known size.

The harness runs (in a subprocess, as in the sweep) against :class:`DelayProxy` in front of the
server four times: with the proxy's base delay only, then with +2 ms and +5 ms one-way on the
delivery path, then with the base delay again. The shift of the delivery p50 from the base runs'
mean must be the injected delay within 10 %, or the instrument's latencies cannot be trusted to
that precision.

Two things the proxy measures itself keep that comparison about the instrument alone. The
injected delay is what the proxy really held the events for (the median of its own stamps,
arrival to hand-over, minus the base runs'), not what it was asked for: its sending thread
wakes some 70-80 µs late. And what moves most between runs is the part of a delivery before
the proxy, from the event's intended send time to its arrival at the proxy (the load
generator's lateness and the server's: its p50 went 0.34-1.06 ms between runs on a loaded
2-core machine, against 0.05-0.19 ms for the part after the proxy), which once made the +5 ms
shift read +10.3 %: the proxy stamps it too, and the change of its median is taken out of the
shift, which leaves the delivery path that the delay was put on.

In the first base run the proxy also drops exactly N non-critical events on one agent's
subscriber connection, in the middle of the measurement window; the harness must report exactly
N events missed by each of the swarm's subscribers behind that connection (the shared model: one
connection feeds the swarm's 10 agents), N x 10 lost deliveries. The shared model keeps the
proxy's own work small (a few connections), so its timing stays precise. The result says what
was injected, what was measured, and whether each agreed within its bound.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn.measure.calibration.delay_proxy import DelayProxy
from pytest_cfn.measure.sweep.harness import LOAD, StepSpec, run_step, step_row

DELAYS_MS = (2.0, 5.0)
BASE_DELAY_MS = 0.5
"""Every run, the reference one included, goes through the proxy's timed path with at least
this delay: forwarding at once (no delay) wakes the sending thread per chunk and costs a
different hop than a timed send, which would bias every measured shift."""
DROP_EVENTS = 20
AGENTS = 10
RATE = 100.0
DURATION_S = 2.0
WARMUP_S = 1.0
SHIFT_TOLERANCE = 0.10
MODEL = "shared"


def _metric(run_result: Any, name: str) -> float | None:
    found = next((m for m in run_result.metrics if m.name == name), None)
    return None if found is None else float(found.value)


def _arm_drop(proxy: DelayProxy, count: int, warmup: float, duration: float,
              stop: Callable[[], bool]) -> None:
    """Once the first event passes the proxy, drop ``count`` events from mid-window on."""
    while proxy.first_event_at is None and not stop():
        time.sleep(0.02)
    if proxy.first_event_at is not None:
        proxy.drop_events(count, after=proxy.first_event_at + warmup + duration / 2)


def calibrate(
    url: str,
    locustfile: Path,
    out: Path,
    *,
    delays_ms: tuple[float, ...] = DELAYS_MS,
    drop: int = DROP_EVENTS,
    agents: int = AGENTS,
    rate: float = RATE,
    duration: float = DURATION_S,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the harness through the proxy at 0 and each of ``delays_ms``; the comparison."""
    import threading

    address = parse_redis_url(url)
    host, port = address.host or "127.0.0.1", address.port or 6379
    spec = StepSpec(LOAD, MODEL, agents, rate, duration, WARMUP_S)
    runs: list[dict[str, Any]] = []
    loss: dict[str, Any] = {}
    with DelayProxy(host, port) as proxy:
        # The base run first (with the drop) and again last: its p50 is the mean of the two,
        # so a drift of the machine over the calibration does not read as a shift.
        for index, delay_ms in enumerate((0.0, *delays_ms, 0.0)):
            first = index == 0
            proxy.reset((BASE_DELAY_MS + delay_ms) / 1000.0)
            finished = threading.Event()
            armer = None
            if first and drop:
                armer = threading.Thread(
                    target=_arm_drop, args=(proxy, drop, WARMUP_S, duration, finished.is_set),
                    daemon=True)
                armer.start()
            run = run_step(spec, locustfile, proxy.url, out / f"run{index + 1}-{delay_ms:g}ms")
            finished.set()
            if armer is not None:
                armer.join(2.0)
            if run.result is None:
                runs.append({"injected_ms": delay_ms, "error": run.error.splitlines()[0]})
                continue
            row = step_row(run.result, LOAD)
            subscribers = max(1, agents // max(1, int(row["swarms"] or 1)))
            holds = proxy.holds()
            upstream = proxy.upstream_ns()
            entry = {
                "upstream_p50_ms": statistics.median(upstream) / 1e6 if upstream else None,
                "injected_ms": delay_ms,
                "held_p50_ms": statistics.median(holds) * 1000.0 if holds else None,
                "p50_ms": float(row["p50_us"] or 0.0) / 1000.0,
                "p99_ms": float(row["p99_us"] or 0.0) / 1000.0,
                "deliveries": int(row["latency_count"]),
                "loss": float(row["loss"] or 0.0),
            }
            runs.append(entry)
            if say is not None:
                held, before = entry["held_p50_ms"], entry["upstream_p50_ms"]
                say(f"base {BASE_DELAY_MS:g} ms + {delay_ms:g} ms asked"
                    + (f" (held {held:.3f} ms, median)" if held is not None else "")
                    + (f", {before:.3f} ms before the proxy" if before is not None else "")
                    + f": delivery p50 {entry['p50_ms']:.3f} ms, p99 {entry['p99_ms']:.3f} ms, "
                    f"{entry['deliveries']:,} deliveries")
            if first and drop:
                dropped, channels = proxy.dropped()
                loss = {
                    "injected": dropped,
                    "asked": drop,
                    "channels": channels,
                    "reported_loss": float(row["loss"] or 0.0),
                    "subscribers": subscribers,
                    "expected_loss": float(dropped * subscribers),
                    "worst_subscriber_loss": _metric(run.result, "worst_subscriber_loss"),
                    "bus_lost": _metric(run.result, "bus_lost"),
                    "critical_loss": float(row["critical_loss"] or 0.0),
                }
                loss["ok"] = (dropped == drop and loss["reported_loss"] == dropped * subscribers
                              and loss["worst_subscriber_loss"] == dropped)
                if say is not None:
                    say(f"loss: {dropped} events dropped on one subscriber connection "
                        f"({subscribers} agents behind it), the harness reported "
                        f"{loss['reported_loss']:,.0f} lost deliveries, "
                        f"{loss['worst_subscriber_loss'] or 0:,.0f} events missed by the worst "
                        f"subscriber (bus sequence gaps: {loss['bus_lost'] or 0:,.0f})")
    return {"runs": runs, "shifts": _shifts(runs), "loss": loss, "method": method_text(
        agents, rate, duration, drop)}


def _base_mean(bases: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in bases if r.get(key) is not None]
    return statistics.fmean(values) if values and len(values) == len(bases) else None


def _shifts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each delayed run's p50 shift from the base runs' mean, less the change of the part
    before the proxy (intended send -> arrival at the proxy, which the proxy sees), against the
    delay the proxy really added (its median hold minus the base runs'; the delay asked where
    the proxy kept no holds)."""
    bases = [r for r in runs if r["injected_ms"] == 0.0 and "p50_ms" in r]
    base_p50 = statistics.fmean(r["p50_ms"] for r in bases) if bases else 0.0
    base_held = _base_mean(bases, "held_p50_ms")
    base_upstream = _base_mean(bases, "upstream_p50_ms")
    out = []
    for run in runs:
        if run["injected_ms"] == 0.0 or not bases or "p50_ms" not in run:
            continue
        applied = run["injected_ms"]
        if base_held is not None and run.get("held_p50_ms") is not None:
            applied = run["held_p50_ms"] - base_held
        raw = run["p50_ms"] - base_p50
        upstream = 0.0
        if base_upstream is not None and run.get("upstream_p50_ms") is not None:
            upstream = run["upstream_p50_ms"] - base_upstream
        shift = raw - upstream
        error = (shift - applied) / applied
        out.append({"injected_ms": run["injected_ms"], "applied_ms": applied,
                    "raw_shift_ms": raw, "upstream_change_ms": upstream,
                    "measured_ms": shift, "error_pct": error * 100.0,
                    "ok": abs(error) <= SHIFT_TOLERANCE})
    return out


def method_text(agents: int, rate: float, duration: float, drop: int) -> str:
    return (
        f"the Locust harness ({agents} agents, {MODEL} model, {rate:g} events/s each, "
        f"{duration:g} s window) through a TCP proxy on 127.0.0.1 in front of the server; the "
        "proxy holds every server -> client chunk for the injected delay (a one-way delay on "
        "the delivery path) and passes client -> server bytes at once; every run, the "
        f"reference one included, has a base delay of {BASE_DELAY_MS:g} ms so the proxy's own "
        "hop is the same in each; the base run goes first and again last; shift = delivery "
        "p50 at base + the delay minus the mean delivery p50 of the two base runs; injected "
        "= the proxy's median hold per event (stamped at arrival and at hand-over) minus the "
        "base runs', so its own late wake-ups count as injected; the part of each delivery "
        "before the proxy (intended send time -> arrival at the proxy, wall clock, seen by "
        "the proxy) moves from run to run with the load generator and the machine, so its "
        "median's change is taken out of the shift; bound "
        f"+/- {SHIFT_TOLERANCE * 100:g} % of the injected; loss: in the first base run the "
        f"proxy drops {drop} "
        "non-critical events (priority < 8) on one subscriber connection (a swarm's shared "
        "Event Bus, its agents behind it) from the middle of the window, whole RESP frames; "
        "the harness must report exactly that many events missed by each of those agents, "
        "events x agents lost deliveries"
    )


def calibration_ok(result: dict[str, Any]) -> bool:
    """Every shift within its bound and the loss reported exactly."""
    shifts = result.get("shifts", [])
    loss = result.get("loss", {})
    return bool(shifts) and all(s["ok"] for s in shifts) and bool(loss.get("ok", not loss))


def calibration_lines(result: dict[str, Any]) -> list[str]:
    """The calibration as lines of text: injected vs measured, with the verdict of each."""
    lines = []
    for shift in result.get("shifts", []):
        applied = shift.get("applied_ms", shift["injected_ms"])
        before = shift.get("upstream_change_ms", 0.0)
        lines.append(
            f"delay +{shift['injected_ms']:g} ms asked, +{applied:.3f} ms injected (held by the "
            f"proxy): p50 shift {shift['measured_ms']:.3f} ms measured on the delivery path "
            f"({shift.get('raw_shift_ms', shift['measured_ms']):.3f} ms in all, {before:+.3f} ms "
            f"of it before the proxy) ({shift['error_pct']:+.1f} %, bound "
            f"+/- {SHIFT_TOLERANCE * 100:g} %) {'OK' if shift['ok'] else 'OUT OF BOUND'}"
        )
    loss = result.get("loss")
    if loss:
        subscribers = int(loss.get("subscribers", 1))
        lines.append(
            f"loss: {loss['injected']} events dropped (asked {loss['asked']}) x {subscribers} "
            f"subscriber(s) = {loss['injected'] * subscribers:,} deliveries; reported "
            f"{loss['reported_loss']:,.0f} lost deliveries, "
            f"{loss.get('worst_subscriber_loss') or 0:,.0f} events missed per subscriber "
            f"{'OK (exact)' if loss['ok'] else 'MISMATCH'}"
        )
    for run in result.get("runs", []):
        if "error" in run:
            lines.append(f"+{run['injected_ms']:g} ms run failed: {run['error']}")
    return lines
