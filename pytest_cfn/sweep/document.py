"""The sweep's ``pytest-cfn/result`` document (tool ``sweep``): built by ``cfn bench``, read back
by ``cfn report``, so both draw from the same data.

* ``steps``: one row per harness run (:func:`pytest_cfn.sweep.harness.step_row`), ``kind``
  ``load`` (the sweep at the offered rate) or ``probe`` (the per-agent model at a low rate,
  for its connection count), with its latency HdrHistogram encoded in ``latency_encoded``;
* ``metrics``: the gated and informative figures, one per (scope, name), each with its method;
* ``extra``: the server's ceiling and round trip, the route cache sweep, the client models,
  the settings and ``maxclients``.

A single Locust harness result (tool ``locust``) is read as a sweep of one load step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_cfn.metrics.latency import LatencyHistogram
from pytest_cfn.results import Metric, RedisInfo, ResultFormatError, RunResult, judge
from pytest_cfn.sweep.harness import (
    LOAD,
    PROBE,
    latency_verdict,
    step_row,
    throughput_verdict,
)
from pytest_cfn.sweep.harness import saturated as saturated
from pytest_cfn.sweep.harness import saturation_text as saturation_text
from pytest_cfn.targets import ADR_CONNECTION_TABLE, Targets

TOOL = "sweep"

LOAD_METHOD = (
    "Locust harness (loadtests/swarm.py) in a subprocess: {agents} simulated agents ({model} "
    "model) in {swarms} swarms of 10, each publishing its role's mix at {rate:g} events/s on a "
    "constant-rate schedule (open model), every agent subscribed to its swarm; delivered = "
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


def _load_metrics(row: dict[str, Any], targets: Targets) -> list[Metric]:
    scope = f"{row['model']} model, {row['agents']} agents"
    method = LOAD_METHOD.format(
        agents=row["agents"], model=row["model"], swarms=row["swarms"], rate=row["agent_rate"],
        window=f"{row['window_s']:.1f}",
    )
    judged = row["offered"] >= targets.min_throughput
    throughput, why = throughput_verdict(row, targets.min_throughput)
    throughput_method = method + (f"; {why}" if why else "")
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
    )
    p99_ms = float(row.get("p99_us") or 0.0) / 1000.0
    has_latency = bool(row.get("latency_count"))
    p99_verdict, p99_why = latency_verdict(row, p99_ms, targets.max_p99_ms)
    metrics = [
        Metric(
            name="delivered_events_per_s", value=delivered, unit="events/s",
            method=throughput_method,
            target=targets.min_throughput if judged else None, op=">=" if judged else None,
            verdict=throughput, scope=scope,
        ),
        Metric(
            name="delivery_p99", value=p99_ms, unit="ms",
            method=latency_method + (f"; {p99_why}" if p99_why else ""),
            target=targets.max_p99_ms, op="<=", verdict=p99_verdict,
            better="lower", scope=scope, latency=latency if has_latency else None,
        ),
    ]
    for name, key in (("delivery_p50", "p50_us"), ("delivery_p99_9", "p99_9_us")):
        metrics.append(Metric(
            name=name, value=float(row.get(key) or 0.0) / 1000.0, unit="ms",
            method="the same deliveries as delivery_p99", better="lower", scope=scope,
        ))
    metrics += [
        Metric(name="loss_rate", value=float(row["loss_rate"] or 0.0), unit="fraction",
               method="expected deliveries (measured events x on-time subscribers of their "
               "swarm) minus received, / expected", better="lower", scope=scope),
        Metric(name="cache_hit_rate", value=float(row["cache_hit_rate"] or 0.0),
               unit="fraction", target=targets.min_cache_hit_rate, op=">=",
               verdict=judge(float(row["cache_hit_rate"] or 0.0), targets.min_cache_hit_rate,
                             ">="),
               method="route cache hits / lookups of every bus over the harness's traffic "
               "(10,000-entry cache)", scope=scope),
        _connections_metric(row, scope),
    ]
    return metrics


def _connections_metric(row: dict[str, Any], scope: str) -> Metric:
    adr = ADR_CONNECTION_TABLE.get(row["agents"], 4 * row["agents"])
    return Metric(
        name="connections", value=float(row["connections"]), unit="connections",
        method=f"peak connections of the run's namespace in CLIENT LIST ({row['model']} "
        f"model); ADR-002's table: {adr:,} for {row['agents']} agents",
        better="lower", scope=scope,
    )


def _reference_metrics(extra: dict[str, Any]) -> list[Metric]:
    metrics = []
    for entry in extra.get("ceiling", []):
        metrics.append(Metric(
            name=f"redis_benchmark_publish_p{entry['pipeline']}", value=float(entry["rate"]),
            unit="requests/s", method=f"`{entry['command']}`: {entry['method']}",
            scope="server",
        ))
    trip = extra.get("round_trip")
    if trip:
        for key in ("p50", "p99"):
            metrics.append(Metric(
                name=f"publish_round_trip_{key}", value=float(trip[f"{key}_us"]) / 1000.0,
                unit="ms", method=trip["method"], better="lower", scope="server",
            ))
    cache = extra.get("cache")
    if cache:
        for row in cache["rows"]:
            metrics.append(Metric(
                name=f"hit_rate_{row['size']}", value=float(row["hit_rate"]),
                unit="fraction", scope=f"route cache, {row['workload']} workload",
                method=f"{row['description']}; {cache['method']}; ADR-002 claims "
                f"{cache['adr_claimed'][str(row['size'])] * 100:g} % (in-process, no Redis)",
            ))
    for row in extra.get("client_models", []):
        metrics.append(Metric(
            name=f"{row['key']}_events_per_s", value=float(row["rate"]), unit="events/s",
            method=row["method"], scope="client models",
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
    for row in rows:
        if row.get("status") != "ok":
            continue
        if row["kind"] == LOAD:
            metrics += _load_metrics(row, targets)
        else:
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
            loads=sorted((r for r in ok if r.get("kind") == LOAD), key=lambda r: r["agents"]),
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
        return self.result.redis.version or "unknown"

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
