"""The plugin's fixtures; registered by ``pytest_cfn.plugin`` at configure time.

Every fixture that needs a server depends on the session-scoped ``cfn_server``, which starts
the run's server the first time a test asks for it. Each factory fixture creates objects
inside the test's namespace and closes them at teardown; heavy modules (redis, asyncio, the
buses) are imported when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import asyncio

    from pytest_cfn.pytest_support.endpoint import RedisEndpoint
    from pytest_cfn.pytest_support.perf_recorder import PerfRecorder
    from pytest_cfn.pytest_support.session import CfnSession
    from pytest_cfn.pytest_support.swarm import SimulatedSwarm

PERF_MARKER = "cfn_perf"


def _session(request: pytest.FixtureRequest) -> CfnSession:
    from pytest_cfn.pytest_support.session import get_session

    return get_session(request.config)


def _with_namespace(namespace: str, settings: dict[str, Any], fixture: str) -> dict[str, Any]:
    """The caller's settings with the test's namespace; a namespace of their own is refused."""
    if "namespace" in settings:
        raise TypeError(
            f"{fixture}() sets namespace to the test's ({namespace!r}); do not pass one. "
            "Build the object yourself if it must live outside the test's namespace."
        )
    options = settings.get("options")
    if options is not None:
        return {**settings, "options": replace(options, namespace=namespace)}
    return {**settings, "namespace": namespace}


@pytest.fixture(scope="session")
def cfn_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> RedisEndpoint:
    """The run's Redis: url, version, backend, whether embedded, and its pid. The embedded
    server (or fakeredis's) is started here, when the first test needs it; under xdist the
    workers share one, coordinated in the directory their base temp directories share."""
    return _session(request).endpoint_for_tests(lambda: tmp_path_factory.getbasetemp().parent)


@pytest.fixture(scope="session")
def cfn_redis_url(cfn_server: RedisEndpoint) -> str:
    """URL of the run's Redis (fakeredis's loopback URL under --cfn-redis=fakeredis://)."""
    return cfn_server.url


@pytest.fixture
def cfn_redis(request: pytest.FixtureRequest, cfn_server: RedisEndpoint) -> Iterator[Any]:
    """A synchronous redis-py client of the run's server (of fakeredis's TCP server under
    fakeredis://)."""
    client = _session(request).client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cfn_namespace(request: pytest.FixtureRequest, cfn_server: RedisEndpoint) -> Iterator[str]:
    """A namespace unique to this test, run and worker; its keys are deleted afterwards."""
    from pytest_cfn.pytest_support.namespaces import delete_namespace_keys, make_namespace

    session = _session(request)
    namespace = make_namespace(session.run_id, session.worker, request.node.nodeid)
    yield namespace
    client = session.client()
    try:
        delete_namespace_keys(client, namespace)
    finally:
        client.close()


def _factory(
    request: pytest.FixtureRequest,
    namespace: str,
    fixture: str,
    cls: Callable[..., Any],
    made: _SyncMade | _AsyncMade,
) -> Iterator[Callable[..., Any]]:
    """The body every bus/messenger factory fixture shares: a real server, the test's
    namespace, and everything made closed at teardown."""
    url = _session(request).require_endpoint().url

    def make(swarm: str = "swarm", agent: str = "agent", **settings: Any) -> Any:
        return made.add(cls(url, swarm, agent, **_with_namespace(namespace, settings, fixture)))

    yield make
    made.close_all()


class _SyncMade:
    """Sync objects made by a factory; all are closed, the first error is raised."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> Any:
        self.items.append(item)
        return item

    def close_all(self) -> None:
        errors = []
        for item in reversed(self.items):
            try:
                item.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class _AsyncMade:
    """Async objects made by a factory, with the event loop each was made in."""

    def __init__(self, fixture: str) -> None:
        self.fixture = fixture
        self.items: list[tuple[Any, asyncio.AbstractEventLoop | None]] = []

    def add(self, item: Any) -> Any:
        import asyncio

        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.items.append((item, loop))
        return item

    def close_all(self) -> None:
        """Close on the item's own loop when it still exists; fail loudly if it is gone."""
        leaked = []
        for item, loop in reversed(self.items):
            if int(item.stats().get("connections", 0)) == 0:
                continue
            if loop is not None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(item.close())
                continue
            leaked.append(item)
        if leaked:
            names = ", ".join(
                f"{getattr(i, 'swarm', '?')}/{getattr(i, 'agent', '?')}" for i in leaked
            )
            raise RuntimeError(
                f"{self.fixture}: {len(leaked)} object(s) ({names}) still had open connections "
                "after the test, and the event loop they ran on is gone, so they cannot be "
                "closed now. Close them in the test: `async with "
                f"{self.fixture}(...) as bus:` or `await bus.close()`."
            )


@pytest.fixture
def cfn_event_bus(
    request: pytest.FixtureRequest, cfn_namespace: str
) -> Iterator[Callable[..., Any]]:
    """``cfn_event_bus(swarm="s1", agent="a1", **settings)`` -> a sync EventBus in the
    test's namespace; every bus made is closed at teardown."""
    from pytest_cfn._sync.event_bus import EventBus

    yield from _factory(request, cfn_namespace, "cfn_event_bus", EventBus, _SyncMade())


@pytest.fixture
def cfn_messenger(
    request: pytest.FixtureRequest, cfn_namespace: str
) -> Iterator[Callable[..., Any]]:
    """``cfn_messenger(swarm="s1", agent="a1", **settings)`` -> a sync Messenger in the
    test's namespace; every messenger made is closed at teardown."""
    from pytest_cfn._sync.messenger import Messenger

    yield from _factory(request, cfn_namespace, "cfn_messenger", Messenger, _SyncMade())


@pytest.fixture
def cfn_async_event_bus(
    request: pytest.FixtureRequest, cfn_namespace: str
) -> Iterator[Callable[..., Any]]:
    """``cfn_async_event_bus(swarm="s1", agent="a1", **settings)`` -> an asyncio EventBus
    in the test's namespace. Use it as ``async with ... as bus:`` or ``await bus.close()``;
    one left open is closed at teardown if its event loop still exists."""
    from pytest_cfn._async.event_bus import EventBus

    made = _AsyncMade("cfn_async_event_bus")
    yield from _factory(request, cfn_namespace, "cfn_async_event_bus", EventBus, made)


@pytest.fixture
def cfn_async_messenger(
    request: pytest.FixtureRequest, cfn_namespace: str
) -> Iterator[Callable[..., Any]]:
    """The asyncio twin of ``cfn_messenger``; close rules as for ``cfn_async_event_bus``."""
    from pytest_cfn._async.messenger import Messenger

    made = _AsyncMade("cfn_async_messenger")
    yield from _factory(request, cfn_namespace, "cfn_async_messenger", Messenger, made)


@pytest.fixture
def cfn_swarm(
    request: pytest.FixtureRequest, cfn_event_bus: Callable[..., Any]
) -> Iterator[Callable[..., SimulatedSwarm]]:
    """``cfn_swarm(n, swarm="swarm", team_size=7, topology=None, subscribe="*",
    **bus_settings)`` -> N simulated agents (mesh up to 7, hierarchical from 8)."""
    from pytest_cfn.pytest_support.swarm import build_swarm

    made = _SyncMade()

    def make(
        agents: int,
        *,
        swarm: str = "swarm",
        team_size: int = 7,
        topology: Any = None,
        subscribe: str | None = "*",
        **settings: Any,
    ) -> SimulatedSwarm:
        def bus(swarm: str, agent: str) -> Any:
            return cfn_event_bus(swarm=swarm, agent=agent, **settings)

        handle = build_swarm(
            bus, agents, swarm=swarm, team_size=team_size, topology=topology, subscribe=subscribe
        )
        made.add(handle)
        return handle

    yield make
    made.close_all()


@pytest.fixture
def cfn_perf(request: pytest.FixtureRequest, cfn_namespace: str) -> Iterator[PerfRecorder]:
    """Record this test's figures (or run a measured workload) against the ADR targets.

    ``@pytest.mark.cfn_perf(group="name", **targets)`` sets this test's targets and lets
    several tests (or xdist workers) add to one merged row."""
    from pytest_cfn.pytest_support.perf_recorder import PerfRecorder

    session = _session(request)
    targets = session.settings.targets
    group: str | None = None
    for marker in reversed(list(request.node.iter_markers(PERF_MARKER))):
        if marker.args:
            raise TypeError(
                "@pytest.mark.cfn_perf takes keywords only: group=... and target names, e.g. "
                "@pytest.mark.cfn_perf(group='bus', min_throughput=5000)"
            )
        values = dict(marker.kwargs)
        group = values.pop("group", group)
        targets = targets.override(values)
    recorder = PerfRecorder(
        nodeid=request.node.nodeid,
        worker=session.worker,
        endpoint=session.require_endpoint(),
        namespace=cfn_namespace,
        targets=targets,
        client=session.client,
        group=group,
    )
    yield recorder
    session.add_sample(recorder.sample())
