"""The end of a harness run: figures against ADR-002's targets, the gate table, the JSON result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_cfn.loadgen.accounting import RunTotals
from pytest_cfn.loadgen.connections import ConnectionCount
from pytest_cfn.loadgen.options import HarnessOptions
from pytest_cfn.results import Metric, Op, RedisInfo, RunResult, Verdict, judge
from pytest_cfn.targets import ADR_CONNECTION_TABLE

CRITICAL = (8, 9)
BEHIND_SCHEDULE_LIMIT_S = 0.1
"""A load generator whose agents are behind their schedules by more than this on average at
the window's end is saturated: the rates it produced are its own limit, not the server's."""


@dataclass
class RunFacts:
    """What the master knows about the run besides the merged snapshots."""

    agents: int
    swarms: int
    agent_rate: float
    window_s: float
    harness_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    connections: ConnectionCount | None = None
    maxclients: int | None = None
    max_connected_clients: int = 0
    server: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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
) -> Metric:
    """A gated metric: judged when ``gate`` is selected; a metric with no data fails. A value
    within ``resolution`` of the target (the figure's counting precision) meets it."""
    verdict: Verdict
    if gate not in options.gates:
        verdict = "info"
        method += " (not gated in this run)"
    elif missing is not None:
        verdict = "fail"
        method = f"{missing}; {method}"
    else:
        verdict = judge(value + resolution if op in (">=", ">") else value - resolution,
                        target, op)
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
    if not window:
        unsustained: str | None = no_window
    elif not totals.marked_processes:
        unsustained = "no process marked the window's start and end"
    else:
        unsustained = None
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
            f"window's edges split about one event per agent, +/- {resolution:,.1f} events/s",
            missing=unsustained, resolution=resolution,
        ),
        _gated(
            options, "p99", "delivery_p99", latency.percentile(99) / 1e6, "ms",
            t.max_p99_ms, "<=",
            "handler receive time minus the event's intended send time (wall clock, one host), "
            "every delivery to every subscribing agent, HdrHistogram",
            better="lower", latency=percentiles,
            missing=None if latency.count else "no deliveries were measured",
        ),
        _gated(
            options, "critical-loss", "critical_loss", float(totals.lost(CRITICAL)), "deliveries",
            float(t.max_critical_loss), "<=",
            "priority 8-9 measured events sent x on-time subscribers of their swarm, minus "
            "those received by the end of the drain",
            better="lower", missing=None if window else no_window,
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
            "largest connected_clients (INFO, whole server) / maxclients",
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
        _info("loss", float(lost), "deliveries",
              f"expected {expected} deliveries (all priorities) minus those received by the end "
              f"of the drain (up to {options.drain:g} s after the window): lost or too late",
              "lower"),
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
              "actual publish time minus intended send time: the load generator's own lateness",
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
        _info("harness_cpu_percent", facts.harness_cpu_s / window * 100
              if facts.window_s else 0.0, "% of one core",
              "CPU seconds of every Locust process in the window / window", "lower"),
    ]
    if facts.server_cpu_s is not None:
        out.append(_info("server_cpu_percent", facts.server_cpu_s / window * 100
                         if facts.window_s else 0.0, "% of one core",
                         "redis-server used_cpu_sys + used_cpu_user over the window", "lower"))
    return out


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


def throughput_resolution(facts: RunFacts) -> float:
    """Events/s the throughput count can be off by: events in flight at the window's two
    marks differ by about one per publishing agent, over the window."""
    return facts.agents / facts.window_s if facts.window_s else 0.0


def generator_saturated(totals: RunTotals) -> bool:
    return totals.lag_at_end.mean_s > BEHIND_SCHEDULE_LIMIT_S


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
        f"{facts.swarms} swarms, {facts.agent_rate:g} events/s each, window {facts.window_s:.1f} s"
    )
    rows = [("metric", "measured", "ADR target", "verdict")]
    for metric in metrics:
        verdict = {"pass": "PASS", "fail": "FAIL", "info": ""}[metric.verdict]
        rows.append((metric.name, _show(metric), _show_target(metric), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    failed = [m.name for m in metrics if m.verdict == "fail"]
    lines.append(f"gates: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}")
    lines.extend(f"note: {note}" for note in facts.notes)
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
            "generator_saturated": generator_saturated(totals),
            "bus": totals.bus,
            "connections": facts.connections.to_dict() if facts.connections else None,
            "server": facts.server,
            "notes": facts.notes,
            **extra,
        },
    )
