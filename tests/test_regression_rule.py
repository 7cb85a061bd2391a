"""Comparisons with a baseline that do not cry wolf, and the delay proxy that calibrates the
instrument.

The rule (``pytest_cfn.measure.results.REGRESSION_RULE``) is checked on hand-made figures; the
plugin's ``--cfn-baseline`` is checked end to end: the same code twice is no regression, and a build
slowed by a 50 µs sleep per publish is caught. The proxy is checked on a real server.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_runs import output, project, run

from pytest_cfn import EventBus
from pytest_cfn._core.options import BusOptions
from pytest_cfn.measure.calibration.delay_proxy import DelayProxy, droppable_event, frame_end
from pytest_cfn.measure.results import Metric, RedisInfo, RunResult, compare
from pytest_cfn.server import RedisServer

pytest_plugins = ["pytester"]


def _run(*metrics: Metric) -> RunResult:
    return RunResult(tool="sweep", redis=RedisInfo(version="7.0.15"), metrics=list(metrics))


def _rate(value: float, **kw: object) -> Metric:
    return Metric(name="rate", value=value, unit="events/s", method="m", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("old", "new", "regressed", "rule"),
    [
        # Ranges overlap: 20 % lower median, but one of today's runs is inside the baseline's.
        (_rate(100, low=80, high=120, runs=3), _rate(80, low=70, high=85, runs=3), False,
         "spread"),
        # Ranges apart and worse by more than the threshold.
        (_rate(100, low=95, high=105, runs=3), _rate(80, low=78, high=82, runs=3), True,
         "spread"),
        # Median 15 % worse and ranges apart, but by less than the threshold: noise.
        (_rate(100, low=90, high=110, runs=3), _rate(85, low=80, high=88, runs=3), False,
         "spread"),
        # Ranges apart but within the threshold: not a regression either.
        (_rate(100, low=99, high=101, runs=3), _rate(95, low=94, high=96, runs=3), False,
         "spread"),
        # The whole machine is 30 % slower today: the ratio to the reference holds.
        (_rate(100, reference=1000.0), _rate(70, reference=700.0), False, "reference"),
        # Our figure fell, the reference did not.
        (_rate(100, reference=1000.0), _rate(70, reference=1000.0), True, "reference"),
        # One run, no reference: the threshold alone decides.
        (_rate(100), _rate(85), True, "threshold only"),
    ],
)
def test_a_figure_regresses_only_outside_the_noise(
    old: Metric, new: Metric, regressed: bool, rule: str
) -> None:
    (result,) = compare(_run(old), _run(new), 10.0)
    assert (result.regressed, result.rule) == (regressed, rule), result.detail


def _p99(low: float, high: float, reference: float | None) -> Metric:
    return Metric(name="delivery_p99", value=(low + high) / 2, unit="ms", method="m",
                  better="lower", low=low, high=high, runs=3, reference=reference)


@pytest.mark.parametrize(
    ("old", "new", "regressed"),
    [
        # The two sweeps of the same code on this machine: today's tail 13 % above the
        # baseline's range, but the same run's yardstick was 42 % higher too: a noisier day.
        (_p99(1.519, 1.71, 3.09), _p99(1.939, 2.136, 4.39), False),
        # The same gap with a steady yardstick: the tail itself grew.
        (_p99(1.519, 1.71, 3.09), _p99(1.939, 2.136, 3.09), True),
        # A tail that doubled regresses even on a noisier day.
        (_p99(5.1, 5.4, 3.09), _p99(23.0, 35.4, 4.39), True),
        # Ranges overlap: the yardstick cannot make it a regression.
        (_p99(1.5, 1.9, 4.39), _p99(1.8, 2.1, 3.09), False),
    ],
)
def test_a_repeated_tail_with_a_same_run_yardstick_needs_both_to_regress(
    old: Metric, new: Metric, regressed: bool
) -> None:
    (result,) = compare(_run(old), _run(new), 10.0)
    assert (result.regressed, result.rule) == (regressed, "spread and reference"), result.detail
    assert "ranges" in result.detail and "same-run reference" in result.detail


def test_the_tail_yardstick_is_the_calibration_base_runs_p99() -> None:
    from pytest_cfn.measure.sweep.document import tail_reference

    runs = [{"injected_ms": 0.0, "p99_ms": 5.0}, {"injected_ms": 2.0, "p99_ms": 9.0},
            {"injected_ms": 0.0, "p99_ms": 3.0}]
    assert tail_reference({"calibration": {"runs": runs}}) == 4.0
    failed = [runs[0], {"injected_ms": 0.0, "error": "harness failed"}]
    assert tail_reference({"calibration": {"runs": failed}}) is None
    assert tail_reference({}) is None


def test_a_loss_that_was_zero_regresses_when_it_appears_outside_the_noise() -> None:
    def loss(value: float, low: float, high: float) -> Metric:
        return Metric(name="loss_rate", value=value, unit="fraction", method="m",
                      better="lower", low=low, high=high, runs=3)

    (appeared,) = compare(_run(loss(0, 0, 0)), _run(loss(0.5, 0.05, 0.6)), 10.0)
    assert appeared.regressed and "from 0" in appeared.detail
    (noise,) = compare(_run(loss(0, 0, 0.01)), _run(loss(0.005, 0, 0.01)), 10.0)
    assert not noise.regressed
    assert compare(_run(loss(0, 0, 0)), _run(loss(0, 0, 0)), 10.0) == []


def test_latency_regresses_upwards_and_references_are_never_judged() -> None:
    old = Metric(name="p99", value=1.0, unit="ms", method="m", better="lower", low=0.9,
                 high=1.1, runs=3)
    new = Metric(name="p99", value=2.0, unit="ms", method="m", better="lower", low=1.8,
                 high=2.2, runs=3)
    server_old = Metric(name="ceiling", value=100_000, unit="requests/s", method="m",
                        role="reference")
    server_new = Metric(name="ceiling", value=10_000, unit="requests/s", method="m",
                        role="reference")
    results = compare(_run(old, server_old), _run(new, server_new), 10.0)
    assert [(r.name, r.regressed) for r in results] == [("p99", True)]
    assert "ranges apart" in results[0].detail


def test_resp_frames_are_cut_whole_and_only_non_critical_events_are_droppable() -> None:
    event = (b'*4\r\n$8\r\npmessage\r\n$9\r\nevent:s:*\r\n$11\r\nevent:s:a.b\r\n'
             b'$14\r\n{"priority":5}\r\n')
    critical = event.replace(b'"priority":5', b'"priority":9')
    stream = b":1\r\n" + event + b"+PONG\r\n*2\r\n$1\r\na\r\n*1\r\n:3\r\n"
    ends = []
    at = 0
    while (end := frame_end(stream, at)) is not None:
        ends.append(stream[at:end])
        at = end
    assert ends == [b":1\r\n", event, b"+PONG\r\n", b"*2\r\n$1\r\na\r\n*1\r\n:3\r\n"]
    assert frame_end(event[:-3]) is None
    assert droppable_event(event) and not droppable_event(critical)
    assert not droppable_event(b"*3\r\n$7\r\nmessage\r\n$13\r\nmessage:a:b\r\n$2\r\n{}\r\n")


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    started = RedisServer().start()
    try:
        yield started
    finally:
        started.stop()


def _ping_ms(port: int, count: int = 30) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def test_the_proxy_adds_its_delay_to_every_reply(server: RedisServer) -> None:
    with DelayProxy("127.0.0.1", server.port) as proxy:
        direct = _ping_ms(proxy.port)
        proxy.reset(0.005)
        delayed = _ping_ms(proxy.port)
    assert 4.8 <= delayed - direct <= 6.5, (direct, delayed)


def test_the_proxy_drops_exactly_the_events_it_was_asked_to(server: RedisServer) -> None:
    with DelayProxy("127.0.0.1", server.port) as proxy:
        options = BusOptions(namespace="proxy-drop")
        got: list[object] = []
        with EventBus.from_url(proxy.url, swarm="s", agent="sub", options=options) as sub, \
                EventBus.from_url(server.url, swarm="s", agent="pub", options=options) as pub:
            sub.subscribe("*", got.append)
            sub.connect()
            pub.connect()
            proxy.drop_events(10, after=time.monotonic())
            for n in range(60):
                pub.publish("task.progress", {"n": n}, priority=5 if n % 2 else 9)
            pub.flush()
            deadline = time.monotonic() + 30
            while len(got) < 50 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            lost = sub.stats()["lost"]
        dropped, channels = proxy.dropped()
    assert dropped == 10 and sum(channels.values()) == 10
    assert len(got) == 50 and lost == 10


def test_the_proxy_keeps_the_hold_it_applied_and_the_time_before_it_for_each_event(
    server: RedisServer,
) -> None:
    with DelayProxy("127.0.0.1", server.port) as proxy:
        proxy.reset(0.003)
        options = BusOptions(namespace="proxy-hold")
        got: list[object] = []
        with EventBus.from_url(proxy.url, swarm="s", agent="sub", options=options) as sub, \
                EventBus.from_url(server.url, swarm="s", agent="pub", options=options) as pub:
            sub.subscribe("*", got.append)
            sub.connect()
            pub.connect()
            for n in range(40):
                pub.publish("task.progress", {"t": time.time_ns(), "n": n})
                time.sleep(0.001)
            pub.flush()
            deadline = time.monotonic() + 30
            while len(got) < 40 and time.monotonic() < deadline:
                time.sleep(0.02)
        holds, upstream = proxy.holds(), proxy.upstream_ns()
        proxy.reset(0.0)
        assert proxy.holds() == [] and proxy.upstream_ns() == []
    assert len(got) == 40 and len(holds) == 40, (len(got), len(holds))
    assert min(holds) >= 0.003 and statistics.median(holds) < 0.03, holds
    # Intended send time (data.t) to arrival at the proxy: before the held delay, so short.
    assert len(upstream) == 40 and 0 < statistics.median(upstream) < 3_000_000, upstream


SLOWED_PUBLISH = """
    import os
    import time

    import pytest

    from pytest_cfn._sync.event_bus import EventBus


    @pytest.fixture(autouse=True)
    def slowed_build(monkeypatch):
        if os.environ.get("CFN_SLOW_PUBLISH_US"):
            delay = float(os.environ["CFN_SLOW_PUBLISH_US"]) / 1e6
            publish = EventBus.publish

            def slow(self, *args, **kwargs):
                time.sleep(delay)
                return publish(self, *args, **kwargs)

            monkeypatch.setattr(EventBus, "publish", slow)
"""

MEASURES_THE_BUS = """
    import time

    def test_bus(cfn_event_bus, cfn_perf):
        publisher = cfn_event_bus(swarm="s", agent="pub")
        publisher.connect()
        started = time.perf_counter()
        with publisher.batch():
            for n in range(20_000):
                publisher.publish("task.progress", {"n": n})
        publisher.flush()
        cfn_perf.record_throughput(20_000, time.perf_counter() - started)
"""


@pytest.mark.slow
def test_the_same_build_is_no_regression_and_a_slowed_one_is_caught(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_bus=MEASURES_THE_BUS)
    pytester.makeconftest(SLOWED_PUBLISH)
    base = pytester.path / "base.json"
    first = run(pytester, f"--cfn-report={base}")
    assert first.ret == 0, output(first)
    throughput = next(m for m in json.loads(base.read_text())["metrics"]
                      if m["name"] == "throughput")
    assert throughput["reference"] > 0

    # One run's own noise is not known: the threshold sits above it (this publish loop's rate
    # varies by about a quarter between runs on a quiet machine); the reference takes out a
    # slower machine, but it is measured at the session's end, not beside the figure, so on a
    # loaded CI machine the two can move apart (this test failed once under load). 75 %: a
    # false regression needs the figure 4x slower and its reference not. The slowed build
    # below (a 50 us sleep in each ~2-5 us publish) drops the figure some 95 % or more.
    same = run(pytester, f"--cfn-baseline={base}", "--cfn-regression=75")
    assert same.ret == 0, output(same)
    same.stdout.fnmatch_lines(["cfn baseline: * none regressed by more than 75 % outside*"])

    monkeypatch.setenv("CFN_SLOW_PUBLISH_US", "50")
    slowed = run(pytester, f"--cfn-baseline={base}", "--cfn-regression=75")
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED, output(slowed)
    slowed.stdout.fnmatch_lines(
        ["cfn baseline REGRESSION: throughput (test_bus.py::test_bus) changed -*judged by "
         "reference*"]
    )


def test_the_rule_is_in_cfn_report_help(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_cfn.cli import main

    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "ranges do not overlap" in text and "figure / reference" in text
    assert Path(__file__).exists()
