"""The end of a harness run: figures against ADR-002's targets, the gate table, the JSON result.

How each gate is judged and what the exit code is: :mod:`pytest_cfn.measure.loadgen.verdicts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_cfn.measure.loadgen.accounting import RunTotals
from pytest_cfn.measure.loadgen.connections import ConnectionCount
from pytest_cfn.measure.loadgen.options import HarnessOptions
from pytest_cfn.measure.loadgen.pacing import LATE_WAKE_NS
from pytest_cfn.measure.loadgen.verdicts import (
    BEHIND_SCHEDULE_LIMIT_S,
    KEPT_UP,
    GeneratorLimit,
    RunOutcome,
    decide,
    generator_limit,
    run_outcome,
)
from pytest_cfn.measure.results import Metric, Op, RedisInfo, RunResult, Verdict, judge
from pytest_cfn.measure.targets import ADR_CONNECTION_TABLE

CRITICAL = (8, 9)
VERDICT_SHOWN = {"pass": "PASS", "fail": "FAIL", "info": "", "n/a": "n/a",
                 "not-judged": "NOT JUDGED"}


@dataclass
class RunFacts:
    """What the master knows about the run besides the merged snapshots.

    ``late``/``critical_late``: measured deliveries that arrived after the window's end plus
    the drain (counted as received, never as lost); ``abnormal``: why the run did not end
    as it should (empty when it did); ``generator``: filled by :func:`build_metrics` when
    left as None."""

    agents: int
    swarms: int
    agent_rate: float
    window_s: float
    harness_cpu_s: float = 0.0
    """CPU of every Locust process from the window's start until its snapshot (the drain too)."""
    harness_window_cpu_s: float | None = None
    """The same between the window's start and end marks (None: not reported)."""
    server_cpu_s: float | None = None
    connections: ConnectionCount | None = None
    maxclients: int | None = None
    max_connected_clients: int = 0
    server: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    late: int = 0
    critical_late: int = 0
    process_cpu_percent: dict[str, float] = field(default_factory=dict)
    others_cpu_s: float | None = None
    """CPU seconds of this machine's other processes in the window (None: not known, e.g.
    workers or the server on other machines)."""
    steal_cpu_s: float | None = None
    """CPU seconds the hypervisor took from the master's machine (a VM) in the window."""
    abnormal: list[str] = field(default_factory=list)
    generator: GeneratorLimit | None = None


def _gated(
    options: HarnessOptions,
    gate: str,
    name: str,
    value: float,
    unit: str,
    target: float,
    op: Op,
    method: str,
    *,
    better: str = "higher",
    latency: dict[str, Any] | None = None,
    missing: str | None = None,
    resolution: float = 0.0,
    not_applicable: str | None = None,
    generator: GeneratorLimit = KEPT_UP,
    cannot_pass: str | None = None,
) -> Metric:
    """A gated metric, judged by the rules of :mod:`pytest_cfn.measure.loadgen.verdicts`. A value
    within ``resolution`` of the target (the figure's counting precision) meets it;
    ``cannot_pass`` turns a pass into a fail (e.g. throughput with lost deliveries)."""
    verdict: Verdict
    decided = decide(gate, options.gates, missing=missing, not_applicable=not_applicable,
                     generator=generator)
    if decided is not None:
        verdict, reason = decided
        method = f"{method} ({reason})" if verdict == "info" else f"{reason}; {method}"
    else:
        verdict = judge(value + resolution if op in (">=", ">") else value - resolution,
                        target, op)
        if verdict == "pass" and cannot_pass is not None:
            verdict = "fail"
            method = f"{cannot_pass}; {method}"
    return Metric(
        name=name,
        value=value,
        unit=unit,
        method=method,
        target=target,
        op=op,
        verdict=verdict,
        better="lower" if better == "lower" else "higher",
        latency=latency,
    )


def _info(name: str, value: float, unit: str, method: str, better: str = "higher") -> Metric:
    return Metric(
        name=name,
        value=value,
        unit=unit,
        method=method,
        better="lower" if better == "lower" else "higher",
    )


def run_generator_limit(
    options: HarnessOptions, totals: RunTotals, facts: RunFacts
) -> GeneratorLimit:
    """Whether the load generator, not Redis, was the limit of this run (and why)."""
    return generator_limit(
        totals.send_lag.percentile(99) / 1e6 if totals.send_lag.count else 0.0,
        totals.lag_at_end.mean_s,
        facts.process_cpu_percent,
        options.send_lag_limit_ms,
    )


def build_metrics(options: HarnessOptions, totals: RunTotals, facts: RunFacts) -> list[Metric]:
    """Every figure of the run; the six ADR gates first, then the figures that explain them."""
    t = options.targets
    window = facts.window_s
    latency = totals.all_latency
    percentiles = latency.to_dict() if latency.count else None
    no_window = "no measurement window (the run ended during ramp-up or warm-up)"
    lookups = totals.bus.get("cache_hits", 0) + totals.bus.get("cache_misses", 0)
    conns = facts.connections
    resolution = throughput_resolution(facts)
    if facts.generator is None:
        facts.generator = run_generator_limit(options, totals, facts)
    generator = facts.generator
    if not window:
        unsustained: str | None = no_window
    elif not totals.marked_processes:
        unsustained = "no process marked the window's start and end"
    else:
        unsustained = None
    offered = facts.agents * facts.agent_rate
    short = None
    if offered < t.min_throughput:
        short = (f"{facts.agents} agents x {facts.agent_rate:g} events/s offer {offered:,.0f} "
                 f"events/s, below the {t.min_throughput:,.0f} target")
    lost = totals.lost()
    spoilt = [f"{lost:,} deliveries lost"] if lost else []
    if facts.late:
        spoilt.append(f"{facts.late:,} deliveries late")
    if totals.publish_errors:
        spoilt.append(f"{totals.publish_errors:,} publishes failed")
    no_critical = None
    if window and not totals.expected(CRITICAL):
        no_critical = "no priority 8-9 event was sent to a subscribed swarm in the window"
    metrics = [
        _gated(
            options, "throughput", "throughput",
            totals.sustained_events_per_s() if window else 0.0, "events/s",
            t.min_throughput, ">=",
            "events delivered per second, counted by delivery time: every delivery an on-time "
            "subscriber received between the window's start and end (each process marks both "
            "on its own clock), whenever the event was meant to be sent, / the window; each "
            "event counts once (a delivery weighs 1 / its swarm's on-time subscribers). A load "
            "generator behind its schedule lowers it. Judged at the count's resolution: the "
            f"window's edges split about one event per agent, +/- {resolution:,.1f} events/s; "
            "never a pass with lost or late deliveries or failed publishes",
            missing=unsustained, resolution=resolution, not_applicable=short,
            generator=generator, cannot_pass=", ".join(spoilt) or None,
        ),
        _gated(
            options, "p99", "delivery_p99", latency.percentile(99) / 1e6, "ms",
            t.max_p99_ms, "<=",
            "handler receive time minus the event's intended send time (wall clock, one host), "
            "every delivery to every subscribing agent, HdrHistogram",
            better="lower", latency=percentiles,
            missing=None if latency.count else "no deliveries were measured",
            generator=generator,
        ),
        _gated(
            options, "critical-loss", "critical_loss", float(totals.lost(CRITICAL)), "deliveries",
            float(t.max_critical_loss), "<=",
            "priority 8-9 measured events sent x on-time subscribers of their swarm, minus "
            "those received by the end of the drain and late watch (late ones are not lost)",
            better="lower", missing=None if window else no_window,
            not_applicable=no_critical, generator=generator,
        ),
        _gated(
            options, "cache-hit-rate", "cache_hit_rate",
            totals.bus.get("cache_hits", 0) / lookups if lookups else 0.0, "fraction",
            t.min_cache_hit_rate, ">=",
            "route cache hits / lookups over every publish of every bus, whole run",
            missing=None if lookups else "no route lookups",
        ),
        _gated(
            options, "connections", "connections_per_subsystem",
            float(conns.max_per_subsystem if conns else 0), "connections",
            float(t.max_connections_per_subsystem), "<=",
            f"largest count of one subsystem's connections held by one owner (an agent in the "
            f"per-agent model, a process in the shared one), CLIENT LIST; model {options.model}",
            better="lower",
            missing=None if conns and conns.total else "no connection sample",
        ),
        _gated(
            options, "maxclients", "maxclients_fraction",
            facts.max_connected_clients / facts.maxclients if facts.maxclients else 0.0,
            "fraction", t.max_maxclients_fraction, "<=",
            "largest connected_clients (INFO, whole server) / maxclients; on Redis Cluster "
            "the fullest master's (each refuses clients past its own maxclients)",
            better="lower",
            missing=None if facts.maxclients else "maxclients unknown (CONFIG GET refused)",
        ),
    ]
    metrics.extend(_explaining_metrics(options, totals, facts))
    return metrics


def _explaining_metrics(
    options: HarnessOptions, totals: RunTotals, facts: RunFacts
) -> list[Metric]:
    window = facts.window_s or float("nan")
    expected = totals.expected()
    lost = totals.lost()
    cpu_events = totals.deliveries + totals.published_total
    adr_connections = ADR_CONNECTION_TABLE.get(facts.agents, 4 * facts.agents)
    lag = totals.lag_at_end
    out = [
        _info("offered_rate", facts.agents * facts.agent_rate, "events/s",
              f"{facts.agents} agents x {facts.agent_rate:g} events/s, constant rate (open model)"),
        _info("sent_rate", totals.sent_per_s if facts.window_s else 0.0, "events/s",
              "events published between the window's start and end marks, counted by their "
              "actual publish time / the window"),
        _info("deliveries_per_s", totals.arrivals_per_s() if facts.window_s else 0.0,
              "deliveries/s", "deliveries to on-time subscribers received between the window's "
              "start and end marks / the window"),
        _info("generator_behind", lag.mean_s, "s",
              "at the window's end, now minus each agent's next intended send time (0 when on "
              "time), mean over agents: the load generator's backlog in seconds of its "
              f"schedule; over {BEHIND_SCHEDULE_LIMIT_S:g} s it is saturated (furthest-behind "
              f"agent: {lag.max_s:.2f} s)", "lower"),
        _info("lost", float(lost), "deliveries",
              f"never arrived: expected {expected} deliveries (all priorities: measured events "
              "sent x on-time subscribers of their swarm) minus those received by the end of "
              f"the drain and the late watch (up to 2 x {options.drain:g} s after the window); "
              "bus_lost (sequence gaps) and bus_dropped (queue overflow) say where", "lower"),
        _info("late", float(facts.late), "deliveries",
              f"arrived, but after the window's end + the {options.drain:g} s drain (each "
              "process's clock); counted as received, never as lost", "lower"),
        _info("critical_late", float(facts.critical_late), "deliveries",
              "priority 8-9 deliveries among the late ones", "lower"),
        _info("loss_rate", lost / expected if expected else 0.0, "fraction",
              "lost / expected deliveries", "lower"),
        _info("worst_subscriber_loss", float(totals.worst_subscriber_loss()), "events",
              "most measured events missed by one on-time subscriber", "lower"),
    ]
    for name in ("lost", "duplicates", "reordered", "dropped", "malformed", "reconnects"):
        out.append(_info(
            f"bus_{name}", float(totals.bus.get(name, 0)), "events" if name != "reconnects"
            else "reconnects",
            f"sum over every subscriber connection of the bus's own '{name}' counter "
            "(sequence numbers / queue overflow), whole run", "lower"))
    out += [
        _info("transit_p99", totals.transit.percentile(99) / 1e6, "ms",
              "handler receive time minus the actual publish time (envelope ts)", "lower"),
        _info("send_lag_p99", totals.send_lag.percentile(99) / 1e6, "ms",
              "actual publish time minus intended send time: the load generator's own lateness "
              "(one pacing loop per process, its thread's timer slack 1 ns); "
              f"over {options.send_lag_limit_ms:g} ms (--cfn-send-lag-limit) the load-dependent "
              "gates are not judged", "lower"),
        _info("late_wakeups", totals.sums.get("late_wakes", 0.0), "wake-ups",
              f"pacing-loop wake-ups in the window over {LATE_WAKE_NS / 1e6:g} ms late, every "
              "process added up", "lower"),
        _info("late_wakeup_held", _held_fraction(totals.sums), "fraction",
              "share of those wake-ups' lateness with the Locust process running its own work "
              "(the harness held its loop); the rest it waited for a CPU (the machine)",
              "lower"),
        _info("connections", float(facts.connections.total if facts.connections else 0),
              "connections",
              f"peak connections of this run (CLIENT LIST); ADR-002's table: {adr_connections} "
              f"for {facts.agents} agents ({options.model} model here)", "lower"),
        _info("late_subscribers", float(totals.late_subscribers), "subscribers",
              "agents that subscribed after the window opened (left out of loss counts)",
              "lower"),
        _info("harness_cpu_us_per_event", facts.harness_cpu_s / cpu_events * 1e6
              if cpu_events else 0.0, "us",
              "CPU seconds of every Locust process in the window / (publishes + deliveries)",
              "lower"),
        *_cpu_per_delivery(totals, facts),
        _info("harness_cpu_percent", _window_cpu_s(facts) / window * 100
              if facts.window_s else 0.0, "% of one core",
              "CPU seconds of every Locust process between the window's marks / window",
              "lower"),
        _info("harness_cpu_busiest_process", max(facts.process_cpu_percent.values(), default=0.0),
              "% of one core",
              "CPU seconds of the busiest Locust process between its window marks / its "
              "window; at 95 % or more it is the limit of the run", "lower"),
    ]
    if facts.others_cpu_s is not None:
        out.append(_info("other_cpu_percent", facts.others_cpu_s / window * 100
                         if facts.window_s else 0.0, "% of one core",
                         "this machine's busy CPU over the window (/proc/stat, steal left "
                         "out) minus every Locust process's and redis-server's: what else "
                         "ran beside the run", "lower"))
    if facts.steal_cpu_s is not None:
        out.append(_info("steal_percent", facts.steal_cpu_s / window * 100
                         if facts.window_s else 0.0, "% of one core",
                         "/proc/stat steal on the master's machine over the window: time its "
                         "cores were ready to run but the hypervisor ran something else",
                         "lower"))
    if facts.server_cpu_s is not None:
        out.append(_info("server_cpu_percent", facts.server_cpu_s / window * 100
                         if facts.window_s else 0.0, "% of one core",
                         "redis-server used_cpu_sys + used_cpu_user over the window (summed "
                         "over every master on Redis Cluster)", "lower"))
    return out


def _window_cpu_s(facts: RunFacts) -> float:
    """Between the window's marks; not after it (an overloaded run's drain can be long)."""
    if facts.harness_window_cpu_s is not None:
        return facts.harness_window_cpu_s
    return facts.harness_cpu_s


def _cpu_per_delivery(totals: RunTotals, facts: RunFacts) -> list[Metric]:
    """The harness's own cost beside its rates: CPU between the window's marks per delivery
    and per publish counted between the same marks (every Locust process added up)."""
    cpu_s = totals.sums.get("window_cpu_s", 0.0)
    deliveries = totals.arrivals_per_s() * facts.window_s
    publishes = totals.sent_per_s * facts.window_s
    method = ("CPU seconds of every Locust process between the window's start and end marks "
              "(process_time: the bus's reads, decoding and writes in those processes included) "
              "/ {} counted between the same marks")
    return [
        _info("harness_cpu_us_per_delivery", cpu_s / deliveries * 1e6 if deliveries else 0.0,
              "us", method.format("deliveries"), "lower"),
        _info("harness_cpu_us_per_publish", cpu_s / publishes * 1e6 if publishes else 0.0,
              "us", method.format("publishes"), "lower"),
    ]


def _held_fraction(sums: dict[str, float]) -> float:
    late = sums.get("late_wake_s", 0.0)
    return min(1.0, sums.get("late_wake_held_s", 0.0) / late) if late > 0 else 0.0


def throughput_resolution(facts: RunFacts) -> float:
    """Events/s the throughput count can be off by: events in flight at the window's two
    marks differ by about one per publishing agent, over the window."""
    return facts.agents / facts.window_s if facts.window_s else 0.0


def generator_saturated(totals: RunTotals) -> bool:
    """The agents were behind their schedules at the window's end (one of the generator
    limits; :func:`run_generator_limit` has them all)."""
    return totals.lag_at_end.mean_s > BEHIND_SCHEDULE_LIMIT_S


def process_cpu_percent(snapshots: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Each process's CPU over its own window marks, in % of one core."""
    out = {}
    for snap in snapshots:
        marks = snap.get("window_marks") or {}
        span_s = (marks["end_ns"] - marks["start_ns"]) / 1e9 if marks else 0.0
        if span_s > 0:
            name = f"process {snap.get('process', '?')}"
            sums = snap.get("sums", {})
            cpu_s = sums.get("window_cpu_s", sums.get("cpu_s", 0.0))
            out[name] = float(cpu_s) / span_s * 100
    return out


def late_counts(snapshots: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """(late, critical late) deliveries added over every process's snapshot."""
    late = critical = 0
    for snap in snapshots:
        counts = snap.get("late") or {}
        late += int(counts.get("all", 0))
        critical += int(counts.get("critical", 0))
    return late, critical


def outcome_of(metrics: list[Metric], facts: RunFacts) -> RunOutcome:
    return run_outcome(metrics, facts.generator or KEPT_UP, facts.abnormal)


def generator_note(totals: RunTotals) -> str | None:
    """The table's warning when the load generator, not Redis, set the figures."""
    if not generator_saturated(totals):
        return None
    return (
        f"load generator behind schedule by {totals.lag_at_end.mean_s:.2f} s at the window's "
        f"end (mean over agents; furthest behind {totals.lag_at_end.max_s:.2f} s): "
        "figures are the generator's limit, not Redis's (throughput counts deliveries by "
        "their delivery time; latency from the intended send time includes the lateness)"
    )


def latency_steps(totals: RunTotals) -> list[dict[str, Any]]:
    """One row per (request type, event type): its delivery latency summary."""
    steps = []
    for key in sorted(totals.latency):
        request_type, _, name = key.partition("|")
        summary = totals.latency[key].to_dict()
        summary.pop("encoded", None)
        steps.append({"request_type": request_type, "name": name, **summary})
    return steps


def _show(metric: Metric) -> str:
    value = metric.value
    if metric.unit == "fraction":
        return f"{value * 100:.2f} %"
    if metric.unit == "ms":
        return f"{value:.3f} ms"
    if abs(value) >= 100:
        return f"{value:,.0f} {metric.unit}"
    return f"{value:.2f} {metric.unit}"


def _show_target(metric: Metric) -> str:
    if metric.target is None:
        return ""
    if metric.unit == "fraction":
        return f"{metric.op} {metric.target * 100:g} %"
    if metric.unit == "ms":
        return f"{metric.op} {metric.target:g} ms"
    return f"{metric.op} {metric.target:,.0f}"


def render_table(options: HarnessOptions, metrics: list[Metric], facts: RunFacts) -> str:
    """The gate table printed at the end of a run."""
    head = (
        f"pytest-cfn load harness: {facts.agents} agents ({options.model} model) in "
        f"{facts.swarms} swarms, {facts.agent_rate:g} events/s each ({options.phase} phases), "
        f"window {facts.window_s:.1f} s"
    )
    rows = [("metric", "measured", "ADR target", "verdict")]
    for metric in metrics:
        rows.append((metric.name, _show(metric), _show_target(metric),
                     VERDICT_SHOWN[metric.verdict]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    lines.extend(f"note: {note}" for note in facts.notes)
    lines.extend(outcome_of(metrics, facts).lines())
    return "\n".join(lines)


def build_result(
    options: HarnessOptions,
    metrics: list[Metric],
    totals: RunTotals,
    facts: RunFacts,
    redis: RedisInfo,
    machine: dict[str, Any],
    extra: dict[str, Any],
) -> RunResult:
    return RunResult(
        tool="locust",
        redis=redis,
        machine=machine,
        metrics=metrics,
        steps=latency_steps(totals),
        extra={
            "model": options.model,
            "phase": options.phase,
            "agents": facts.agents,
            "swarms": facts.swarms,
            "agent_rate": facts.agent_rate,
            "payload_bytes": options.payload,
            "window_s": facts.window_s,
            "processes": totals.processes,
            "gates": sorted(options.gates),
            "published_total": totals.published_total,
            "publish_errors": totals.publish_errors,
            "deliveries_total": totals.deliveries,
            "expected_deliveries": totals.expected(),
            "delivered": totals.delivered(),
            "throughput_resolution": throughput_resolution(facts),
            "generator_behind_s": totals.lag_at_end.mean_s,
            "generator_behind_max_s": totals.lag_at_end.max_s,
            "generator_behind_limit_s": BEHIND_SCHEDULE_LIMIT_S,
            "generator_saturated": bool(facts.generator and facts.generator.limited),
            "lost": totals.lost(),
            "late": facts.late,
            "critical_lost": totals.lost(CRITICAL),
            "critical_late": facts.critical_late,
            "abnormal": facts.abnormal,
            "verdict": outcome_of(metrics, facts).to_dict(),
            "bus": totals.bus,
            "connections": facts.connections.to_dict() if facts.connections else None,
            "server": facts.server,
            "notes": facts.notes,
            **extra,
        },
    )
