"""What else ran on the machine during a harness window: /proc/stat arithmetic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.loadgen.machine_load import (
    OTHERS_NOTE_PERCENT,
    WAKE_SLEEP_S,
    MachineMark,
    blocking_wake_cpu_us,
    others_cpu_s,
    others_note,
    runs_here,
    steal_cpu_s,
    steal_note,
    this_host,
)
from pytest_cfn.measure.metrics.machine import (
    busy_and_steal_seconds,
    busy_cpu_seconds,
    steal_cpu_seconds,
)


def test_busy_seconds_add_every_busy_column_of_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(f"cpu  {ticks} 0 {ticks} 999999 5000 0 {ticks} 0 0 0\\ncpu0 1 2 3\\n")
    assert busy_cpu_seconds(stat) == pytest.approx(3.0)  # idle and iowait left out


def test_steal_is_counted_apart_from_the_machines_busy_seconds(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal: 2 s busy, 5 s taken by the hypervisor
    stat.write_text(f"cpu  {ticks} 0 {ticks} 999999 5000 0 0 {5 * ticks} 0 0\\n")
    assert busy_cpu_seconds(stat) == pytest.approx(2.0)
    assert steal_cpu_seconds(stat) == pytest.approx(5.0)
    assert busy_and_steal_seconds(stat) == pytest.approx((2.0, 5.0))  # one read, both
    assert steal_cpu_seconds(tmp_path / "missing") is None
    start = MachineMark(100.0, 1.0, steal_s=10.0)
    end = MachineMark(130.0, 3.0, steal_s=14.0)
    assert steal_cpu_s(start, end) == pytest.approx(4.0)
    assert steal_cpu_s(MachineMark(100.0, 1.0), end) is None
    note = steal_note(4.0, 10.0)  # 40 % of a core
    assert note is not None and "hypervisor took 40 %" in note
    assert steal_note(0.5, 10.0) is None and steal_note(None, 10.0) is None


@pytest.mark.parametrize("text", ["", "intr 1 2 3\\n", "cpu 1 2\\n"])
def test_busy_seconds_of_an_unreadable_stat_is_unknown(tmp_path: Path, text: str) -> None:
    stat = tmp_path / "stat"
    stat.write_text(text)
    assert busy_cpu_seconds(stat) is None
    assert busy_cpu_seconds(tmp_path / "missing") is None


def test_the_real_machine_is_busy_a_little_over_a_spin() -> None:
    start = MachineMark.now()
    deadline = start.own_cpu_s + 0.05
    while MachineMark.now().own_cpu_s < deadline:
        pass
    end = MachineMark.now()
    assert start.busy_s is not None and end.busy_s is not None
    assert end.busy_s - start.busy_s >= 0.03  # our own spin, at 100 Hz tick resolution


def test_others_are_the_machine_minus_the_run_s_own_processes() -> None:
    start, end = MachineMark(100.0, 1.0), MachineMark(130.0, 3.0)
    # 30 s busy: 2 s master, 20 s workers, 5 s server: 3 s of something else
    assert others_cpu_s(start, end, 20.0, 5.0, master_apart=True) == pytest.approx(3.0)
    # a local run's one process is master and worker at once: not subtracted twice
    assert others_cpu_s(start, end, 20.0, 5.0, master_apart=False) == pytest.approx(5.0)
    assert others_cpu_s(start, end, 40.0, 5.0, master_apart=True) == 0.0  # clock skew: no debt
    assert others_cpu_s(MachineMark(None, 1.0), end, 20.0, 5.0, master_apart=True) is None
    assert others_cpu_s(start, end, 20.0, None, master_apart=True) is None


def test_only_a_run_wholly_on_this_machine_is_judged() -> None:
    here = this_host()
    assert runs_here([here, here], "redis://127.0.0.1:6379")
    assert runs_here([here], "unix:///tmp/redis.sock")
    assert runs_here([], "redis://localhost:6379/0")
    assert not runs_here([here, "another-host"], "redis://127.0.0.1:6379")
    assert not runs_here([here], "redis://10.0.0.7:6379")
    assert not runs_here([here], "not a url")


def test_a_busy_machine_is_noted_a_quiet_one_is_not() -> None:
    window = 30.0
    quiet = OTHERS_NOTE_PERCENT / 100 * window
    assert others_note(quiet, window) is None
    assert others_note(None, window) is None
    note = others_note(quiet * 4, window)
    assert note is not None and f"{OTHERS_NOTE_PERCENT * 4:.0f} % of a core" in note


def test_a_blocking_wake_costs_some_cpu_but_less_than_the_sleep() -> None:
    cost = blocking_wake_cpu_us(200)
    assert 0.0 < cost < WAKE_SLEEP_S * 1e6


def test_the_wake_cost_needs_at_least_one_wake() -> None:
    with pytest.raises(InvalidOptionError, match="wakes must be >= 1"):
        blocking_wake_cpu_us(0)
