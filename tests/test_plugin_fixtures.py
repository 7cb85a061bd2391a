"""The plugin's fixtures, each used by a test of an inner pytest run in a subprocess."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from plugin_runs import output, pid_alive, project, redis_servers_on_port, run

pytest_plugins = ["pytester"]


def test_embedded_server_serves_the_run_and_is_stopped_after_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import json

        def test_server(cfn_server, cfn_redis_url, cfn_redis):
            assert cfn_server.embedded and cfn_server.backend == "redis-server"
            assert cfn_redis_url == cfn_server.url
            assert cfn_redis.ping()
            info = {"pid": cfn_server.pid, "url": cfn_redis_url, "version": cfn_server.version}
            open("server.json", "w").write(json.dumps(info))
        """,
    )
    result = run(pytester)
    assert result.ret == 0, output(result)
    info = json.loads((pytester.path / "server.json").read_text())
    result.stdout.fnmatch_lines(
        [f"cfn: embedded redis-server {info['version']} /*: *; started when a test first needs it*"]
    )
    port = int(info["url"].rsplit(":", 1)[1].split("/")[0])
    assert not pid_alive(info["pid"])
    assert redis_servers_on_port(port) == []


def test_namespace_is_unique_per_test_and_only_its_keys_are_deleted(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cfn_redis: Any,
    cfn_redis_url: str,
) -> None:
    foreign = f"foreign-{uuid.uuid4().hex}"
    cfn_redis.set(foreign, "kept")
    project(
        pytester, monkeypatch,
        test_a="""
        import pytest

        @pytest.mark.parametrize("n", [1, 2])
        def test_keys(cfn_namespace, cfn_redis, n):
            for i in range(1500):
                cfn_redis.set(f"{cfn_namespace}:k{i}", n)
            open(f"ns-{n}.txt", "w").write(cfn_namespace)
        """,
    )
    result = run(pytester, f"--cfn-redis={cfn_redis_url}")
    assert result.ret == 0, output(result)
    namespaces = [(pytester.path / f"ns-{n}.txt").read_text() for n in (1, 2)]
    assert namespaces[0] != namespaces[1]
    assert all(ns.startswith("cfn-") and "-main-test_keys" in ns for ns in namespaces)
    for namespace in namespaces:
        assert list(cfn_redis.scan_iter(match=f"{namespace}:*")) == []
    assert cfn_redis.get(foreign) == b"kept"
    cfn_redis.delete(foreign)


def test_event_bus_factory_isolates_and_closes_its_buses(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cfn_redis: Any,
    cfn_redis_url: str,
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import time
        import pytest

        def _wait(predicate):
            deadline = time.monotonic() + 30
            while not predicate() and time.monotonic() < deadline:
                time.sleep(0.01)

        @pytest.mark.parametrize("n", [1, 2])
        def test_bus(cfn_event_bus, cfn_namespace, n):
            got = []
            sub = cfn_event_bus(swarm="s1", agent="reviewer")
            sub.subscribe("task.*", got.append)
            pub = cfn_event_bus(swarm="s1", agent="coder")
            for i in range(20):
                pub.publish("task.assign", {"n": n, "i": i})
            _wait(lambda: len(got) >= 20)
            time.sleep(0.1)
            assert [e.data["n"] for e in got] == [n] * 20
            assert sub.options.namespace == cfn_namespace
            open(f"ns-{n}.txt", "w").write(cfn_namespace)

        def test_own_namespace_is_refused(cfn_event_bus):
            with pytest.raises(TypeError, match="sets namespace to the test's"):
                cfn_event_bus(swarm="s1", agent="a1", namespace="elsewhere")
        """,
    )
    result = run(pytester, f"--cfn-redis={cfn_redis_url}")
    assert result.ret == 0, output(result)
    result.assert_outcomes(passed=3)
    names = [entry.get("name", "") for entry in cfn_redis.client_list()]
    for n in (1, 2):
        namespace = (pytester.path / f"ns-{n}.txt").read_text()
        assert not [name for name in names if name.endswith(f"@{namespace}")]


def test_async_event_bus_factory_closes_what_it_can_and_reports_what_it_cannot(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import asyncio

        async def _roundtrip(make):
            got = asyncio.Event()
            sub = make(swarm="s1", agent="a1")
            await sub.subscribe("ping", lambda event: got.set())
            pub = make(swarm="s1", agent="a2")
            await pub.publish("ping", 1)
            await asyncio.wait_for(got.wait(), 5)
            return sub, pub

        def test_async_with(cfn_async_event_bus):
            async def main():
                sub, pub = await _roundtrip(cfn_async_event_bus)
                async with sub, pub:
                    pass
                assert sub.stats()["connections"] == 0
            asyncio.run(main())

        def test_left_open_on_a_live_loop_is_closed_by_the_fixture(cfn_async_event_bus):
            loop = asyncio.new_event_loop()
            sub, pub = loop.run_until_complete(_roundtrip(cfn_async_event_bus))
            assert sub.stats()["connections"] >= 1

        def test_left_open_after_its_loop_is_gone_is_an_error(cfn_async_event_bus):
            asyncio.run(_roundtrip(cfn_async_event_bus))
        """,
    )
    result = run(pytester, "-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_left_open_after_its_loop_is_gone_is_an_error*",
            "*cfn_async_event_bus: 2 object(s) (s1/a2, s1/a1) still had open connections*",
        ]
    )


def test_swarm_is_a_mesh_up_to_seven_agents_and_hierarchical_from_eight(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        def test_mesh(cfn_swarm):
            swarm = cfn_swarm(7)
            assert swarm.topology == "mesh" and swarm.swarms == ["swarm"]
            assert swarm.coordinators == []
            swarm[0].publish("task.assign", "x")
            assert swarm.wait_for(lambda: all(a.events("task.assign") for a in swarm.agents))
            assert swarm.stats()["received_by_agents"] == 7

        def test_hierarchical(cfn_swarm):
            swarm = cfn_swarm(10, swarm="loop3")
            assert swarm.topology == "hierarchical"
            assert swarm.swarms == ["loop3-t0", "loop3-t1", "loop3-coord"]
            assert [a.id for a in swarm.coordinators] == ["agent-0", "agent-1"]
            assert {len([a for a in swarm.agents if a.swarm == s]) for s in swarm.swarms[:2]} == {5}
            team0 = [a for a in swarm.agents if a.swarm == "loop3-t0"]
            team0[-1].publish("task.done", 1)
            assert swarm.wait_for(lambda: all(a.events("task.done") for a in team0))
            swarm.coordinators[0].coordination_bus.publish("phase.next", 2)
            assert swarm.wait_for(
                lambda: all(c.events("phase.next") for c in swarm.coordinators)
            )
            assert swarm.wait_idle()
            workers = [a for a in swarm.agents if a.role == "worker"]
            assert not any(a.events("phase.next") for a in workers)
            assert not any(a.events("task.done") for a in swarm.agents if a.swarm == "loop3-t1")
            stats = swarm.stats()
            assert stats["agents"] == 10 and stats["coordinators"] == 2 and stats["buses"] == 12
        """,
    )
    result = run(pytester)
    assert result.ret == 0, output(result)
    result.assert_outcomes(passed=2)


def test_messenger_fixtures_deliver_between_swarms_inside_the_namespace(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import asyncio
        import time

        def test_sync(cfn_messenger, cfn_namespace):
            got = []
            receiver = cfn_messenger(swarm="review", agent="lead")
            receiver.on_message(got.append)
            sender = cfn_messenger(swarm="build", agent="coder")
            sender.send("review", {"pr": 7})
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [m.data for m in got] == [{"pr": 7}]
            assert sender.options.namespace == cfn_namespace

        def test_async(cfn_async_messenger):
            async def main():
                got = asyncio.Event()
                async with cfn_async_messenger(swarm="review", agent="lead") as receiver:
                    await receiver.on_message(lambda message: got.set())
                    async with cfn_async_messenger(swarm="build", agent="coder") as sender:
                        await sender.send("review", 1)
                        await asyncio.wait_for(got.wait(), 5)
            asyncio.run(main())
        """,
    )
    result = run(pytester)
    assert result.ret == 0, output(result)
    result.assert_outcomes(passed=2)


def test_fakeredis_tcp_server_serves_every_fixture(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import asyncio
        import redis

        def test_client(cfn_redis, cfn_redis_url, cfn_namespace, cfn_server):
            assert isinstance(cfn_redis, redis.Redis)
            assert cfn_redis_url.startswith("redis://127.0.0.1:")
            assert cfn_server.backend == "fakeredis" and cfn_server.version.startswith("fakeredis")
            cfn_redis.set(f"{cfn_namespace}:k", 1)
            assert cfn_redis.get(f"{cfn_namespace}:k") == b"1"

        def test_bus(cfn_event_bus):
            got = []
            sub = cfn_event_bus(swarm="s1", agent="sub")
            sub.subscribe("*", got.append)
            pub = cfn_event_bus(swarm="s1", agent="pub")
            for n in range(200):
                pub.publish("task.n", n, priority=9 if n % 10 == 0 else 5)
            pub.flush()
            assert sub.wait_idle(5) is not False
            import time
            deadline = time.monotonic() + 30
            while len(got) < 200 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sorted(e.data for e in got) == list(range(200))

        def test_swarm(cfn_swarm):
            swarm = cfn_swarm(3)
            swarm[0].publish("task.assign", {"id": 1})
            assert swarm.wait_for(
                lambda: all(a.events("task.assign") for a in swarm.agents), timeout=30)

        def test_messenger(cfn_messenger):
            lead = cfn_messenger(swarm="review", agent="lead")
            lead.on_request(lambda msg: {"ok": msg.data})
            coder = cfn_messenger(swarm="build", agent="coder")
            assert coder.request("review", 7, timeout=30).data == {"ok": 7}

        def test_async(cfn_async_event_bus):
            async def main():
                got = asyncio.Event()
                async with cfn_async_event_bus(swarm="s1", agent="a1") as sub, \\
                           cfn_async_event_bus(swarm="s1", agent="a2") as pub:
                    await sub.subscribe("ping", lambda event: got.set())
                    await pub.publish("ping", 1)
                    await asyncio.wait_for(got.wait(), 5)
            asyncio.run(main())
        """,
    )
    result = run(pytester, "--cfn-redis=fakeredis://", "-rs")
    assert result.ret == 0, output(result)
    result.assert_outcomes(passed=5)
