"""The plugin's options: where --cfn-redis comes from, and every bad value is one usage error."""

from __future__ import annotations

import pytest
from plugin_runs import free_port, output, project, run

pytest_plugins = ["pytester"]

USES_REDIS = """
    def test_one(cfn_redis):
        assert cfn_redis.ping()

    def test_two(cfn_redis):
        assert cfn_redis.ping()
"""

WRITES_URL = """
    def test_url(cfn_redis_url, cfn_server, cfn_redis):
        assert cfn_redis.ping()
        open("url.txt", "w").write(f"{cfn_redis_url} {cfn_server.source}")
"""


def _assert_usage_error(result: pytest.RunResult, *patterns: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output(result)
    result.stderr.fnmatch_lines(list(patterns))
    text = output(result)
    assert "Traceback" not in text
    assert "passed" not in text and "error" not in result.stdout.str().lower()


def test_help_shows_one_cfn_group_with_every_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch)
    result = run(pytester, "--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "pytest-cfn: Redis coordination fixtures and performance gates:",
            "*--cfn-redis=URL*",
            "*--cfn-redis-server=PATH*",
            "*--cfn-gate*",
            "*--cfn-report=PATH*",
            "*--cfn-baseline=PATH*",
            "*--cfn-regression=PCT*",
            "*--cfn-target=NAME=VALUE*",
        ]
    )


@pytest.mark.parametrize(
    ("url", "pattern"),
    [
        ("http://127.0.0.1:6379", "*--cfn-redis*scheme 'http'*fakeredis://*"),
        ("redis://127.0.0.1:notaport", "*--cfn-redis*bad port*"),
        ("redis://127.0.0.1:6379/db7", "*--cfn-redis*database 'db7'*"),
    ],
)
def test_bad_url_is_one_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str, pattern: str
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS)
    _assert_usage_error(run(pytester, f"--cfn-redis={url}"), pattern)


def test_unreachable_server_stops_the_run_with_one_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS)
    port = free_port()
    result = run(pytester, f"--cfn-redis=redis://127.0.0.1:{port}/0")
    _assert_usage_error(
        result, f"ERROR: --cfn-redis: cannot reach Redis at 127.0.0.1:{port}: connection refused*"
    )
    assert output(result).count("cannot reach Redis") == 1


def test_missing_server_binary_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS)
    result = run(pytester, "--cfn-redis-server=/nonexistent/redis-server")
    _assert_usage_error(result, "*--cfn-redis-server '/nonexistent/redis-server' is not an exec*")


def test_missing_server_binary_from_ini_errors_only_the_tests_that_need_a_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an ini file travels with a project: a suite that needs no server must still run
    project(pytester, monkeypatch, test_a=USES_REDIS,
            test_b="def test_plain():\n    assert 1 + 1 == 2\n")
    pytester.makeini("[pytest]\ncfn_redis_server = /nonexistent/redis-server\n")
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=2)  # USES_REDIS holds two tests
    result.stdout.fnmatch_lines(["*ini option cfn_redis_server:*not an executable*"])
    assert "Traceback" not in output(result)
    alone = run(pytester, "test_b.py")
    assert alone.ret == 0, output(alone)
    alone.assert_outcomes(passed=1)


def test_command_line_beats_environment_beats_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cfn_redis_url: str
) -> None:
    project(pytester, monkeypatch, test_a=WRITES_URL)
    port = free_port()
    unreachable = f"redis://127.0.0.1:{port}/0"
    pytester.makeini(f"[pytest]\ncfn_redis = {unreachable}\n")
    monkeypatch.setenv("CFN_REDIS_URL", cfn_redis_url)
    assert run(pytester).ret == 0
    assert (pytester.path / "url.txt").read_text() == f"{cfn_redis_url} CFN_REDIS_URL"

    monkeypatch.setenv("CFN_REDIS_URL", unreachable)
    assert run(pytester, f"--cfn-redis={cfn_redis_url}").ret == 0
    assert (pytester.path / "url.txt").read_text() == f"{cfn_redis_url} --cfn-redis"

    # Only a URL on the command line is checked at start-up; the ini's is checked by the
    # test that needs it, which errors (the session does not stop with a usage error).
    monkeypatch.delenv("CFN_REDIS_URL")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"pytest-cfn: ini option cfn_redis='{unreachable}' (from *tox.ini), checked when a "
         f"test first needed a server: cannot reach Redis at 127.0.0.1:{port}: connection "
         "refused*"]
    )


def test_bad_environment_url_errors_the_tests_that_need_it_with_its_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS + "\n    def test_plain():\n        pass\n")
    monkeypatch.setenv("CFN_REDIS_URL", "localhost:6379")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        ["cfn: CFN_REDIS_URL='localhost:6379' (from the environment) is not a Redis URL*",
         "pytest-cfn: CFN_REDIS_URL='localhost:6379' (from the environment) is not a Redis URL:"
         " *use redis://*fakeredis://*unset it*"]
    )


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("--cfn-target=nope=1",), "*unknown target 'nope'; targets are:*min_throughput*"),
        (("--cfn-target=min_throughput=fast",), "*target min_throughput must be a number*"),
        (("--cfn-target=min_throughput",), "*is not NAME=VALUE*"),
        (("--cfn-regression=-5",), "*--cfn-regression must be > 0*"),
        (("--cfn-regression=5",), "*--cfn-regression needs --cfn-baseline*"),
        (("--cfn-baseline=missing.json",), "*cannot read result file missing.json*"),
        (("--cfn-report=.",), "*--cfn-report '.' is a directory*"),
    ],
)
def test_bad_values_are_refused_before_any_test_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
    pattern: str,
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS)
    _assert_usage_error(run(pytester, *args), pattern)


def test_baseline_that_is_not_a_result_file_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS)
    pytester.makefile(".json", base='{"hello": 1}')
    _assert_usage_error(
        run(pytester, "--cfn-baseline=base.json"), "*base.json is not a pytest-cfn/result JSON*"
    )


def test_unknown_target_in_pyproject_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS)
    pytester.makepyprojecttoml("[tool.cfn.targets]\nmin_throughputs = 5\n")
    _assert_usage_error(run(pytester), "*pyproject.toml ?tool.cfn.targets?: unknown target*")


def test_bad_server_binary_from_the_environment_errors_only_the_tests_that_need_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=USES_REDIS + "\n    def test_plain():\n        pass\n")
    monkeypatch.setenv("CFN_REDIS_SERVER", "/nonexistent/redis-server")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        ["cfn: 2 test(s) needed a Redis server and got none: redis-server "
         "'/nonexistent/redis-server' (from $CFN_REDIS_SERVER) is not an executable file;*"]
    )
    assert output(result).count("three ways to get one") == 1
