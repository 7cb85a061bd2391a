"""The sweep's figures of the load points (matplotlib, Agg): delivered events/s, latency
percentiles, latency distributions and connections vs agents. Each is titled, its axes
labelled with units, ADR-002's targets drawn as lines, the server's own ceiling or floor where
it applies, every point the median of its runs with their min-max drawn, and its method
printed under it (and returned, for the summary page). The route cache, client models and
ADR-002 comparison figures are in :mod:`pytest_cfn.measure.drawing.reference_figures`.

Every function takes the sweep (and optionally a baseline sweep, drawn dashed) and returns
the figure and its method text, or None when the document lacks its data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_cfn.measure.drawing.reference_figures import (
    adr_figure,
    cache_figure,
    client_models_figure,
)
from pytest_cfn.measure.drawing.style import (
    ALT_COLOR,
    CEILING_COLOR,
    FLOOR_COLOR,
    OURS_COLOR,
    TARGET_COLOR,
    Drawer,
    DrawnFigure,
    FigureResult,
    agent_axis,
    draw_spread,
    finish,
    label,
    legend_outside,
    new_figure,
    pyplot,
    runs_phrase,
)
from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.sweep.document import LATENCY_METHOD, LOAD_METHOD, SweepData, saturated
from pytest_cfn.measure.targets import ADR_CONNECTION_TABLE, Targets

CDF_LEVELS = 240
ADR_ELSEWHERE = "ADR-002's in-process claims are set beside ours in adr_vs_ours.png"


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
                   label=f"server ceiling: redis-benchmark {entry.get('verb', 'PUBLISH')} "
                   f"-P {pipeline} "
                   f"({entry['rate']:,.0f}/s)")
        methods.append(f"ceiling -P {pipeline}: {entry['method']}")
    return methods


def _range_text(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    value = float(row.get(key) or 0.0) * scale
    low, high = (float(v) * scale for v in row.get("spread", {}).get(key, [value, value]))
    shown = format(value, fmt)
    if int(row.get("runs", 1)) > 1 and format(low, fmt) != format(high, fmt):
        shown += f" ({format(low, fmt)}-{format(high, fmt)})"
    return shown


def throughput_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    if not data.loads:
        return None
    target = Targets().min_throughput
    fig, ax = new_figure(f"Delivered events/s vs agents, through Redis {data.version}")
    agents = [r["agents"] for r in data.loads]
    ax.plot(agents, [r["offered"] for r in data.loads], "x--", color="black", markersize=11,
            zorder=5, label="offered (ADR's scaling table: 100 events/s per agent)"
            if all(r["agent_rate"] == 100 for r in data.loads) else "offered")
    model = data.loads[0]["model"]
    delivered = draw_spread(ax, agents, data.loads, "delivered_per_s", fmt="-",
                            color=OURS_COLOR, linewidth=2.5, alpha=0.75,
                            label=f"delivered, {model} model (median, min-max of the runs)")
    for row, value in zip(data.loads, delivered, strict=True):
        late = saturated(row)
        ax.plot([row["agents"]], [value], "o", color=OURS_COLOR, zorder=6,
                markerfacecolor="white" if late else OURS_COLOR, markersize=8)
        label(ax, row["agents"], value, _range_text(row, "delivered_per_s", ",.0f")
              + (" (generator limit)" if late else ""), offset=(8, -14))
    if any(saturated(r) for r in data.loads):
        ax.plot([], [], "o", color=OURS_COLOR, markerfacecolor="white",
                label="hollow: load generator behind schedule (its limit, not Redis's)")
    if baseline is not None and baseline.loads:
        draw_spread(ax, [r["agents"] for r in baseline.loads], baseline.loads,
                    "delivered_per_s", fmt="o--", color=OURS_COLOR, alpha=0.4,
                    label="delivered, baseline run")
    ax.axhline(target, color=TARGET_COLOR, linestyle="--", linewidth=1.5,
               label=f"ADR target: {target:,.0f} events/s sustained")
    methods = _ceiling_lines(ax, data)
    ax.set_yscale("log")
    ax.set_ylim(min([*delivered, target]) / 2.5, max(r["rate"] for r in data.ceiling) * 2.5
                if data.ceiling else max(delivered) * 5)
    ax.set_ylabel("events/s (log scale)")
    agent_axis(ax, _agents(data))
    legend_outside(ax)
    windows = "/".join(f"{r['window_s']:.0f}" for r in data.loads)
    method = LOAD_METHOD.format(agents="N", model=model, swarms="N/10",
                                rate=data.loads[0]["agent_rate"], window=windows)
    method += f"; {runs_phrase(data.loads)}"
    if any(saturated(r) for r in data.loads):
        method += ("; hollow markers: the load generator was behind its schedule at the "
                   "window's end in most runs, so the figure is its limit, not Redis's")
    return finish(fig, "; ".join([method, *methods, ADR_ELSEWHERE]), right=0.68)


def _calibration_note(data: SweepData) -> str | None:
    calibration = data.extra.get("calibration") or {}
    shifts = calibration.get("shifts") or []
    if not shifts:
        return None
    parts = [f"+{s.get('applied_ms', s['injected_ms']):.2f} ms injected -> "
             f"+{s['measured_ms']:.2f} ms measured "
             f"({s['error_pct']:+.1f} %{'' if s.get('ok', True) else ', OUT OF BOUND'})"
             for s in shifts]
    loss = calibration.get("loss") or {}
    if loss:
        parts.append(f"{loss['injected']} events dropped -> "
                     f"{loss.get('worst_subscriber_loss') or loss['reported_loss']:,.0f} "
                     f"reported lost per subscriber")
    return "calibration in this run (bound +/- 10 %):\n" + "\n".join(parts)


def latency_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    rows = [r for r in data.loads if r.get("latency_count")]
    if not rows:
        return None
    fig, ax = new_figure(f"Delivery latency vs agents, through Redis {data.version}")
    agents = [r["agents"] for r in rows]
    top = 1.0
    for key, name, marker, offset in (("p50_us", "p50", "o", (8, -12)),
                                      ("p99_us", "p99", "s", (8, -12)),
                                      ("p99_9_us", "p99.9", "^", (8, 12))):
        values = draw_spread(ax, agents, rows, key, 1e-3, fmt=marker + "-",
                             label=f"{name} (median, min-max of the runs)")
        top = max(top, *values)
        for n, v in zip(agents, values, strict=True):
            label(ax, n, v, f"{v:,.2f}" if v < 100 else f"{v:,.0f}", offset=offset, size=7)
    late = [str(row["agents"]) for row in rows if saturated(row)]
    if late:
        ax.text(0.02, 0.97, f"{', '.join(late)} agents: load generator saturated, its "
                "lateness is in the latency", transform=ax.transAxes, fontsize=7.5,
                color=TARGET_COLOR, ha="left", va="top")
    note = _calibration_note(data)
    if note:
        ax.text(0.02, 0.05, note, transform=ax.transAxes, fontsize=7.5, ha="left",
                va="bottom", bbox={"facecolor": "#f4f4f4", "edgecolor": "#999999"})
    if baseline is not None:
        base = [r for r in baseline.loads if r.get("latency_count")]
        ax.plot([r["agents"] for r in base], [float(r["p99_us"]) / 1000 for r in base], "s--",
                color="grey", alpha=0.6, label="p99, baseline run")
    target = Targets().max_p99_ms
    ax.axhline(target, color=TARGET_COLOR, linestyle="--", linewidth=1.5,
               label=f"ADR target: p99 < {target:g} ms ('sub-millisecond')")
    methods = [LATENCY_METHOD.format(agents="N", model=rows[0]["model"],
                                     offered=rows[0]["offered"]).replace(
        f"{rows[0]['offered']:,.0f} events/s", "100 events/s per agent"), runs_phrase(rows)]
    trip = data.round_trip
    bottom = target / 3
    if trip:
        floor = trip["p50_us"] / 1000
        bottom = min(bottom, floor / 4)
        ax.axhline(floor, color=FLOOR_COLOR, linestyle=":",
                   label=f"server floor: {trip.get('verb', 'PUBLISH')} round trip p50 "
                   f"({trip['p50_us']:,.0f} µs)")
        methods.append(f"floor: {trip['method']}")
    ax.set_yscale("log")
    ax.set_ylim(bottom, top * 6)
    ax.set_ylabel("latency, ms (log scale)")
    agent_axis(ax, _agents(data))
    legend_outside(ax)
    return finish(fig, "; ".join([*methods, ADR_ELSEWHERE]), right=0.7)


def _quantiles(histogram: LatencyHistogram, levels: list[float]) -> list[float]:
    """Latency (ms) at each cumulative fraction of ``levels``, read off the histogram."""
    points = histogram.cdf(4000)
    out, index = [], 0
    for level in levels:
        while index < len(points) - 1 and points[index][1] < level:
            index += 1
        out.append(points[index][0] / 1000.0)
    return out


def cdf_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    rows = [r for r in data.loads if r.get("run_histograms")]
    if not rows:
        return None
    fig, (left, right) = new_figure(
        f"Latency distributions at every agent count ({rows[0]['model']} model, "
        f"{rows[0]['agent_rate']:g} events/s per agent)", panels=2, width=12.0,
    )
    levels = [1 - 10 ** (-4 * i / CDF_LEVELS) for i in range(1, CDF_LEVELS)]
    levels = sorted({*levels, *(i / 100 for i in range(1, 100))})
    colors = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    for index, row in enumerate(rows):
        color = colors[index % len(colors)]
        runs = [_quantiles(LatencyHistogram.decode(h), levels) for h in row["run_histograms"]]
        low = [min(v) for v in zip(*runs, strict=True)]
        high = [max(v) for v in zip(*runs, strict=True)]
        middle = [sorted(v)[(len(v) - 1) // 2] for v in zip(*runs, strict=True)]
        tails = [1 - q for q in levels]
        name = f"{row['agents']} agents, {row['offered']:,.0f} events/s offered"
        for ax, ys in ((left, levels), (right, tails)):
            ax.plot(middle, ys, color=color, linewidth=1.6, label=name)
            if len(runs) > 1:
                ax.fill_betweenx(ys, low, high, color=color, alpha=0.22, linewidth=0)
    if baseline is not None:
        for row in baseline.loads:
            encoded = row.get("latency_encoded")
            if encoded:
                base = _quantiles(LatencyHistogram.decode(encoded), levels)
                left.plot(base, levels, "--", color="grey", linewidth=0.8, alpha=0.7)
        left.plot([], [], "--", color="grey", label="baseline run")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("delivery latency, ms (log scale)")
        ax.axvline(Targets().max_p99_ms, color=TARGET_COLOR, linestyle="--",
                   label="ADR target: 1 ms")
        if data.round_trip:
            ax.axvline(data.round_trip["p50_us"] / 1000, color=FLOOR_COLOR, linestyle=":",
                       label=f"server floor: {data.round_trip.get('verb', 'PUBLISH')} round "
                       "trip p50")
        ax.grid(True, alpha=0.3)
    left.set_ylabel("fraction of deliveries <= latency")
    left.set_ylim(0, 1.02)
    left.set_title("CDF", fontsize=10)
    right.set_yscale("log")
    right.set_ylim(1e-4, 1.5)
    right.set_ylabel("fraction of deliveries > latency (log scale)")
    right.set_title("tail: 1 - CDF (0.01 = p99, 0.001 = p99.9)", fontsize=10)
    for level in (0.01, 0.001):
        right.axhline(level, color="black", linewidth=0.6, alpha=0.4)
    left.legend(fontsize=7.2, loc="lower right")
    method = LATENCY_METHOD.format(agents="N", model=rows[0]["model"],
                                   offered=rows[0]["offered"]).replace(
        f"{rows[0]['offered']:,.0f} events/s", f"{rows[0]['agent_rate']:g} events/s per agent")
    spread = ("each line the median run's latency at each fraction, the band the runs' "
              "min-max" if any(len(r["run_histograms"]) > 1 for r in rows)
              else "one run per agent count")
    return finish(fig, f"{method}; {spread}")


def connections_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    if not data.loads and not data.probes:
        return None
    fig, ax = new_figure("Redis connections vs agents: per-agent and shared models beside "
                         "ADR-002")
    for rows, color, marker in ((data.probes, ALT_COLOR, "s"), (data.loads, OURS_COLOR, "o")):
        if not rows:
            continue
        xs = [r["agents"] for r in rows]
        kind = "connection probe" if rows is data.probes else "load steps"
        ys = draw_spread(ax, xs, rows, "connections", fmt=marker + "-", color=color,
                         label=f"{rows[0]['model']} model, measured ({kind})")
        for x, y in zip(xs, ys, strict=True):
            label(ax, x, max(1.0, y), f"{y:,.0f}", offset=(8, -12), color=color)
    table = sorted(ADR_CONNECTION_TABLE.items())
    ax.plot([n for n, _ in table], [c for _, c in table], "D", color="#e67e22", markersize=8,
            fillstyle="none", label="ADR-002's connection table (2 per subsystem per agent)")
    maxclients = data.maxclients or 10_000
    ax.axhline(maxclients, color=CEILING_COLOR, linestyle="-",
               label=f"server maxclients ({maxclients:,})")
    fraction = Targets().max_maxclients_fraction
    ax.axhline(maxclients * fraction, color=TARGET_COLOR, linestyle="--",
               label=f"ADR limit: {fraction:.0%} of maxclients")
    ax.set_yscale("log")
    lowest = min([max(1.0, float(r["connections"])) for r in (*data.probes, *data.loads)])
    ax.set_ylim(lowest / 2.5, maxclients * 2)
    ax.set_ylabel("connections held (log scale)")
    agent_axis(ax, [*_agents(data), *ADR_CONNECTION_TABLE])
    legend_outside(ax)
    exact = all(r.get("spread", {}).get("connections", [0, 0])[0]
                == r.get("spread", {}).get("connections", [0, 0])[1] for r in data.loads)
    method = (
        "peak count of the run's connections in CLIENT LIST (named by the library: events-pub, "
        "events-sub, messages-pub, messages-sub; shared-pub, shared-sub, catchup-call), sampled "
        "once a second by the harness. Per-agent model: each agent its own Event Bus and "
        "Messenger (validators and coordinators also send, so they also hold a Messenger "
        "publisher); shared model: every swarm's Event Bus and Messenger of a Locust process on "
        "its SharedConnections (one publisher, one subscriber, one catch-up connection). "
        "maxclients from CONFIG GET; "
        f"load steps: {runs_phrase(data.loads)}"
        + ("; the counts were the same in every run (no bar to draw)" if exact else "")
    )
    if data.probes:
        method += (f"; the connection probe runs once at {data.probes[0]['agent_rate']:g} "
                   "events/s per agent: publishers connect on their first send, so the rate "
                   "only has to make every sending agent send once")
    cluster = data.extra.get("cluster")
    if cluster:
        method += (f"; on a Redis Cluster of {cluster['masters']} masters: counted on every "
                   "master, maxclients is each master's own (the smallest shown), and the "
                   "shared model's buses have connections of their own on their swarm's "
                   "master (SharedConnections serve one server)")
    return finish(fig, method, right=0.7)


FIGURES: tuple[tuple[str, str, Drawer], ...] = (
    ("throughput.png", "Delivered events/s vs agents", throughput_figure),
    ("latency.png", "Latency p50/p99/p99.9 vs agents", latency_figure),
    ("latency_cdf.png", "Latency distributions at every agent count", cdf_figure),
    ("connections.png", "Connections vs agents", connections_figure),
    ("route_cache.png", "Route cache hit rate and publish rate vs size", cache_figure),
    ("client_models.png", "Single vs separated vs shared connections", client_models_figure),
    ("adr_vs_ours.png", "ADR-002's figures beside ours", adr_figure),
)


def draw_all(data: SweepData, out: Path, baseline: SweepData | None = None) -> list[DrawnFigure]:
    """Draw every figure the document has data for into ``out``; returns what was drawn."""
    plt = pyplot()
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
