"""The latency step's timer floor: lateness a sender's sleeps alone caused is counted apart
from lateness its client caused, and an absolute latency target the machine rules out is
not judged (the relative one still is).

The schedule runs on a fake clock: each sleep returns exactly on time unless the test makes
it overshoot, and the "client" can stall between wake-ups.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.microbench import pacing
from pytest_cfn.measure.microbench.config import BenchConfig, Target
from pytest_cfn.measure.microbench.printout import Figure, format_figure
from pytest_cfn.measure.microbench.step_figures import latency_figures


class FakeClock:
    """``perf_counter_ns``/``time_ns``/``sleep`` for :mod:`pacing`: ``overshoot[n]`` ns are
    added to the n-th sleep (1-based)."""

    def __init__(self, overshoot: dict[int, int]) -> None:
        self.now = 1_000_000_000
        self.sleeps = 0
        self.overshoot = overshoot

    def perf_counter_ns(self) -> int:
        return self.now

    def time_ns(self) -> int:
        return self.now + 1_700_000_000_000_000_000

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += round(seconds * 1e9) + self.overshoot.get(self.sleeps, 0)


def run_schedule(
    monkeypatch: pytest.MonkeyPatch, overshoot: dict[int, int], stall_at_batch: int = 0,
    stall_ns: int = 0,
) -> pacing.PacedRun:
    clock = FakeClock(overshoot)
    monkeypatch.setattr(pacing, "time", clock)
    schedule = pacing.PacedSchedule(rate=10_000, duration=0.1, warmup=0.01)
    for number, _batch in enumerate(schedule, start=1):
        if number == stall_at_batch:
            clock.now += stall_ns  # the client took this long over one wake-up's sends
    assert schedule.run is not None
    return schedule.run


def test_a_sleeps_overshoot_is_the_timer_floor_and_a_clients_stall_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 100 warm-up + 1,000 measured events, one every 100 µs. Sleep 400 (well inside the
    # measured events) returns 2 ms late: the 21 events due in those 2 ms go out at once,
    # 10 of them over 1 ms late (2.0 ... 1.1 ms). Batch 700 stalls 5 ms in the client:
    # the next 50 events are late by 4.9 ... 0 ms, 39 over 1 ms, but no sleep caused it.
    run = run_schedule(monkeypatch, {400: 2_000_000}, stall_at_batch=700, stall_ns=5_000_000)
    assert run.measured == 1000 and run.sent == 1100
    assert run.timer_late_over_1ms == 10
    assert run.timer_late_over_3ms == 0
    assert run.late_over_1ms == 10 + 39


def test_a_long_overshoot_counts_over_3ms_and_the_warm_up_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # sleep 5 falls in the warm-up (its 41 late events are not measured); sleep 500 returns
    # 4 ms late: 30 events over 1 ms (4.0 ... 1.1 ms), 10 of them over 3 ms.
    run = run_schedule(monkeypatch, {5: 4_000_000, 500: 4_000_000})
    assert run.timer_late_over_1ms == 30
    assert run.timer_late_over_3ms == 10
    assert run.late_over_1ms == 60


def test_an_on_time_machine_has_no_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_schedule(monkeypatch, {})
    assert (run.timer_late_over_1ms, run.timer_late_over_3ms, run.late_over_1ms) == (0, 0, 0)


def _histogram(p99_us: float, tail_us: float) -> LatencyHistogram:
    """10,000 events: 98.8 % at 100 µs, 1 % at ``p99_us``, 0.2 % at ``tail_us``."""
    histogram = LatencyHistogram()
    for _ in range(9880):
        histogram.record(100_000)
    for _ in range(100):
        histogram.record(int(p99_us * 1000))
    for _ in range(20):
        histogram.record(int(tail_us * 1000))
    return histogram


def _sent(floor_1ms: int, floor_3ms: int) -> dict[str, Any]:
    return {"measured": 10_000, "achieved_rate": 10_000.0, "late_over_1ms": floor_1ms,
            "max_send_lateness_us": 5000.0, "timer_late_over_1ms": floor_1ms,
            "timer_late_over_3ms": floor_3ms}


def _figures(ours_p99_us: float, ref_p99_us: float, floor_1ms: int, floor_3ms: int,
             with_reference: bool = True) -> dict[str, Figure]:
    """Our latency figures at 10,000/s, our sender's sleeps having put ``floor_1ms`` and
    ``floor_3ms`` of 10,000 events over 1 and 3 ms (the reference's sender: none)."""
    cfg = BenchConfig(redis_url=None, events=1000, rate=10_000.0, duration=1.0, payload=200,
                      repeat=1, idle_buses=0, json_path=None, quick=True)
    target = Target(url="redis://127.0.0.1:1/0", version="7.0.15", redis_benchmark=None,
                    clients="test", wire_bytes=397)
    ours = _histogram(ours_p99_us, 4 * ours_p99_us)
    received = {"histogram": ours, "from_send": ours, "stats": {}}
    reference = None
    if with_reference:
        reference = (_sent(0, 0), {"histogram": _histogram(ref_p99_us, 4 * ref_p99_us)})
    items = latency_figures(_sent(floor_1ms, floor_3ms), received, reference, "", cfg, target,
                            rate=10_000.0)
    return {item.key: item for item in items if isinstance(item, Figure)}


def test_the_absolute_targets_are_judged_when_the_machine_woke_on_time() -> None:
    figures = _figures(ours_p99_us=1500, ref_p99_us=2000, floor_1ms=50, floor_3ms=5)
    p99, p99_9 = figures["latency_p99"], figures["latency_p99_9"]
    assert p99.verdict == "fail" and p99.target == 1000.0 and not p99.unjudged
    assert p99_9.verdict == "fail" and not p99_9.unjudged


def test_a_machine_that_wakes_late_for_over_1_percent_leaves_only_the_relative_p99_target(
) -> None:
    # the run's sender woke over 1 ms late for 150 of 10,000 events (1.5 %), over 3 ms for
    # 30 (0.3 %), before handing them to the client: neither absolute target can be met
    figures = _figures(ours_p99_us=1500, ref_p99_us=2000, floor_1ms=150, floor_3ms=30)
    p99, p99_9 = figures["latency_p99"], figures["latency_p99_9"]
    assert p99.target == pytest.approx(figures["redis_py_latency_p99"].value)
    assert p99.verdict == "pass"  # 1.5 ms <= redis-py's 2 ms
    assert "not judged" in p99.target_text
    assert any("150 of 10,000 events (1.50 %" in note for note in p99.notes)
    assert p99_9.verdict == "not-judged" and "30 of 10,000 events" in p99_9.unjudged
    assert p99_9.to_metric().verdict == "not-judged"
    assert any("NOT JUDGED" in line for line in format_figure(p99_9))
    # ours over redis-py's p99 still fails, floor or not
    worse = _figures(ours_p99_us=2500, ref_p99_us=2000, floor_1ms=150, floor_3ms=30)
    assert worse["latency_p99"].verdict == "fail"


def test_a_figure_that_meets_the_absolute_target_is_judged_whatever_the_floor() -> None:
    figures = _figures(ours_p99_us=800, ref_p99_us=2000, floor_1ms=500, floor_3ms=0)
    assert figures["latency_p99"].target == 1000.0
    assert figures["latency_p99"].verdict == "pass"


def test_without_a_reference_a_p99_the_floor_rules_out_is_not_judged() -> None:
    figures = _figures(ours_p99_us=1500, ref_p99_us=0, floor_1ms=150, floor_3ms=0,
                       with_reference=False)
    p99 = figures["latency_p99"]
    assert p99.verdict == "not-judged" and "this run's sender" in p99.unjudged
    # no sleep put an event over 3 ms: the 6 ms tail is judged, and fails
    assert figures["latency_p99_9"].verdict == "fail" and not figures["latency_p99_9"].unjudged



def test_the_lone_sleeper_records_each_measured_events_lateness_at_its_wake_up() -> None:
    result = pacing.lone_sleeper(rate=1000, duration=0.2, warmup=0.02)
    histogram = result["histogram"]
    assert result["measured"] == 200 and histogram.count == 200
    summary = histogram.to_dict()
    # a sleep returns after its deadline, never before it: every lateness is positive
    assert 0 < summary["p50_us"] <= summary["p99_us"] <= summary["max_us"]
    assert result["timer_late_over_1ms"] <= result["late_over_1ms"] <= 200
