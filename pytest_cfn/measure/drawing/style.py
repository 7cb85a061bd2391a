"""What every figure of the report shares: matplotlib (Agg) on demand, colours, layout with the
method printed under the figure, value labels that no line crosses, and the runs' spread drawn
as error bars."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_cfn._errors import CfnError

TARGET_COLOR = "#c0392b"
CEILING_COLOR = "#7d3c98"
ADR_COLOR = "#e67e22"
OURS_COLOR = "#1f77b4"
ALT_COLOR = "#2ca02c"
FLOOR_COLOR = "#7f7f7f"
ADR_NOTE = "in-process, no Redis"
SPREAD_NOTE = "error bars: min-max of the runs, the point their median"


class ReportDependencyError(CfnError):
    """matplotlib, needed to draw the report, is not installed."""


def pyplot() -> Any:
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


def new_figure(title: str, panels: int = 1, width: float = 12.5,
               height: float = 6.2) -> tuple[Any, Any]:
    fig, axes = pyplot().subplots(1, panels, figsize=(width, height))
    fig.suptitle(title, fontsize=12, fontweight="bold")
    return fig, axes


def finish(fig: Any, method: str, right: float = 0.98, top: float = 0.9,
           left: float = 0.07) -> tuple[Any, str]:
    """Lay the figure out and print its method under it."""
    wrapped = textwrap.fill("Method: " + method, width=int(fig.get_figwidth() * 19))
    lines = wrapped.count("\n") + 1
    inches = fig.get_figheight()
    bottom = (0.75 + 0.11 * lines) / inches
    fig.subplots_adjust(bottom=bottom, top=top, left=left, right=right, wspace=0.28)
    place_labels(fig)
    fig.text(0.01, 0.008, wrapped, fontsize=6.3, va="bottom", ha="left", color="#333333")
    return fig, method


def legend_outside(ax: Any) -> None:
    """The legend outside the axes, on the right, so it never hides a point."""
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def label(ax: Any, x: float, y: float, text: str, offset: tuple[float, float] = (7, -13),
          color: str = "black", ha: str = "left", size: float = 7.5) -> None:
    """A value label, placed by :func:`finish` once the axes' limits are final: above or below
    its point, whichever keeps it off every horizontal line, on an opaque box above the other
    lines, so no line crosses it."""
    pending = getattr(ax, "_cfn_labels", None)
    if pending is None:
        pending = []
        ax._cfn_labels = pending
    pending.append((x, y, text, offset, color, ha, size))


def _horizontal_lines(ax: Any) -> list[float]:
    """Display y of every axhline of ``ax`` (x data [0, 1] in axes coordinates)."""
    out = []
    for line in ax.get_lines():
        xs, ys = list(line.get_xdata()), list(line.get_ydata())
        if len(ys) == 2 and ys[0] == ys[1] and xs == [0, 1]:
            out.append(float(ax.transData.transform((1.0, ys[0]))[1]))
    return out


def place_labels(fig: Any) -> None:
    """Draw the labels :func:`label` collected, each clear of the horizontal lines."""
    scale = fig.dpi / 72.0
    for ax in fig.axes:
        pending = getattr(ax, "_cfn_labels", [])
        lines = _horizontal_lines(ax)
        for x, y, text, (dx, dy), color, ha, size in pending:
            py = float(ax.transData.transform((x, y))[1])
            half = (size * 0.75 + 3) * scale
            choice = (dx, dy)
            for candidate in ((dx, dy), (dx, -dy), (dx, 2 * dy), (dx, -2 * dy), (dx, 3 * dy)):
                centre = py + candidate[1] * scale
                if all(abs(centre - line) > half for line in lines):
                    choice = candidate
                    break
            ax.annotate(text, (x, y), textcoords="offset points", xytext=choice,
                        fontsize=size, color=color, ha=ha, va="center", zorder=10,
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                              "edgecolor": "none", "alpha": 0.9})
        pending.clear()


def agent_axis(ax: Any, agents: Sequence[int]) -> None:
    """A log axis of agent counts with room on both sides for the labels."""
    shown = sorted(set(agents))
    ax.set_xscale("log")
    ax.set_xticks(shown)
    ax.set_xticklabels([str(n) for n in shown])
    ax.minorticks_off()
    ax.set_xlim(shown[0] / 1.35, shown[-1] * 1.9)
    ax.set_xlabel("simulated agents")
    ax.grid(True, which="major", alpha=0.3)


def spread_of(rows: Sequence[dict[str, Any]], key: str,
              scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    """(medians, [below, above]) of ``key`` over rows, for ``errorbar(yerr=...)``."""
    values, below, above = [], [], []
    for row in rows:
        value = float(row.get(key) or 0.0) * scale
        low, high = row.get("spread", {}).get(key, [value / scale, value / scale])
        values.append(value)
        below.append(max(0.0, value - float(low) * scale))
        above.append(max(0.0, float(high) * scale - value))
    return values, [below, above]


def draw_spread(ax: Any, xs: Sequence[float], rows: Sequence[dict[str, Any]], key: str,
                scale: float = 1.0, **style: Any) -> list[float]:
    """The rows' medians of ``key`` as a line with min-max error bars; returns the medians."""
    values, error = spread_of(rows, key, scale)
    ax.errorbar(list(xs), values, yerr=error, capsize=4, elinewidth=1.3, **style)
    return values


def runs_phrase(rows: Sequence[dict[str, Any]]) -> str:
    counts = sorted({int(r.get("runs", 1)) for r in rows})
    if counts == [1]:
        return "one run per point (no spread to draw: use --repeat 2 or more)"
    return f"median of {'/'.join(str(c) for c in counts)} runs per point; {SPREAD_NOTE}"


Drawer = Callable[..., FigureResult]
