"""The summary page of a sweep: ``summary.md`` and a self-contained ``summary.html`` (figures
inline as base64 PNG), built from one list of blocks so the two say the same thing; and the
summary table as plain text for the terminal.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_cfn.measure.calibration.calibrate import SHIFT_TOLERANCE
from pytest_cfn.measure.drawing.load_figures import draw_all
from pytest_cfn.measure.drawing.style import DrawnFigure
from pytest_cfn.measure.results import REGRESSION_RULE, Regression, compare
from pytest_cfn.measure.sweep.adr import adr_claims, number, our_counterparts
from pytest_cfn.measure.sweep.cache_sweep import ADR_CLAIMED, CACHE_SIZES, WORKLOADS
from pytest_cfn.measure.sweep.document import LOAD_METHOD, SweepData, saturated
from pytest_cfn.measure.sweep.harness import latency_verdict, throughput_verdict
from pytest_cfn.measure.targets import ADR_CONNECTION_TABLE, Targets


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    figure: DrawnFigure


Block = tuple[str, Any]
"""("h2" | "h3" | "p", text), ("table", Table) or ("image", Image)."""


def _ms(us: float | None) -> str:
    if us is None:
        return "-"
    ms = us / 1000.0
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.2f}"


def _verdict(verdict: str) -> str:
    return {"pass": "PASS", "fail": "FAIL", "not-judged": "not judged"}.get(verdict, verdict)


def _range(row: dict[str, Any], key: str, fmt: Callable[[float], str]) -> str:
    """``median (min-max)`` of a load point's figure; just the value for a single run."""
    value = row.get(key)
    if value is None:
        return "-"
    shown = fmt(value)
    low_high = row.get("spread", {}).get(key)
    if int(row.get("runs", 1)) > 1 and low_high is not None and low_high[0] != low_high[1]:
        shown += f" ({fmt(low_high[0])}-{fmt(low_high[1])})"
    return shown


def _met(row: dict[str, Any], target: str, verdict: str) -> str:
    runs = int(row.get("runs", 1))
    met = row.get("met", {}).get(target)
    shown = _verdict(verdict)
    judged = verdict in ("pass", "fail")
    return f"{shown} ({met}/{runs} runs)" if judged and runs > 1 and met is not None else shown


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _pct(value: float) -> str:
    return f"{value * 100:.2f} %"


def load_table(data: SweepData) -> Table:
    """One row per load point: what was offered, delivered, how fast, and against which target;
    the median of the point's runs, with the runs' min-max in brackets."""
    targets = Targets()
    rows = []
    for r in data.loads:
        p99_ms = (r.get("p99_us") or 0.0) / 1000.0
        shown = _range(r, "delivered_per_s", _count)
        if saturated(r):
            shown += " (generator limit)"
        late = "-" if r.get("late_fraction") is None else _range(r, "late_fraction", _pct)
        rows.append([
            str(r["agents"]), r["model"], str(r.get("runs", 1)), f"{r['offered']:,.0f}", shown,
            _met(r, "throughput", throughput_verdict(r, targets.min_throughput)[0]),
            _range(r, "p50_us", _ms), _range(r, "p99_us", _ms), _range(r, "p99_9_us", _ms),
            _met(r, "p99", latency_verdict(r, p99_ms, targets.max_p99_ms)[0]),
            _range(r, "loss_rate", _pct)
            + (f" ({int(r['arrived_late']):,} after the drain)" if r.get("arrived_late") else ""),
            _range(r, "critical_loss", _count),
            late,
            _ms((r.get("send_lag_p99_ms") or 0.0) * 1000),
            _ms((r.get("transit_p99_ms") or 0.0) * 1000),
            f"{r['connections']:,.0f}",
        ])
    return Table(
        ["agents", "model", "runs", "offered ev/s", "delivered ev/s", ">= 10k", "p50 ms",
         "p99 ms", "p99.9 ms", "p99 <= 1 ms", "loss", "critical lost",
         f"late (> {targets.max_p99_ms:g} ms)", "send lag p99 ms", "transit p99 ms",
         "connections"],
        rows,
    )


def calibration_table(calibration: dict[str, Any]) -> Table:
    """Injected vs measured: each delay's p50 shift and the dropped events' reported loss."""
    rows = []
    for shift in calibration.get("shifts", []):
        rows.append([f"one-way delay +{shift['injected_ms']:g} ms",
                     f"{shift.get('applied_ms', shift['injected_ms']):.3f} ms held",
                     f"{shift['measured_ms']:.3f} ms p50 shift on the delivery path"
                     + (f" ({shift['raw_shift_ms']:.3f} ms in all, "
                        f"{shift['upstream_change_ms']:+.3f} ms before the proxy)"
                        if "raw_shift_ms" in shift else ""),
                     f"{shift['error_pct']:+.1f} %", f"+/- {SHIFT_TOLERANCE * 100:g} %",
                     "OK" if shift["ok"] else "OUT OF BOUND"])
    loss = calibration.get("loss")
    if loss:
        subscribers = int(loss.get("subscribers", 1))
        expected = loss["injected"] * subscribers
        rows.append([f"{loss['asked']} events dropped on one subscriber connection "
                     f"({subscribers} agent(s) behind it)",
                     f"{loss['injected']} events = {expected:,} deliveries",
                     f"{loss['reported_loss']:,.0f} lost deliveries, "
                     f"{loss.get('worst_subscriber_loss') or 0:,.0f} events per subscriber "
                     f"(bus sequence gaps {loss.get('bus_lost') or 0:,.0f})",
                     f"{loss['reported_loss'] - expected:+,.0f}", "exact",
                     "OK" if loss["ok"] else "MISMATCH"])
    for run in calibration.get("runs", []):
        if "error" in run:
            rows.append([f"+{run['injected_ms']:g} ms run", "-", run["error"], "-", "-",
                         "FAILED"])
    return Table(["injected fault", "injected", "measured", "error", "bound", "verdict"], rows)


def _probe_table(data: SweepData) -> Table:
    maxclients = data.maxclients
    rows = []
    for r in data.probes + data.loads:
        roles = ", ".join(f"{k} {v}" for k, v in sorted(r["connections_by_role"].items()))
        # On Redis Cluster each master holds its own clients: the fullest one is judged.
        by_node = r.get("connections_by_node") or {}
        held = max(by_node.values()) if by_node else r["connections"]
        share = f"{held / maxclients * 100:.1f} %" if maxclients else "-"
        if by_node and maxclients:
            share += f" (fullest of {len(by_node)} masters)"
        rows.append([str(r["agents"]), r["model"], f"{r['connections']:,.0f}", roles,
                     f"{ADR_CONNECTION_TABLE.get(r['agents'], 4 * r['agents']):,}", share,
                     "CLIENT LIST peak, " + ("connection probe" if r["kind"] == "probe"
                                             else "load step")])
    return Table(["agents", "model", "connections", "by role", "ADR table", "of maxclients",
                  "method"], rows)


def _reference_table(data: SweepData) -> Table:
    rows = [[f"redis-benchmark {e.get('verb', 'PUBLISH')} -P {e['pipeline']}",
             f"{e['rate']:,.0f} /s", f"{e['command']}: {e['method']}"] for e in data.ceiling]
    trip = data.round_trip
    if trip:
        rows.append([f"{trip.get('verb', 'PUBLISH')} round trip p50 / p99",
                     f"{trip['p50_us']:,.1f} / {trip['p99_us']:,.1f} µs", trip["method"]])
    return Table(["server figure", "value", "method"], rows)


def _cache_table(cache: dict[str, Any]) -> Table:
    by = {(r["workload"], r["size"]): r for r in cache["rows"]}
    rows = []
    for size in CACHE_SIZES:
        row = [f"{size:,}" if size else "none", f"{ADR_CLAIMED[size] * 100:g} %"]
        for workload in WORKLOADS:
            got = by.get((workload, size))
            spread = (f" ({got['publish_rate_low']:,.0f}-{got['publish_rate_high']:,.0f})"
                      if got and int(got.get("runs", 1)) > 1 else "")
            row += ([f"{got['hit_rate'] * 100:.2f} %", f"{got['publish_rate']:,.0f}{spread}"]
                    if got else ["-", "-"])
        rows.append(row)
    return Table(["cache size", "ADR claim (in-process)", "hit rate, ADR workload",
                  "publish ev/s, ADR workload", "hit rate, many routes",
                  "publish ev/s, many routes"], rows)


def _models_table(data: SweepData) -> Table:
    return Table(
        ["layout", "connections", "delivered ev/s", "deliveries/s", "CPU µs/delivery", "method"],
        [[r["label"].replace("\n", " "), str(r["connections"]), f"{r['rate']:,.0f}" + (
            f" ({r['rate_low']:,.0f}-{r['rate_high']:,.0f})" if int(r.get("runs", 1)) > 1
            else ""),
          f"{r['deliveries_per_s']:,.0f}", f"{r['cpu_us_per_delivery']:.2f}", r["method"]]
         for r in data.client_models],
    )


def _adr_table(data: SweepData) -> Table:
    ours = our_counterparts(data)
    rows = []
    for key, (claim, unit, method) in adr_claims().items():
        value = ours.get(key)
        if unit == "fraction":
            shown_claim = f"{claim * 100:g} %"
            shown = f"{value[0] * 100:.2f} %" if value else "-"
        else:
            shown_claim = f"{number(claim)} {unit}"
            shown = f"{number(value[0])} {unit}" if value else "-"
        ours_method = f"{value[1]} (through Redis {data.version})" if value else "not measured"
        rows.append([key.replace("_", " "), shown_claim, method, shown, ours_method])
    return Table(["figure", "ADR-002", "ADR's method", "ours", "our method"], rows)


def comparison_table(regressions: list[Regression], max_pct: float) -> Table:
    """Every figure of both runs: the change, the rule that judged it and why."""
    return Table(
        ["scope", "metric", "baseline", "current", "change", "judged by", "why",
         f"regressed (> {max_pct:g} % and outside the noise)"],
        [[r.scope, r.name, f"{r.baseline:,.4g}", f"{r.current:,.4g}", f"{r.change_pct:+.1f} %",
          r.rule, r.detail, "REGRESSED" if r.regressed else ""] for r in regressions],
    )


def build_blocks(
    data: SweepData,
    figures: list[DrawnFigure],
    baseline: SweepData | None = None,
    regressions: list[Regression] | None = None,
    max_regression_pct: float = 10.0,
) -> list[Block]:
    result = data.result
    machine = result.machine
    settings = data.extra.get("settings", {})
    blocks: list[Block] = [("h1", "CFN agent sweep against ADR-002")]
    facts = (
        f"Created {result.created or 'unknown'}; Redis {data.version} "
        f"({'embedded' if result.redis.embedded else result.redis.url or 'external'}); "
        f"{machine.get('cpu_usable', '?')} CPUs usable ({machine.get('cpu_model', '?')}), "
        f"load average {machine.get('load_average', '?')}; Python "
        f"{machine.get('python_version', '?')}; wall time {data.extra.get('wall_s', '?')} s."
    )
    blocks.append(("p", facts))
    cluster = data.extra.get("cluster")
    if cluster:
        blocks.append(("p", f"Ran on a Redis Cluster of {cluster['masters']} masters, given the "
                            "URL of one node: sharded pub/sub (SPUBLISH / SSUBSCRIBE of each "
                            "swarm's shard channel on the master of its slot) for our bus and "
                            "the references alike; server CPU is summed over the "
                            f"{cluster['masters']} masters and connections are counted on "
                            "every master."))
    if settings:
        blocks.append(("p", "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items())))
    blocks.append(("p", "Every figure here was measured end to end through a real Redis server. "
                        "ADR-002's own figures were measured in-process, without Redis; they "
                        "are shown beside ours with their method, never as our result."))
    blocks += [("h2", "Summary: the sweep"), ("table", load_table(data))]
    if data.loads:
        first = data.loads[0]
        blocks.append(("p", "Each row is one load point: the median of its runs (the runs' "
                            "min-max in brackets); the verdicts judge the median and say how "
                            "many of the runs met the target. Critical lost: priority 8-9 "
                            "deliveries missing at the end of the drain. Late: deliveries "
                            f"slower than the {Targets().max_p99_ms:g} ms target, from the "
                            "latency histogram. Method: " + LOAD_METHOD.format(
                                agents="N", model=first["model"], swarms="N/10",
                                rate=first["agent_rate"], window=f"{first['window_s']:.1f}")))
    blocks.append(("p", "Delivered events/s counts deliveries by their delivery time inside "
                        "each step's window, each event once, whenever it was meant to be sent: "
                        "what was really sustained. The >= 10k verdict allows for the count's "
                        "resolution, about one event per agent over the window."))
    blocks.append(("p", "Latency is measured from each event's intended send time, so it "
                        "includes the load generator's own lateness (send lag: actual publish "
                        "minus intended time) as well as the transit (handler receive time minus "
                        "the actual publish time); both p99s are in the table."))
    if any(saturated(r) for r in data.loads):
        blocks.append(("p", "'generator limit': the load generator (the Locust processes) was "
                            "the limit of the step: its send lag p99 over the harness's limit, "
                            "its agents behind schedule at the window's end, or a process at "
                            "95 % of a core (see the step's note). Delivered events are counted "
                            "by their delivery time inside the window, so the figure is what "
                            "was really sustained, but it is the generator's limit, not Redis's: "
                            "the >= 10k and p99 verdicts say 'not judged'. 'n/a': the step "
                            "offers less than the target. A step with lost deliveries, or "
                            "deliveries that arrived after the drain, never passes >= 10k."))
    calibration = data.extra.get("calibration")
    if calibration:
        blocks += [("h2", "The instrument's calibration (same run)"),
                   ("table", calibration_table(calibration)),
                   ("p", "Method: " + str(calibration.get("method", "")))]
    not_calibrated = (data.extra.get("not_measured") or {}).get("calibration")
    if not_calibrated:
        blocks += [("h2", "The instrument's calibration"), ("p", str(not_calibrated))]
    if data.loads or data.probes:
        blocks += [("h2", "Connections"), ("table", _probe_table(data))]
    if data.ceiling or data.round_trip:
        blocks += [("h2", "The server's own figures (same server, same run)"),
                   ("table", _reference_table(data))]
    if data.cache:
        blocks += [("h2", "Route cache"), ("table", _cache_table(data.cache)),
                   ("p", "Method: " + data.cache["method"])]
    if data.client_models:
        blocks += [("h2", "Client models"), ("table", _models_table(data))]
    blocks += [("h2", "ADR-002's figures beside ours"), ("table", _adr_table(data))]
    if regressions is not None and baseline is not None:
        blocks += [("h2", f"Compared with the baseline ({baseline.result.created or '?'})"),
                   ("p", REGRESSION_RULE),
                   ("table", comparison_table(regressions, max_regression_pct))]
    blocks.append(("h2", "Figures"))
    blocks += [("image", Image(figure)) for figure in figures]
    notes = [f"{r['agents']} agents ({r['kind']}): {note}" for r in data.loads + data.probes
             for note in r.get("notes", [])]
    notes += [f"{r.get('kind')} step, {r.get('agents')} agents: "
              f"{str(r.get('error', 'failed')).splitlines()[0]}" for r in data.failed]
    notes += list(data.extra.get("failures", [])) + list(data.extra.get("notes", []))
    if notes:
        blocks += [("h2", "Notes and failed steps"), ("p", "\n".join(dict.fromkeys(notes)))]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {value}\n")
        elif kind == "p":
            out.append("\n".join(f"{line}  " for line in str(value).splitlines()) + "\n")
        elif kind == "table":
            out.append("| " + " | ".join(_md_cell(h) for h in value.headers) + " |")
            out.append("|" + "---|" * len(value.headers))
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in value.rows)
            out.append("")
        elif kind == "image":
            figure = value.figure
            out.append(f"### {figure.title}\n\n![{figure.title}]({figure.path.name})\n\n"
                       f"Method: {figure.method}\n")
    return "\n".join(out)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #ddd}.method{font-size:12px;color:#444}"""


def render_html(blocks: list[Block]) -> str:
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           "<title>CFN agent sweep against ADR-002</title>", f"<style>{_STYLE}</style>",
           "</head><body>"]
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(str(value))}</{kind}>")
        elif kind == "p":
            out.append("<p>" + "<br>".join(html.escape(line) for line in
                                            str(value).splitlines()) + "</p>")
        elif kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                               for h in value.headers) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in value.rows)
            out.append("</table>")
        elif kind == "image":
            figure = value.figure
            encoded = base64.b64encode(figure.path.read_bytes()).decode("ascii")
            out.append(f"<h3>{html.escape(figure.title)}</h3>")
            out.append(f"<img alt='{html.escape(figure.title)}: method printed under the "
                       f"figure' src='data:image/png;base64,{encoded}'>")
    out.append("</body></html>")
    return "\n".join(out)


def render_text(table: Table, leave_out: tuple[str, ...] = ("method",)) -> str:
    """A table as aligned plain text (the method column left out: it is in the page)."""
    keep = [i for i, h in enumerate(table.headers) if h not in leave_out]
    rows = [[table.headers[i] for i in keep]] + [[row[i] for i in keep] for row in table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(keep))]
    lines = ["  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i])
                       for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


@dataclass
class WrittenReport:
    figures: list[DrawnFigure]
    markdown: Path
    html: Path
    regressions: list[Regression] | None


def write_report(
    data: SweepData,
    out: Path,
    baseline: SweepData | None = None,
    max_regression_pct: float = 10.0,
) -> WrittenReport:
    """Figures, ``summary.md`` and ``summary.html`` into ``out``."""
    figures = draw_all(data, out, baseline)
    regressions = (compare(baseline.result, data.result, max_regression_pct)
                   if baseline is not None else None)
    blocks = build_blocks(data, figures, baseline, regressions, max_regression_pct)
    markdown = out / "summary.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page = out / "summary.html"
    page.write_text(render_html(blocks), encoding="utf-8")
    return WrittenReport(figures, markdown, page, regressions)
