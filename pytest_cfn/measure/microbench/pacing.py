"""Sending at a fixed rate on an open schedule, and knowing when a receiver may stop.

Open model (wrk2's): event i is due at t0 + i/rate whatever happened before it.
A sender that falls behind sends every overdue event at once, each stamped with
its own intended time, so latency measured from that stamp includes the delay
the sender itself caused: coordinated omission is not hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any

from pytest_cfn.measure.timer_slack import tighten_timer_slack
from pytest_cfn.measure.worker_processes import StepFailedError

LATE_NS = 1_000_000
FLOOR_LATE_NS = (1_000_000, 3_000_000)
"""The lateness thresholds of the timer floor's counts: the p99 (1 ms) and p99.9 (3 ms)
latency targets."""
START_LEAD_NS = 20_000_000
QUIET_SECONDS = 1.0

Send = Callable[[list[tuple[int, bool]]], None]
"""``send(due)``: the events due at one wake-up, each ``(intended_wall_ns, measured)``;
``measured`` is False during the warm-up. Usually one event, several after a late wake-up."""


@dataclass(frozen=True)
class PacedRun:
    """What the sender did against its schedule."""

    sent: int
    measured: int
    seconds: float
    late_over_1ms: int
    max_lateness_us: float
    timer_late_over_1ms: int = 0
    """Measured events over 1 ms behind schedule at the wake-up of a sleep that began before
    they were due: late by the sleep's overshoot alone (the machine's timer and scheduler),
    before any client code ran for them."""
    timer_late_over_3ms: int = 0
    """The same, over 3 ms."""

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def schedule_report(self) -> dict[str, Any]:
        """How the sender kept its schedule, as every paced publisher reports it."""
        return {
            "measured": self.measured,
            "seconds": self.seconds,
            "achieved_rate": self.achieved_rate,
            "late_over_1ms": self.late_over_1ms,
            "max_send_lateness_us": self.max_lateness_us,
            "timer_late_over_1ms": self.timer_late_over_1ms,
            "timer_late_over_3ms": self.timer_late_over_3ms,
        }


class PacedSchedule:
    """The open schedule as an iterator: each step sleeps until the next event is due and
    yields the events due at that wake-up; :attr:`run` says how it went, once exhausted.

    Intended times are wall-clock ns (so a receiver in another process can subtract
    them from its own ``time.time_ns()``), scheduled on ``perf_counter_ns`` so a
    wall-clock step cannot bunch them. The sleeps are blocking (``time.sleep``), for
    the sync and the asyncio sender alike.

    The events of a wake-up that follows a sleep were all due after the sleep began (it
    slept until the first of them), so their lateness is the sleep's overshoot: the
    machine's, not the client's. Those over 1 ms and 3 ms are counted apart
    (:attr:`PacedRun.timer_late_over_1ms`): when more than 1 % (0.1 %) of a run's events
    are, no client can reach a p99 under 1 ms (p99.9 under 3 ms) from the intended time.
    """

    def __init__(self, rate: float, duration: float, warmup: float) -> None:
        self.interval_ns = 1e9 / rate
        self.warm_events = int(warmup * rate)
        self.total = self.warm_events + int(duration * rate)
        if self.total < 1:
            raise StepFailedError(f"rate {rate}/s for {duration} s schedules no event")
        self.run: PacedRun | None = None

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        tighten_timer_slack()
        interval_ns = self.interval_ns
        total = self.total
        warm_events = self.warm_events
        wall0 = time.time_ns() + START_LEAD_NS
        mono0 = time.perf_counter_ns() + START_LEAD_NS
        late = 0
        worst = 0
        sent = 0
        slept = False
        floor_1ms, floor_3ms = FLOOR_LATE_NS
        timer_1ms = timer_3ms = 0
        while sent < total:
            now = time.perf_counter_ns()
            wait = mono0 + int(sent * interval_ns) - now
            if wait > 0:
                time.sleep(wait / 1e9)
                slept = True
                continue
            due = min(total, int((now - mono0) / interval_ns) + 1)
            batch = []
            for index in range(sent, due):
                offset = int(index * interval_ns)
                lateness = now - (mono0 + offset)
                if lateness > LATE_NS:
                    late += 1
                if lateness > worst:
                    worst = lateness
                measured = index >= warm_events
                if slept and measured and lateness > floor_1ms:
                    timer_1ms += 1
                    if lateness > floor_3ms:
                        timer_3ms += 1
                batch.append((wall0 + offset, measured))
            slept = False
            yield batch
            sent = due
        self.run = PacedRun(
            sent=sent,
            measured=total - warm_events,
            seconds=(time.perf_counter_ns() - mono0) / 1e9,
            late_over_1ms=late,
            max_lateness_us=worst / 1000.0,
            timer_late_over_1ms=timer_1ms,
            timer_late_over_3ms=timer_3ms,
        )


def lone_sleeper(rate: float, duration: float, warmup: float) -> dict[str, Any]:
    """Worker: follow the open schedule as a sender does and publish nothing; record each
    measured event's lateness at its wake-up (``time.time_ns()`` - intended time). The
    machine's timer floor: where any latency measured from the intended send time starts."""
    from array import array

    from pytest_cfn.measure.metrics.latency import LatencyHistogram

    raw = array("q")

    def note(due: list[tuple[int, bool]]) -> None:
        now = time.time_ns()
        raw.extend(now - intended for intended, measured in due if measured)

    run = send_paced(rate, duration, warmup, note)
    histogram = LatencyHistogram()
    histogram.record_many(raw)
    return {
        "histogram": histogram,
        "measured": run.measured,
        "late_over_1ms": run.late_over_1ms,
        "timer_late_over_1ms": run.timer_late_over_1ms,
        "timer_late_over_3ms": run.timer_late_over_3ms,
    }


def send_paced(rate: float, duration: float, warmup: float, send: Send) -> PacedRun:
    """Hand every scheduled event to ``send``: ``warmup`` seconds, then ``duration``."""
    schedule = PacedSchedule(rate, duration, warmup)
    for due in schedule:
        send(due)
    assert schedule.run is not None
    return schedule.run


class StopRule:
    """When a receiving worker stops waiting: everything expected has arrived, or the
    publisher is done and nothing arrived for QUIET_SECONDS, or ``deadline`` has passed."""

    __slots__ = ("_expected", "_give_up", "_publisher_done", "_quiet_since", "_seen")

    def __init__(self, expected: int, publisher_done: Event, deadline: float) -> None:
        self._expected = expected
        self._publisher_done = publisher_done
        now = time.monotonic()
        self._give_up = now + deadline
        self._seen = -1
        self._quiet_since = now

    def should_stop(self, count: int) -> bool:
        if count >= self._expected:
            return True
        now = time.monotonic()
        if now > self._give_up:
            return True
        if count != self._seen:
            self._seen, self._quiet_since = count, now
            return False
        return self._publisher_done.is_set() and now - self._quiet_since > QUIET_SECONDS

    def wait(self, count: Callable[[], int], poll: float = 0.01) -> None:
        """Poll ``count()`` until :meth:`should_stop` (for handlers on other threads)."""
        while not self.should_stop(count()):
            time.sleep(poll)
