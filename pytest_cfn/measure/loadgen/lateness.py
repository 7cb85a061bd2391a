"""Late deliveries told apart from lost ones, without a check in the delivery handlers.

A delivery is **late** when it arrived after the window's end plus the drain (the *cutoff*),
**lost** when it never arrived by the time the process sends its final report. Handlers only
count what they receive; a ticker records the process's running totals with their time
(:meth:`ArrivalLedger.tick`, every TICK_S, and once exactly at the cutoff after crediting every
delivery so far). The latest
tick at or before the cutoff holds the on-time counts; whatever arrived since is late.

This also holds for a process that was stalled (SIGSTOP, a long GC, a saturated loop) and
hears of the window's end only after the cutoff: its ticks from before the stall are still
in the ledger, so the backlog it reads afterwards is counted late, at the precision of one
tick, instead of on time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

TICK_S = 0.1
HORIZON_S = 300.0


@dataclass(frozen=True)
class LateCount:
    """Late deliveries of one process: all priorities and priority 8-9; ``exact`` is False
    when no tick at or before the cutoff was left (the figure is then a lower bound)."""

    all: int = 0
    critical: int = 0
    exact: bool = True

    def to_dict(self) -> dict[str, int | bool]:
        return {"all": self.all, "critical": self.critical, "exact": self.exact}


class ArrivalLedger:
    """Timestamped running totals (all, critical) of one process's measured deliveries."""

    def __init__(self, horizon_s: float = HORIZON_S, tick_s: float = TICK_S) -> None:
        self._ticks: deque[tuple[int, int, int]] = deque(maxlen=max(2, int(horizon_s / tick_s)))

    def tick(self, now_ns: int, received: int, critical: int) -> None:
        self._ticks.append((now_ns, received, critical))

    def late(self, cutoff_ns: int, received: int, critical: int) -> LateCount:
        """What arrived after ``cutoff_ns``, given the totals now."""
        on_time: tuple[int, int, int] | None = None
        for tick in self._ticks:
            if tick[0] <= cutoff_ns:
                on_time = tick
            else:
                break
        exact = on_time is not None
        if on_time is None:
            on_time = self._ticks[0] if self._ticks else (cutoff_ns, received, critical)
        return LateCount(max(0, received - on_time[1]), max(0, critical - on_time[2]), exact)
