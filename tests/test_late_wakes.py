"""Why a pacing wake-up came late: the Locust process busy, or waiting for a CPU."""

from __future__ import annotations

from pytest_cfn.measure.loadgen.pacing import LATE_WAKE_NS, LateWakes, late_wake_note

MS = 1_000_000


def test_a_wake_up_on_time_is_not_counted() -> None:
    wakes = LateWakes()
    wakes.note(planned_ns=1 * MS, late_ns=LATE_WAKE_NS, cpu_ns=5 * MS)
    assert wakes.count == 0 and late_wake_note(wakes.sums()) is None


def test_a_process_busy_throughout_is_held_one_off_cpu_is_not() -> None:
    busy, off = LateWakes(), LateWakes()
    # 1 ms planned sleep, woke 10 ms late
    busy.note(planned_ns=1 * MS, late_ns=10 * MS, cpu_ns=11 * MS)  # ran the whole 11 ms
    off.note(planned_ns=1 * MS, late_ns=10 * MS, cpu_ns=0)  # never ran: off a CPU
    assert busy.held_ns == 10 * MS and off.held_ns == 0
    assert busy.late_ns == off.late_ns == 10 * MS and busy.count == off.count == 1


def test_the_planned_sleep_bounds_the_estimate_to_half_a_tick() -> None:
    wakes = LateWakes()
    # 4 ms of CPU in a 1 ms sleep that woke 10 ms late: ran 3-4 ms of the lateness
    wakes.note(planned_ns=1 * MS, late_ns=10 * MS, cpu_ns=4 * MS)
    assert 3 * MS <= wakes.held_ns <= 4 * MS


def test_the_note_splits_the_lateness_of_every_process_added_up() -> None:
    a, b = LateWakes(), LateWakes()
    a.note(planned_ns=MS, late_ns=10 * MS, cpu_ns=11 * MS)
    b.note(planned_ns=MS, late_ns=30 * MS, cpu_ns=0)
    sums = {k: a.sums()[k] + b.sums()[k] for k in a.sums()}
    note = late_wake_note(sums)
    assert note is not None
    assert "2 pacing wake-ups" in note and "20.0 ms on average" in note
    assert "75 % of that lateness with the Locust process waiting for a CPU" in note
    assert "25 % with it running its own work" in note
