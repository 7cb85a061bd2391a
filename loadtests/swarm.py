"""Simulated CFN agents (ADR-002) for Locust: ``locust -f loadtests/swarm.py``.

Each Locust user is one agent in one swarm. It subscribes to its swarm's events (and its
swarm's Messenger inbox) like a real agent, and publishes on a constant-rate schedule (open
model) the traffic of its role:

* ``Implementer`` (Loop 3): lifecycle events, task assignment, state updates;
* ``Validator`` (Loop 2): votes, and consensus results sent to another swarm (Messenger);
* ``Coordinator``: phase transitions at priority 9, and orchestration of other swarms.

Run it::

    locust -f loadtests/swarm.py --headless -u 100 -r 50 -t 30s
    locust -f loadtests/swarm.py --headless -u 500 -r 250 -t 60s --cfn-total-rate 50000 \\
        --cfn-model shared --processes 2 --cfn-redis redis://127.0.0.1:6379/0

With no ``--cfn-redis`` an embedded redis-server is started and stopped. At the end of each test
(the run time, the web UI's STOP, a signal) it prints a table of measured figures against
ADR-002's targets and writes the JSON result to ``reports/``. Exit codes: 0 every judged gate
passed, 1 a gate missed its target, 3 not judged: the load generator was the limit (send lag
p99 over ``--cfn-send-lag-limit``, agents behind schedule, a process at 95 % of a core), 4 the
run ended abnormally (workers missing or lost, fewer reports than processes, Locust stopping
the test itself). ``--cfn-gate`` selects the gates; see ``pytest_cfn.measure.loadgen.verdicts``.
``python loadtests/swarm.py --help`` lists the ``--cfn-*`` options (Locust's ``--help`` cannot:
it is printed before the locustfile is imported).
Locust's own statistics show "publish" (the publish call), and "deliver"/"message" (from the
intended send time to each subscribing agent's handler, added in aggregate; lost deliveries
are failures of the "deliver" row "lost (never arrived)"; Locust rounds to whole ms, the gate
table and the JSON have HdrHistogram µs figures). See ``--help`` for the ``--cfn-*`` options.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script (--help): gevent patches first, as under locust
    import locust  # noqa: F401

from cfn_harness.timers import use_precise_timers

use_precise_timers()

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
from cfn_harness.client import CfnClient  # noqa: E402
from cfn_harness.conductor import Conductor  # noqa: E402
from cfn_harness.runtime import ProcessRuntime  # noqa: E402
from locust import User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import LocalRunner, MasterRunner, WorkerRunner  # noqa: E402

from pytest_cfn._errors import CfnError  # noqa: E402
from pytest_cfn.measure.loadgen import options as cfn_options  # noqa: E402
from pytest_cfn.measure.loadgen.traffic import role_mix  # noqa: E402
from pytest_cfn.measure.loadgen.verdicts import SEND_LAG_LIMIT_MS, help_text  # noqa: E402

RUNTIME: ProcessRuntime | None = None
CONDUCTOR: Conductor | None = None


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse ``type=`` that keeps the library's message (argparse hides ValueError's)."""

    def check(text: str) -> Any:
        try:
            return parse(text)
        except (CfnError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = parse.__name__
    return check


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_: Any) -> None:
    o = cfn_options
    group = parser.add_argument_group("pytest-cfn load harness", description=help_text())
    group.add_argument("--cfn-redis", type=_checked(o.parse_redis), default=None,
                       help="Redis URL (redis://host:port/db, rediss://host:port/db for TLS "
                            "with query options ssl_ca_certs, ssl_certfile, ssl_keyfile, or "
                            "unix:///path); default: start an embedded redis-server for the run")
    group.add_argument("--cfn-swarms", type=_checked(o.parse_swarms), default=0,
                       help="swarms the agents are dealt to round robin (default 0: swarms of 10 "
                            "agents, however they are spawned, web UI included)")
    group.add_argument("--cfn-rate", type=_checked(o.parse_rate), default=None,
                       help="events/s each agent offers, constant rate, open model (default 100)")
    group.add_argument("--cfn-total-rate", type=_checked(o.parse_rate), default=None,
                       help="events/s offered by all agents together, split evenly "
                            "(instead of --cfn-rate)")
    group.add_argument("--cfn-payload", type=_checked(o.parse_payload), default=200,
                       help="approximate bytes of one encoded event (default 200)")
    group.add_argument("--cfn-mix", type=_checked(o.parse_mix), default=None,
                       help="replace every role's intra-swarm events: TYPE=WEIGHT@PRIORITY,... "
                            "e.g. 'state.update=6@5,cfn.loop.phase=1@9'")
    group.add_argument("--cfn-model", type=_checked(o.parse_model), default="per-agent",
                       help="connections: 'per-agent' (each agent its own Event Bus and "
                            "Messenger, as ADR-002 counts) or 'shared' (the agents of a swarm in "
                            "one process share its Event Bus and Messenger, publishes coalesced; "
                            "see --cfn-share); default per-agent")
    group.add_argument("--cfn-phase", type=_checked(o.parse_phase), default="swarm",
                       help="when in each send interval agents send: 'swarm' (the agents of a "
                            "swarm send together, a round like a CFN loop iteration's; the "
                            "swarms' rounds spread evenly) or 'agent' (each agent at a random "
                            "phase of its own); intended send times, rates and latency are "
                            "measured the same either way; default swarm")
    group.add_argument("--cfn-share", choices=("process", "swarm"), default="process",
                       help="shared model: 'process' (every swarm's bus and messenger of a "
                            "process on one publisher and one subscriber connection, "
                            "SharedConnections; a Redis Cluster node falls back to 'swarm') or "
                            "'swarm' (two connections per bus and messenger of each swarm); "
                            "default process")
    group.add_argument("--cfn-channels", choices=("exact", "patterns"), default="exact",
                       help="what the agents' buses subscribe: 'exact' (each event type of "
                            "the run's mixes on its own channel, and each inbox the one swarm "
                            "that writes to it: EventBus(event_types=...), "
                            "Messenger(from_swarms=...)) or 'patterns' (event:{swarm}:* and "
                            "message:*:{swarm}, the library's default). Redis matches every "
                            "PUBLISH against every pattern on the server (40-55 ns each on "
                            "Redis 7.0): at 100+ agents 'patterns' adds more server CPU than "
                            "the PUBLISH itself costs; default exact")
    group.add_argument("--cfn-gate", type=_checked(o.parse_gates), default="all",
                       help=f"gates that set the exit code: all, none, or some of "
                            f"{','.join(o.GATES)} (default all)")
    group.add_argument("--cfn-target", type=_checked(o.parse_target), action="append",
                       default=None, metavar="NAME=VALUE",
                       help="override one ADR target, e.g. max_p99_ms=2 (repeatable)")
    group.add_argument("--cfn-report", default=None,
                       help="path of the JSON result (default reports/locust-MODEL-N-TIME.json)")
    group.add_argument("--cfn-warmup", type=_checked(o.parse_seconds), default=1.0,
                       help="seconds between spawning complete and the measurement window")
    group.add_argument("--cfn-window", type=_checked(o.parse_window), default=None,
                       metavar="S",
                       help="stop the run when the measurement window has lasted S seconds "
                            "(it opens once every agent has subscribed, plus --cfn-warmup, "
                            "however long spawning took; -t stays a limit); default: the "
                            "window lasts until -t or STOP")
    group.add_argument("--cfn-drain", type=_checked(o.parse_seconds), default=3.0,
                       help="at most this many seconds to wait for the last deliveries")
    group.add_argument("--cfn-flush-ms", type=_checked(o.parse_positive_float), default=None,
                       help="shared model: the pacing schedule's ticks are at least N ms apart, "
                            "and each tick's due sends go out as one pipelined write (default: "
                            "0.25 for a process sending up to 10,000 events/s, 1 above; a "
                            "tick's sends wait for it, and their latency counts that wait)")
    group.add_argument("--cfn-namespace", type=_checked(o.parse_namespace), default=None,
                       help="channel/connection namespace (default: a fresh one per run)")
    group.add_argument("--cfn-send-lag-limit", type=_checked(o.parse_positive_float),
                       default=SEND_LAG_LIMIT_MS, metavar="MS",
                       help="send lag p99 (actual minus intended publish time) above which the "
                            "load generator is the limit and throughput, delivery p99 and "
                            f"critical loss are NOT JUDGED, exit code 3 (default "
                            f"{SEND_LAG_LIMIT_MS:g} ms)")


def _runtime() -> ProcessRuntime:
    assert RUNTIME is not None, "swarm.py's init listener did not run"
    return RUNTIME


def _fresh_runtime(environment: Environment) -> None:
    """Each test (the web UI can run several) gets a runtime of its own."""
    global RUNTIME
    if RUNTIME is None or RUNTIME.closed:
        RUNTIME = ProcessRuntime(environment)
    RUNTIME.configure()


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    global RUNTIME, CONDUCTOR
    runner = environment.runner
    parsed = environment.parsed_options
    if parsed is not None and parsed.cfn_rate is not None and parsed.cfn_total_rate is not None:
        sys.exit("cfn: give --cfn-rate (per agent) or --cfn-total-rate (in total), not both")
    hooks = environment.events
    if isinstance(runner, (LocalRunner, MasterRunner)):
        CONDUCTOR = conductor = Conductor(environment)
        try:
            conductor.start()
        except (CfnError, OSError, redis.RedisError) as exc:
            conductor.print_and_stop()
            sys.exit(f"cfn: cannot start the harness: {exc}")
        runner.register_message("cfn_final", conductor.on_final)
        runner.register_message("cfn_ready", conductor.on_ready)
        runner.register_message("cfn_sent", conductor.on_sent)
        # before the runtime's listener: the settings are dealt before agents read them
        hooks.test_start.add_listener(conductor.on_test_start)
        hooks.spawning_complete.add_listener(conductor.on_spawning_complete)
        hooks.test_stopping.add_listener(lambda **_: conductor.finish())
        hooks.test_stop.add_listener(conductor.on_test_stop)
        hooks.quitting.add_listener(lambda **_: conductor.gate_exit_code())
        hooks.quit.add_listener(lambda **_: conductor.print_and_stop())
    if isinstance(runner, (LocalRunner, WorkerRunner)):
        RUNTIME = ProcessRuntime(environment)
        runner.register_message("cfn_window", lambda *a, **k: _runtime().on_window(*a, **k))
        runner.register_message("cfn_stop", lambda *a, **k: _runtime().on_stop(*a, **k),
                                concurrent=True)
        runner.register_message("cfn_settle", lambda *a, **k: _runtime().on_settle(*a, **k))
        hooks.test_start.add_listener(lambda **_: _fresh_runtime(environment))
        hooks.test_stop.add_listener(lambda **_: _runtime().close())


class CfnAgent(User):
    """One simulated agent: subscribes to its swarm, publishes its role's traffic on schedule."""

    abstract = True
    role = "implementer"

    def on_start(self) -> None:
        runtime = _runtime()
        runtime.configure()
        agent, swarm, peer, self.phase = runtime.place_agent(self.role)
        try:
            self.client = CfnClient(
                runtime, swarm, agent, self.role, role_mix(self.role, runtime.options.mix), peer
            )
        except Exception:
            runtime.failed_agents += 1
            raise
        runtime.clients.append(self.client)

    @task
    def follow_schedule(self) -> None:
        self.client.follow_schedule(self.phase)

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()


class Implementer(CfnAgent):
    """Loop 3: lifecycle events (7), task assignment (6), state updates (5)."""

    weight = 7
    role = "implementer"


class Validator(CfnAgent):
    """Loop 2: votes (6), state updates (5), consensus results to another swarm (8)."""

    weight = 2
    role = "validator"


class Coordinator(CfnAgent):
    """Phase transitions (9), coordination (8), task assignment (6), orchestration messages (8)."""

    weight = 1
    role = "coordinator"


def _print_help() -> None:
    """``python loadtests/swarm.py --help``: the harness's options, verdicts and exit codes
    (Locust's own ``--help`` is printed before it imports a locustfile, so it cannot list
    them)."""
    parser = argparse.ArgumentParser(
        prog="locust -f loadtests/swarm.py",
        description="Simulated CFN agents (ADR-002) for Locust (its own options: locust --help)",
    )
    _add_options(parser)
    parser.print_help()


if __name__ == "__main__":
    _print_help()
