"""What simulated agents send and when: role mixes, a constant-rate schedule, the measured window.

Theory of operation (open model, as wrk2): agent i intends to send its k-th event at
``start + phase + k / rate``. A late send does not move the schedule, and latency is measured
from the intended time, so a stalled generator or bus shows up as latency instead of quietly
lowering the offered rate (coordinated omission). Events whose intended time lies in the
measurement window ``[start, end)`` are marked as measured; every agent has the same rate and
the window's length is a whole number of intervals, so every agent that keeps up sends the
same number of measured events, whatever its phase.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.loadgen.options import MixEntry

ROLE_MIXES: dict[str, tuple[MixEntry, ...]] = {
    # Loop 3: lifecycle events, task assignment, state updates.
    "implementer": (
        MixEntry("agent.spawn", 7, 1),
        MixEntry("agent.complete", 7, 1),
        MixEntry("task.assign", 6, 2),
        MixEntry("state.update", 5, 6),
    ),
    # Loop 2: votes inside the swarm, consensus results to another swarm.
    "validator": (
        MixEntry("state.update", 5, 4),
        MixEntry("validation.vote", 6, 4),
        MixEntry("consensus.result", 8, 2, message=True),
    ),
    # Loop 0/1: phase transitions at priority 9, orchestration of other swarms.
    "coordinator": (
        MixEntry("cfn.loop.phase", 9, 1),
        MixEntry("coordination.sync", 8, 3),
        MixEntry("task.assign", 6, 4),
        MixEntry("orchestration.directive", 8, 2, message=True),
    ),
}


def role_mix(role: str, override: Sequence[MixEntry] | None = None) -> tuple[MixEntry, ...]:
    """A role's traffic; ``override`` replaces its intra-swarm events, its messages stay."""
    try:
        base = ROLE_MIXES[role]
    except KeyError:
        raise InvalidOptionError(
            f"role {role!r} is not known; roles are: {', '.join(ROLE_MIXES)}"
        ) from None
    if override is None:
        return base
    return tuple(override) + tuple(e for e in base if e.message)


def event_types_of(override: Sequence[MixEntry] | None = None) -> list[str]:
    """Every intra-swarm event type the roles send (with ``override``'s), sorted: what an
    agent's bus subscribes with exact channels (a type no agent sends leaves no gap)."""
    mixes = [*ROLE_MIXES.values(), *([tuple(override)] if override else [])]
    return sorted({e.type for mix in mixes for e in mix if not e.message})


def traffic_cycle(mix: Sequence[MixEntry]) -> Iterator[MixEntry]:
    """Endless smooth weighted round robin: exact shares, evenly interleaved, no randomness."""
    live = [e for e in mix if e.weight > 0]
    if not live:
        raise InvalidOptionError("a traffic mix needs at least one entry with a weight above 0")
    total = sum(e.weight for e in live)
    current = [0] * len(live)
    order: list[MixEntry] = []
    for _ in range(total):
        for i, entry in enumerate(live):
            current[i] += entry.weight
        best = max(range(len(live)), key=current.__getitem__)
        current[best] -= total
        order.append(live[best])
    return itertools.cycle(order)


class Schedule:
    """Intended send times of one agent, in wall-clock ns: ``first + k * interval``."""

    __slots__ = ("_first_ns", "_k", "interval_ns")

    def __init__(self, rate: float, start_ns: int, phase: float) -> None:
        if not rate > 0:
            raise InvalidOptionError(f"rate must be > 0 events/s, got {rate!r}")
        if not 0.0 <= phase < 1.0:
            raise InvalidOptionError(f"phase must be in [0, 1), got {phase!r}")
        self.interval_ns = round(1e9 / rate)
        self._first_ns = start_ns + int(phase * self.interval_ns)
        self._k = 0

    @property
    def sent(self) -> int:
        return self._k

    def next_ns(self) -> int:
        """Intended time of the next event (not yet taken)."""
        return self._first_ns + self._k * self.interval_ns

    def take(self) -> int:
        """Intended time of the next event, and move on to the one after it."""
        t = self._first_ns + self._k * self.interval_ns
        self._k += 1
        return t


class MeasurementWindow:
    """``[start_ns, end_ns)`` on intended send times; the end is set once, at stop."""

    __slots__ = ("end_ns", "start_ns")

    def __init__(self) -> None:
        self.start_ns: int | None = None
        self.end_ns: int | None = None

    def open(self, start_ns: int) -> None:
        self.start_ns = start_ns

    def close(self, end_ns: int) -> None:
        self.end_ns = end_ns

    def measured(self, t_ns: int) -> bool:
        start = self.start_ns
        if start is None or t_ns < start:
            return False
        end = self.end_ns
        return end is None or t_ns < end

    @property
    def seconds(self) -> float:
        if self.start_ns is None or self.end_ns is None:
            return 0.0
        return max(0.0, (self.end_ns - self.start_ns) / 1e9)


@dataclass(frozen=True)
class ScheduleLag:
    """How far agents are behind their schedules at one moment: for each agent, now minus its
    next intended send time (0 when on time), added up and the largest, over ``agents``.

    The mean is the load generator's backlog in seconds of its schedule (every agent has the
    same rate); the largest is its most starved agent.
    """

    total_ns: int = 0
    max_ns: int = 0
    agents: int = 0

    @classmethod
    def at(cls, now_ns: int, next_intended_ns: Iterable[int | None]) -> ScheduleLag:
        """The lag of the agents whose next intended times are given (None: no schedule yet)."""
        lags = [max(0, now_ns - t) for t in next_intended_ns if t is not None]
        return cls(sum(lags), max(lags, default=0), len(lags))

    def merged(self, other: ScheduleLag) -> ScheduleLag:
        return ScheduleLag(self.total_ns + other.total_ns, max(self.max_ns, other.max_ns),
                           self.agents + other.agents)

    @property
    def mean_s(self) -> float:
        return self.total_ns / self.agents / 1e9 if self.agents else 0.0

    @property
    def max_s(self) -> float:
        return self.max_ns / 1e9


def aligned_end(start_ns: int, earliest_end_ns: int, interval_ns: int) -> int:
    """The first time >= ``earliest_end_ns`` that is a whole number of intervals after start.

    Any half-open window of length ``n * interval`` holds exactly ``n`` slots of every agent's
    schedule, so the measured count per agent does not depend on its phase.
    """
    if earliest_end_ns <= start_ns:
        return start_ns
    slots = math.ceil((earliest_end_ns - start_ns) / interval_ns)
    return start_ns + slots * interval_ns


def padding_for(target_bytes: int, swarm: str, agent: str, publisher: str, event_type: str) -> str:
    """Filler for ``data["p"]`` so one encoded event is about ``target_bytes`` long."""
    sample = Envelope(
        id=f"{publisher}-1000000",
        swarm=swarm,
        source=agent,
        type=event_type,
        priority=5,
        seq=1_000_000,
        ts=1_700_000_000_000_000_000,
        publisher=publisher,
        data=event_data(1_700_000_000_000_000_000, True, agent, ""),
    )
    overhead = len(Codec("json").encode(sample))
    return "x" * max(0, target_bytes - overhead)


def event_data(intended_ns: int, measured: bool, agent: str, padding: str) -> dict[str, object]:
    """The ``data`` of every harness event: intended send time, measured flag, sender, filler."""
    return {"t": intended_ns, "m": 1 if measured else 0, "a": agent, "p": padding}
