"""cfn_perf, the summary table, --cfn-gate, --cfn-report's JSON and --cfn-baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_runs import output, pid_alive, project, read_json, run

from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.results import SCHEMA, SCHEMA_VERSION, read_result

pytest_plugins = ["pytester"]

RECORDS_THROUGHPUT = """
    import os

    def test_rate(cfn_perf):
        cfn_perf.record_throughput(int(os.environ.get("EVENTS", "500")), 1.0)
"""


def test_missed_target_is_informational_without_gate_and_fails_the_run_with_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=RECORDS_THROUGHPUT)
    result = run(pytester)
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines(
        [
            "*- cfn performance (embedded redis-server *",
            "*metric*measured*target*verdict*",
            "test_a.py::test_rate",
            "*throughput*500 events/s*>= 10,000 events/s*FAIL*",
            "*cfn: 1 of 1 targets missed (throughput (test_a.py::test_rate)); informational*",
        ]
    )
    gated = run(pytester, "--cfn-gate")
    assert gated.ret == pytest.ExitCode.TESTS_FAILED
    gated.stdout.fnmatch_lines(
        [
            "*throughput*FAIL*",
            "cfn gate FAILED: 1 of 1 targets missed: throughput (test_a.py::test_rate)",
            "*1 passed*",
        ]
    )


def test_gate_passes_when_every_target_is_met(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=RECORDS_THROUGHPUT)
    monkeypatch.setenv("EVENTS", "50000")
    result = run(pytester, "--cfn-gate")
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines(
        ["*throughput*50,000 events/s*pass*", "cfn gate passed: 1 targets met"]
    )


def test_targets_come_from_pyproject_ini_command_line_marker_and_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import pytest

        def test_defaults(cfn_perf):
            cfn_perf.record_cache(1, 0)

        @pytest.mark.cfn_perf(min_throughput=7)
        def test_marker(cfn_perf):
            cfn_perf.record_cache(1, 0)
            assert cfn_perf.targets.min_throughput == 7

        @pytest.mark.cfn_perf(min_throughput=7)
        def test_in_test(cfn_perf):
            cfn_perf.set_targets(min_throughput=8, max_connections_per_subsystem=3)
            cfn_perf.record_cache(1, 0)
        """,
    )
    pytester.makepyprojecttoml("[tool.cfn.targets]\nmin_cache_hit_rate = 0.5\nmin_throughput = 4\n")
    pytester.makeini("[pytest]\ncfn_targets =\n    max_p99_ms = 3\n    min_throughput = 5\n")
    report = pytester.path / "result.json"
    result = run(pytester, "--cfn-target=max_p99_ms=6", f"--cfn-report={report}")
    assert result.ret == 0, output(result)
    data = read_json(report)
    rows = {m["scope"].split("::")[1]: m for m in data["metrics"]}
    assert rows["test_defaults"]["target"] == 0.5
    assert data["extra"]["targets_from"][1:] == ["ini option cfn_targets", "--cfn-target"]
    assert data["extra"]["targets_from"][0].endswith("pyproject.toml [tool.cfn.targets]")
    assert all(rows[name]["verdict"] == "pass" for name in rows)


def test_targets_per_test_are_what_the_json_and_table_judge(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        import pytest

        @pytest.mark.cfn_perf(min_throughput=7)
        def test_marker(cfn_perf):
            cfn_perf.record_throughput(8, 1.0)

        @pytest.mark.cfn_perf(min_throughput=7)
        def test_in_test(cfn_perf):
            cfn_perf.set_targets(min_throughput=9)
            cfn_perf.record_throughput(8, 1.0)
        """,
    )
    report = pytester.path / "result.json"
    result = run(pytester, "--cfn-target=min_throughput=1", f"--cfn-report={report}", "--cfn-gate")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    metrics = read_json(report)["metrics"]
    verdicts = {m["scope"].split("::")[1]: (m["target"], m["verdict"]) for m in metrics}
    assert verdicts == {"test_marker": (7.0, "pass"), "test_in_test": (9.0, "fail")}


def test_report_is_versioned_json_with_machine_server_and_percentiles(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        def test_workload(cfn_perf):
            result = cfn_perf.run_event_bus(events=2000, batch=50, critical_every=10)
            assert result.delivered == result.expected == 2000
            assert result.connections.max_per_subsystem == 2
        """,
    )
    report = pytester.path / "out" / "result.json"
    result = run(pytester, f"--cfn-report={report}")
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines([f"cfn report: {report}"])
    parsed = read_result(report)
    assert (parsed.schema, parsed.schema_version, parsed.tool) == (SCHEMA, SCHEMA_VERSION, "pytest")
    assert parsed.redis.backend == "redis-server" and parsed.redis.embedded
    assert parsed.redis.version.count(".") == 2
    assert {"hostname", "cpu_count", "python_version", "versions"} <= parsed.machine.keys()
    assert not pid_alive(parsed.extra["server_pid"])
    by_name = {m.name: m for m in parsed.metrics}
    assert set(by_name) == {
        "throughput", "latency_p99", "cache_hit_rate", "loss", "critical_loss",
        "connections_per_subsystem", "connections_total", "maxclients_fraction",
    }
    assert all(m.scope == "test_a.py::test_workload" and m.method for m in parsed.metrics)
    assert by_name["loss"].value == 0 and by_name["critical_loss"].value == 0
    assert by_name["connections_per_subsystem"].value == 2
    assert by_name["connections_total"].target == 8
    latency = by_name["latency_p99"].latency
    assert latency is not None and latency["count"] == 2000
    assert latency["p50_us"] <= latency["p90_us"] <= latency["p99_us"] <= latency["max_us"]
    assert by_name["latency_p99"].value == pytest.approx(latency["p99_us"] / 1000)
    assert LatencyHistogram.decode(latency["encoded"]).count == 2000
    assert "unpaced, batches of 50" in by_name["throughput"].method


def test_paced_workload_measures_from_the_intended_send_time(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        def test_paced(cfn_perf):
            result = cfn_perf.run_event_bus(events=600, rate=2000, subscribers=2)
            assert result.delivered == 1200
            assert 0.2 < result.seconds < 5
        """,
    )
    report = pytester.path / "result.json"
    assert run(pytester, f"--cfn-report={report}").ret == 0
    rows = {m["name"]: m for m in read_json(report)["metrics"]}
    assert "intended send time" in rows["latency_p99"]["method"]
    assert "paced at 2000 events/s" in rows["latency_p99"]["method"]
    assert rows["latency_p99"]["latency"]["count"] == 1200


def _baseline_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, events: int,
                  *args: str) -> pytest.RunResult:
    monkeypatch.setenv("EVENTS", str(events))
    return run(pytester, *args)


def test_baseline_regression_beyond_the_limit_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=RECORDS_THROUGHPUT)
    base = pytester.path / "base.json"
    assert _baseline_run(pytester, monkeypatch, 50_000, f"--cfn-report={base}").ret == 0

    # A tenfold drop: the rule divides each figure by a reference measured in its own run,
    # and on a loaded machine that reference can halve between two runs (a halved figure
    # then reads as no change, which is the rule doing its job, not a regression).
    slower = _baseline_run(
        pytester, monkeypatch, 5_000, f"--cfn-baseline={base}", "--cfn-regression=10"
    )
    assert slower.ret == pytest.ExitCode.TESTS_FAILED, output(slower)
    slower.stdout.fnmatch_lines(
        [
            "cfn baseline REGRESSION: throughput (test_a.py::test_rate) changed -90.0 % "
            "(50,000 -> 5,000); the limit is 10 % (--cfn-regression); judged by reference*"
        ]
    )
    report = pytester.path / "current.json"
    close = _baseline_run(
        pytester, monkeypatch, 48_000, f"--cfn-baseline={base}", f"--cfn-report={report}"
    )
    assert close.ret == 0, output(close)
    close.stdout.fnmatch_lines(
        ["cfn baseline: 1 figures compared with *base.json, none regressed*"]
    )
    extra = read_json(report)["extra"]
    assert extra["baseline"] == str(base) and extra["regression_pct"] == 10.0
    assert extra["regressions"][0]["change_pct"] == pytest.approx(-4.0)


def test_cfn_perf_tests_carry_the_marker_for_selection(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(
        pytester, monkeypatch,
        test_a="""
        def test_perf(cfn_perf):
            pass

        def test_plain():
            pass
        """,
    )
    result = run(pytester, "-m", "cfn_perf", "-v")
    result.stdout.fnmatch_lines(["*test_perf PASSED*", "*1 deselected*"])


def test_fakeredis_figures_say_so_and_never_gate(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=RECORDS_THROUGHPUT)
    report = pytester.path / "fake.json"
    result = run(pytester, "--cfn-redis=fakeredis://", "--cfn-gate", f"--cfn-report={report}")
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines(
        ["FAKEREDIS: these figures were not measured through a real Redis server*"]
    )
    data = read_json(report)
    assert data["redis"]["backend"] == "fakeredis"
    (metric,) = data["metrics"]
    assert metric["verdict"] == "info" and metric["method"].startswith("[fakeredis")


def test_report_is_written_even_without_figures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a="def test_nothing():\n    pass\n")
    report = Path(pytester.path / "empty.json")
    result = run(pytester, f"--cfn-report={report}", "--cfn-gate")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*no performance figures were recorded*", "cfn gate passed: 0 targets met"]
    )
    assert read_result(report).metrics == []
