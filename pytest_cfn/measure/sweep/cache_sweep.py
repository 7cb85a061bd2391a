"""Route cache hit rate vs cache size, measured through Redis, as ADR-002's cache table has it.

ADR-002 puts a 10,000-entry LRU in front of a Redis lookup of each event type's route and
claims 99.87 % / 98.2 % / 89.5 % / 0 % hits with 10,000 / 1,000 / 100 / no entries, from an
in-process benchmark of 5 event types over 10,000 events. Here a real EventBus publishes with
``route_overrides=True`` (a miss reads ``route:{type}`` from Redis with a GET, as the ADR's
miss path does) and ``route_cache_size`` set to each size, over two workloads:

* the ADR's own: its 5 event types, uniformly, 10,000 events;
* many routes: event types drawn from a Zipf distribution (s = 1.1) over 2,000 types, 20,000
  events, the same seeded sequence for every size, so the size is the only variable.

Hit rate is the bus's own count (hits / lookups); the publish rate is events / wall time from
the first publish to every publish acknowledged, misses' GET round trips included.
"""

from __future__ import annotations

import bisect
import itertools
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

CACHE_SIZES = (10_000, 1_000, 100, 0)
ADR_TYPES = ("agent.spawn", "agent.complete", "task.assign", "state.update", "coordination.sync")
ADR_EVENTS = 10_000
ZIPF_TYPES = 2_000
ZIPF_EXPONENT = 1.1
ZIPF_EVENTS = 20_000
SEED = 20251010
ADR_CLAIMED = {10_000: 0.9987, 1_000: 0.982, 100: 0.895, 0: 0.0}
"""ADR-002's "LRU Cache Performance" table (in-process, 5 event types, no Redis)."""


def adr_workload(events: int = ADR_EVENTS, seed: int = SEED) -> list[str]:
    """The ADR benchmark's 5 event types, drawn uniformly."""
    rng = random.Random(seed)
    return [rng.choice(ADR_TYPES) for _ in range(events)]


def zipf_workload(
    events: int = ZIPF_EVENTS,
    types: int = ZIPF_TYPES,
    exponent: float = ZIPF_EXPONENT,
    seed: int = SEED,
) -> list[str]:
    """``events`` event types ``route.t{rank}`` drawn with probability ~ 1 / rank**exponent."""
    weights = itertools.accumulate(1.0 / rank**exponent for rank in range(1, types + 1))
    cumulative = list(weights)
    total = cumulative[-1]
    rng = random.Random(seed)
    return [
        f"route.t{bisect.bisect_left(cumulative, rng.random() * total) + 1}"
        for _ in range(events)
    ]


WORKLOADS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "adr": (
        f"ADR's workload: {len(ADR_TYPES)} event types, uniform, {ADR_EVENTS:,} events",
        adr_workload,
    ),
    "zipf": (
        f"many routes: Zipf s={ZIPF_EXPONENT:g} over {ZIPF_TYPES:,} event types, "
        f"{ZIPF_EVENTS:,} events",
        zipf_workload,
    ),
}


def measure_cache(
    url: str, swarm: str, namespace: str, size: int, types: list[str], overrides: bool = True
) -> dict[str, Any]:
    """Publish ``types`` in order through one EventBus with a ``size``-entry route cache
    (``overrides``: with ``route_overrides``, a miss reads ``route:{type}``)."""
    from pytest_cfn import EventBus
    from pytest_cfn._core.options import BusOptions

    options = BusOptions(namespace=namespace, route_cache_size=size, route_overrides=overrides)
    data = {"p": "x" * 150}
    with EventBus.from_url(url, swarm=swarm, agent="cache-probe", options=options) as bus:
        bus.connect()
        publish = bus.publish
        started = time.perf_counter()
        for event_type in types:
            publish(event_type, data)
        bus.flush()
        seconds = time.perf_counter() - started
        stats = bus.stats()
    hits, misses = int(stats["cache_hits"]), int(stats["cache_misses"])
    lookups = hits + misses
    return {
        "size": size,
        "events": len(types),
        "distinct_types": len(set(types)),
        "hits": hits,
        "misses": misses,
        "evictions": int(stats["cache_evictions"]),
        "hit_rate": hits / lookups if lookups else 0.0,
        "publish_rate": len(types) / seconds if seconds > 0 else 0.0,
        "us_per_publish": seconds / len(types) * 1e6 if types else 0.0,
    }


NO_OVERRIDES_ON_CLUSTER = (
    "; on a Redis Cluster of {masters} masters route_overrides is refused (a route to another "
    "swarm is another shard), so here it is off: a miss is a lookup of the default route in "
    "process, without the GET round trip, and the publish rate is that of SPUBLISH to the "
    "swarm's shard channel on its master; the hit rates are the bus's own count, as on one "
    "server"
)


def cache_sweep(
    url: str, swarm: str, namespace: str, repeat: int = 1, masters: int = 0
) -> dict[str, Any]:
    """Worker: every workload at every size, ``repeat`` times (interleaved); one row per
    (workload, size) with the median publish rate and its min-max over the runs (the hit
    counts of a seeded workload are the same in every run), plus the method. ``masters`` > 0:
    a node of a Redis Cluster, where ``route_overrides`` is refused and left off."""
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    built = {workload: (description, build()) for workload, (description, build)
             in WORKLOADS.items()}
    for attempt in range(repeat):
        for workload, (description, types) in built.items():
            for size in CACHE_SIZES:
                row = measure_cache(url, f"{swarm}-{workload}-{size}-{attempt}", namespace,
                                    size, types, overrides=not masters)
                runs.setdefault((workload, size), []).append(
                    {"workload": workload, "description": description, **row})
    rows = []
    for measured in runs.values():
        rates = [r["publish_rate"] for r in measured]
        row = dict(measured[0])
        row.update(publish_rate=statistics.median(rates), publish_rate_low=min(rates),
                   publish_rate_high=max(rates), runs=len(measured),
                   us_per_publish=statistics.median(r["us_per_publish"] for r in measured))
        rows.append(row)
    return {
        "rows": rows,
        "runs": repeat,
        "adr_claimed": {str(size): rate for size, rate in ADR_CLAIMED.items()},
        "method": (
            f"a sync EventBus with route_overrides={not masters} publishes the workload's "
            "events one publish() call each (no batch) with route_cache_size set to each size; "
            + ("" if masters else "a miss reads route:{type} from Redis with a GET round trip, "
               "as ADR-002's miss path; ")
            + "hit "
            "rate = the bus's cache hits / lookups; publish rate = events / time from the first "
            "publish to flush() returning (every publish acknowledged), the median of "
            f"{repeat} run(s) with their min-max; no subscriber"
            + (NO_OVERRIDES_ON_CLUSTER.format(masters=masters) if masters else "")
        ),
        "route_overrides": not masters,
    }
