"""What else ran on the load generator's machine during the window.

A load generator that falls behind on a shared machine may be slow because something else
took the cores. The master samples the whole machine's busy CPU (``/proc/stat``) at the
window's two marks; minus the CPU of the run's own processes (every Locust process, the
local redis-server) it leaves the other processes' share, which the report prints beside
the verdicts so a reader can tell a busy machine from a slow harness.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.metrics.machine import busy_and_steal_seconds

OTHERS_NOTE_PERCENT = 20.0
"""Other processes' CPU (% of one core) over the window above which the report says so."""

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class MachineMark:
    """The machine's busy CPU seconds, this process's own and the hypervisor's steal, at one
    instant."""

    busy_s: float | None
    own_cpu_s: float
    steal_s: float | None = None

    @classmethod
    def now(cls) -> MachineMark:
        both = busy_and_steal_seconds()  # one read of /proc/stat
        busy, steal = (None, None) if both is None else both
        return cls(busy, time.process_time(), steal)


def this_host() -> str:
    return socket.gethostname()


def runs_here(hosts: Iterable[str], redis_url: str) -> bool:
    """Whether every reporting Locust process ran on this machine and the server listens on
    this machine's loopback (or a unix socket): only then do their CPU seconds add up to
    this machine's."""
    here = this_host()
    if any(host != here for host in hosts):
        return False
    try:
        address = parse_redis_url(redis_url)
    except InvalidOptionError:
        return False
    return bool(address.unix_path) or address.host in _LOOPBACK_HOSTS


def others_cpu_s(
    start: MachineMark,
    end: MachineMark,
    workers_cpu_s: float,
    server_cpu_s: float | None,
    *,
    master_apart: bool,
) -> float | None:
    """The other processes' CPU seconds between the marks: the machine's busy seconds minus
    the workers', the server's and (``master_apart``: a master process that runs no users)
    the master's own; None when a figure is missing."""
    if start.busy_s is None or end.busy_s is None or server_cpu_s is None:
        return None
    own = end.own_cpu_s - start.own_cpu_s if master_apart else 0.0
    return max(0.0, end.busy_s - start.busy_s - own - workers_cpu_s - server_cpu_s)


def steal_cpu_s(start: MachineMark, end: MachineMark) -> float | None:
    """CPU seconds the hypervisor took from this VM's cores between the marks (None: unknown)."""
    if start.steal_s is None or end.steal_s is None:
        return None
    return max(0.0, end.steal_s - start.steal_s)


STEAL_NOTE_PERCENT = 10.0
"""Steal (% of one core) over the window above which the report says so."""


def _share_over(seconds: float | None, window_s: float, limit_percent: float) -> float | None:
    """``seconds`` as % of one core over the window, when above ``limit_percent``; else None."""
    if seconds is None or window_s <= 0:
        return None
    percent = seconds / window_s * 100
    return percent if percent > limit_percent else None


def steal_note(steal_s: float | None, window_s: float) -> str | None:
    """A note for the report when the hypervisor took a noticeable share of this VM's cores."""
    percent = _share_over(steal_s, window_s, STEAL_NOTE_PERCENT)
    if percent is None:
        return None
    return (
        f"the hypervisor took {percent:.0f} % of a core from this VM during the window "
        "(/proc/stat steal: its cores were ready to run and something outside the VM ran): "
        "send lag and latency may reflect the host, not the harness or Redis"
    )


def others_note(others_s: float | None, window_s: float) -> str | None:
    """A note for the report when other processes took a noticeable share of the machine."""
    percent = _share_over(others_s, window_s, OTHERS_NOTE_PERCENT)
    if percent is None:
        return None
    return (
        f"other processes on this machine used {percent:.0f} % of a core during the window "
        "(beyond the Locust processes and redis-server): send lag, latency and CPU figures "
        "may reflect a busy machine, not the harness or Redis; rerun on a quiet machine"
    )


WAKE_SLEEP_S = 0.0002


def blocking_wake_cpu_us(wakes: int = 2000) -> float:
    """CPU (µs) this process spends per blocking sleep of 0.2 ms and the wake-up after it: what
    a subscriber pays per read when each read returns one event. Measured on the 2-core VM
    here: 17-20 µs, so a connection paced at 1,000 events/s costs tens of µs per event however
    lean the code it runs."""
    if wakes < 1:
        raise InvalidOptionError(f"wakes must be >= 1, got {wakes!r}")
    start = time.process_time()
    for _ in range(wakes):
        time.sleep(WAKE_SLEEP_S)
    return (time.process_time() - start) / wakes * 1e6
