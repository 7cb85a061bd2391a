"""One simulated agent's client: its Event Bus and Messenger, publishing on a constant-rate
schedule and recording what its subscriptions deliver.

Locust's custom-client idiom (``locust/contrib/postgres.py``): the client wraps the library and
fires ``events.request`` for each publish ("publish", event type), with the call's time and any
error. Deliveries are not fired one by one (a process handles only ~150k Locust events/s and
deliveries fan out); handlers append to the process's DeliveryRecorder and the runtime adds
them to Locust's statistics once a second ("deliver"/"message", event type).

In the per-agent model the client owns its connections (Event Bus and Messenger: 2 + 2, as
ADR-002's table counts). In the shared model it borrows its swarm's bus and messenger from the
process (one set per swarm per process) and only adds its handlers.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import gevent

from pytest_cfn import EventBus
from pytest_cfn._errors import CfnError
from pytest_cfn.loadgen.options import MixEntry
from pytest_cfn.loadgen.traffic import Schedule, padding_for, traffic_cycle

MESSENGER: type[Any] | None
try:  # without a Messenger (older library) messages ride the destination's Event Bus
    from pytest_cfn import Messenger as _Messenger

    MESSENGER = _Messenger
except ImportError:  # pragma: no cover - depends on the library version
    MESSENGER = None

if TYPE_CHECKING:
    from cfn_harness.runtime import ProcessRuntime

log = logging.getLogger("cfn.harness")
time_ns = time.time_ns
perf_counter = time.perf_counter
NEVER_NS = 1 << 62


class CfnClient:
    """The connections of one agent and the accounting of what it sends and receives."""

    def __init__(
        self,
        runtime: ProcessRuntime,
        swarm: str,
        agent: str,
        role: str,
        mix: tuple[MixEntry, ...],
        peer_swarm: str,
    ) -> None:
        self.runtime = runtime
        self.swarm = swarm
        self.agent = agent
        self.role = role
        self.peer_swarm = peer_swarm
        self._cycle = traffic_cycle(mix)
        self._fire = runtime.environment.events.request.fire
        self._owned: list[Any] = []
        self._tokens: list[tuple[Any, int]] = []
        try:
            self._connect(runtime, swarm, agent)
        except BaseException:
            self.close()
            raise

    def _connect(self, runtime: ProcessRuntime, swarm: str, agent: str) -> None:
        options = runtime.options
        self.shared = options.model == "shared"
        self.bus = runtime.shared_bus(swarm) if self.shared else self._own_bus(swarm)
        self.messenger = self._messenger(swarm)
        self._links: dict[str, Any] = {}
        self.padding = padding_for(
            options.payload, swarm, agent, f"{agent}.00000000", "state.update"
        )
        self.size = max(options.payload, 150)
        # counted as late (left out of loss accounting) unless subscribing completes
        self.tally = runtime.recorder.add_subscriber(swarm, agent, NEVER_NS)
        on_event, on_message = runtime.handlers(self.tally)
        self._tokens.append((self.bus, self.bus.subscribe("*", on_event)))
        if self.messenger is not None:
            self._tokens.append((self.messenger, self.messenger.on_message(on_message)))
        self.tally.ready_ns = time_ns()

    def _own_bus(self, swarm: str) -> Any:
        bus = EventBus(self.runtime.url, swarm, self.agent, options=self.runtime.bus_options)
        self._owned.append(bus)
        return bus

    def _messenger(self, swarm: str) -> Any:
        if MESSENGER is None:
            return None
        if self.shared:
            return self.runtime.shared_messenger(swarm)
        messenger = MESSENGER(self.runtime.url, swarm, self.agent, options=self.runtime.bus_options)
        self._owned.append(messenger)
        return messenger

    def _link(self, swarm: str) -> Any:
        """Without a Messenger: the Event Bus of the destination swarm, publisher side only."""
        link = self._links.get(swarm)
        if link is None:
            if swarm == self.swarm:
                link = self.bus
            elif self.shared:
                link = self.runtime.shared_bus(swarm)
            else:
                link = EventBus(
                    self.runtime.url, swarm, self.agent, options=self.runtime.bus_options
                )
                self._owned.append(link)
            self._links[swarm] = link
        return link

    def run_schedule(self, rate: float, phase: float) -> None:
        """Once every agent has subscribed, publish on the schedule until the window closes
        (then idle until Locust stops us)."""
        runtime = self.runtime
        window = runtime.window
        recorder = runtime.recorder
        lag = recorder.lag_pending
        runtime.go.wait()
        schedule = Schedule(rate, time_ns(), phase)
        self.schedule = schedule
        sleep = gevent.sleep
        while True:
            end = window.end_ns
            t = schedule.next_ns()
            if end is not None and t >= end:
                break
            delay = (t - time_ns()) / 1e9
            if delay > 0:
                sleep(delay)
                continue
            schedule.take()
            measured = window.measured(t)
            if measured:
                lag.append(time_ns() - t)
            self.publish(next(self._cycle), t, measured)
        while True:
            sleep(3600)

    def publish(self, entry: MixEntry, intended_ns: int, measured: bool) -> None:
        """One event (or message) with its intended send time; fires a Locust request event."""
        data = {"t": intended_ns, "m": 1 if measured else 0, "a": self.agent, "p": self.padding}
        recorder = self.runtime.recorder
        destination = self.swarm
        start = perf_counter()
        try:
            if entry.message:
                destination = self.peer_swarm
                data["k"] = entry.type
                if self.messenger is not None:
                    self.messenger.send(destination, data, entry.priority)
                else:
                    self._link(destination).publish(entry.type, data, entry.priority)
            else:
                self.bus.publish(entry.type, data, entry.priority)
        except CfnError as exc:
            recorder.publish_errors += 1
            self._fire(
                request_type="publish",
                name=entry.type,
                response_time=(perf_counter() - start) * 1000,
                response_length=0,
                exception=exc,
            )
            return
        self._fire(
            request_type="publish",
            name=entry.type,
            response_time=(perf_counter() - start) * 1000,
            response_length=self.size,
            exception=None,
        )
        recorder.published_total += 1
        if measured:
            recorder.published_counts(destination)[entry.priority] += 1

    def next_intended_ns(self) -> int | None:
        schedule = getattr(self, "schedule", None)
        return schedule.next_ns() if schedule is not None else None

    def stats(self) -> list[dict[str, Any]]:
        """Counters of the connections this agent owns (shared ones are the runtime's)."""
        return [bus.stats() for bus in self._owned]

    def close(self) -> None:
        for owner, token in self._tokens:
            remove = getattr(owner, "unsubscribe", None) or owner.remove_handler
            try:
                remove(token)
            except CfnError:
                pass
        self._tokens.clear()
        for bus in self._owned:
            try:
                bus.close()
            except CfnError as exc:
                log.debug("closing %s: %s", self.agent, exc)
        self._owned.clear()
