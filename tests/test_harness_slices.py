"""The harness's bookkeeping runs in the gaps of its own traffic (``cfn_harness.slices``).

Run in a subprocess under gevent (as a Locust process runs it), with a made-up pacing loop:
a tick every ``GAP_MS`` that stamps its time, as ``ProcessRuntime._tick`` does, and holds
the next due time in a ``Deadline``-like cell. The bookkeeping is 400 slices of busy work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()  # as Locust does, before anything else
import json, sys, time
sys.path.insert(0, sys.argv[1])
import gevent
from cfn_harness.slices import HOLD_NS, MARGIN_NS, QUIET_AFTER_TICK_NS, QuietGap, Slices
from pytest_cfn.measure.loadgen.pacing import NEVER_NS

gap_ms, use_gap = float(sys.argv[2]), sys.argv[3] == "gap"
due = [NEVER_NS]
last_tick = [0]
ticks = []
stop = [False]

def pacing():  # as ProcessRuntime._pace: the due time is set only while it sleeps to it
    nxt = time.time_ns() + 1_000_000
    while not stop[0]:
        wait = nxt - time.time_ns()
        if wait > 0:
            due[0] = nxt
            gevent.sleep(wait / 1e9)
            due[0] = NEVER_NS
        now = time.time_ns()
        last_tick[0] = now
        ticks.append(now)
        spin = now + 30_000  # the tick's own work
        while time.time_ns() < spin:
            pass
        nxt = now + int(gap_ms * 1e6)

slices_started = []
def bookkeeping():
    pause = Slices(QuietGap(due, lambda: last_tick[0]) if use_gap else None)
    for _ in range(400):
        pause()
        slices_started.append(time.time_ns())
        spin = time.time_ns() + 25_000
        while time.time_ns() < spin:
            pass

pacer = gevent.spawn(pacing)
gevent.sleep(0.005)
began = time.time_ns()
gevent.spawn(bookkeeping).join()
took = time.time_ns() - began
stop[0] = True
pacer.join()
# slices that began within QUIET_AFTER_TICK_NS after a tick, or so close before the next
# tick that they would run into it
import bisect
crowded = 0
for s in slices_started:
    i = bisect.bisect_right(ticks, s)
    after = s - ticks[i - 1] if i else None
    before = ticks[i] - s if i < len(ticks) else None
    if (after is not None and after < QUIET_AFTER_TICK_NS) or (
            before is not None and before < HOLD_NS + MARGIN_NS):
        crowded += 1
print(json.dumps({"crowded": crowded, "slices": len(slices_started), "took_s": took / 1e9}))
"""


def run(gap_ms: float, mode: str) -> dict[str, float]:
    # the harness's processes run libev's select loop (cfn_harness.timers): µs timers
    env = {**os.environ, "GEVENT_BACKEND": "select"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(LOADTESTS), str(gap_ms), mode],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, float] = json.loads(done.stdout)
    return result


def test_bookkeeping_slices_keep_out_of_each_ticks_round_trip() -> None:
    # a tick every 1 ms: 0.3 ms after it and 0.15 ms before the next are the traffic's
    slack = run(1.0, "gap")
    crowded = run(1.0, "slices")
    assert slack["slices"] == crowded["slices"] == 400
    # 30-55 % of the plain slices land beside a tick; in the gaps, a few at most (a
    # timer's lateness on a loaded machine)
    assert crowded["crowded"] >= 80, crowded
    assert slack["crowded"] <= 0.25 * crowded["crowded"], (slack, crowded)


def test_traffic_that_leaves_no_gap_still_gets_its_bookkeeping_done() -> None:
    # a tick every 0.25 ms: never 0.3 ms quiet, so each slice waits GAP_WAIT_MAX_S (2 ms) at
    # most: 400 slices in about 0.9 s, not never
    result = run(0.25, "gap")
    assert result["slices"] == 400
    assert result["took_s"] < 5.0, result
