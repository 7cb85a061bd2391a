"""``cfn_swarm(n)``: N simulated agents in this process, each with its own Event Bus.

Topology follows ADR-002's CFN Loop 3: up to 7 agents form one mesh (one swarm, every
agent hears every other); 8 and more are hierarchical: the agents are dealt into
``ceil(n / team_size)`` teams of near-equal size, each its own swarm led by a
coordinator, and the coordinators meshed in a swarm of their own (``{swarm}-coord``).
Every agent records what it receives, so a test can wait for a condition with
:meth:`SimulatedSwarm.wait_for` and read the buses' counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pytest_cfn._errors import InvalidOptionError

if TYPE_CHECKING:
    from pytest_cfn._core.envelope import Envelope
    from pytest_cfn._sync.event_bus import EventBus

MESH_LIMIT = 7
Topology = Literal["mesh", "hierarchical"]
Role = Literal["peer", "coordinator", "worker"]
BusFactory = Callable[..., "EventBus"]


@dataclass
class SimulatedAgent:
    """One agent: its id, swarm, role, bus, and every event it has received."""

    id: str
    swarm: str
    role: Role
    bus: EventBus
    coordination_bus: EventBus | None = None
    """A coordinator's second bus, on the coordinators' swarm (hierarchical only)."""
    received: list[Envelope] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _on_event(self, event: Envelope) -> None:
        with self._lock:
            self.received.append(event)

    def events(self, event_type: str | None = None) -> list[Envelope]:
        """A copy of what was received, optionally of one type."""
        with self._lock:
            items = list(self.received)
        return items if event_type is None else [e for e in items if e.type == event_type]

    def publish(self, event_type: str, data: Any = None, priority: int = 5) -> str:
        """Publish on this agent's own swarm."""
        return self.bus.publish(event_type, data, priority)

    def buses(self) -> list[EventBus]:
        return [self.bus] if self.coordination_bus is None else [self.bus, self.coordination_bus]


class SimulatedSwarm:
    """The handle ``cfn_swarm`` returns; close() is called at the test's teardown."""

    def __init__(self, agents: list[SimulatedAgent], topology: Topology, swarm: str) -> None:
        self.agents = agents
        self.topology: Topology = topology
        self.swarm = swarm
        self._closed = False

    def __len__(self) -> int:
        return len(self.agents)

    def __getitem__(self, index: int) -> SimulatedAgent:
        return self.agents[index]

    @property
    def buses(self) -> list[EventBus]:
        return [bus for agent in self.agents for bus in agent.buses()]

    @property
    def coordinators(self) -> list[SimulatedAgent]:
        return [a for a in self.agents if a.role == "coordinator"]

    @property
    def swarms(self) -> list[str]:
        """The swarm ids in use: one for a mesh; the teams and ``{swarm}-coord`` otherwise."""
        names = list(dict.fromkeys(a.swarm for a in self.agents))
        if self.topology == "hierarchical":
            names.append(coordination_swarm(self.swarm))
        return names

    def agent(self, agent_id: str) -> SimulatedAgent:
        for agent in self.agents:
            if agent.id == agent_id:
                return agent
        raise KeyError(f"no agent {agent_id!r}; agents are {[a.id for a in self.agents]}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it is true (returns True) or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every bus has handed what it received to the handlers."""
        deadline = time.monotonic() + timeout
        return all(bus.wait_idle(max(0.0, deadline - time.monotonic())) for bus in self.buses)

    def stats(self) -> dict[str, Any]:
        """Counters summed over every bus, plus the shape of the swarm."""
        totals: dict[str, int] = {}
        for bus in self.buses:
            for key, value in bus.stats().items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        totals["received_by_agents"] = sum(len(a.received) for a in self.agents)
        return {
            "topology": self.topology,
            "agents": len(self.agents),
            "swarms": self.swarms,
            "coordinators": len(self.coordinators),
            "buses": len(self.buses),
            **totals,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for bus in self.buses:
            try:
                bus.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def coordination_swarm(swarm: str) -> str:
    return f"{swarm}-coord"


def build_swarm(
    make_bus: BusFactory,
    agents: int,
    *,
    swarm: str = "swarm",
    team_size: int = MESH_LIMIT,
    topology: Topology | None = None,
    subscribe: str | None = "*",
) -> SimulatedSwarm:
    """Create the agents and their buses; each subscribes ``subscribe`` (None: no handler)."""
    if type(agents) is not int or agents < 1:
        raise InvalidOptionError(
            f"cfn_swarm needs an integer number of agents >= 1, got {agents!r}"
        )
    if type(team_size) is not int or team_size < 2:
        raise InvalidOptionError(f"team_size must be an integer >= 2, got {team_size!r}")
    if topology is None:
        topology = "mesh" if agents <= MESH_LIMIT else "hierarchical"
    if topology not in ("mesh", "hierarchical"):
        raise InvalidOptionError(f"topology must be 'mesh' or 'hierarchical', got {topology!r}")
    built: list[SimulatedAgent] = []
    handle = SimulatedSwarm(built, topology, swarm)
    try:
        if topology == "mesh":
            for index in range(agents):
                built.append(_agent(make_bus, f"agent-{index}", swarm, "peer", subscribe))
        else:
            teams = -(-agents // team_size)
            for index in range(agents):
                position, team = divmod(index, teams)
                team_swarm = f"{swarm}-t{team}" if teams > 1 else swarm
                role: Role = "coordinator" if position == 0 else "worker"
                agent = _agent(make_bus, f"agent-{index}", team_swarm, role, subscribe)
                built.append(agent)
                if role == "coordinator":
                    agent.coordination_bus = make_bus(
                        swarm=coordination_swarm(swarm), agent=agent.id
                    )
                    if subscribe is not None:
                        agent.coordination_bus.subscribe(subscribe, agent._on_event)
    except BaseException:
        handle.close()
        raise
    return handle


def _agent(
    make_bus: BusFactory, agent_id: str, swarm: str, role: Role, subscribe: str | None
) -> SimulatedAgent:
    bus = make_bus(swarm=swarm, agent=agent_id)
    agent = SimulatedAgent(id=agent_id, swarm=swarm, role=role, bus=bus)
    if subscribe is not None:
        bus.subscribe(subscribe, agent._on_event)
    return agent
