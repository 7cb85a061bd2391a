"""TLS through every part: the ``cfn`` CLI, the pytest plugin, the Locust harness, the bench.

Each runs in a subprocess against a real redis-server with a TLS port and certificates
made at test time; a bad certificate setting gives one clear error line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_runs import output, project, run
from test_cli import Monitor, cfn

from pytest_cfn._errors import ServerWithoutTlsError
from pytest_cfn.tls_server import TlsRedisServer

pytest_plugins = ["pytester"]
SWARM = Path(__file__).resolve().parent.parent / "loadtests" / "swarm.py"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsRedisServer]:
    try:
        server = TlsRedisServer(require_client_cert=True).start()
    except ServerWithoutTlsError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def test_cli_publish_and_monitor_over_mutual_tls(tls_server: TlsRedisServer, ns: str) -> None:
    url = tls_server.mutual_tls_url
    monitor = Monitor(url, ns, "--swarm", "tls-s", "--json", "--count", "1")
    done = cfn("publish", "--swarm", "tls-s", "--type", "job.done", "--data", '{"n": 1}',
               url=url, ns=ns)
    assert done.returncode == 0, done.stderr
    assert monitor.finish() == 0, monitor.err
    events = [json.loads(line) for line in monitor.out if line.startswith("{")]
    assert [e["data"] for e in events] == [{"n": 1}]


@pytest.mark.parametrize("command", [("swarms",), ("monitor", "--swarm", "s")])
def test_cli_without_client_certificate_prints_one_error_line(
    tls_server: TlsRedisServer, ns: str, command: tuple[str, ...]
) -> None:
    done = cfn(*command, url=tls_server.tls_url, ns=ns)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "client certificate" in lines[0] and "ssl_certfile" in lines[0]


def test_plugin_fixtures_over_tls(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tls_server: TlsRedisServer
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import time

        def test_bus(cfn_event_bus, cfn_redis):
            assert cfn_redis.ping()
            got = []
            reader = cfn_event_bus(swarm="s", agent="r")
            reader.subscribe("job.*", got.append)
            cfn_event_bus(swarm="s", agent="w").publish("job.x", {"ok": True})
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert got[0].data == {"ok": True}
        """,
    )
    result = run(pytester, f"--cfn-redis={tls_server.mutual_tls_url}")
    assert result.ret == 0, output(result)
    bad = run(pytester, f"--cfn-redis={tls_server.tls_url}")
    assert bad.ret == 4, output(bad)
    errors = [line for line in bad.errlines + bad.outlines if line.startswith("ERROR")]
    assert len(errors) == 1 and "certificate" in errors[0], output(bad)


@pytest.mark.slow
def test_locust_harness_over_tls(tmp_path: Path, tls_server: TlsRedisServer) -> None:
    report = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(SWARM), "--headless", "-u", "5", "-r", "5",
         "-t", "3s", "--only-summary", "--cfn-report", str(report), "--cfn-warmup", "0.5",
         "--cfn-rate", "20", "--cfn-gate", "critical-loss", "--cfn-send-lag-limit", "250",
         "--cfn-redis",
         tls_server.mutual_tls_url],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(report.read_text())
    metrics = {m["name"]: m for m in result["metrics"]}
    assert result["extra"]["delivered"] == result["extra"]["expected_deliveries"] > 0
    assert metrics["connections_per_subsystem"]["value"] == 2
    assert result["redis"]["url"].startswith("rediss://")


def test_bench_measures_tls_cost_against_the_plain_port(tmp_path: Path) -> None:
    from pytest_cfn.measure.results import read_result

    path = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_cfn.measure.microbench", "--tls", "--quick", "--only", "tls",
         "--only", "ceiling", "--json", str(path)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    if "built without TLS" in done.stderr:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = {m.name: m for m in read_result(path).metrics}
    assert {"tls_e2e_delivered", "tls_publisher_cpu_us_per_event",
            "tls_subscriber_cpu_us_per_event", "redis_benchmark_publish_p1"} <= set(metrics)
    assert all(metric.value > 0 for metric in metrics.values())
    assert "x plain text end to end" in done.stdout
    assert "TLS adds" in done.stdout and "rediss://" in done.stdout


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--tls", "--redis", "redis://127.0.0.1:1/0"], "leave out --redis"),
        (["--plain-redis", "redis://127.0.0.1:1/0"], "needs --redis rediss://"),
        (["--redis", "redis://h/0?ssl_ca_certs=/x"], "rediss://"),
    ],
)
def test_bench_tls_usage_errors(argv: list[str], complaint: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_cfn.measure.microbench", *argv],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr


def test_bench_over_tls_with_a_wrong_ca_prints_the_tls_reason(
    tls_server: TlsRedisServer,
) -> None:
    url = f"rediss://127.0.0.1:{tls_server.tls_port}/0"
    done = subprocess.run([sys.executable, "-m", "pytest_cfn.measure.microbench", "--quick",
                           "--redis", url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not trusted" in done.stderr and "ssl_ca_certs" in done.stderr
