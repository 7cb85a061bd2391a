"""Precise sleeps for the paced senders: Linux's timer slack set to 1 ns for this thread.

Linux lets a sleeping thread's wake-up slide by its *timer slack* (50 µs by default) so that
wake-ups can be grouped. A paced sender that sleeps until each send is due then wakes up to
50 µs late, and the latency measured from the intended send time carries that lateness:
measured here, a gevent ``select`` loop's 0.3-0.9 ms sleeps overshot by 73 µs (p50) with
the default slack and by 23 µs with 1 ns. Every sender of the project asks for it (the
benchmark's paced publishers, the load harness's pacing loop and the bare-library reference),
so it favours none of them.
"""

from __future__ import annotations

import ctypes
import sys

_PR_SET_TIMERSLACK = 29


def tighten_timer_slack() -> bool:
    """Ask Linux to wake this thread's sleeps within 1 ns of their deadline instead of the
    default 50 µs of slack, which is half of a 10,000/s schedule's interval; False where
    the system has no such setting (not Linux) or refused it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
