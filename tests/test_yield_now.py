"""``yield_now``: a long job sliced by it lets due timers run, under gevent too.

gevent runs a greenlet that sleeps 0 again right behind the ready callbacks and checks its
timers only every 50 of them, so slices chained by ``sleep(0)`` hold a due timer for the
whole job; ``yield_now`` sleeps on a 1 µs timer there. Run in a subprocess: gevent's
monkey patching must not reach the pytest process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

from pytest_cfn._backends.async_backend import yield_now as async_yield_now
from pytest_cfn._backends.sync_backend import yield_now

JOB = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import bisect, sys, time, gevent
    from pytest_cfn._backends.sync_backend import yield_now

    pause = yield_now if sys.argv[1] == "yield_now" else (lambda: time.sleep(0))
    slice_ends = []

    timer_done = []

    # Work in 0.3 ms slices until the timer has woken 5 times (at most 5 s), not for a fixed
    # 80 ms: on a loaded machine the job got half the slices into 80 ms, ended before the
    # timer's last wakes, and those counted 0 slices past due, whatever the pause.
    def job():
        end = time.perf_counter() + 5.0
        while not timer_done and time.perf_counter() < end:
            spin = time.perf_counter() + 0.0003
            while time.perf_counter() < spin:
                pass
            slice_ends.append(time.perf_counter())
            pause()

    overrun = []  # slices of the job that ended after the timer was due, before it woke

    def timer():
        for _ in range(5):
            due = time.perf_counter() + 0.004
            gevent.sleep(0.004)
            woke = time.perf_counter()
            overrun.append(bisect.bisect(slice_ends, woke) - bisect.bisect(slice_ends, due))
        timer_done.append(True)

    worker = gevent.spawn(job)
    gevent.sleep(0.001)
    gevent.joinall([gevent.spawn(timer), worker])
    print(sorted(overrun)[len(overrun) // 2])
""")


def _slices_past_due(pause: str) -> int:
    """The median number of the job's slices that ran after a timer was due (counted, not
    timed, so a busy machine that takes the CPU away does not change it)."""
    done = subprocess.run([sys.executable, "-c", JOB, pause], capture_output=True, text=True,
                          timeout=60, check=True)
    return int(done.stdout.split()[-1])


def test_a_job_sliced_by_yield_now_lets_a_gevent_timer_run_when_due() -> None:
    assert _slices_past_due("yield_now") <= 2


def test_slices_chained_by_sleep_zero_hold_a_gevent_timer() -> None:
    """The reference that shows the test above can fail: the same job with ``sleep(0)``."""
    assert _slices_past_due("sleep0") >= 10


def test_yield_now_without_gevent_is_a_plain_thread_yield() -> None:
    start = time.perf_counter()
    for _ in range(1000):
        yield_now()
    assert (time.perf_counter() - start) / 1000 < 0.001


def test_async_yield_now_lets_another_task_run() -> None:
    ran: list[bool] = []

    async def other() -> None:
        ran.append(True)

    async def main() -> None:
        task = asyncio.ensure_future(other())
        await async_yield_now()
        assert ran == [True]
        await task

    asyncio.run(main())
