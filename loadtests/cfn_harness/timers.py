"""Microsecond timers for the pacing loop: run gevent on libev's ``select`` backend.

gevent's default epoll backend wakes sleepers at millisecond granularity (epoll_wait's timeout
is in ms): measured on this machine, ``gevent.sleep(50 µs)`` returned after 1.1 ms. Latency is
measured from the intended send time, so that lateness would be charged to Redis. ``select``
takes its timeout in microseconds (the same sleep: 0.13 ms; io_uring's 0.08 ms needs a kernel
and a libev build that have it, select is in all of them). Locust creates gevent's hub before
it imports a locustfile, so the backend can only be chosen by starting the process again with
GEVENT_BACKEND set.
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


def _backend_works() -> bool:
    try:
        from gevent.libev.corecext import loop as libev_loop

        probe = libev_loop(flags=BACKEND, default=False)
    except Exception:
        return False
    probe.destroy()
    return True


def use_precise_timers() -> None:
    """Re-run this process under the ``select`` loop unless the user chose a backend.

    Set GEVENT_BACKEND (e.g. ``epoll``) to keep a backend; the run records which one it had.
    """
    if "GEVENT_BACKEND" in os.environ or os.environ.get(_GUARD):
        return
    if loop_backend() == BACKEND or not _backend_works():
        return
    argv = getattr(sys, "orig_argv", None)
    if not argv:
        return
    os.environ["GEVENT_BACKEND"] = BACKEND
    os.environ[_GUARD] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])
