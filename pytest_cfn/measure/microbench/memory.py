"""Memory held by idle buses: Python heap per bus (tracemalloc), and RSS as a cross-check.

An idle bus is connected (publisher) and subscribed (subscriber, its reader and
dispatcher workers running) but sees no traffic. Kernel socket buffers are not
in either figure: tracemalloc sees only the Python allocator, and socket buffers
live in the kernel, not in the process's resident set.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from typing import Any

from pytest_cfn.measure.microbench.workloads import PATTERN

_TOP_SITES = 6


def _noop(event: Any) -> None:
    return None


def _short(filename: str) -> str:
    return "/".join(filename.split("/")[-2:])


def _rss_bytes() -> int:
    """Resident set size from /proc/self/statm (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def idle_bus_memory(url: str, swarm: str, buses: int) -> dict[str, Any]:
    """Worker: open ``buses`` idle subscribed buses and measure what they hold.

    One bus is opened and closed first so that imports, codecs and module-level
    caches are not charged to the measured ones.
    """
    from pytest_cfn import EventBus

    warm = EventBus.from_url(url, swarm=swarm, agent="idle-warm")
    warm.connect()
    warm.subscribe(PATTERN, _noop)
    warm.close()
    gc.collect()
    threads_before = threading.active_count()
    rss_before = _rss_bytes()
    tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    opened = []
    try:
        for index in range(buses):
            bus = EventBus.from_url(url, swarm=swarm, agent=f"idle-{index}")
            opened.append(bus)
            bus.connect()
            bus.subscribe(PATTERN, _noop)
        time.sleep(0.3)
        gc.collect()
        heap_after = tracemalloc.get_traced_memory()[0]
        snapshot = tracemalloc.take_snapshot()
        rss_after = _rss_bytes()
        threads_after = threading.active_count()
        connections = sum(int(bus.stats()["connections"]) for bus in opened)
    finally:
        tracemalloc.stop()
        for bus in opened:
            bus.close()
    top = snapshot.statistics("lineno")[:_TOP_SITES]
    return {
        "buses": buses,
        "heap_per_bus": (heap_after - heap_before) / buses,
        "rss_per_bus": (rss_after - rss_before) / buses,
        "threads_per_bus": (threads_after - threads_before) / buses,
        "connections_per_bus": connections / buses,
        "top_sites": [
            f"{_short(stat.traceback[0].filename)}:{stat.traceback[0].lineno} "
            f"{stat.size / buses:.0f} B/bus"
            for stat in top
        ],
    }
