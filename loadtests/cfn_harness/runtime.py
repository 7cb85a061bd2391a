"""What one Locust process that runs agents shares: settings, the delivery recorder, the
measurement window, the shared model's buses, and the once-a-second bridge to Locust's stats.

It tells the conductor (the master, or this process when running alone) how many of its agents
have subscribed (``cfn_ready``), and answers two messages: ``cfn_window`` opens the measurement
window at a given time; ``cfn_stop`` closes it, and once every agent has sent its measured
events and deliveries have stopped arriving, the process sends its snapshot as ``cfn_final``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import gevent.event
from gevent import monkey
from locust.env import Environment
from locust.rpc.protocol import Message as RpcMessage
from locust.runners import WorkerRunner
from locust.stats import RequestStats, StatsEntry, bucket_response_time

from cfn_harness.client import MESSENGER, NEVER_NS, CfnClient
from cfn_harness.timers import loop_backend
from pytest_cfn import EventBus
from pytest_cfn._core.options import BusOptions
from pytest_cfn._errors import CfnError
from pytest_cfn.loadgen.accounting import DeliveryRecorder, LocustRow, SubscriberTally
from pytest_cfn.loadgen.lateness import TICK_S, ArrivalLedger
from pytest_cfn.loadgen.options import HarnessOptions
from pytest_cfn.loadgen.traffic import ROLE_MIXES, MeasurementWindow, ScheduleLag

log = logging.getLogger("cfn.harness")
time_ns = time.time_ns
BRIDGE_INTERVAL_S = 0.2
STABLE_S = 0.3
READY_INTERVAL_S = 0.25


def _pause() -> None:
    gevent.sleep(0)


def swarm_name(index: int) -> str:
    return f"swarm-{index:03d}"


def add_rows(stats: RequestStats, rows: list[LocustRow]) -> None:
    """Add one second's aggregated deliveries to Locust's statistics, exactly as Locust merges
    a worker's report: one StatsEntry per row, extended into the entry and the total."""
    now = time.time()
    for row in rows:
        data: Any = {
            "name": row.name,
            "method": row.request_type,
            "last_request_timestamp": now,
            "start_time": now,
            "num_requests": row.count,
            "num_none_requests": 0,
            "num_failures": 0,
            "total_response_time": row.total_ms,
            "max_response_time": row.max_ms,
            "min_response_time": row.min_ms,
            "total_content_length": 0,
            "response_times": row.buckets,
            "num_reqs_per_sec": {int(now): row.count},
            "num_fail_per_sec": {},
        }
        entry = StatsEntry.unserialize(data, stats)
        stats.get(row.name, row.request_type).extend(entry)
        stats.total.extend(entry)


class ProcessRuntime:
    """Per-process state of the harness (one per Locust process that runs users)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.options = HarnessOptions()
        self.url = ""
        self.bus_options = BusOptions()
        self.recorder = DeliveryRecorder()
        self.window = MeasurementWindow()
        self.clients: list[CfnClient] = []
        self.message_types = {e.type for mix in ROLE_MIXES.values() for e in mix if e.message}
        self.swarms = 1
        self.rate = 100.0
        self.processes = 1
        self.index = 0
        self._agents = 0
        self._shared: dict[str, Any] = {}
        self._shared_messengers: dict[str, Any] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._lists: dict[str, list[int]] = {}
        self._message_lists: dict[str, list[int]] = {}
        self._cpu_start: float | None = None
        self._configured = False
        self.go = gevent.event.Event()
        self.failed_agents = 0
        self.closed = False
        self.ledger = ArrivalLedger()
        self.swarm_size = 0

    def configure(self) -> None:
        """Read the settings the conductor chose (they reach workers with the spawn message)."""
        if self._configured:
            return
        values = vars(self.environment.parsed_options)
        self.options = HarnessOptions.from_values(values)
        if not self.options.redis:
            raise CfnError("no Redis URL reached this process; is the master running swarm.py?")
        self.url = self.options.redis
        self.bus_options = BusOptions(namespace=self.options.namespace)
        self.swarms = max(1, self.options.swarms)
        self.rate = self.options.rate
        self.swarm_size = int(values.get("cfn_swarm_size") or 0)
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            # the conductor deals each worker of the run a dense slot (Locust's worker_index
            # keeps counting across reconnects, and a web UI master has no --expect-workers)
            slots = values.get("cfn_worker_slots") or {}
            self.processes = max(1, len(slots) or int(values.get("expect_workers") or 1))
            self.index = int(slots.get(runner.client_id, max(0, runner.worker_index)))
        if self.options.mix is not None:
            self.message_types = {e.type for e in self.options.mix if e.message} | {
                e.type for mix in ROLE_MIXES.values() for e in mix if e.message
            }
        self._configured = True
        self._greenlets.append(gevent.spawn(self._bridge_loop))
        self._greenlets.append(gevent.spawn(self._report_ready))

    def place_agent(self, role: str) -> tuple[str, str, str]:
        """(agent id, swarm, peer swarm): slots interleaved across processes, dealt into swarms
        of ``swarm_size`` (however many agents come, from the command line or the web UI),
        or round robin over ``--cfn-swarms``."""
        n = self._agents
        self._agents += 1
        slot = n * self.processes + self.index
        swarm = slot // self.swarm_size if self.swarm_size else slot % self.swarms
        peer = (swarm + 1) % max(self.swarms, swarm + 1)
        return f"{role}-{self.index}-{n}", swarm_name(swarm), swarm_name(peer)

    def shared_bus(self, swarm: str) -> Any:
        bus = self._shared.get(swarm)
        if bus is None:
            bus = EventBus(self.url, swarm, f"proc{self.index}", options=self.bus_options)
            self._shared[swarm] = bus
            self._greenlets.append(gevent.spawn(self._coalesce, bus))
        return bus

    def shared_messenger(self, swarm: str) -> Any:
        messenger = self._shared_messengers.get(swarm)
        if messenger is None and MESSENGER is not None:
            messenger = MESSENGER(self.url, swarm, f"proc{self.index}", options=self.bus_options)
            self._shared_messengers[swarm] = messenger
            self._greenlets.append(gevent.spawn(self._coalesce, messenger))
        return messenger

    def _coalesce(self, bus: Any) -> None:
        """Hold a batch open and write it every flush interval: the shared model's agents'
        publishes go out as one pipelined write instead of one write each."""
        interval = self.options.flush_ms / 1000.0
        try:
            while not self.closed:
                with bus.batch():
                    gevent.sleep(interval)
        except (CfnError, OSError) as exc:
            if not self.closed:
                log.warning("coalescing writer stopped: %s", exc)

    def handlers(self, tally: SubscriberTally) -> tuple[Any, Any]:
        """An agent's event and message handlers: every delivery is counted (for the window's
        rates, by receive time); latencies and per-priority counts only of measured events
        (those intended inside the window; warm-up traffic is delivered but not recorded)."""
        recorder = self.recorder
        lists = self._lists
        message_lists = self._message_lists
        transit = recorder.transit_pending
        received = tally.received
        message_types = self.message_types

        def on_event(event: Any) -> None:
            tally.arrivals += 1
            data = event.data
            if not data["m"]:
                return
            now = time_ns()
            values = lists.get(event.type)
            if values is None:
                kind = "message" if event.type in message_types else "deliver"
                values = lists[event.type] = recorder.values_for(kind, event.type)
            values.append(now - data["t"])
            transit.append(now - event.ts)
            received[event.priority] += 1

        def on_message(message: Any) -> None:
            tally.arrivals += 1
            envelope = message.envelope
            data = envelope.data
            if not data["m"]:
                return
            now = time_ns()
            kind = data["k"]
            values = message_lists.get(kind)
            if values is None:
                values = message_lists[kind] = recorder.values_for("message", kind)
            values.append(now - data["t"])
            transit.append(now - envelope.ts)
            received[envelope.priority] += 1

        return on_event, on_message

    def _report_ready(self) -> None:
        """Tell the conductor how many agents have subscribed (or failed to), until it opens
        the window; agents start publishing then, so subscribing is not slowed by traffic."""
        runner = self.environment.runner
        assert runner is not None
        sent: tuple[int, int] = (-1, -1)
        while not self.closed and self.window.start_ns is None:
            ready = sum(1 for t in self.recorder.subscribers if t.ready_ns < NEVER_NS)
            if (ready, self.failed_agents) != sent:
                sent = (ready, self.failed_agents)
                runner.send_message("cfn_ready", {"ready": ready, "failed": self.failed_agents})
            gevent.sleep(READY_INTERVAL_S)

    def _bridge_loop(self) -> None:
        stats = self.environment.stats
        while not self.closed:
            gevent.sleep(BRIDGE_INTERVAL_S)
            add_rows(stats, self.recorder.flush(bucket_response_time, _pause))

    def on_window(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        start_ns = int(msg.data["start_ns"])
        self.window.open(start_ns)
        self.go.set()

        def mark_start() -> None:
            self._cpu_start = time.process_time()
            self.recorder.mark_window_start(time_ns())

        gevent.spawn_later(max(0.0, (start_ns - time_ns()) / 1e9), mark_start)
        self._greenlets.append(gevent.spawn(self._tick_arrivals, start_ns))

    def _received(self, window_start_ns: int) -> tuple[int, int]:
        """Measured deliveries so far to agents subscribed before the window (all, p8-9)."""
        total = critical = 0
        for tally in self.recorder.subscribers:
            if tally.ready_ns <= window_start_ns:
                received = tally.received
                total += sum(received)
                critical += received[8] + received[9]
        return total, critical

    def _tick_arrivals(self, window_start_ns: int) -> None:
        """Feed the ledger that tells late deliveries from on-time ones, until the final."""
        while not self.closed and self.window.start_ns is not None:
            self.ledger.tick(time_ns(), *self._received(window_start_ns))
            gevent.sleep(TICK_S)

    def on_stop(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        """Close the window, mark its end (counts and how far behind schedule the agents
        are), let the agents send their last measured events, wait for the deliveries to
        settle, and send this process's snapshot to the conductor."""
        end_ns = int(msg.data["end_ns"])
        self.window.close(end_ns)
        cutoff_ns = end_ns + int(self.options.drain * 1e9)
        start_ns = self.window.start_ns or end_ns
        gevent.spawn_later(max(0.0, (cutoff_ns - time_ns()) / 1e9),
                           lambda: self.ledger.tick(time_ns(), *self._received(start_ns)))
        gevent.sleep(max(0.0, (end_ns - time_ns()) / 1e9))
        now = time_ns()
        lag = ScheduleLag.at(now, (c.next_intended_ns() for c in self.clients))
        self.recorder.mark_window_end(now, lag)
        deadline = time.monotonic() + max(0.0, (end_ns - time_ns()) / 1e9) + self.options.drain
        while time.monotonic() < deadline and any(
            (c.next_intended_ns() or end_ns) < end_ns for c in self.clients
        ):
            gevent.sleep(0.05)
        self._wait_settled(time.monotonic() + self.options.drain)
        cpu_s = time.process_time() - self._cpu_start if self._cpu_start is not None else 0.0
        add_rows(self.environment.stats, self.recorder.flush(bucket_response_time))
        if time_ns() <= cutoff_ns:  # settled before the cutoff: nothing can be late
            self.ledger.tick(cutoff_ns, *self._received(start_ns))
        late = self.ledger.late(cutoff_ns, *self._received(start_ns))
        snapshot = self.recorder.snapshot(
            self.bus_stats(),
            process=self.index,
            agents=len(self.clients),
            sums={"cpu_s": cpu_s},
            gevent_backend=loop_backend(),
            monkey_patched=bool(monkey.is_module_patched("socket"))
            and bool(monkey.is_module_patched("threading")),
            late=late.to_dict(),
        )
        assert environment.runner is not None
        environment.runner.send_message("cfn_final", snapshot)

    def _wait_settled(self, deadline: float) -> None:
        """Until no measured delivery has arrived for STABLE_S seconds (or the deadline)."""
        last = -1
        since = time.monotonic()
        while time.monotonic() < deadline:
            total = sum(sum(t.received) for t in self.recorder.subscribers)
            now = time.monotonic()
            if total != last:
                last, since = total, now
            elif now - since >= STABLE_S:
                return
            gevent.sleep(0.05)

    def bus_stats(self) -> list[dict[str, Any]]:
        stats = [bus.stats() for bus in self._shared.values()]
        stats += [m.stats() for m in self._shared_messengers.values()]
        for client in self.clients:
            stats += client.stats()
        return stats

    def close(self) -> None:
        """Close the shared buses and stop the background greenlets (agents close their own)."""
        if self.closed:
            return
        self.closed = True
        self.go.set()
        for client in list(self.clients):
            client.close()
        for bus in [*self._shared.values(), *self._shared_messengers.values()]:
            try:
                bus.close()
            except CfnError as exc:
                log.debug("closing a shared bus: %s", exc)
        gevent.killall(self._greenlets, block=False)
