"""One simulated agent's client: its Event Bus and Messenger, the sends the process's pacing
schedule asks of it, and the taps that count what its subscriptions deliver.

The agent does not pace itself: the process runs one pacing schedule over all its agents
(``ProcessRuntime``) and calls :meth:`CfnClient.send` for each due slot. Publishes are not
fired as Locust request events one by one; the runtime adds them to Locust's statistics in
aggregate (counts per event type, the mean time of a publish call per scheduler tick), as it
does deliveries. A publish that fails is fired at once, with its exception.

In the per-agent model the client owns its connections (Event Bus and Messenger: 2 + 2, as
ADR-002's table counts) and a tap on each is its handler. In the shared model it borrows its
swarm's bus and messenger from the process (one set per swarm per process, all on the
process's SharedConnections unless ``--cfn-share swarm``, each with the
process's tap as its first handler) and adds a handler of its own that the tap checks.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

import gevent

from pytest_cfn import EventBus
from pytest_cfn._errors import CfnError
from pytest_cfn.measure.loadgen.options import MixEntry
from pytest_cfn.measure.loadgen.pacing import NEVER_NS
from pytest_cfn.measure.loadgen.taps import DeliveryTap
from pytest_cfn.measure.loadgen.traffic import padding_for, traffic_cycle

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


class CfnClient:
    """The connections of one agent, its sends, and the accounting of what it receives."""

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
        self._owned: list[Any] = []
        self._tokens: list[tuple[Any, int]] = []
        self._listening: list[tuple[DeliveryTap, list[Any]]] = []
        self.closed = False
        try:
            self._connect(runtime, swarm, agent)
        except BaseException:
            self.close()
            raise
        self._cycle = self._plan(mix)
        self.sender = (
            runtime.swarm_sender(swarm) if self.shared else runtime.new_sender(direct=True)
        )

    def _connect(self, runtime: ProcessRuntime, swarm: str, agent: str) -> None:
        options = runtime.options
        self.shared = options.model == "shared"
        self.padding = padding_for(
            options.payload, swarm, agent, f"{agent}.00000000", "state.update"
        )
        # counted as late (left out of loss accounting) unless subscribing completes
        self.tally = runtime.recorder.add_subscriber(swarm, agent, NEVER_NS)
        if self.shared:
            self.bus = runtime.shared_bus(swarm)
            self._listen(self.bus, runtime.tap_of(self.bus), messages=False)
            self.messenger = runtime.shared_messenger(swarm)
            if self.messenger is not None:
                self._listen(self.messenger, runtime.tap_of(self.messenger), messages=True)
        else:
            self.bus = EventBus(runtime.url, swarm, agent, options=runtime.bus_options,
                                event_types=runtime.event_types())
            self._owned.append(self.bus)
            tap = runtime.new_tap(self.tally)
            self._tokens.append((self.bus, self.bus.subscribe("*", tap.on_event())))
            self.messenger = None
            if MESSENGER is not None:
                self.messenger = MESSENGER(runtime.url, swarm, agent, options=runtime.bus_options,
                                           from_swarms=runtime.inbox_senders(swarm))
                self._owned.append(self.messenger)
                tap = runtime.new_tap(self.tally)
                self._tokens.append((self.messenger, self.messenger.on_message(tap.on_message())))
        self.tally.ready_ns = time_ns()

    def _listen(self, owner: Any, tap: DeliveryTap, *, messages: bool) -> None:
        """A handler of this agent's own behind the shared bus's tap (which must already be
        subscribed, so adding it does not yield between the tap's count and the handler)."""
        received = tap.add_listener(self.tally, messages=messages)
        try:
            token = owner.on_message(received.append) if messages else owner.subscribe(
                "*", received.append
            )
        except BaseException:
            tap.remove_listener(received)
            raise
        self._tokens.append((owner, token))
        self._listening.append((tap, received))

    def _plan(self, mix: tuple[MixEntry, ...]) -> Any:
        """The role's traffic as an endless cycle of ready-made send steps."""
        runtime = self.runtime
        steps = []
        seen: dict[MixEntry, tuple[Any, ...]] = {}
        for entry in itertools.islice(traffic_cycle(mix), sum(e.weight for e in mix if e.weight)):
            step = seen.get(entry)
            if step is None:
                destination = self.peer_swarm if entry.message else self.swarm
                if entry.message and self.messenger is not None:
                    target = self.messenger.send
                    first: str = destination
                elif entry.message:
                    target = self._link(destination).publish
                    first = entry.type
                else:
                    target = self.bus.publish
                    first = entry.type
                step = seen[entry] = (
                    target, first, entry.type, entry.priority, entry.message,
                    runtime.recorder.published_counts(destination),
                    runtime.publish_index(entry.type),
                )
            steps.append(step)
        return itertools.cycle(steps)

    def _link(self, swarm: str) -> Any:
        """Without a Messenger: the Event Bus of the destination swarm, publisher side only."""
        if self.shared:
            return self.runtime.shared_bus(swarm)
        link = EventBus(self.runtime.url, swarm, self.agent, options=self.runtime.bus_options)
        self._owned.append(link)
        return link

    def send(self, intended_ns: int, measured: int) -> None:
        """One event (or message) of the role's traffic, with its intended send time."""
        target, first, event_type, priority, message, counts, index = next(self._cycle)
        runtime = self.runtime
        data = {"t": intended_ns, "m": measured, "a": self.agent, "p": self.padding}
        if message:
            data["k"] = event_type
        try:
            target(first, data, priority)
        except CfnError as exc:
            runtime.publish_failed(event_type, exc)
            return
        runtime.publishes[index] += 1
        if measured:
            counts[priority] += 1

    def follow_schedule(self, phase: float) -> None:
        """The Locust task: hand this agent to the process's pacing schedule, which writes
        its sends (through its sender) until Locust stops the user."""
        if not self.closed:
            self.runtime.schedule_agent(self, phase)
        while True:
            gevent.sleep(3600)

    def stats(self) -> list[dict[str, Any]]:
        """Counters of the connections this agent owns (shared ones are the runtime's)."""
        return [bus.stats() for bus in self._owned]

    def close(self) -> None:
        self.closed = True
        self.runtime.unschedule_agent(self)
        for owner, token in self._tokens:
            remove = getattr(owner, "unsubscribe", None) or owner.remove_handler
            try:
                remove(token)
            except CfnError:
                pass
        self._tokens.clear()
        for tap, received in self._listening:
            tap.remove_listener(received)
        self._listening.clear()
        for bus in self._owned:
            try:
                bus.close()
            except CfnError as exc:
                log.debug("closing %s: %s", self.agent, exc)
        self._owned.clear()
