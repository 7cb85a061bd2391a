"""The sweep's ``pytest-cfn/result`` document (tool ``sweep``): built by ``cfn bench``, read back
by ``cfn report``, so both draw from the same data.

* ``steps``: one row per harness run (:func:`pytest_cfn.measure.sweep.harness.step_row`), ``kind``
  ``load`` (the sweep at the offered rate, ``repeat`` 0..K-1 at each agent count) or ``probe``
  (the other connection model at a low rate, for its connection count), with its latency
  HdrHistogram encoded in ``latency_encoded``;
* ``metrics``: the gated and informative figures, one per (scope, name), each with its method;
  a load point's figures are the median of its K runs, with the runs' min and max (``low``,
  ``high``, ``runs``), and its verdicts say how many of the K runs met the target;
* ``extra``: the server's ceiling and round trip, the route cache sweep, the client models,
  the settings and ``maxclients``.

A single Locust harness result (tool ``locust``) is read as a sweep of one load step.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.results import Metric, RedisInfo, ResultFormatError, RunResult, judge
from pytest_cfn.measure.sweep.client_models import RAW_LAYOUT
from pytest_cfn.measure.sweep.harness import (
    LOAD,
    PROBE,
    latency_verdict,
    step_row,
    throughput_verdict,
)
from pytest_cfn.measure.sweep.harness import saturated as saturated
from pytest_cfn.measure.sweep.harness import saturation_text as saturation_text
from pytest_cfn.measure.targets import ADR_CONNECTION_TABLE, Targets

TOOL = "sweep"
LOAD_METHOD = (
    "Locust harness (loadtests/swarm.py) in a subprocess, its agents in one Locust worker "
    "process: {agents} simulated agents ({model} model) in {swarms} swarms of 10, each "
    "publishing its role's mix at {rate:g} events/s on a constant-rate schedule (open model, "
    "a swarm's agents in the same round), every agent subscribed to its swarm (the mixes' "
    "event types and its inbox's sender swarm on exact channels, --cfn-channels exact); "
    "delivered = "
    "deliveries received inside a {window} s window, counted by delivery time whenever the "
    "event was meant to be sent, / window, each event counted once (a delivery weighs 1 / its "
    "swarm's subscribers)"
)
LATENCY_METHOD = (
    "handler receive time minus the event's intended send time (wall clock, one host), every "
    "delivery to every subscribing agent, HdrHistogram; {agents} agents, {model} model, "
    "{offered:,.0f} events/s offered"
)


def meets_throughput(row: dict[str, Any], target: float) -> bool:
    """Delivered events/s at least ``target``, at the resolution of the harness's count."""
    delivered = float(row.get("delivered_per_s") or 0.0)
    return delivered + float(row.get("delivered_resolution") or 0.0) >= target


SPREAD_KEYS = (
    "delivered_per_s", "sent_per_s", "deliveries_per_s", "message_deliveries_per_s", "loss",
    "loss_rate", "critical_loss", "late", "late_fraction", "p50_us", "p90_us", "p99_us",
    "p99_9_us", "max_us", "mean_us", "transit_p99_ms", "send_lag_p99_ms", "connections",
    "harness_cpu_percent", "server_cpu_percent", "cache_hit_rate", "window_s",
)
"""The figures of a load point that are given as the median of its runs with their min-max."""


def late_deliveries(row: dict[str, Any], limit_ms: float) -> tuple[int, float] | None:
    """Deliveries slower than ``limit_ms`` in one run's histogram: (count, fraction)."""
    encoded = row.get("latency_encoded")
    if not encoded:
        return None
    histogram = LatencyHistogram.decode(encoded)
    total = histogram.count
    if not total:
        return None
    within = 0.0
    for value_us, fraction in histogram.cdf(1 << 20):
        if value_us > limit_ms * 1000.0:
            break
        within = fraction
    late = round((1.0 - within) * total)
    return late, late / total


def _with_late(row: dict[str, Any], limit_ms: float) -> dict[str, Any]:
    late = late_deliveries(row, limit_ms)
    if late is None:
        return row
    return {**row, "late": float(late[0]), "late_fraction": late[1]}


def combine_runs(runs: list[dict[str, Any]], targets: Targets | None = None) -> dict[str, Any]:
    """One load point from its K runs: the median of each figure of :data:`SPREAD_KEYS`, its
    ``spread`` (min, max), ``runs`` K, and ``met``: how many runs met each target."""
    targets = targets or Targets()
    runs = [_with_late(r, targets.max_p99_ms) for r in runs]
    if not runs:
        raise ValueError("combine_runs needs at least one run")
    middle = sorted(runs, key=lambda r: float(r.get("delivered_per_s") or 0.0))[
        (len(runs) - 1) // 2]
    out = dict(middle)
    spread: dict[str, list[float]] = {}
    for key in SPREAD_KEYS:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        if not values:
            continue
        out[key] = statistics.median(values)
        spread[key] = [min(values), max(values)]
    out["spread"] = spread
    out["runs"] = len(runs)
    out["run_histograms"] = [r["latency_encoded"] for r in runs if r.get("latency_encoded")]
    out["latency_count"] = int(statistics.median(int(r.get("latency_count") or 0) for r in runs))
    saturated_runs = sum(1 for r in runs if saturated(r))
    out["saturated_runs"] = saturated_runs
    out["generator_saturated"] = saturated_runs * 2 > len(runs)
    out["met"] = {
        "throughput": sum(1 for r in runs if meets_throughput(r, targets.min_throughput)),
        "p99": sum(1 for r in runs if r.get("latency_count")
                   and float(r.get("p99_us") or 0.0) / 1000.0 <= targets.max_p99_ms),
    }
    return out


def combine_loads(rows: list[dict[str, Any]], targets: Targets | None = None
                  ) -> list[dict[str, Any]]:
    """The ok load rows grouped by (model, agents), each group as :func:`combine_runs`."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("kind") == LOAD:
            groups.setdefault((row["model"], row["agents"]), []).append(row)
    return [combine_runs(runs, targets) for _, runs in sorted(groups.items(),
                                                             key=lambda kv: kv[0][1])]


def _spread(row: dict[str, Any], key: str, scale: float = 1.0) -> dict[str, Any]:
    """``low``/``high``/``runs`` of a metric from the row's spread, for :class:`Metric`."""
    low_high = row.get("spread", {}).get(key)
    if low_high is None:
        return {}
    return {"low": low_high[0] * scale, "high": low_high[1] * scale,
            "runs": int(row.get("runs", 1))}


def runs_text(row: dict[str, Any], target: str) -> str:
    """``median of 3 runs; 2 of 3 met the target`` for one target of a load point."""
    runs = int(row.get("runs", 1))
    met = row.get("met", {}).get(target)
    if runs <= 1 or met is None:
        return "one run"
    return f"median of {runs} runs; {met} of {runs} met the target"


def tail_reference(extra: dict[str, Any]) -> float | None:
    """The same run's yardstick for latency tails: the mean delivery p99 (ms) of the
    calibration's base runs (the harness at 10 agents through the proxy's base delay, first
    and last in the calibration); None without a calibration that measured them all."""
    runs = (extra.get("calibration") or {}).get("runs") or []
    bases = [r for r in runs if r.get("injected_ms") == 0.0]
    values = [float(r["p99_ms"]) for r in bases if r.get("p99_ms")]
    return sum(values) / len(values) if values and len(values) == len(bases) else None


TAIL_REFERENCE_METHOD = (
    "judged against a baseline with its ratio to the same run's tail yardstick, the "
    "calibration's base runs' delivery p99 ({reference:.3f} ms: the same harness at 10 agents, "
    "measured minutes apart): a tail tracks how noisy the machine is that day"
)


def _load_metrics(
    row: dict[str, Any], targets: Targets, tail_ref: float | None = None
) -> list[Metric]:
    """The figures of one load point (the median of its runs, with their min-max); the
    latency tails carry ``tail_ref`` (see :func:`tail_reference`) as their reference."""
    scope = f"{row['model']} model, {row['agents']} agents"
    method = LOAD_METHOD.format(
        agents=row["agents"], model=row["model"], swarms=row["swarms"], rate=row["agent_rate"],
        window=f"{row['window_s']:.1f}",
    )
    judged = row["offered"] >= targets.min_throughput
    throughput, why = throughput_verdict(row, targets.min_throughput)
    throughput_method = f"{method}; {runs_text(row, 'throughput')}" + (f"; {why}" if why else "")
    delivered = float(row.get("delivered_per_s") or 0.0)
    resolution = float(row.get("delivered_resolution") or 0.0)
    if judged and resolution:
        throughput_method += f"; judged at the count's resolution, +/- {resolution:,.1f} events/s"
    if saturated(row):
        throughput_method += (
            f"; {saturation_text(row)} at the window's end: the figure is the generator's "
            "limit, not Redis's"
        )
    latency = {k: row.get(k) for k in ("latency_count", "p50_us", "p90_us", "p99_us",
                                        "p99_9_us", "max_us", "mean_us")}
    latency["count"] = latency.pop("latency_count")
    latency_method = LATENCY_METHOD.format(
        agents=row["agents"], model=row["model"], offered=row["offered"]
    ) + f"; {runs_text(row, 'p99')}"
    p99_ms = float(row.get("p99_us") or 0.0) / 1000.0
    has_latency = bool(row.get("latency_count"))
    p99_verdict, p99_why = latency_verdict(row, p99_ms, targets.max_p99_ms)
    if p99_why:
        latency_method += f"; {p99_why}"
    if tail_ref:
        latency_method += "; " + TAIL_REFERENCE_METHOD.format(reference=tail_ref)
    metrics = [
        Metric(
            name="delivered_events_per_s", value=delivered, unit="events/s",
            method=throughput_method,
            target=targets.min_throughput if judged else None, op=">=" if judged else None,
            verdict=throughput, scope=scope, **_spread(row, "delivered_per_s"),
        ),
        Metric(
            name="delivery_p99", value=p99_ms, unit="ms", method=latency_method,
            target=targets.max_p99_ms, op="<=",
            verdict=p99_verdict,
            better="lower", scope=scope, latency=latency if has_latency else None,
            reference=tail_ref, **_spread(row, "p99_us", 1e-3),
        ),
    ]
    for name, key in (("delivery_p50", "p50_us"), ("delivery_p99_9", "p99_9_us")):
        tail = tail_ref if key == "p99_9_us" else None
        metrics.append(Metric(
            name=name, value=float(row.get(key) or 0.0) / 1000.0, unit="ms",
            method="the same deliveries as delivery_p99" + (
                "; " + TAIL_REFERENCE_METHOD.format(reference=tail) if tail else ""),
            better="lower", scope=scope, reference=tail, **_spread(row, key, 1e-3),
        ))
    metrics += [
        Metric(name="loss_rate", value=float(row["loss_rate"] or 0.0), unit="fraction",
               method="expected deliveries (measured events x on-time subscribers of their "
               "swarm) minus received, / expected", better="lower", scope=scope,
               **_spread(row, "loss_rate")),
        Metric(name="critical_loss", value=float(row.get("critical_loss") or 0.0),
               unit="deliveries", target=float(targets.max_critical_loss), op="<=",
               verdict="not-judged" if saturated(row) else judge(
                   float(row.get("critical_loss") or 0.0), float(targets.max_critical_loss), "<="),
               method="priority 8-9 deliveries expected minus received by the end of the drain "
               "(critical events are replayed from the swarm's stream)", better="lower",
               scope=scope, **_spread(row, "critical_loss")),
        Metric(name="cache_hit_rate", value=float(row["cache_hit_rate"] or 0.0),
               unit="fraction", target=targets.min_cache_hit_rate, op=">=",
               verdict=judge(float(row["cache_hit_rate"] or 0.0), targets.min_cache_hit_rate,
                             ">="),
               method="route cache hits / lookups of every bus over the harness's traffic "
               "(10,000-entry cache)", scope=scope, **_spread(row, "cache_hit_rate")),
        _connections_metric(row, scope),
    ]
    if row.get("late_fraction") is not None:
        metrics.append(Metric(
            name="late_fraction", value=float(row["late_fraction"]), unit="fraction",
            method=f"deliveries slower than the {targets.max_p99_ms:g} ms target / all "
            "deliveries, from the same histogram as delivery_p99", better="lower", scope=scope,
            **_spread(row, "late_fraction"),
        ))
    if saturated(row):
        # Behind its schedule, the generator's backlog is in every latency: those are not
        # compared. What it delivered is still what the harness and the bus sustained.
        for metric in metrics:
            if metric.unit == "ms" or metric.name == "late_fraction":
                metric.role = "saturated"
    return metrics

def _connections_metric(row: dict[str, Any], scope: str) -> Metric:
    adr = ADR_CONNECTION_TABLE.get(row["agents"], 4 * row["agents"])
    return Metric(
        name="connections", value=float(row["connections"]), unit="connections",
        method=f"peak connections of the run's namespace in CLIENT LIST ({row['model']} "
        f"model); ADR-002's table: {adr:,} for {row['agents']} agents; a count, exact in "
        "each run", better="lower", scope=scope,
        **(_spread(row, "connections") or {"low": float(row["connections"]),
                                           "high": float(row["connections"])}),
    )


def _model_spread(row: dict[str, Any]) -> dict[str, Any]:
    if int(row.get("runs", 1)) <= 1:
        return {}
    return {"low": float(row["rate_low"]), "high": float(row["rate_high"]),
            "runs": int(row["runs"])}


def _reference_metrics(extra: dict[str, Any]) -> list[Metric]:
    metrics = []
    for entry in extra.get("ceiling", []):
        metrics.append(Metric(
            name=f"redis_benchmark_publish_p{entry['pipeline']}", value=float(entry["rate"]),
            unit="requests/s", method=f"{entry['command']}: {entry['method']}",
            scope="server", role="reference",
        ))
    trip = extra.get("round_trip")
    if trip:
        for key in ("p50", "p99"):
            metrics.append(Metric(
                name=f"publish_round_trip_{key}", value=float(trip[f"{key}_us"]) / 1000.0,
                unit="ms", method=trip["method"], better="lower", scope="server",
                role="reference",
            ))
    cache = extra.get("cache")
    if cache:
        for row in cache["rows"]:
            metrics.append(Metric(
                name=f"hit_rate_{row['size']}", value=float(row["hit_rate"]),
                unit="fraction", scope=f"route cache, {row['workload']} workload",
                method=f"{row['description']}; {cache['method']}; ADR-002 claims "
                f"{cache['adr_claimed'][str(row['size'])] * 100:g} % (in-process, no Redis); "
                "a seeded workload: the count is exact, its spread nil",
                low=float(row["hit_rate"]), high=float(row["hit_rate"]),
            ))
    calibration = extra.get("calibration") or {}
    for shift in calibration.get("shifts", []):
        metrics.append(Metric(
            name=f"calibration_shift_{shift['injected_ms']:g}ms", value=shift["measured_ms"],
            unit="ms", better="lower", scope="calibration", role="reference",
            method=f"delivery p50 shift measured for +{shift['injected_ms']:g} ms injected "
            f"({shift['error_pct']:+.1f} %); {calibration.get('method', '')}",
        ))
    ceiling = next((float(e["rate"]) for e in extra.get("ceiling", [])
                    if e.get("pipeline") == 1), None)
    for row in extra.get("client_models", []):
        library = row["key"] != RAW_LAYOUT and row["key"] != "single-wait"
        ratio = row.get("vs_raw") is not None and int(row.get("runs", 1)) > 1
        judged_by_ratio = library and ratio
        metrics.append(Metric(
            name=f"{row['key']}_events_per_s", value=float(row["rate"]), unit="events/s",
            method=row["method"] + ("; a wall-clock rate of an unpaced run tracks the machine's "
                                    f"load: judged through its ratio to {RAW_LAYOUT} of the "
                                    "same pass" if judged_by_ratio else
                                    "; a layout without the library: a yardstick, not judged"
                                    if not library else
                                    "; judged against a baseline as a ratio to redis-benchmark "
                                    "PUBLISH -P 1 of the same run" if ceiling else ""),
            scope="client models",
            role="reference" if judged_by_ratio or not library else "figure",
            reference=None if int(row.get("runs", 1)) > 1 else ceiling,
            **_model_spread(row),
        ))
        if judged_by_ratio:
            metrics.append(Metric(
                name=f"{row['key']}_vs_raw", value=float(row["vs_raw"]), unit="ratio",
                method=f"this layout's delivered events/s / {RAW_LAYOUT}'s (a raw connection "
                "without the library) in the same pass, median of the passes with their "
                "min-max: what the library makes of what the machine and the server gave at "
                "that moment", scope="client models", low=float(row["vs_raw_low"]),
                high=float(row["vs_raw_high"]), runs=int(row["runs"]),
            ))
    return metrics


def build_result(
    rows: list[dict[str, Any]],
    *,
    redis: RedisInfo,
    machine: dict[str, Any],
    extra: dict[str, Any],
    targets: Targets | None = None,
) -> RunResult:
    """The sweep's document from its step rows and reference measurements."""
    targets = targets or Targets()
    metrics: list[Metric] = []
    tail_ref = tail_reference(extra)
    for point in combine_loads(rows, targets):
        metrics += _load_metrics(point, targets, tail_ref)
    for row in rows:
        if row.get("status") == "ok" and row["kind"] == PROBE:
            metrics.append(_connections_metric(
                row, f"{row['model']} model, {row['agents']} agents (connection probe)"
            ))
    metrics += _reference_metrics(extra)
    return RunResult(tool=TOOL, redis=redis, machine=machine, metrics=metrics, steps=rows,
                     extra=extra)


@dataclass
class SweepData:
    """A sweep document as the figures and the summary read it."""

    result: RunResult
    loads: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: RunResult, source: str = "result") -> SweepData:
        if result.tool == "locust":
            row = step_row(result)
            result = build_result([row], redis=result.redis, machine=result.machine,
                                  extra={"settings": {"from": "one Locust harness run"}})
            result.created = result.created or ""
        elif result.tool != TOOL:
            raise ResultFormatError(
                f"{source} holds a {result.tool!r} result; cfn report draws the results of "
                "cfn bench (tool 'sweep') and of the Locust harness (tool 'locust')"
            )
        ok = [r for r in result.steps if r.get("status") == "ok"]
        return cls(
            result=result,
            loads=combine_loads(result.steps),
            probes=sorted((r for r in ok if r.get("kind") == PROBE), key=lambda r: r["agents"]),
            failed=[r for r in result.steps if r.get("status") != "ok"],
            extra=dict(result.extra),
        )

    @property
    def ceiling(self) -> list[dict[str, Any]]:
        return list(self.extra.get("ceiling", []))

    @property
    def round_trip(self) -> dict[str, Any] | None:
        trip = self.extra.get("round_trip")
        return dict(trip) if trip else None

    @property
    def cache(self) -> dict[str, Any] | None:
        cache = self.extra.get("cache")
        return dict(cache) if cache else None

    @property
    def client_models(self) -> list[dict[str, Any]]:
        return list(self.extra.get("client_models", []))

    @property
    def maxclients(self) -> int | None:
        value = self.extra.get("maxclients")
        return int(value) if value else None

    @property
    def version(self) -> str:
        """The server's version, as labels show it ("7.0.15 Cluster (3 masters)" on one)."""
        version = self.result.redis.version or "unknown"
        cluster = self.extra.get("cluster")
        return f"{version} Cluster ({cluster['masters']} masters)" if cluster else version

    def cdf_step(self, agents: int = 100) -> dict[str, Any] | None:
        """The load step with a histogram nearest to ``agents`` agents."""
        rows = [r for r in self.loads if r.get("latency_encoded")]
        if not rows:
            return None
        return min(rows, key=lambda r: (abs(r["agents"] - agents), r["agents"]))

    @staticmethod
    def histogram(row: dict[str, Any]) -> LatencyHistogram | None:
        encoded = row.get("latency_encoded")
        return LatencyHistogram.decode(encoded) if encoded else None
