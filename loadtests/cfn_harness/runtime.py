"""What one Locust process that runs agents shares: settings, the delivery recorder, the
measurement window, the shared model's buses, and the once-a-second bridge to Locust's stats.

It tells the conductor (the master, or this process when running alone) how many of its agents
have subscribed (``cfn_ready``), and answers two messages: ``cfn_window`` opens the measurement
window at a given time; ``cfn_stop`` closes it, and once every agent has sent its measured
events and deliveries have stopped arriving, the process sends its snapshot as ``cfn_final``.
"""

from __future__ import annotations

import gc
import logging
import random
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
from cfn_harness.senders import Sender
from cfn_harness.slices import QuietGap, Slices
from cfn_harness.timers import loop_backend
from pytest_cfn import EventBus, SharedConnections
from pytest_cfn._async.connection_share import CONNECTION_KEYS
from pytest_cfn._backends.sync_backend import yield_now
from pytest_cfn._core.options import BusOptions
from pytest_cfn._errors import CfnError, InvalidOptionError
from pytest_cfn.measure.loadgen.accounting import DeliveryRecorder, LocustRow, SubscriberTally
from pytest_cfn.measure.loadgen.lateness import TICK_S, ArrivalLedger
from pytest_cfn.measure.loadgen.machine_load import this_host
from pytest_cfn.measure.loadgen.options import HarnessOptions
from pytest_cfn.measure.loadgen.pacing import (
    Deadline,
    LateWakes,
    ProcessSchedule,
    PublishTicks,
    swarm_phase,
    tick_floor_ms,
)
from pytest_cfn.measure.loadgen.taps import (
    DeliveryTap,
    TapBatch,
    TypeCodes,
    fold,
    warm_up_fold,
)
from pytest_cfn.measure.loadgen.traffic import (
    ROLE_MIXES,
    MeasurementWindow,
    ScheduleLag,
    event_types_of,
)
from pytest_cfn.measure.timer_slack import tighten_timer_slack

log = logging.getLogger("cfn.harness")
time_ns = time.time_ns
perf_counter = time.perf_counter
TICK_LIMIT = 2000  # sends per scheduler tick before it yields (far behind its schedule)
CATCH_UP_LIMIT = {"per-agent": 24, "shared": 256}
"""Due sends a tap takes at once: about 1 ms of sends (a per-agent publish costs 35-45 µs of
CPU, a shared-model send handed to the process's write a few µs); the reader's inline budget
for its handlers is 2 ms (``pytest_cfn._async.engine``)."""
BRIDGE_INTERVAL_S = 0.2
STABLE_S = 0.3
SETTLE_WAIT_S = 5.0
"""How long past the drain a worker waits for the conductor's word to settle."""
READY_INTERVAL_S = 0.25


def swarm_name(index: int) -> str:
    return f"swarm-{index:03d}"


def add_rows(stats: RequestStats, rows: list[LocustRow], pause: Any = None) -> None:
    """Add one second's aggregated deliveries to Locust's statistics, exactly as Locust merges
    a worker's report: one StatsEntry per row, extended into the entry and the total
    (``pause()`` between rows when given)."""
    now = time.time()
    for row in rows:
        if pause is not None:
            pause()
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
        self.type_codes = TypeCodes(self.message_types)
        self._event_types = event_types_of()
        """Every bus's exact channels (``--cfn-channels exact``), set again by configure()."""
        self.taps: list[DeliveryTap] = []
        self._tap_of: dict[int, DeliveryTap] = {}
        self.swarms = 1
        self.rate = 100.0
        self.processes = 1
        self.index = 0
        self._agents = 0
        self._shared: dict[str, Any] = {}
        self._shared_messengers: dict[str, Any] = {}
        self.share: Any = None
        """Shared model: the process's one publisher and one subscriber connection for all
        its swarms' buses and messengers (None: each has its own, as on Redis Cluster)."""
        self._process_sender: Sender | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self.schedule: ProcessSchedule[CfnClient] = ProcessSchedule(self.rate, 0)
        self.publish_names: list[str] = []
        self.publishes: list[int] = []
        self._publish_index: dict[str, int] = {}
        self.senders: list[Sender] = []
        self._swarm_senders: dict[str, Sender] = {}
        self._ticks = PublishTicks()
        self.late_wakes = LateWakes()
        self.deadline = Deadline()
        self.deadline.catch_up = self._catch_up
        self._ticking = False
        self._last_tick_ns = 0
        self._min_tick_ns = 0
        self._catch_up_limit = CATCH_UP_LIMIT["per-agent"]
        self._carry: list[TapBatch] = []
        self._cpu_start: float | None = None
        self._cpu_end: float | None = None
        self._configured = False
        self.go = gevent.event.Event()
        self.settle = gevent.event.Event()
        """Set by the conductor's ``cfn_settle``: no worker sends a measured event any more."""
        self.failed_agents = 0
        self.closed = False
        self.ledger = ArrivalLedger()
        self.swarm_size = 0
        self.block = 0
        """Agents per worker block of consecutive slots (0: slots interleaved)."""

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
        self.schedule = ProcessSchedule(self.rate, 0)
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            # the conductor deals each worker of the run a dense slot (Locust's worker_index
            # keeps counting across reconnects, and a web UI master has no --expect-workers)
            slots = values.get("cfn_worker_slots") or {}
            self.processes = max(1, len(slots) or int(values.get("expect_workers") or 1))
            self.index = int(slots.get(runner.client_id, max(0, runner.worker_index)))
            self.block = int(values.get("cfn_worker_block") or 0)
        self._event_types = event_types_of(self.options.mix)
        if self.options.mix is not None:
            self.message_types |= {e.type for e in self.options.mix if e.message}
            self.type_codes.message_types |= self.message_types
        if self.options.model == "shared" and self.options.share_connections:
            self._ask_whether_shared()
        self._configured = True
        warm_up_fold(bucket_response_time)
        self._greenlets.append(gevent.spawn(self._bridge_loop))
        self._greenlets.append(gevent.spawn(self._report_ready))
        self._greenlets.append(gevent.spawn(self._pace))

    def place_agent(self, role: str) -> tuple[str, str, str, float]:
        """(agent id, swarm, peer swarm): each worker's agents take a block of consecutive
        slots (the users asked for over the workers), so a swarm's agents share one process
        and its events are read once; agents beyond the block (users added mid-run) are
        interleaved after all the blocks. Slots are dealt into swarms of ``swarm_size``
        (however many agents come, from the command line or the web UI), or round robin
        over ``--cfn-swarms``. The phase is the agent's place in the send interval: its
        swarm's (``--cfn-phase swarm``) or a random one of its own (``agent``)."""
        n = self._agents
        self._agents += 1
        block, processes = self.block, self.processes
        if block and n < block:
            slot = self.index * block + n
        elif block:
            slot = processes * block + (n - block) * processes + self.index
        else:
            slot = n * processes + self.index
        swarm = slot // self.swarm_size if self.swarm_size else slot % self.swarms
        peer = (swarm + 1) % max(self.swarms, swarm + 1)
        phase = swarm_phase(swarm) if self.options.phase == "swarm" else random.random()
        return f"{role}-{self.index}-{n}", swarm_name(swarm), swarm_name(peer), phase

    def new_tap(self, own: SubscriberTally | None = None) -> DeliveryTap:
        tap = DeliveryTap(self.type_codes, own, self.deadline)
        self.taps.append(tap)
        return tap

    def tap_of(self, owner: Any) -> DeliveryTap:
        return self._tap_of[id(owner)]

    def _ask_whether_shared(self) -> None:
        """Shared model: make the process's SharedConnections and ask the server, once, before
        any agent spawns, whether buses can share them (not on a Redis Cluster node). Asked
        later, agents spawning at once raced past the answer."""
        self.share = SharedConnections(self.url, f"proc{self.index}", options=self.bus_options)
        try:
            if not self.share.usable():
                log.info("a Redis Cluster node: the shared model's buses get connections "
                         "of their own (SharedConnections serve one server)")
        except CfnError as exc:  # the first bus reports the server's absence as it always has
            log.warning("cannot ask %s whether it is a cluster node: %s", self.url, exc)

    def _share_for(self, make: Any) -> Any:
        """``make(share)``: a bus on the process's shared connections (made when the test
        started, see :meth:`_ask_whether_shared`), or with connections of its own where the
        server cannot share them (a Redis Cluster node: each swarm's channel lives on its
        slot's owner)."""
        if self.share is not None and self.share.cluster is not True:
            return make(self.share)
        return make(None)

    def event_types(self) -> list[str] | None:
        """What a bus subscribes (``--cfn-channels exact``): every intra-swarm event type
        of the run's mixes (a superset is harmless: a type no agent sends leaves no gap),
        or None (the swarm's pattern)."""
        if not self.options.exact_channels:
            return None
        return self._event_types

    def inbox_senders(self, swarm: str) -> list[str] | None:
        """Whose messages an inbox of ``swarm`` takes (``--cfn-channels exact``): the swarm
        before it, whose peer it is (``place_agent``). Swarm 0 is the peer of the last
        swarm, which agents added later (the web UI) can move: its inbox keeps the
        pattern, as does every inbox with ``--cfn-channels patterns``."""
        index = int(swarm.rsplit("-", 1)[1])
        if not self.options.exact_channels or index == 0:
            return None
        return [swarm_name(index - 1)]

    def shared_bus(self, swarm: str) -> Any:
        """The swarm's Event Bus of this process, its tap subscribed first."""
        bus = self._shared.get(swarm)
        if bus is None:
            owner = f"proc{self.index}"
            bus = self._share_for(lambda share: EventBus(
                self.url, swarm, owner, options=self.bus_options, share=share,
                event_types=self.event_types()))
            self._shared[swarm] = bus
            tap = self._tap_of[id(bus)] = self.new_tap()
            try:
                bus.subscribe("*", tap.on_event())
            except InvalidOptionError:  # a cluster node: connections of its own
                bus.close()
                self.share.cluster = True
                bus = self._shared[swarm] = EventBus(
                    self.url, swarm, owner, options=self.bus_options,
                    event_types=self.event_types())
                self._tap_of[id(bus)] = tap
                bus.subscribe("*", tap.on_event())
        return bus

    def shared_messenger(self, swarm: str) -> Any:
        messenger = self._shared_messengers.get(swarm)
        if messenger is None and MESSENGER is not None:
            self.shared_bus(swarm)  # finds out first whether connections can be shared
            messenger = self._share_for(lambda share: MESSENGER(
                self.url, swarm, f"proc{self.index}", options=self.bus_options, share=share,
                from_swarms=self.inbox_senders(swarm)))
            self._shared_messengers[swarm] = messenger
            tap = self._tap_of[id(messenger)] = self.new_tap()
            messenger.on_message(tap.on_message())
        return messenger

    def publish_index(self, event_type: str) -> int:
        """The slot of ``event_type`` in :attr:`publishes` (publishes per type, for Locust)."""
        index = self._publish_index.get(event_type)
        if index is None:
            index = self._publish_index[event_type] = len(self.publish_names)
            self.publish_names.append(event_type)
            self.publishes.append(0)
        return index

    def new_sender(self, *batched: Any, direct: bool = False) -> Sender:
        """A sender for one agent (per-agent model: ``direct``, each slot written as the
        pacing loop hands it over) or for one swarm's shared bus and messenger (shared model:
        writes batched)."""
        sender = Sender(self.recorder.lag_pending, self._ticks, batched, direct=direct)
        if self.window.start_ns is not None:
            sender.measure_from(self.window.start_ns)
        self.senders.append(sender)
        return sender

    def swarm_sender(self, swarm: str) -> Sender:
        """Shared model: the sender that writes this swarm's sends. On shared connections
        one sender serves every swarm of the process (a tick is one write); otherwise one
        per swarm, batching its bus and messenger."""
        if self.share is not None and self.share.cluster is not True:
            self.shared_bus(swarm)
            if self._process_sender is None:
                # every send of the process goes through it: the pacing loop writes them
                # itself, straight after taking them, with no greenlet to wake in between
                self._process_sender = self.new_sender(self.share)
                self._process_sender.inline = True
            return self._process_sender
        sender = self._swarm_senders.get(swarm)
        if sender is None:
            owners = [self.shared_bus(swarm)]
            messenger = self.shared_messenger(swarm)
            if messenger is not None:
                owners.append(messenger)
            sender = self._swarm_senders[swarm] = self.new_sender(*owners)
            self._greenlets.append(gevent.spawn(self.run_sender, sender))
        return sender

    def run_sender(self, sender: Sender) -> None:
        sender.run_guarded(lambda: self.closed, lambda exc: self.publish_failed("batch", exc))

    def publish_failed(self, event_type: str, exc: Exception) -> None:
        self.recorder.publish_errors += 1
        self.environment.events.request.fire(
            request_type="publish", name=event_type, response_time=0.0, response_length=0,
            exception=exc,
        )

    def schedule_agent(self, client: CfnClient, phase: float) -> None:
        self.schedule.add(client, phase)
        self._set_tick_floor()

    def unschedule_agent(self, client: CfnClient) -> None:
        self.schedule.remove(client)
        self._set_tick_floor()

    def _set_tick_floor(self) -> None:
        """The shared model's least gap between ticks, for the agents scheduled now."""
        if self.options.model == "shared":
            floor_ms = tick_floor_ms(self.options.flush_ms, len(self.schedule) * self.rate)
            self._min_tick_ns = int(floor_ms * 1e6)

    def _pace(self) -> None:
        """The process's one pacing loop: sleep until the next intended send of any agent,
        then hand every due slot to its agent's sender (see ``pytest_cfn.measure.loadgen.pacing``
        and ``senders``). In the shared model ticks are at least ``tick_floor_ms`` apart: a
        tick's sends go out as one write, so Redis and the reader are woken once per tick.
        The per-agent model sends each slot when it is due (measured: ticks there make
        Redis write to every agent's socket at once, and lag and transit grow tenfold).
        While it sleeps, the taps hold its deadline: a reader that runs when it is due takes
        the due slots (``_catch_up``)."""
        self.go.wait()
        # wake within 1 ns of each due send, not Linux's default 50 µs of slack (the
        # benchmark's senders do the same): the greenlets all run on this thread
        tighten_timer_slack()
        schedule = self.schedule
        schedule.base_ns = time_ns()
        window = self.window
        self._set_tick_floor()
        self._catch_up_limit = CATCH_UP_LIMIT.get(self.options.model, TICK_LIMIT)
        sleep = gevent.sleep
        cpu_ns = time.process_time_ns
        late_wakes = self.late_wakes
        due = self.deadline.due

        while not self.closed:
            end = window.end_ns
            at = self._next_tick_ns(end)
            if at is None:
                due[0] = NEVER_NS
                sleep(0.01)
                continue
            now = time_ns()
            wait = at - now
            late = 0
            if wait > 0:
                cpu = cpu_ns()
                due[0] = at
                sleep(wait / 1e9)
                due[0] = NEVER_NS
                woke = time_ns()
                opened = window.start_ns
                if opened is not None and opened <= now and (end is None or now < end):
                    late = woke - now - wait
                    cpu = cpu_ns() - cpu
                now = woke
            if self._ticking:  # a reader is taking the due slots (and waits on a socket)
                sleep(0.0002)
                continue
            sent = self._tick(now, end, TICK_LIMIT)
            if sent and late:  # (a wake-up whose slots the taps took was not late)
                late_wakes.note(wait, late, cpu)
            if sent >= TICK_LIMIT:  # far behind: let the senders, readers and heartbeats run
                yield_now()

    def _next_tick_ns(self, end: int | None) -> int | None:
        nxt = self.schedule.next_ns()
        if nxt is None or (end is not None and nxt >= end):
            return None
        return max(nxt, self._last_tick_ns + self._min_tick_ns)

    def _tick(self, now: int, end: int | None, limit: int) -> int:
        """Hand every slot due by ``now`` (at most ``limit``) to its sender; write the
        process sender's share; how many were handed."""
        self._ticking = True
        try:
            self._last_tick_ns = now
            sent = self.schedule.run_due(now, end, self._hand, limit)
            inline = self._process_sender
            if inline is not None and inline.pending:
                try:
                    inline.write_handed()
                except CfnError as exc:
                    self.publish_failed("batch", exc)
            return sent
        finally:
            self._ticking = False

    @staticmethod
    def _hand(client: CfnClient, t: int) -> None:
        client.sender.hand(client, t)

    def _catch_up(self, now: int) -> None:
        """A tap read ``now`` at or past the pacing loop's deadline: take the due slots
        here, up to ``CATCH_UP_LIMIT`` (the reader goes on delivering after them). Once per
        sleep of the loop: the deadline stays cleared until the loop, woken by its timer,
        has ticked and sleeps again, so a reader working off a backlog never turns into a
        sender."""
        if self._ticking or self.closed:
            return
        self.deadline.due[0] = NEVER_NS
        self._tick(now, self.window.end_ns, self._catch_up_limit)

    def _collect(self, pause: Slices | None = None) -> list[TapBatch]:
        """Credit every agent with its deliveries so far and take the taps' arrays, in
        slices when given ``pause`` (without, in one go: for the window's marks)."""
        batches, self._carry = self._carry, []
        for tap in self.taps:
            batch = tap.count()
            if batch is not None:
                batches.append(batch)
            if pause is not None:
                pause()
        return batches

    def _fold(self, batches: list[TapBatch], pause: Any = None) -> list[LocustRow]:
        rows: list[LocustRow] = []
        if batches:
            joined = TapBatch.join(batches)
            if pause is not None:
                pause()
            rows = fold(self.recorder, joined, self.type_codes, bucket_response_time, pause)
        rows += self.recorder.flush(bucket_response_time, pause)
        rows += self._ticks.rows(self.publish_names, self.publishes, bucket_response_time)
        return rows

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
        gap = QuietGap(self.deadline.due, lambda: self._last_tick_ns)
        while not self.closed:
            gevent.sleep(BRIDGE_INTERVAL_S)
            pause = Slices(gap)
            add_rows(stats, self._fold(self._collect(pause), pause), pause)

    def on_window(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        start_ns = int(msg.data["start_ns"])
        self.window.open(start_ns)
        # Every agent, bus and greenlet exists now and lives for the run: keep them out of
        # the collector's scans (the per-event garbage is all young, and acyclic)
        gc.freeze()
        for sender in self.senders:
            sender.measure_from(start_ns)
        self.go.set()

        def mark_start() -> None:
            batches = self._collect()
            self._cpu_start = time.process_time()
            self.recorder.published_total = sum(self.publishes)
            self.recorder.mark_window_start(time_ns())
            self._carry.extend(batches)

        gevent.spawn_later(max(0.0, (start_ns - time_ns()) / 1e9), mark_start)
        self._greenlets.append(gevent.spawn(self._tick_arrivals, start_ns))

    def _received(self, window_start_ns: int) -> tuple[int, int]:
        """Measured deliveries credited so far (taps are counted every BRIDGE_INTERVAL_S) to
        agents subscribed before the window: (all, p8-9)."""
        total = critical = 0
        for tally in self.recorder.subscribers:
            if tally.ready_ns <= window_start_ns:
                received = tally.received
                total += sum(received)
                critical += received[8] + received[9]
        return total, critical

    def _tick_at_cutoff(self, window_start_ns: int) -> None:
        """The exact on-time counts: every tap credited to its agents at the cutoff."""
        self._carry.extend(self._collect())
        self.ledger.tick(time_ns(), *self._received(window_start_ns))

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
        for sender in self.senders:  # the same moment in every process
            sender.measure_until(cutoff_ns)
        start_ns = self.window.start_ns or end_ns
        gevent.spawn_later(max(0.0, (cutoff_ns - time_ns()) / 1e9), self._tick_at_cutoff,
                           start_ns)
        gevent.sleep(max(0.0, (end_ns - time_ns()) / 1e9))
        self._carry.extend(self._collect())
        cpu_end = time.process_time()
        now = time_ns()
        started = self.go.is_set() and self.schedule.base_ns > 0
        lag = ScheduleLag.at(now, self.schedule.next_for_each() if started else ())
        self.recorder.published_total = sum(self.publishes)
        self.recorder.mark_window_end(now, lag)
        deadline = time.monotonic() + self.options.drain
        while time.monotonic() < deadline and started and (
            self.schedule.next_ns() or end_ns
        ) < end_ns:
            gevent.sleep(0.05)
        if isinstance(environment.runner, WorkerRunner):
            # Another worker may still be sending measured events to this one's agents (a
            # Messenger's peer swarm, a worker further behind): say this one has sent its
            # last and settle when the conductor says all have. Settled earlier, those
            # deliveries were counted as never arrived.
            environment.runner.send_message("cfn_sent", {})
            self.settle.wait(timeout=self.options.drain + SETTLE_WAIT_S)
        self._wait_settled(time.monotonic() + self.options.drain)
        cpu_s = time.process_time() - self._cpu_start if self._cpu_start is not None else 0.0
        window_cpu_s = cpu_end - self._cpu_start if self._cpu_start is not None else 0.0
        add_rows(self.environment.stats, self._fold(self._collect()))
        self.recorder.published_total = sum(self.publishes)
        if time_ns() <= cutoff_ns:  # settled before the cutoff: nothing can be late
            self.ledger.tick(cutoff_ns, *self._received(start_ns))
        late = self.ledger.late(cutoff_ns, *self._received(start_ns))
        snapshot = self.recorder.snapshot(
            self.bus_stats(),
            process=self.index,
            host=this_host(),
            agents=len(self.clients),
            sums={"cpu_s": cpu_s, "window_cpu_s": window_cpu_s,
                  "overdue_unmeasured": float(sum(s.overdue for s in self.senders)),
                  **self.late_wakes.sums()},
            gevent_backend=loop_backend(),
            channels="exact" if self.options.exact_channels else "patterns",
            monkey_patched=bool(monkey.is_module_patched("socket"))
            and bool(monkey.is_module_patched("threading")),
            late=late.to_dict(),
        )
        assert environment.runner is not None
        environment.runner.send_message("cfn_final", snapshot)

    def on_settle(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        self.settle.set()

    def _wait_settled(self, deadline: float) -> None:
        """Until no measured delivery has arrived for STABLE_S seconds (or the deadline)."""
        last = -1
        since = time.monotonic()
        while time.monotonic() < deadline:
            self._carry.extend(self._collect())
            total = sum(sum(t.received) for t in self.recorder.subscribers)
            now = time.monotonic()
            if total != last:
                last, since = total, now
            elif now - since >= STABLE_S:
                return
            gevent.sleep(0.05)

    def bus_stats(self) -> list[dict[str, Any]]:
        """Every bus's counters; those of shared connections counted once (the share's)."""
        stats = [bus.stats() for bus in self._shared.values()]
        stats += [m.stats() for m in self._shared_messengers.values()]
        if any(s.get("shared_connections") for s in stats):
            for one in stats:
                if one.get("shared_connections"):
                    one.update(dict.fromkeys(CONNECTION_KEYS, 0))
            stats.append(self.share.stats())
        for client in self.clients:
            stats += client.stats()
        return stats

    def close(self) -> None:
        """Close the shared buses and stop the background greenlets (agents close their own)."""
        if self.closed:
            return
        self.closed = True
        self.go.set()
        for sender in self.senders:
            sender.stop()
        for client in list(self.clients):
            client.close()
        for bus in [*self._shared.values(), *self._shared_messengers.values()]:
            try:
                bus.close()
            except CfnError as exc:
                log.debug("closing a shared bus: %s", exc)
        if self.share is not None:
            try:
                self.share.close()
            except CfnError as exc:
                log.debug("closing the shared connections: %s", exc)
        gevent.killall(self._greenlets, block=False)

