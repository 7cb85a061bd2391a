"""One pacing schedule for every agent of a process: the next due send is found in O(1).

Theory of operation (open model, as wrk2): every agent of a run has the same rate, so agent
*i* intends its *k*-th send at ``base + offset_i + k * interval`` with ``offset_i`` in
``[0, interval)`` from its phase. With the agents sorted by offset, the sends of all agents
in time order are period 0 in offset order, then period 1 in the same order, and so on: the
schedule is a cursor (period, position) over one sorted list, a timer wheel with a single
slot per agent. One greenlet of the harness sleeps until the cursor's next intended time and
then takes every send that is due (:meth:`ProcessSchedule.run_due`), instead of one greenlet
wake-up per agent per event. A late wake-up sends the overdue slots together; it never moves
the schedule, and latency is measured from the intended time.

An agent that joins later is placed by its offset; if the cursor has passed its offset in
the current period, its first send is in the next one.

A timer alone cannot keep the schedule of a busy process: a gevent loop runs every reader
whose socket is ready before it looks at its timers again, so a timer that falls due while
50 readers work off a swarm's round waits for all of them (measured on 100 per-agent agents
over two processes: 76 % of the pacing loop's lateness was its own process's work). So the
deliveries are preemption points as well: the taps read the clock for every delivery anyway,
and compare it with the loop's :class:`Deadline`; the first tap to see it pass takes the due
slots itself (a few at a time), in the reader that runs, and moves the deadline on.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.loadgen.accounting import LocustRow

T = TypeVar("T")

_GOLDEN = 0.6180339887498949
NEVER_NS = 1 << 62


def swarm_phase(swarm_index: int) -> float:
    """The phase (0 <= phase < 1 of the send interval) shared by the agents of swarm
    ``swarm_index`` under ``--cfn-phase swarm``: the golden-ratio sequence, so the swarms'
    rounds stay evenly spread for any number of swarms (and the same in every process)."""
    return (swarm_index * _GOLDEN) % 1.0


class ProcessSchedule(Generic[T]):
    """Intended send times of many agents with one interval, in time order."""

    __slots__ = ("_k", "_members", "_offsets", "_pos", "base_ns", "interval_ns")

    def __init__(self, rate: float, base_ns: int) -> None:
        if not rate > 0:
            raise InvalidOptionError(f"rate must be > 0 events/s, got {rate!r}")
        self.interval_ns = round(1e9 / rate)
        self.base_ns = base_ns
        self._offsets: list[int] = []
        self._members: list[T] = []
        self._k = 0
        self._pos = 0

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: T, phase: float) -> None:
        """Schedule ``member`` at ``phase`` (0 <= phase < 1) of each interval."""
        if not 0.0 <= phase < 1.0:
            raise InvalidOptionError(f"phase must be in [0, 1), got {phase!r}")
        offset = int(phase * self.interval_ns)
        at = bisect.bisect_right(self._offsets, offset)
        self._offsets.insert(at, offset)
        self._members.insert(at, member)
        if at < self._pos:
            self._pos += 1

    def remove(self, member: T) -> bool:
        """Stop scheduling ``member``; False when it was not scheduled."""
        for at, m in enumerate(self._members):
            if m is member:
                del self._members[at]
                del self._offsets[at]
                if at < self._pos:
                    self._pos -= 1
                if self._pos >= len(self._members):
                    self._pos = 0
                    self._k += 1
                return True
        return False

    def next_ns(self) -> int | None:
        """Intended time of the next send of any agent (None when nobody is scheduled)."""
        if not self._members:
            return None
        return self.base_ns + self._k * self.interval_ns + self._offsets[self._pos]

    def run_due(
        self, now_ns: int, end_ns: int | None, send: Callable[[T, int], None], limit: int
    ) -> int:
        """Call ``send(member, intended_ns)`` for every slot due by ``now_ns`` (and before
        ``end_ns``, when given), at most ``limit`` of them; returns how many were sent."""
        members, offsets = self._members, self._offsets
        n = len(members)
        if not n:
            return 0
        k, pos = self._k, self._pos
        period = self.base_ns + k * self.interval_ns
        stop = now_ns + 1 if end_ns is None else min(now_ns + 1, end_ns)
        sent = 0
        while sent < limit:
            t = period + offsets[pos]
            if t >= stop:
                break
            self._k, self._pos = k, pos + 1
            if pos + 1 == n:
                self._k, self._pos = k + 1, 0
            send(members[pos], t)
            sent += 1
            if len(members) != n:  # send() removed or added an agent: start afresh
                return sent + self.run_due(now_ns, end_ns, send, limit - sent)
            k, pos = self._k, self._pos
            if pos == 0:
                period += self.interval_ns
        return sent

    def next_for_each(self) -> Iterator[int]:
        """Each scheduled agent's next intended send time (for the lag at the window's end)."""
        base = self.base_ns + self._k * self.interval_ns
        for at, offset in enumerate(self._offsets):
            yield base + offset + (self.interval_ns if at < self._pos else 0)


DENSE_SENDS_PER_S = 10_000
"""Above this many sends a second in one process, the shared model's default tick floor is
:data:`DENSE_TICK_MS`; at or below it, :data:`SPARSE_TICK_MS`."""
SPARSE_TICK_MS = 0.25
DENSE_TICK_MS = 1.0


def tick_floor_ms(flush_ms: float | None, sends_per_s: float) -> float:
    """The shared model's least gap between two pacing ticks (each tick's sends are one
    write): ``--cfn-flush-ms`` when given, else 0.25 ms for a process sending up to 10,000
    events/s and 1 ms above. Measured on this 2-core machine: 100 shared agents (10,000/s,
    a swarm's round every ~1 ms) at 1 ms had send lag p99 1.1 ms and delivery p99 1.4-1.9 ms,
    at 0.25 ms 0.24 ms and 0.81 ms at the same CPU per delivery; 250 agents a process
    (25,000/s, a round every 0.4 ms) at 0.25 ms wrote twice as often and cost up to 32 %
    more CPU per delivery, so a dense process keeps the coarser floor."""
    if flush_ms is not None:
        return flush_ms
    return SPARSE_TICK_MS if sends_per_s <= DENSE_SENDS_PER_S else DENSE_TICK_MS


class Deadline:
    """When the pacing loop is next due (``due[0]``, ns; :data:`NEVER_NS` while it is sending
    or has nothing scheduled), and ``catch_up(now_ns)``, which a tap calls when it reads a
    clock at or past it (see the module docstring). ``due`` is a one-item list, so the taps'
    closures read it without an attribute lookup."""

    __slots__ = ("catch_up", "due")

    def __init__(self) -> None:
        self.due = [NEVER_NS]
        self.catch_up: Callable[[int], None] = _no_catch_up


def _no_catch_up(now_ns: int) -> None:
    return None


class PublishTicks:
    """The time publish calls take, per scheduler tick, for Locust's "publish" rows.

    Publishes are added to Locust's statistics in aggregate, not one request event each:
    per event type the exact count since the last report, with the mean time of a publish
    call over those ticks (a tick's sends are timed together; shared-model writes included).
    """

    __slots__ = ("_max_ms", "_min_ms", "_reported", "_seconds", "_sent")

    def __init__(self) -> None:
        self._reported: list[int] = []
        self._reset()

    def _reset(self) -> None:
        self._seconds = 0.0
        self._sent = 0
        self._min_ms = float("inf")
        self._max_ms = 0.0

    def add(self, sent: int, seconds: float) -> None:
        if not sent:
            return
        self._seconds += seconds
        self._sent += sent
        mean_ms = seconds * 1000.0 / sent
        if mean_ms < self._min_ms:
            self._min_ms = mean_ms
        if mean_ms > self._max_ms:
            self._max_ms = mean_ms

    def rows(
        self, names: list[str], counts: list[int], bucket: Callable[[float], int]
    ) -> list[LocustRow]:
        """One row per event type published since the last call (counts are cumulative)."""
        reported = self._reported
        reported.extend([0] * (len(counts) - len(reported)))
        mean_ms = self._seconds * 1000.0 / self._sent if self._sent else 0.0
        rows = []
        for i, total in enumerate(counts):
            n = total - reported[i]
            if n <= 0:
                continue
            reported[i] = total
            low = min(self._min_ms, mean_ms)
            rows.append(LocustRow("publish", names[i], n, n * mean_ms, low,
                                  max(self._max_ms, mean_ms), {bucket(mean_ms): n}))
        self._reset()
        return rows


LATE_WAKE_NS = 2_000_000
"""A pacing wake-up later than this is counted and its lateness attributed."""


class LateWakes:
    """Why the pacing loop woke late: this process busy, or waiting for a CPU. (A wake-up whose
    due sends a tap took meanwhile is not counted: nothing was late for it.)

    A wake-up that comes ``late_ns`` after its timer, ``planned_ns`` after the loop went to
    sleep, during which the process used ``cpu_ns`` of CPU: the process ran for at least
    ``cpu_ns - planned_ns`` and at most ``min(cpu_ns, late_ns)`` of the lateness; the midpoint
    (within half a tick of the truth) is counted as *held* (other greenlets of the harness
    ran: its own work kept the loop), the rest as *off CPU* (the process waited for a core:
    other processes, redis-server, the other Locust workers).
    """

    __slots__ = ("count", "held_ns", "late_ns")

    def __init__(self) -> None:
        self.count = 0
        self.late_ns = 0
        self.held_ns = 0

    def note(self, planned_ns: int, late_ns: int, cpu_ns: int) -> None:
        if late_ns <= LATE_WAKE_NS:
            return
        low = max(0, cpu_ns - planned_ns)
        high = min(cpu_ns, late_ns)
        self.count += 1
        self.late_ns += late_ns
        self.held_ns += (low + max(low, high)) // 2

    def sums(self) -> dict[str, float]:
        return {"late_wakes": float(self.count), "late_wake_s": self.late_ns / 1e9,
                "late_wake_held_s": self.held_ns / 1e9}


def late_wake_note(sums: dict[str, float]) -> str | None:
    """The table's line on late pacing wake-ups (None when there were none)."""
    count = int(sums.get("late_wakes", 0))
    late = sums.get("late_wake_s", 0.0)
    if not count or late <= 0:
        return None
    held = min(1.0, sums.get("late_wake_held_s", 0.0) / late)
    return (
        f"{count:,} pacing wake-ups in the window came over {LATE_WAKE_NS / 1e6:g} ms late "
        f"with sends still due ({late / count * 1e3:.1f} ms on average): "
        f"{100 * (1 - held):.0f} % of that lateness "
        f"with the Locust process waiting for a CPU (the machine: other processes, "
        f"redis-server, other workers), {100 * held:.0f} % with it running its own work"
    )
