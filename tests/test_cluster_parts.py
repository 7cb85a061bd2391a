"""SwarmState, the ``cfn`` CLI, the pytest plugin and the Locust harness on a real local
Redis Cluster, given the URL of one node only. Marked ``cluster``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cluster_nodes import local_cluster, swarms_on_every_master
from frontends import Frontend, wait_until
from plugin_runs import output, project, run
from test_cli import Monitor, cfn

from pytest_cfn._core.shard_layout import swarm_slot
from pytest_cfn.cluster_server import LocalCluster

pytestmark = pytest.mark.cluster
pytest_plugins = ["pytester"]
SWARM = Path(__file__).resolve().parent.parent / "loadtests" / "swarm.py"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


def _keys_by_master(cluster: LocalCluster, pattern: str) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for port in cluster.masters():
        client = redis.Redis("127.0.0.1", port, protocol=2, decode_responses=True)
        try:
            found[port] = set(client.scan_iter(match=pattern))
        finally:
            client.close()
    return found


def test_swarm_state_keys_live_in_each_swarm_slot_and_every_master_is_scanned(
    cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    by_master = swarms_on_every_master(cluster, "st")
    state = fe.make("SwarmState", cluster.url, namespace=ns)
    for swarm in by_master.values():
        state.save(swarm, loop=1, phase="plan", agents={"coder-1": "working"})
        state.checkpoint(swarm)
    keys = _keys_by_master(cluster, f"{ns}:*")
    for port, swarm in by_master.items():
        assert keys[port] == {f"{ns}:swarm:{{{swarm}}}", f"{ns}:swarm-checkpoints:{{{swarm}}}"}
    listed = state.swarms()
    assert [r.swarm for r in listed] == sorted(by_master.values())
    assert all(r.phase == "plan" and r.agents == {"coder-1": "working"} for r in listed)
    assert state.cluster is True
    # Recovery sees every master's swarms, claims one, leaves a finished one alone.
    first, second, third = sorted(by_master.values())
    state.finish(third)
    time.sleep(0.25)
    assert [r.swarm for r in state.interrupted(max_age=0.2)] == [first, second]
    claimed = state.recover(second, max_age=0.2, recoverer="tester")
    assert claimed.state.status == "recovering" and claimed.state.recovered_by == "tester"
    assert len(state.checkpoints(second)) == 1
    assert state.delete(first) is True
    assert [r.swarm for r in state.swarms()] == [second, third]


def test_cfn_swarms_recover_publish_and_monitor_on_a_cluster(
    cluster: LocalCluster, ns: str
) -> None:
    from pytest_cfn import SwarmState

    by_master = swarms_on_every_master(cluster, "cli")
    with SwarmState.from_url(cluster.url, namespace=ns) as state:
        for swarm in by_master.values():
            state.save(swarm, phase="build")
    time.sleep(0.25)
    out = cfn("swarms", "--json", url=cluster.url, ns=ns)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["swarm"] for line in out.stdout.splitlines()] == sorted(
        by_master.values())
    stuck = sorted(by_master.values())[1]
    out = cfn("recover", "--max-age", "0.2", "--resume", stuck, "--json", url=cluster.url, ns=ns)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"]["status"] == "recovering"
    # publish / monitor of one swarm: SSUBSCRIBE on the swarm's master.
    target = by_master[max(by_master)]
    # --count 2 ends it; --duration only bounds a failure (two `cfn publish` starts on a loaded
    # machine can take half a minute)
    monitor = Monitor(cluster.url, ns, "--swarm", target, "--json", "--count", "2",
                      "--duration", "90")
    sent = cfn("publish", "--swarm", target, "--type", "job.done", "--data", '{"n": 1}',
               url=cluster.url, ns=ns)
    assert sent.returncode == 0, sent.stderr
    sent = cfn("publish", "--swarm", "elsewhere", "--to", target, "--data", '"hi"',
               url=cluster.url, ns=ns)
    assert sent.returncode == 0, sent.stderr
    assert monitor.finish() == 0, monitor.err
    lines = [json.loads(line) for line in monitor.out]
    assert [(x["kind"], x["swarm"], x["type"], x["data"]) for x in lines] == [
        ("event", target, "job.done", {"n": 1}), ("message", "elsewhere", "message", "hi")]
    no_swarm = cfn("monitor", "--duration", "1", url=cluster.url, ns=ns)
    assert no_swarm.returncode == 2 and "on Redis Cluster give --swarm SWARM" in no_swarm.stderr


def test_plugin_fixtures_on_a_cluster_and_cleanup_on_every_master(
    cluster: LocalCluster, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_master = swarms_on_every_master(cluster, "pl")
    swarms = sorted(by_master.values())
    project(
        pytester, monkeypatch,
        test_a=f"""
        import time

        SWARMS = {swarms!r}

        def wait(predicate):
            deadline = time.monotonic() + 30
            while not predicate() and time.monotonic() < deadline:
                time.sleep(0.01)
            return predicate()

        from pytest_cfn import SwarmState

        from pytest_cfn.cluster_nodes import each_master

        def test_buses_messengers_state(cfn_event_bus, cfn_messenger, cfn_redis_url,
                                        cfn_namespace, cfn_redis, cfn_perf):
            got = {{s: [] for s in SWARMS}}
            for swarm in SWARMS:
                cfn_event_bus(swarm=swarm, agent="r").subscribe("job.*", got[swarm].append)
            for swarm in SWARMS:
                bus = cfn_event_bus(swarm=swarm, agent="w")
                bus.publish("job.x", {{"swarm": swarm}}, priority=9)
                bus.flush()
            assert wait(lambda: all(len(v) == 1 for v in got.values())), got
            answer = cfn_messenger(swarm=SWARMS[1], agent="b")
            answer.on_request(lambda m: m.data * 2)
            asker = cfn_messenger(swarm=SWARMS[0], agent="a")
            assert asker.request(SWARMS[1], 21, timeout=5).data == 42
            counts = cfn_perf.sample_connections()
            # 3 readers x 2 + 3 writers x 1 + answer (sub + a publisher on asker's master)
            # + asker (sub + a publisher on answer's master), spread over three masters
            assert counts.total == 13, counts
            assert counts.max_per_subsystem == 2, counts  # per subsystem and master
            masters = set(key[3] for key in counts.per_master)
            assert len(masters) == 3, counts
            with SwarmState.from_url(cfn_redis_url, namespace=cfn_namespace) as state:
                for swarm in SWARMS:
                    state.save(swarm, phase="p")
                assert [r.swarm for r in state.swarms()] == SWARMS
            with each_master(cfn_redis) as nodes:
                # a critical cursor is stored too once a catch-up has run (timing): not counted
                held = {{where: sum(1 for key in node.scan_iter(match=cfn_namespace + ":*")
                                   if ":critical-cursor:" not in str(key))
                        for where, node in nodes}}
            print("NAMESPACE", cfn_namespace, "KEYS", *sorted(held.values()))
        """,
    )
    result = run(pytester, f"--cfn-redis={cluster.url}", "-s")
    assert result.ret == 0, output(result)
    namespace = next(line.split("NAMESPACE ")[1].split()[0] for line in result.outlines
                     if "NAMESPACE " in line)
    held = next(line.split("KEYS ")[1].split() for line in result.outlines if "KEYS " in line)
    assert held == ["2", "2", "2"], held  # a critical stream and a state hash on each master
    # ... and the plugin's teardown removed them from every master.
    assert _keys_by_master(cluster, f"{namespace}:*") == {p: set() for p in cluster.masters()}


@pytest.mark.slow
def test_locust_harness_shared_model_on_a_cluster_falls_back_to_connections_per_bus(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """SharedConnections serve one server: on a cluster node the shared model's buses get
    connections of their own (each on its swarm's master) and everything is delivered."""
    report = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(SWARM), "--headless", "-u", "6", "-r", "6",
         "-t", "4s", "--only-summary", "--cfn-report", str(report), "--cfn-warmup", "0.5",
         "--cfn-rate", "20", "--cfn-swarms", "3", "--cfn-model", "shared",
         "--cfn-gate", "critical-loss", "--cfn-send-lag-limit", "250",
         "--cfn-redis", cluster.url],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(report.read_text())
    assert result["extra"]["delivered"] == result["extra"]["expected_deliveries"] > 0
    roles = result["extra"]["connections"]["by_role"]
    assert not any(role.startswith(("shared-", "catchup-")) for role in roles), roles
    assert roles.get("events-sub", 0) >= 3, roles  # one per swarm, on its own master


@pytest.mark.slow
def test_locust_harness_on_a_cluster_counts_connections_on_every_master(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    report = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(SWARM), "--headless", "-u", "6", "-r", "6",
         "-t", "4s", "--only-summary", "--cfn-report", str(report), "--cfn-warmup", "0.5",
         "--cfn-rate", "20", "--cfn-swarms", "3", "--cfn-gate", "critical-loss",
         "--cfn-send-lag-limit", "250", "--cfn-redis", cluster.url],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(report.read_text())
    assert result["extra"]["delivered"] == result["extra"]["expected_deliveries"] > 0
    metrics = {m["name"]: m for m in result["metrics"]}
    assert metrics["connections_per_subsystem"]["value"] == 2
    peak = result["extra"]["connections"]
    assert len(peak["by_node"]) >= 2, peak  # the swarms' buses are on their own masters
    assert sum(peak["by_node"].values()) == peak["total"], peak
    # The server sampler and the server CPU figure cover every master, not the URL's node.
    samples = result["extra"]["server_samples"]
    assert samples and len(samples[-1]["clients_by_node"]) == len(cluster.masters()), samples[-1]
    assert metrics["server_cpu_percent"]["value"] > 0


def test_swarm_state_follows_ask_and_moved_during_a_migration(
    cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    swarm = f"moving-{fe.kind}"
    slot = swarm_slot(swarm)
    state = fe.make("SwarmState", cluster.url, namespace=ns)
    state.save(swarm, phase="before")
    source = cluster.owner(slot)
    target = cluster.node_for_port(next(p for p in cluster.masters() if p != source.port))
    cluster.begin_migration(slot, target)
    try:
        assert cluster.move_keys(slot, source, target) == 1
        record = state.load(swarm)  # ASK: read on the importing master
        assert record is not None and record.phase == "before"
        state.save(swarm, phase="during")
    finally:
        cluster.finish_migration(slot, source, target)
    loaded = state.load(swarm)  # MOVED: the slot table is asked again
    assert loaded is not None and loaded.phase == "during"
    assert [r.swarm for r in state.swarms()] == [swarm]
    assert _keys_by_master(cluster, f"{ns}:*")[target.port] == {f"{ns}:swarm:{{{swarm}}}"}


def test_cfn_acl_cluster_user_runs_one_swarm_on_every_master(
    cluster: LocalCluster, fe: Frontend, ns: str
) -> None:
    import shlex

    from test_acl import as_user, cfn_acl

    from pytest_cfn import PermissionDeniedError

    user = f"acl-{fe.kind}"
    by_master = swarms_on_every_master(cluster, "acl")
    mine, other, third = sorted(by_master.values())
    out = cfn_acl("--swarm", mine, "--namespace", ns, "--user", user, "--password",
                  "pw-cluster-secret", "--cluster")
    assert out.returncode == 0, out.stderr
    for node in cluster.nodes:  # ACLs are per node on a cluster
        client = cluster.client(node)
        try:
            client.execute_command(*shlex.split(out.stdout.strip()))
        finally:
            client.close()
    url = as_user(cluster.url, user, "pw-cluster-secret")
    errors: list[Any] = []
    pub = fe.event_bus(url, mine, "pub", namespace=ns, on_error=errors.append)
    for n in range(5):
        pub.publish("cfn.loop.phase.start", n, priority=9)
    pub.flush()
    got: list[Any] = []
    late = fe.event_bus(url, mine, "late", namespace=ns, on_error=errors.append)
    late.subscribe("*", lambda e: got.append(e.data))
    pub.publish("agent.spawn", "live")
    pub.flush()
    assert wait_until(lambda: sorted(map(str, got)) == ["0", "1", "2", "3", "4", "live"],
                      timeout=10), got
    messenger = fe.make("Messenger", url, mine, "lead", namespace=ns, persist_history=True,
                        on_error=errors.append)
    messenger.on_request(lambda m: {"ok": m.data})
    assert messenger.request(mine, 7, timeout=5).data == {"ok": 7}
    messenger.send(other, {"hello": 1})  # another master's inbox
    messenger.send(third, {"hello": 2})
    messenger.flush()
    assert messenger.stored_history()
    state = fe.make("SwarmState", url, namespace=ns)
    state.save(mine, phase="auth")
    assert state.load(mine).phase == "auth"
    assert errors == [] and late.stats()["permission_errors"] == 0
    spy = fe.event_bus(url, other, "spy", namespace=ns)
    with pytest.raises(PermissionDeniedError, match="NOPERM"):
        spy.subscribe("*", print)
    with pytest.raises(PermissionDeniedError):
        state.save(other, phase="x")
