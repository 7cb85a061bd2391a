"""ADR-002's figures and the sweep's measurement of each: the pairs the report sets side by
side, each with its method (the ADR's were in-process, without Redis; ours through Redis)."""

from __future__ import annotations

from pytest_cfn.measure.sweep.client_models import ADR_SEPARATED, ADR_SINGLE
from pytest_cfn.measure.sweep.document import SweepData
from pytest_cfn.measure.targets import ADR_CLAIMS

SEPARATION_CLAIM: dict[str, tuple[float, str, str]] = {
    "separation_speedup": (
        ADR_SEPARATED / ADR_SINGLE, "x",
        "separated 398,373 events/s (in-process, no Redis) / single client 4,800 (prototype)",
    ),
}


def adr_claims() -> dict[str, tuple[float, str, str]]:
    """ADR-002's figures (value, unit, the ADR's method), with its derived '83x'."""
    return {**ADR_CLAIMS, **SEPARATION_CLAIM}


def number(value: float) -> str:
    """Thousands separators for large values, a few significant digits for small ones."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def our_counterparts(data: SweepData) -> dict[str, tuple[float, str]]:
    """Our counterpart of each ADR claim that the sweep measured: (value, method)."""
    out: dict[str, tuple[float, str]] = {}
    models = {r["key"]: r for r in data.client_models}
    if "separated" in models:
        out["event_bus_throughput"] = (models["separated"]["rate"],
                                       "one EventBus end to end, unpaced")
    if "single-wait" in models:
        out["single_client"] = (models["single-wait"]["rate"],
                                "one connection, a reply awaited per publish")
    if "separated" in models and models.get("single-wait", {}).get("rate"):
        out["separation_speedup"] = (
            models["separated"]["rate"] / models["single-wait"]["rate"],
            "separated EventBus / single connection awaiting each reply",
        )
    at_100 = next((r for r in data.loads if r["agents"] == 100), None)
    if at_100 is not None:
        out["concurrent_100_agents"] = (at_100["delivered_per_s"] or 0.0,
                                        f"100 agents ({at_100['model']} model) delivered at "
                                        f"{at_100['offered']:,.0f} offered")
        if at_100.get("message_deliveries_per_s"):
            out["messenger_throughput"] = (
                at_100["message_deliveries_per_s"],
                "Messenger deliveries/s (each message to every agent of the receiving swarm) "
                "of the harness's mix at 100 agents: what the mix offers, not a ceiling "
                "(python -m pytest_cfn.measure.microbench --only messenger measures the "
                "Messenger's own "
                "delivered messages/s, one sender and one receiver, receiver-paced)",
            )
        if at_100.get("mean_us"):
            out["event_bus_avg_latency"] = (at_100["mean_us"] / 1000,
                                            "mean delivery latency at 100 agents")
    cache = data.cache
    if cache:
        row = next((r for r in cache["rows"] if r["workload"] == "adr"
                    and r["size"] == 10_000), None)
        if row is not None:
            out["cache_hit_rate"] = (row["hit_rate"], "ADR's 5-type workload, 10,000 entries")
    return out
