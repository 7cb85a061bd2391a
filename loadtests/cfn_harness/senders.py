"""Who writes a due send: one sender per publishing connection set.

The process's pacing loop (``ProcessRuntime``) takes every due slot and gives it to its
agent's sender. A publish can wait on its bus (a publisher connection is shared with the
bus's own round trips, such as the critical-event catch-up every second, and reading
acknowledgements); where one sender's wait would hold up many agents' schedules, the
sender is a greenlet of its own that writes everything it was handed in one go (in the
shared model inside ``batch()`` of its swarm's bus and messenger, so one write per
connection):

* per-agent model: the pacing loop writes each slot itself as it takes it
  (:attr:`Sender.direct`). Measured on 100 agents over two processes: handing the slots to
  the agents' greenlets instead cost a wake-up per slot and put the sends behind every
  reader that was woken meanwhile (send lag p99 44 ms against 6-9 ms written directly). A
  publish that has to wait on its bus (a catch-up round trip holding the connection) holds
  the schedule meanwhile, and that wait is measured as send lag;
* shared model on per-swarm connections (Redis Cluster): one greenlet per swarm;
* shared model on the process's SharedConnections: every send of the process goes through
  one sender, so there is no other schedule to protect, and the pacing loop writes the
  tick itself (:attr:`Sender.inline`), right after taking it, with no greenlet switch in
  between.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import gevent.event

from pytest_cfn._errors import CfnError

if TYPE_CHECKING:
    from array import array

    from cfn_harness.client import CfnClient
    from pytest_cfn.measure.loadgen.pacing import PublishTicks

time_ns = time.time_ns
perf_counter = time.perf_counter


class Sender:
    """Sends handed over by the pacing loop, written by :meth:`run` (one greenlet), by the
    pacing loop after the tick (:attr:`inline`) or at once (:attr:`direct`)."""

    __slots__ = (
        "_batched", "_lag", "_measure_from", "_measure_until", "_ticks", "_wake", "direct",
        "inline", "overdue", "pending",
    )

    def __init__(
        self,
        lag: array[int],
        ticks: PublishTicks,
        batched: tuple[Any, ...] = (),
        *,
        direct: bool = False,
    ) -> None:
        self.pending: list[tuple[CfnClient, int]] = []
        self._wake = gevent.event.Event()
        self._lag = lag
        self._ticks = ticks
        self._batched = batched
        self._measure_from = 1 << 62
        self._measure_until = 1 << 62
        self.overdue = 0
        """Sends intended inside the window that went out after :meth:`measure_until`'s
        time, unmeasured (the generator was that far behind)."""
        self.inline = False
        """Written by the pacing loop itself (:meth:`write_handed`), not by :meth:`run`."""
        self.direct = direct
        """Each handed slot is written at once, inside :meth:`hand` (one agent's sends)."""

    def measure_from(self, start_ns: int) -> None:
        """Sends intended at or after ``start_ns`` are measured (the window's start)."""
        self._measure_from = start_ns

    def measure_until(self, until_ns: int) -> None:
        """Sends written after ``until_ns`` go out unmeasured (their lag is still noted).
        Every process stops measuring at the same moment, so a process that settles its
        deliveries after it waits for no measured event still being sent by another."""
        self._measure_until = until_ns

    def hand(self, client: CfnClient, intended_ns: int) -> None:
        """Called by the pacing loop for a due slot."""
        if self.direct:
            started = perf_counter()
            self.overdue += _send_one(client, intended_ns, self._measure_from,
                                      self._measure_until, self._lag.append)
            self._ticks.add(1, perf_counter() - started)
            return
        pending = self.pending
        if not pending and not self.inline:  # the first of a tick wakes the sender
            self._wake.set()
        pending.append((client, intended_ns))

    def run(self, closed: Any) -> None:
        """Until ``closed()``: wait to be handed sends, then write them all."""
        wake = self._wake
        while not closed():
            wake.wait()
            wake.clear()
            self.write_handed()

    def write_handed(self) -> None:
        """Write every send handed over so far (and those handed meanwhile)."""
        lag = self._lag.append
        while self.pending:
            items, self.pending = self.pending, []
            started = perf_counter()
            start, until = self._measure_from, self._measure_until
            batched = self._batched
            if len(batched) == 1:  # the shared model's process sender: no ExitStack
                with batched[0].batch():
                    self.overdue += _send_all(items, start, until, lag)
            else:
                with ExitStack() as stack:
                    for owner in batched:
                        stack.enter_context(owner.batch())
                    self.overdue += _send_all(items, start, until, lag)
            self._ticks.add(len(items), perf_counter() - started)

    def stop(self) -> None:
        """Wake :meth:`run` so it sees that the process is closing."""
        self._wake.set()

    def run_guarded(self, closed: Any, on_error: Any) -> None:
        """:meth:`run`, reporting a failed batch write instead of dying silently."""
        while not closed():
            try:
                self.run(closed)
            except CfnError as exc:
                on_error(exc)


def _send_all(items: list[tuple[CfnClient, int]], start: int, until: int, lag: Any) -> int:
    """Each handed send, its lateness noted when it is measured (intended at or after
    ``start``, the window's opening); how many went out unmeasured after ``until``."""
    overdue = 0
    for client, t in items:
        overdue += _send_one(client, t, start, until, lag)
    return overdue


def _send_one(client: CfnClient, t: int, start: int, until: int, lag: Any) -> int:
    """One send intended at ``t``; its lateness noted when it is measured (``t >= start``).
    Written after ``until`` (the window's end plus the drain) it goes out unmeasured: 1."""
    if t < start:
        client.send(t, 0)
        return 0
    now = time_ns()
    lag(now - t)
    if now <= until:
        client.send(t, 1)
        return 0
    client.send(t, 0)
    return 1
