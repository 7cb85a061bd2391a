"""How the harness's own bookkeeping shares a process's gevent loop with what it measures.

Theory of operation. Every 0.2 s the bridge to Locust credits each agent with its deliveries,
frees the events the agents' handlers kept, folds latency samples into HdrHistograms and adds
rows to Locust's statistics: a few ms of CPU in a 100-agent shared process. Whatever arrives
while it holds the loop waits for it, and that wait is charged to Redis: the bookkeeping is
the harness's share of the latency it measures. So it runs

* in **slices** of ``HOLD_S``: a clock read between steps, and a yield once a slice has
  lasted that long;
* in the **gaps** of the traffic (:class:`QuietGap`): a slice starts only
  ``QUIET_AFTER_TICK_NS`` or more after the pacing loop's last tick (whose events are back
  from Redis and read by then) and not within a slice of its next one.

A gap is waited for at most ``GAP_WAIT_MAX_S`` per slice, so a process whose sends never
leave a gap (a dense or saturated one) still gets its bookkeeping done, at least HOLD_S in
every HOLD_S + GAP_WAIT_MAX_S, and its memory does not grow without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent

from pytest_cfn._backends.sync_backend import yield_now
from pytest_cfn.measure.loadgen.pacing import NEVER_NS

time_ns = time.time_ns
perf_counter = time.perf_counter

HOLD_S = 0.0001
"""The longest the harness's own bookkeeping runs before it lets the pacing loop, senders
and readers run (measured: a 500-agent worker's taps freed 5,000 events in one 5 ms go).
Greenlet switches traced in a shared 100-agent process (10,000 events/s) found the bridge
loop's 0.5 ms slices holding the loop 470 times over 0.5 ms in 30 s (1 % of the time, the
whole p99 tail: delivery p99 1.42 ms); at 0.1 ms, once (its first fold, numpy's lazy
imports, now done before the window by ``taps.warm_up_fold``), delivery p99 0.84 ms, at the
same CPU. A yield costs a few µs."""
HOLD_NS = int(HOLD_S * 1e9)
QUIET_AFTER_TICK_NS = 300_000
"""How long after a pacing tick its events are back and read (shared 100 agents on this
machine: write -> read p90 56 µs, read -> last tap 40 µs)."""
MARGIN_NS = 50_000
"""A slice that would end this close to the pacing loop's next send waits for it."""
GAP_WAIT_MAX_S = 0.002
MIN_SLEEP_NS = 1_000


class QuietGap:
    """``wait()``: return once the pacing loop is neither just past a tick nor about to
    tick, or after GAP_WAIT_MAX_S (see the module docstring)."""

    __slots__ = ("_due", "_last_tick", "_max_wait_ns")

    def __init__(
        self,
        due: list[int],
        last_tick_ns: Callable[[], int],
        max_wait_s: float = GAP_WAIT_MAX_S,
    ) -> None:
        self._due = due
        """The pacing loop's next due time (``Deadline.due``; NEVER_NS: none scheduled, or
        it is sending)."""
        self._last_tick = last_tick_ns
        self._max_wait_ns = int(max_wait_s * 1e9)

    def wait(self) -> None:
        now = time_ns()
        give_up = now + self._max_wait_ns
        while now < give_up:
            quiet_from = self._last_tick() + QUIET_AFTER_TICK_NS
            due = self._due[0]
            if now < quiet_from:
                until = quiet_from
            elif due != NEVER_NS and due - now < HOLD_NS + MARGIN_NS:
                until = due + QUIET_AFTER_TICK_NS
            else:
                return
            # a timer even when ``until`` has passed (the pacing loop due, not yet run):
            # gevent.sleep(0) would let no timer fire
            gevent.sleep(max(MIN_SLEEP_NS, min(until, give_up) - now) / 1e9)
            now = time_ns()


class Slices:
    """``pause()`` for long bookkeeping: once ``HOLD_S`` has passed since the slice began
    (a clock read otherwise), it lets the loop run with the library's ``yield_now`` (a 1 µs
    timer under gevent; not ``gevent.sleep(0)``: gevent checks its timers only every 50
    ready callbacks, so slices chained by ``sleep(0)`` held the pacing loop's timer for 5 ms
    and more, traced here), and, given a :class:`QuietGap`, starts the next slice in the
    traffic's next gap."""

    __slots__ = ("_gap", "_since")

    def __init__(self, gap: QuietGap | None = None) -> None:
        self._gap = gap
        self._since = perf_counter()

    def __call__(self) -> None:
        now = perf_counter()
        if now - self._since >= HOLD_S:
            yield_now()
            if self._gap is not None:
                self._gap.wait()
            self._since = perf_counter()
