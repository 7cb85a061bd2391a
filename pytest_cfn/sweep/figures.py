"""The sweep's figures (matplotlib, Agg): each titled, its axes labelled with units, ADR-002's
targets drawn as lines, the server's own ceiling or floor where it applies, and its method
printed under it (and returned, for the summary page).

Every function takes the sweep (and optionally a baseline sweep, drawn dashed) and returns
the figure and its method text, or None when the document lacks its data.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_cfn._errors import CfnError
from pytest_cfn.sweep.adr import adr_claims, number, our_counterparts
from pytest_cfn.sweep.cache_sweep import ADR_CLAIMED, CACHE_SIZES, WORKLOADS
from pytest_cfn.sweep.client_models import ADR_SEPARATED, ADR_SINGLE
from pytest_cfn.sweep.document import LATENCY_METHOD, LOAD_METHOD, SweepData, saturated
from pytest_cfn.targets import ADR_CLAIMS, ADR_CONNECTION_TABLE, Targets

TARGET_COLOR = "#c0392b"
CEILING_COLOR = "#7d3c98"
ADR_COLOR = "#e67e22"
OURS_COLOR = "#1f77b4"
ALT_COLOR = "#2ca02c"
FLOOR_COLOR = "#7f7f7f"
ADR_NOTE = "in-process, no Redis"


class ReportDependencyError(CfnError):
    """matplotlib, needed to draw the report, is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ReportDependencyError(
            "drawing the report needs matplotlib; install it with "
            "pip install 'pytest-cfn[reports]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class DrawnFigure:
    path: Path
    title: str
    method: str


FigureResult = tuple[Any, str] | None


def _new(title: str, panels: int = 1, width: float = 12.5) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, axes = plt.subplots(1, panels, figsize=(width, 6.2))
    fig.suptitle(title, fontsize=12, fontweight="bold")
    return fig, axes


def _finish(fig: Any, method: str, right: float = 0.98, top: float = 0.9) -> tuple[Any, str]:
    """Lay the figure out and print its method under it."""
    wrapped = textwrap.fill("Method: " + method, width=int(fig.get_figwidth() * 19))
    lines = wrapped.count("\n") + 1
    inches = fig.get_figheight()
    bottom = (0.75 + 0.11 * lines) / inches
    fig.subplots_adjust(bottom=bottom, top=top, left=0.07, right=right, wspace=0.28)
    fig.text(0.01, 0.008, wrapped, fontsize=6.3, va="bottom", ha="left", color="#333333")
    return fig, method


def _legend(ax: Any) -> None:
    """The legend outside the axes, on the right, so it never hides a point."""
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _agent_axis(ax: Any, agents: list[int]) -> None:
    agents = sorted(set(agents))
    ax.set_xscale("log")
    ax.set_xticks(agents)
    ax.set_xticklabels([str(n) for n in agents])
    ax.minorticks_off()
    ax.set_xlabel("simulated agents")
    ax.grid(True, which="major", alpha=0.3)


def _agents(data: SweepData, baseline: SweepData | None = None) -> list[int]:
    found = {r["agents"] for r in data.loads} | {r["agents"] for r in data.probes}
    if baseline is not None:
        found |= {r["agents"] for r in baseline.loads}
    return sorted(found)


def _ceiling_lines(ax: Any, data: SweepData) -> list[str]:
    methods = []
    for entry in data.ceiling:
        pipeline = entry["pipeline"]
        ax.axhline(entry["rate"], color=CEILING_COLOR, linestyle=":" if pipeline == 1 else "-.",
                   linewidth=1.4,
                   label=f"server ceiling: redis-benchmark PUBLISH -P {pipeline} "
                   f"({entry['rate']:,.0f}/s)")
        methods.append(f"ceiling -P {pipeline}: {entry['method']}")
    return methods


def throughput_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    if not data.loads:
        return None
    target = Targets().min_throughput
    fig, ax = _new(f"Delivered events/s vs agents, through Redis {data.version}")
    agents = [r["agents"] for r in data.loads]
    ax.plot(agents, [r["offered"] for r in data.loads], "x--", color="black", markersize=11,
            zorder=5, label="offered (ADR's scaling table: 100 events/s per agent)"
            if all(r["agent_rate"] == 100 for r in data.loads) else "offered")
    delivered = [r["delivered_per_s"] or 0.0 for r in data.loads]
    model = data.loads[0]["model"]
    ax.plot(agents, delivered, "-", color=OURS_COLOR, linewidth=3, alpha=0.6)
    for row, value in zip(data.loads, delivered, strict=True):
        late = saturated(row)
        ax.plot([row["agents"]], [value], "o", color=OURS_COLOR,
                markerfacecolor="white" if late else OURS_COLOR, markersize=8)
        ax.annotate(f"{value:,.0f}" + (" (generator limit)" if late else ""),
                    (row["agents"], value), textcoords="offset points", xytext=(8, -4),
                    fontsize=8)
    ax.plot([], [], "o-", color=OURS_COLOR, label=f"delivered, {model} model (measured)")
    if any(saturated(r) for r in data.loads):
        ax.plot([], [], "o", color=OURS_COLOR, markerfacecolor="white",
                label="hollow: load generator behind schedule (its limit, not Redis's)")
    if baseline is not None and baseline.loads:
        ax.plot([r["agents"] for r in baseline.loads],
                [r["delivered_per_s"] or 0.0 for r in baseline.loads], "o--",
                color=OURS_COLOR, alpha=0.45, label="delivered, baseline run")
    ax.axhline(target, color=TARGET_COLOR, linestyle="--", linewidth=1.5,
               label=f"ADR target: {target:,.0f} events/s sustained")
    methods = _ceiling_lines(ax, data)
    claim = ADR_CLAIMS["concurrent_100_agents"][0]
    ax.plot([100], [claim], "*", color=ADR_COLOR, markersize=14,
            label=f"ADR claim at 100 agents: {claim:,.0f} ({ADR_NOTE})")
    ax.set_yscale("log")
    ax.set_ylabel("events/s (log scale)")
    _agent_axis(ax, [*_agents(data), 100])
    _legend(ax)
    first = data.loads[-1]
    windows = "/".join(f"{r['window_s']:.0f}" for r in data.loads)
    method = LOAD_METHOD.format(agents="N", model=model, swarms="N/10", rate=first["agent_rate"],
                                window=windows)
    if any(saturated(r) for r in data.loads):
        method += ("; hollow markers: the load generator was behind its schedule at the "
                   "window's end, so the figure is its limit, not Redis's")
    return _finish(fig, "; ".join([method, *methods]), right=0.68)


def latency_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    rows = [r for r in data.loads if r.get("latency_count")]
    if not rows:
        return None
    fig, ax = _new(f"Delivery latency vs agents, through Redis {data.version}")
    agents = [r["agents"] for r in rows]
    top = 1.0
    for key, label, marker, offset in (("p50_us", "p50", "o", (6, -11)),
                                       ("p99_us", "p99", "s", (6, -9)),
                                       ("p99_9_us", "p99.9", "^", (6, 4))):
        values = [float(r[key]) / 1000 for r in rows]
        top = max(top, *values)
        ax.plot(agents, values, marker + "-", label=f"{label} (measured)")
        for n, v in zip(agents, values, strict=True):
            ax.annotate(f"{v:,.2f}" if v < 100 else f"{v:,.0f}", (n, v), fontsize=7,
                        textcoords="offset points", xytext=offset)
    late = [str(row["agents"]) for row in rows if saturated(row)]
    if late:
        ax.text(0.7, 0.96, f"{', '.join(late)} agents: load generator saturated,\nits "
                "lateness is in the latency", transform=ax.transAxes, fontsize=7.5,
                color=TARGET_COLOR, ha="right", va="top")
    if baseline is not None:
        base = [r for r in baseline.loads if r.get("latency_count")]
        ax.plot([r["agents"] for r in base], [float(r["p99_us"]) / 1000 for r in base], "s--",
                color="grey", alpha=0.6, label="p99, baseline run")
    target = Targets().max_p99_ms
    ax.axhline(target, color=TARGET_COLOR, linestyle="--", linewidth=1.5,
               label=f"ADR target: p99 < {target:g} ms ('sub-millisecond')")
    methods = [LATENCY_METHOD.format(agents="N", model=rows[0]["model"],
                                     offered=rows[0]["offered"]).replace(
        f"{rows[0]['offered']:,.0f} events/s", "100 events/s per agent")]
    trip = data.round_trip
    if trip:
        ax.axhline(trip["p50_us"] / 1000, color=FLOOR_COLOR, linestyle=":",
                   label=f"server floor: PUBLISH round trip p50 ({trip['p50_us']:,.0f} µs)")
        methods.append(f"floor: {trip['method']}")
    claim = ADR_CLAIMS["event_bus_avg_latency"][0]
    ax.axhline(claim, color=ADR_COLOR, linestyle="-.",
               label=f"ADR claim: {claim * 1000:g} µs average ({ADR_NOTE})")
    ax.set_yscale("log")
    ax.set_ylim(claim / 3, top * 5)
    ax.set_ylabel("latency, ms (log scale)")
    _agent_axis(ax, _agents(data))
    _legend(ax)
    return _finish(fig, "; ".join(methods), right=0.7)


def cdf_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    row = data.cdf_step(100)
    histogram = data.histogram(row) if row is not None else None
    if row is None or histogram is None:
        return None
    fig, (left, right) = _new(
        f"Latency distribution at {row['agents']} agents ({row['model']} model, "
        f"{row['offered']:,.0f} events/s offered)", panels=2, width=12.0,
    )
    series = [(row, histogram, f"{row['agents']} agents", 2.2, 1.0)]
    for other in data.loads:
        other_hist = data.histogram(other)
        if other is not row and other_hist is not None:
            series.append((other, other_hist, f"{other['agents']} agents", 0.9, 0.45))
    if baseline is not None:
        base_row = baseline.cdf_step(row["agents"])
        base_hist = baseline.histogram(base_row) if base_row else None
        if base_row is not None and base_hist is not None:
            series.append((base_row, base_hist, f"baseline, {base_row['agents']} agents",
                           1.4, 0.6))
    for _, hist, label, width, alpha in series:
        points = hist.cdf(400)
        xs = [x / 1000 for x, _ in points]
        left.step(xs, [y for _, y in points], where="post", linewidth=width, alpha=alpha,
                  label=label)
        tail = [(x, 1.0 - y) for x, (_, y) in zip(xs, points, strict=True) if y < 1.0]
        right.step([x for x, _ in tail], [y for _, y in tail], where="post",
                   linewidth=width, alpha=alpha, label=label)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("delivery latency, ms (log scale)")
        ax.axvline(Targets().max_p99_ms, color=TARGET_COLOR, linestyle="--",
                   label="ADR target: 1 ms")
        if data.round_trip:
            ax.axvline(data.round_trip["p50_us"] / 1000, color=FLOOR_COLOR, linestyle=":",
                       label="server floor: PUBLISH round trip p50")
        ax.grid(True, alpha=0.3)
    left.set_ylabel("fraction of deliveries <= latency")
    left.set_title("CDF", fontsize=10)
    right.set_yscale("log")
    right.set_ylabel("fraction of deliveries > latency (log scale)")
    right.set_title("tail: 1 - CDF (0.01 = p99, 0.001 = p99.9)", fontsize=10)
    for level in (0.01, 0.001):
        right.axhline(level, color="black", linewidth=0.6, alpha=0.4)
    left.legend(fontsize=7.5, loc="lower right")
    method = LATENCY_METHOD.format(agents=row["agents"], model=row["model"],
                                   offered=row["offered"])
    return _finish(fig, f"{method}; {row['latency_count']:,} deliveries; thin lines: the "
                   "other agent counts of the same sweep")


def connections_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    if not data.loads and not data.probes:
        return None
    fig, ax = _new("Redis connections vs agents: per-agent and shared models beside ADR-002")
    for rows, color, marker in ((data.probes, ALT_COLOR, "s"), (data.loads, OURS_COLOR, "o")):
        if not rows:
            continue
        xs = [r["agents"] for r in rows]
        ys = [max(1, r["connections"]) for r in rows]
        kind = "connection probe" if rows is data.probes else "load steps"
        ax.plot(xs, ys, marker + "-", color=color,
                label=f"{rows[0]['model']} model, measured ({kind})")
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:,}", (x, y), textcoords="offset points", xytext=(6, -12),
                        fontsize=8, color=color)
    table = sorted(ADR_CONNECTION_TABLE.items())
    ax.plot([n for n, _ in table], [c for _, c in table], "D", color=ADR_COLOR, markersize=8,
            fillstyle="none", label="ADR-002's connection table (2 per subsystem per agent)")
    maxclients = data.maxclients or 10_000
    ax.axhline(maxclients, color=CEILING_COLOR, linestyle="-",
               label=f"server maxclients ({maxclients:,})")
    fraction = Targets().max_maxclients_fraction
    ax.axhline(maxclients * fraction, color=TARGET_COLOR, linestyle="--",
               label=f"ADR limit: {fraction:.0%} of maxclients")
    ax.set_yscale("log")
    ax.set_ylabel("connections held (log scale)")
    _agent_axis(ax, [*_agents(data), *ADR_CONNECTION_TABLE])
    _legend(ax)
    method = (
        "peak count of the run's connections in CLIENT LIST (named by the library: events-pub, "
        "events-sub, messages-pub, messages-sub), sampled once a second by the harness. "
        "Per-agent model: each agent its own Event Bus and Messenger (validators and "
        "coordinators also send, so they also hold a Messenger publisher); shared model: one "
        "Event Bus and one Messenger per swarm per Locust process. maxclients from CONFIG GET"
    )
    if data.probes:
        method += (f"; the connection probe runs at {data.probes[0]['agent_rate']:g} events/s "
                   "per agent: publishers connect on their first send, so the rate only has to "
                   "make every sending agent send once")
    return _finish(fig, method, right=0.7)


def cache_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    cache = data.cache
    if not cache:
        return None
    fig, (left, right) = _new("Route cache: hit rate and publish rate vs cache size, "
                              "through Redis", panels=2, width=12.0)
    labels = [f"{s:,}" if s else "none" for s in CACHE_SIZES]
    xs = list(range(len(CACHE_SIZES)))
    by = {(r["workload"], r["size"]): r for r in cache["rows"]}
    width = 0.27
    claimed = [ADR_CLAIMED[s] * 100 for s in CACHE_SIZES]
    bars = left.bar([x - width for x in xs], claimed, width, color="white", edgecolor=ADR_COLOR,
                    hatch="//", label=f"ADR claim ({ADR_NOTE}, 5 types)")
    left.bar_label(bars, fmt="%.2f", fontsize=7, rotation=90, padding=3)
    for offset, (workload, color) in zip((0.0, width), (("adr", OURS_COLOR),
                                                        ("zipf", ALT_COLOR)), strict=True):
        values = [by[(workload, s)]["hit_rate"] * 100 if (workload, s) in by else 0.0
                  for s in CACHE_SIZES]
        bars = left.bar([x + offset for x in xs], values, width, color=color,
                        label=f"measured: {WORKLOADS[workload][0]}")
        left.bar_label(bars, fmt="%.2f", fontsize=7, rotation=90, padding=3)
        rates = [by[(workload, s)]["publish_rate"] if (workload, s) in by else 0.0
                 for s in CACHE_SIZES]
        bars = right.bar([x + offset - width / 2 for x in xs], rates, width, color=color,
                         label=f"{workload} workload")
        right.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    target = Targets().min_cache_hit_rate * 100
    left.axhline(target, color=TARGET_COLOR, linestyle="--",
                 label=f"ADR target at 10,000 entries: {target:g} %")
    left.set_ylim(0, 125)
    left.set_ylabel("hit rate, % of route lookups")
    left.set_title("hit rate", fontsize=10)
    right.set_ylabel("publish rate, events/s (misses read Redis)")
    right.yaxis.set_major_formatter(_pyplot().FuncFormatter(lambda v, _: f"{v:,.0f}"))
    right.set_title("publish rate (same colours)", fontsize=10)
    for ax in (left, right):
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.set_xlabel("route cache size, entries")
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels_ = left.get_legend_handles_labels()
    fig.legend(handles, labels_, fontsize=7.5, loc="upper center", ncol=2,
               bbox_to_anchor=(0.5, 0.935))
    return _finish(fig, cache["method"], top=0.8)


def client_models_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    rows = data.client_models
    if not rows:
        return None
    fig, ax = _new("Single client vs separated pub/sub vs shared connections (ADR's '83x')")
    xs = list(range(len(rows)))
    colors = [OURS_COLOR if r["connections"] <= 2 else ALT_COLOR for r in rows]
    bars = ax.bar(xs, [r["rate"] for r in rows], color=colors)
    ax.bar_label(bars, labels=[f"{r['rate']:,.0f}\n{r['connections']} conn." for r in rows],
                 fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels([r["label"] for r in rows], fontsize=8)
    if baseline is not None and baseline.client_models:
        base = {r["key"]: r["rate"] for r in baseline.client_models}
        ax.plot([x for x, r in zip(xs, rows, strict=True) if r["key"] in base],
                [base[r["key"]] for r in rows if r["key"] in base], "_", color="black",
                markersize=30, label="baseline run")
    ax.axhline(ADR_SINGLE, color=ADR_COLOR, linestyle=":",
               label=f"ADR: single client {ADR_SINGLE:,.0f} events/s (Sprint 1.1 prototype)")
    ax.axhline(ADR_SEPARATED, color=ADR_COLOR, linestyle="-.",
               label=f"ADR: separated clients {ADR_SEPARATED:,.0f} events/s ({ADR_NOTE})")
    methods = _ceiling_lines(ax, data)
    ax.set_yscale("log")
    ax.set_ylabel("delivered events/s (log scale)")
    ax.set_xlabel("connection layout (same server, end to end, unpaced)")
    ax.grid(True, axis="y", alpha=0.3)
    _legend(ax)
    method = " | ".join(f"{r['key']}: {r['method']}" for r in rows)
    return _finish(fig, "; ".join([method, *methods]), right=0.7)


def adr_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    ours = our_counterparts(data)
    claims = adr_claims()
    keys = [k for k in ("event_bus_throughput", "concurrent_100_agents", "single_client",
                        "separation_speedup", "event_bus_avg_latency", "cache_hit_rate")
            if k in ours]
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(keys), 1, figsize=(12.5, 2.2 + 1.2 * len(keys)))
    axes = [axes] if len(keys) == 1 else list(axes)
    fig.suptitle(f"ADR-002's figures ({ADR_NOTE}) beside ours (through Redis {data.version})",
                 fontsize=12, fontweight="bold")
    for ax, key in zip(axes, keys, strict=True):
        claim, unit, claim_method = claims[key]
        value, method = ours[key]
        if unit == "fraction":
            claim, value, unit = claim * 100, value * 100, "%"
        bars = ax.barh([1, 0], [claim, value], color=[ADR_COLOR, OURS_COLOR], height=0.6)
        ax.bar_label(bars, labels=[f" {number(claim)} {unit}: {claim_method}",
                                   f" {number(value)} {unit}: {method}"], fontsize=7.5)
        ax.set_yticks([1, 0])
        ax.set_yticklabels(["ADR", "ours"], fontsize=8)
        linear = unit == "%"
        ax.set_xscale("linear" if linear else "log")
        low = 0 if linear else min(claim, value) / 5
        ax.set_xlim(low, max(claim, value) * (2.2 if linear else 3000))
        ax.set_title(f"{key.replace('_', ' ')} ({unit}{'' if linear else ', log scale'})",
                     fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    fig.subplots_adjust(hspace=1.0)
    return _finish(fig, (
        "each ADR figure with the method the ADR used (its benchmark ran in-process: an "
        "EventEmitter and JSON.stringify, no Redis round trip) beside the sweep's measurement "
        "of the same quantity through a real Redis server, with ours named in its bar; "
        "lower is better for latency, higher for the rest"
    ), top=0.9)


Drawer = Callable[[SweepData, "SweepData | None"], FigureResult]
FIGURES: tuple[tuple[str, str, Drawer], ...] = (
    ("throughput.png", "Delivered events/s vs agents", throughput_figure),
    ("latency.png", "Latency p50/p99/p99.9 vs agents", latency_figure),
    ("latency_cdf.png", "Latency distribution at 100 agents", cdf_figure),
    ("connections.png", "Connections vs agents", connections_figure),
    ("route_cache.png", "Route cache hit rate vs size", cache_figure),
    ("client_models.png", "Single vs separated vs shared connections", client_models_figure),
    ("adr_vs_ours.png", "ADR-002's figures beside ours", adr_figure),
)


def draw_all(data: SweepData, out: Path, baseline: SweepData | None = None) -> list[DrawnFigure]:
    """Draw every figure the document has data for into ``out``; returns what was drawn."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, title, draw in FIGURES:
        made = draw(data, baseline)
        if made is None:
            continue
        fig, method = made
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        drawn.append(DrawnFigure(path, title, method))
    return drawn
