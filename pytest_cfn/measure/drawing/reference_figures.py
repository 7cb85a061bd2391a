"""The report's figures of the reference measurements: the route cache sweep, the client
models (connection layouts), and ADR-002's in-process claims beside our measurements, drawn
as an annotated table so that the two methods cannot be read as one scale."""

from __future__ import annotations

import textwrap
from typing import Any

from pytest_cfn.measure.drawing.style import (
    ADR_COLOR,
    ADR_NOTE,
    ALT_COLOR,
    CEILING_COLOR,
    OURS_COLOR,
    SPREAD_NOTE,
    TARGET_COLOR,
    FigureResult,
    finish,
    new_figure,
    pyplot,
)
from pytest_cfn.measure.sweep.adr import adr_claims, number, our_counterparts
from pytest_cfn.measure.sweep.cache_sweep import ADR_CLAIMED, CACHE_SIZES, WORKLOADS
from pytest_cfn.measure.sweep.document import SweepData
from pytest_cfn.measure.targets import Targets

LINE_PT = 10.5
"""Height of one text line of the ADR table, points (7.8 pt type, 1.25 line spacing)."""
ADR_ROWS = ("event_bus_throughput", "concurrent_100_agents", "messenger_throughput",
            "single_client", "separation_speedup", "event_bus_avg_latency", "cache_hit_rate")


def _bar_errors(rows: list[dict[str, Any] | None], key: str) -> list[list[float]]:
    below, above = [], []
    for row in rows:
        if row is None:
            below.append(0.0)
            above.append(0.0)
            continue
        value = float(row[key])
        below.append(max(0.0, value - float(row.get(f"{key}_low", value))))
        above.append(max(0.0, float(row.get(f"{key}_high", value)) - value))
    return [below, above]


def _bar_values(ax: Any, bars: Any, texts: list[str], color: str, limit: float) -> None:
    """Each bar's value written up its middle; a bar too short for it gets it just above,
    in black, so no value sits on the axis or under a line."""
    for bar, text in zip(bars, texts, strict=True):
        x = bar.get_x() + bar.get_width() / 2
        height = bar.get_height()
        if height > 0.18 * limit:
            ax.text(x, height / 2, text, rotation=90, ha="center", va="center", fontsize=7,
                    color=color, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1}
                    if color == "black" else None)
        else:
            ax.text(x, height + 0.01 * limit, text, rotation=90, ha="center", va="bottom",
                    fontsize=7, color="black")


def cache_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    cache = data.cache
    if not cache:
        return None
    fig, (left, right) = new_figure("Route cache: hit rate and publish rate vs cache size, "
                                    "through Redis", panels=2, width=12.0)
    labels = [f"{s:,}" if s else "none" for s in CACHE_SIZES]
    xs = list(range(len(CACHE_SIZES)))
    by = {(r["workload"], r["size"]): r for r in cache["rows"]}
    width = 0.27
    claimed = [ADR_CLAIMED[s] * 100 for s in CACHE_SIZES]
    bars = left.bar([x - width for x in xs], claimed, width, color="white", edgecolor=ADR_COLOR,
                    hatch="//", label=f"ADR claim ({ADR_NOTE}, 5 types)")
    _bar_values(left, bars, [f"{v:.2f}" for v in claimed], "black", 100.0)
    for offset, (workload, color) in zip((0.0, width), (("adr", OURS_COLOR),
                                                        ("zipf", ALT_COLOR)), strict=True):
        rows = [by.get((workload, s)) for s in CACHE_SIZES]
        values = [min(100.0, r["hit_rate"] * 100) if r else 0.0 for r in rows]
        bars = left.bar([x + offset for x in xs], values, width, color=color,
                        label=f"measured: {WORKLOADS[workload][0]}")
        _bar_values(left, bars, [f"{v:.2f}" for v in values], "white", 100.0)
        rates = [r["publish_rate"] if r else 0.0 for r in rows]
        bars = right.bar([x + offset - width / 2 for x in xs], rates, width, color=color,
                         yerr=_bar_errors(rows, "publish_rate"), capsize=3,
                         label=f"{workload} workload")
        highest = max([*(float(r.get("publish_rate_high", r["publish_rate"]))
                         for r in cache["rows"]), 1.0])
        _bar_values(right, bars, [f"{v:,.0f}" for v in rates], "white", highest)
    target = Targets().min_cache_hit_rate * 100
    left.axhline(target, color=TARGET_COLOR, linestyle="--",
                 label=f"ADR target at 10,000 entries: {target:g} %")
    left.set_ylim(0, 100)
    left.set_ylabel("hit rate, % of route lookups (at most 100)")
    left.set_title("hit rate (exact counts: the same in every run)", fontsize=10)
    right.set_ylabel("publish rate, events/s (misses read Redis)")
    right.yaxis.set_major_formatter(pyplot().FuncFormatter(lambda v, _: f"{v:,.0f}"))
    runs = int(cache.get("runs", 1))
    right.set_title(f"publish rate: median of {runs} run(s), error bars min-max",
                    fontsize=10)
    for ax in (left, right):
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.set_xlabel("route cache size, entries")
        ax.grid(True, axis="y", alpha=0.3)
    handles, names = left.get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7.5, loc="upper center", ncol=2,
               bbox_to_anchor=(0.5, 0.935))
    return finish(fig, cache["method"] + "; the publish rates of equal hit rates differ only "
                  "within their runs' spread unless the bars' ranges do not overlap", top=0.8)


def client_models_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    rows = data.client_models
    if not rows:
        return None
    fig, ax = new_figure("Single client vs separated pub/sub vs shared connections, "
                         "through Redis")
    xs = list(range(len(rows)))
    colors = [OURS_COLOR if r["connections"] <= 2 else ALT_COLOR for r in rows]
    rates = [float(r["rate"]) for r in rows]
    bars = ax.bar(xs, rates, color=colors, yerr=_bar_errors(list(rows), "rate"), capsize=5)
    bottom = min(rates) / 6
    for x, row, rate in zip(xs, rows, rates, strict=True):
        spread = (f"\n({row['rate_low']:,.0f}-\n{row['rate_high']:,.0f})"
                  if int(row.get("runs", 1)) > 1 else "")
        ax.text(x, (bottom * rate) ** 0.5, f"{rate:,.0f}{spread}\n{row['connections']} conn.",
                ha="center", va="center", fontsize=8, color="white", fontweight="bold")
    del bars
    from matplotlib.patches import Patch

    kinds = [Patch(color=OURS_COLOR, label="one or two connections in all"),
             Patch(color=ALT_COLOR, label="one EventBus per agent (2 connections each)")]
    ax.set_xticks(xs)
    ax.set_xticklabels([r["label"] for r in rows], fontsize=8)
    if baseline is not None and baseline.client_models:
        base = {r["key"]: r["rate"] for r in baseline.client_models}
        ax.plot([x for x, r in zip(xs, rows, strict=True) if r["key"] in base],
                [base[r["key"]] for r in rows if r["key"] in base], "_", color="black",
                markersize=30, label="baseline run")
    methods = []
    for entry in data.ceiling:
        ax.axhline(entry["rate"], color=CEILING_COLOR, linestyle=":" if entry["pipeline"] == 1
                   else "-.", label=f"server ceiling: redis-benchmark "
                   f"{entry.get('verb', 'PUBLISH')} -P "
                   f"{entry['pipeline']} ({entry['rate']:,.0f}/s)")
        methods.append(f"ceiling -P {entry['pipeline']}: {entry['method']}")
    ax.set_yscale("log")
    ax.set_ylim(bottom, max(max(rates), *(e["rate"] for e in data.ceiling)) * 3)
    ax.set_ylabel("delivered events/s (log scale)")
    ax.set_xlabel("connection layout (same server, end to end, unpaced)")
    ax.grid(True, axis="y", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*kinds, *handles], fontsize=7.5, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    runs = sorted({int(r.get("runs", 1)) for r in rows})
    method = " | ".join(f"{r['key']}: {r['method']}" for r in rows)
    spread = SPREAD_NOTE.replace("the point", "the bar") if runs != [1] else "one run each"
    return finish(fig, "; ".join([method, spread, *methods, "ADR-002's 4,800 and 398,373 "
                                  "events/s (in-process) are in adr_vs_ours.png"]), right=0.7)


def _adr_cells(data: SweepData) -> list[list[str]]:
    ours = our_counterparts(data)
    cells = []
    for key in ADR_ROWS:
        claim, unit, claim_method = adr_claims()[key]
        mine = ours.get(key)
        if unit == "fraction":
            shown_claim = f"{claim * 100:.2f} %"
            shown = f"{min(1.0, mine[0]) * 100:.2f} %" if mine else "not measured"
        else:
            shown_claim = f"{number(claim)} {unit}"
            shown = f"{number(mine[0])} {unit}" if mine else "not measured"
        ratio = f"{number(mine[0] / claim)}x" if mine and claim else "-"
        cells.append([key.replace("_", " "), shown_claim, claim_method, shown,
                      mine[1] if mine else "the sweep did not measure it", ratio])
    return cells


def adr_figure(data: SweepData, baseline: SweepData | None) -> FigureResult:
    """ADR-002's claims and ours as a table: two blocks of columns, one per method."""
    cells = _adr_cells(data)
    columns = ((0.0, 17, "figure"), (0.13, 14, "claimed"), (0.245, 30, "how it was measured"),
               (0.5, 16, "measured"), (0.63, 36, "how it was measured"),
               (0.92, 9, "ours / ADR"))
    wrapped = [[textwrap.wrap(text, width) or [""] for text, (_, width, _) in
                zip(row, columns, strict=True)] for row in cells]
    heights = [max(len(cell) for cell in row) + 0.8 for row in wrapped]
    total = 3.2 + sum(heights)
    table_in = total * LINE_PT / 72.0
    top_in, bottom_in = 0.7, 0.55
    height = table_in + top_in + bottom_in
    fig = pyplot().figure(figsize=(12.5, height))
    fig.suptitle(f"ADR-002's figures ({ADR_NOTE}) beside ours (through Redis {data.version})",
                 fontsize=12, fontweight="bold")
    ax = fig.add_axes((0.01, bottom_in / height, 0.98, table_in / height))
    ax.set_xlim(0, 1)
    ax.set_ylim(total, 0)
    ax.axis("off")
    ax.add_patch(pyplot().Rectangle((0.125, 0), 0.36, total, color=ADR_COLOR, alpha=0.13))
    ax.add_patch(pyplot().Rectangle((0.495, 0), 0.42, total, color=OURS_COLOR, alpha=0.13))
    ax.text(0.305, 0.2, "ADR-002's claims: in-process (EventEmitter, JSON.stringify), no Redis",
            ha="center", va="top", fontsize=7.8, fontweight="bold", color="#8a4500")
    ax.text(0.705, 0.2, f"ours: end to end through a real Redis {data.version} server",
            ha="center", va="top", fontsize=8.5, fontweight="bold", color="#0b4f80")
    for x, _, name in columns:
        ax.text(x + 0.005, 1.6, name, ha="left", va="top", fontsize=8, fontweight="bold")
    y = 3.2
    for row, height in zip(wrapped, heights, strict=True):
        ax.axhline(y - 0.4, color="#bbbbbb", linewidth=0.6)
        for (x, _, _), lines in zip(columns, row, strict=True):
            ax.text(x + 0.005, y, "\n".join(lines), ha="left", va="top", fontsize=7.8,
                    linespacing=1.25)
        y += height
    method = ("each ADR-002 figure with the method the ADR used (its benchmark ran "
              "in-process: an EventEmitter and JSON.stringify, no Redis round trip) beside the "
              "sweep's measurement of the same quantity through a real Redis server, with our "
              "method; the two are not one scale, so they are a table, not bars; ours are "
              "medians of the sweep's runs; lower is better for latency, higher for the rest")
    wrapped_method = textwrap.fill("Method: " + method, width=int(fig.get_figwidth() * 19))
    fig.text(0.01, 0.01, wrapped_method, fontsize=6.3, va="bottom", ha="left", color="#333333")
    return fig, method
