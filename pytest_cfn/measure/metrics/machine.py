"""Facts about the machine and library versions, stored with every JSON result.

A figure without the machine it was measured on cannot be compared with anything, and this
project's figures are ratios on noisy shared machines: CPU count, affinity and load matter.
"""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

_DISTRIBUTIONS = ("redis", "hiredis", "msgspec", "hdrhistogram", "pytest-cfn")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first 'model name' of /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_total(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal from /proc/meminfo in bytes, or None where there is no /proc."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpus_usable() -> int | None:
    """CPUs this process may run on (affinity), which is what a benchmark actually gets."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def _load_average() -> list[float] | None:
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """Hostname, OS, Python, CPUs, memory and library versions as plain JSON data."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": _cpus_usable(),
        "cpu_model": _cpu_model(),
        "memory_total_bytes": _memory_total(),
        "load_average": _load_average(),
        "versions": {name: _version(name) for name in _DISTRIBUTIONS},
    }


def busy_cpu_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds the whole machine has spent busy since boot, all CPUs added (user, nice,
    system, irq, softirq of /proc/stat's first line; steal, the time a hypervisor ran
    something else on this VM's cores, is :func:`steal_cpu_seconds`); None where there is
    no /proc. Two samples' difference beside the processes a run knows of tells what else
    ran."""
    both = busy_and_steal_seconds(stat)
    return None if both is None else both[0]


def steal_cpu_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds since boot this VM's cores were ready to run but the hypervisor ran
    something else (/proc/stat's steal column), all CPUs added; None where not known."""
    both = busy_and_steal_seconds(stat)
    return None if both is None else both[1]


def busy_and_steal_seconds(stat: Path = Path("/proc/stat")) -> tuple[float, float] | None:
    """:func:`busy_cpu_seconds` and :func:`steal_cpu_seconds` from one read of /proc/stat."""
    fields = _cpu_ticks(stat)
    if fields is None:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def _cpu_ticks(stat: Path) -> tuple[int, ...] | None:
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except (OSError, ValueError):
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    try:
        return tuple(int(v) for v in fields[1:9])
    except ValueError:
        return None
