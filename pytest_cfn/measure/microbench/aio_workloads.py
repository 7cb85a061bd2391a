"""The asyncio front end's workers: the same figures as ``workloads``, through ``pytest_cfn.aio``.

Each worker runs one event loop (``asyncio.run``) in a spawned process of its
own, so the asyncio figures are printed beside the sync ones from the same run.
The paced sender sleeps with ``time.sleep`` between wake-ups (asyncio's own
timers round to whole milliseconds through epoll, which would bunch a 10,000/s
schedule into 1 ms clumps) and then yields to the loop once, so the loop runs
between sends as it would in an application.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from multiprocessing.synchronize import Event
from typing import Any

from pytest_cfn.measure.microbench.pacing import PacedSchedule, StopRule
from pytest_cfn.measure.microbench.workloads import (
    PATTERN,
    TICK,
    WARM,
    DeliveryCounter,
    LatencyRecorder,
    event_data,
    paced_result,
    seq_of,
    subscriber_result,
    unpaced_result,
)

_POLL = 0.01


async def _wait_for(rule: StopRule, count: Any) -> None:
    while not rule.should_stop(count()):
        await asyncio.sleep(_POLL)


def aio_subscriber(
    url: str, swarm: str, expected: int, ready: Event, publisher_done: Event, deadline: float
) -> dict[str, Any]:
    """Worker: one asyncio EventBus subscriber counting deliveries at its handler."""

    async def main() -> dict[str, Any]:
        from pytest_cfn.aio import EventBus

        counter = DeliveryCounter()
        async with EventBus.from_url(url, swarm=swarm, agent="subscriber") as bus:
            await bus.subscribe(PATTERN, counter)
            cpu = time.process_time()
            ready.set()
            await _wait_for(StopRule(expected, publisher_done, deadline), lambda: counter.count)
            await bus.wait_idle(1.0)
            cpu = time.process_time() - cpu
            stats = bus.stats()
        return subscriber_result(counter, cpu, stats)

    return asyncio.run(main())


def aio_unpaced_publisher(
    url: str, swarm: str, events: int, payload: int, plain: bool = False
) -> dict[str, Any]:
    """Worker: asyncio ``publish()`` in ``batch()`` (or a plain loop), then ``flush()``."""

    async def main() -> dict[str, Any]:
        from pytest_cfn.aio import EventBus

        data = event_data(payload)
        async with EventBus.from_url(url, swarm=swarm, agent="publisher") as bus:
            await bus.connect()
            publish = bus.publish
            cpu = time.process_time()
            started = time.perf_counter()
            if plain:
                for _ in range(events):
                    await publish(TICK, data)
            else:
                async with bus.batch():
                    for _ in range(events):
                        await publish(TICK, data)
            await bus.flush()
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            stats = bus.stats()
        return unpaced_result(events, seconds, cpu, stats)

    return asyncio.run(main())


def aio_latency_subscriber(
    url: str,
    swarm: str,
    expected: int,
    ready: Event,
    publisher_done: Event,
    deadline: float,
    explain: bool = False,
) -> dict[str, Any]:
    """Worker: an asyncio EventBus subscriber recording latency from the intended send time."""

    async def main() -> dict[str, Any]:
        from pytest_cfn._core.stages import StageProbe
        from pytest_cfn.aio import EventBus

        recorder = LatencyRecorder(explain)
        probe = StageProbe() if explain else None
        async with EventBus.from_url(url, swarm=swarm, agent="subscriber") as bus:
            bus.attach_stage_probe(probe)
            await bus.subscribe(PATTERN, recorder)
            cpu = time.process_time()
            ready.set()
            await _wait_for(StopRule(expected, publisher_done, deadline), lambda: recorder.count)
            await bus.wait_idle(1.0)
            cpu = time.process_time() - cpu
            stats = bus.stats()
        return recorder.result(stats, probe, cpu)

    return asyncio.run(main())


def aio_paced_publisher(
    url: str,
    swarm: str,
    rate: float,
    duration: float,
    warmup: float,
    payload: int,
    explain: bool = False,
) -> dict[str, Any]:
    """Worker: asyncio ``publish()`` on the open schedule; several overdue in one ``batch()``."""

    async def main() -> dict[str, Any]:
        from pytest_cfn.aio import EventBus

        pad = event_data(payload)["p"]
        written: array[int] | None = array("q") if explain else None
        schedule = PacedSchedule(rate, duration, warmup)
        async with EventBus.from_url(url, swarm=swarm, agent="publisher") as bus:
            await bus.connect()
            publish = bus.publish
            for due in schedule:
                ids = []
                if len(due) == 1:
                    intended_ns, measured = due[0]
                    data = {"t": intended_ns, "p": pad}
                    ids.append(await publish(TICK if measured else WARM, data))
                else:
                    async with bus.batch():
                        for intended_ns, measured in due:
                            data = {"t": intended_ns, "p": pad}
                            ids.append(await publish(TICK if measured else WARM, data))
                if written is not None:
                    now = time.time_ns()
                    for sent_id in ids:
                        written.extend((seq_of(sent_id), now))
                await asyncio.sleep(0)
            await bus.flush()
            stats = bus.stats()
        assert schedule.run is not None
        return paced_result(schedule.run, stats, written)

    return asyncio.run(main())
