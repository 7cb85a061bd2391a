"""The Messenger beside the Event Bus: one sender and one receiver process, receiver-paced.

The sender writes ``batch()`` blocks as fast as it can but stays at most a window
of bytes on the wire ahead of what the receiver's handler has counted (a shared
counter, see ``processes.new_counter``). Without the window the sender outruns
the receiver, the server cuts the subscriber off at its ``client-output-buffer-limit
pubsub 32mb`` and the figure would be of messages lost, not delivered; with it,
the rate is one the receiver sustains. Each function here runs in a spawned
process of its own and returns plain data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from typing import Any

from pytest_cfn.measure.microbench.pacing import StopRule
from pytest_cfn.measure.microbench.workloads import PATTERN, TICK, event_data, lean_stats, wire_size
from pytest_cfn.measure.worker_processes import StepFailedError

LAYERS = ("events", "messages")
"""The two layers measured: the Event Bus (events) and the Messenger (messages)."""
BATCH = 1000
"""Sends per ``batch()`` block (fewer when the window holds fewer)."""
RECEIVER_QUEUE = 1_000_000
"""The receiver's dispatch queue, larger than any window, so that the queue between
its socket reader and its handler never drops what the window lets through."""
STALL_SECONDS = 5.0
"""The sender gives up when the receiver's count stays still this long while it waits."""


def window_messages(window_bytes: int, wire_bytes: int) -> int:
    """How many sends the window holds: at least one."""
    return max(1, window_bytes // max(1, wire_bytes))


def data_size(payload: int) -> int:
    """Bytes of the JSON data each send carries (``payload``, or at least 32)."""
    return len(json.dumps(event_data(payload), separators=(",", ":")))


def layer_wire_size(layer: str, payload: int) -> int:
    """Bytes of one encoded envelope of ``layer`` with ``payload`` bytes of data."""
    return wire_size("cfnbench-000000-1", payload, "message" if layer == "messages" else TICK)


class _ProgressCounter:
    """The receiver's handler: counts, notes the last delivery's wall time, and
    publishes its count for the sender's window."""

    __slots__ = ("count", "last", "progress")

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.count = 0
        self.last = 0.0

    def __call__(self, delivered: Any) -> None:
        self.last = time.time()
        self.count += 1
        self.progress.value = self.count


def windowed_receiver(
    url: str,
    layer: str,
    swarm: str,
    progress: Any,
    expected: int,
    ready: Event,
    publisher_done: Event,
    deadline: float,
) -> dict[str, Any]:
    """Worker: an EventBus subscribed to ``bench.*`` or a Messenger listening to its
    swarm's inbox, counting at its handler (see StopRule)."""
    from pytest_cfn import EventBus, Messenger

    counter = _ProgressCounter(progress)
    endpoint: EventBus | Messenger
    if layer == "messages":
        messenger = Messenger.from_url(url, swarm=swarm, agent="receiver",
                                       queue_size=RECEIVER_QUEUE)
        messenger.on_message(counter)
        endpoint = messenger
    else:
        bus = EventBus.from_url(url, swarm=swarm, agent="receiver", queue_size=RECEIVER_QUEUE)
        bus.subscribe(PATTERN, counter)
        endpoint = bus
    with endpoint:
        cpu = time.process_time()
        ready.set()
        StopRule(expected, publisher_done, deadline).wait(lambda: counter.count)
        endpoint.wait_idle(1.0)
        cpu = time.process_time() - cpu
        stats = endpoint.stats()
    return {
        "delivered": counter.count,
        "last_wall": counter.last,
        "cpu_us_per_message": cpu / counter.count * 1e6 if counter.count else 0.0,
        "stats": lean_stats(stats),
    }


def windowed_sender(
    url: str,
    layer: str,
    swarm: str,
    to_swarm: str,
    count: int,
    payload: int,
    window: int,
    progress: Any,
) -> dict[str, Any]:
    """Worker: ``count`` sends in ``batch()`` blocks, each block written only when it
    leaves at most ``window`` sends ahead of the receiver's count; then ``flush()``.
    Events are published on ``swarm``; messages are sent from ``swarm`` to ``to_swarm``.

    ``started_wall`` (wall clock, just before the first send) is what the
    receiver's last delivery is timed from.
    """
    from pytest_cfn import EventBus, Messenger

    data = event_data(payload)
    endpoint: EventBus | Messenger
    send: Callable[..., Any]
    args: tuple[Any, ...]
    if layer == "messages":
        messenger = Messenger.from_url(url, swarm=swarm, agent="sender")
        send, args = messenger.send, (to_swarm, data)
        endpoint = messenger
    else:
        bus = EventBus.from_url(url, swarm=swarm, agent="sender")
        send, args = bus.publish, (TICK, data)
        endpoint = bus
    block = min(BATCH, window)
    held = 0.0
    with endpoint:
        endpoint.connect()
        cpu = time.process_time()
        started_wall = time.time()
        started = time.perf_counter()
        sent = 0
        while sent < count:
            size = min(block, count - sent)
            if sent + size - progress.value > window:
                held += _hold(progress, sent + size - window, sent)
            with endpoint.batch():
                for _ in range(size):
                    send(*args)
            sent += size
        endpoint.flush()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        stats = endpoint.stats()
    return {
        "published": stats["published"],
        "started_wall": started_wall,
        "seconds": seconds,
        "held_seconds": held,
        "cpu_us_per_message": cpu / count * 1e6,
        "stats": lean_stats(stats),
    }


def _hold(progress: Any, needed: int, sent: int) -> float:
    """Sleep until the receiver has counted ``needed``; the seconds waited.

    StepFailedError when its count stays still for STALL_SECONDS: what the window
    waits for was lost or the receiver stopped.
    """
    started = last_move = time.perf_counter()
    seen = progress.value
    while progress.value < needed:
        time.sleep(0.0005)
        now = time.perf_counter()
        if progress.value != seen:
            seen, last_move = progress.value, now
        elif now - last_move > STALL_SECONDS:
            raise StepFailedError(
                f"the receiver's count stayed at {seen:,} of {sent:,} sent for "
                f"{STALL_SECONDS:g} s: messages were lost or the receiver stopped"
            )
    return time.perf_counter() - started
