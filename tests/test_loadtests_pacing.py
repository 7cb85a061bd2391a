"""The harness's per-process pacing schedule, delivery taps and bulk histogram folds
(Locust-free logic; the locust runs are in test_loadtests_swarm.py)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.loadgen.accounting import DeliveryRecorder
from pytest_cfn.measure.loadgen.pacing import (
    NEVER_NS,
    Deadline,
    ProcessSchedule,
    PublishTicks,
    swarm_phase,
    tick_floor_ms,
)
from pytest_cfn.measure.loadgen.taps import DeliveryTap, TypeCodes, fold
from pytest_cfn.measure.metrics.latency import LatencyHistogram

MS = 1_000_000


def test_locust_is_not_imported() -> None:
    assert "locust" not in sys.modules


def _sent(schedule: ProcessSchedule[str], now: int, end: int | None = None,
          limit: int = 10**6) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    schedule.run_due(now, end, lambda m, t: out.append((m, t)), limit)
    return out


def test_every_agent_sends_once_per_interval_in_time_order() -> None:
    schedule: ProcessSchedule[str] = ProcessSchedule(rate=100, base_ns=0)  # 10 ms interval
    phases = {f"a{i}": random.random() for i in range(50)}
    for name, phase in phases.items():
        schedule.add(name, phase)
    sent = _sent(schedule, now=1_000 * MS - 1)
    times = [t for _, t in sent]
    assert times == sorted(times)
    assert len(sent) == 50 * 100
    for name, phase in phases.items():
        mine = [t for m, t in sent if m == name]
        first = int(phase * 10 * MS)
        assert mine == [first + k * 10 * MS for k in range(100)]


@pytest.mark.parametrize("swarms", [1, 2, 3, 10, 50, 500])
def test_swarm_phases_spread_the_rounds_evenly_for_any_number_of_swarms(swarms: int) -> None:
    phases = sorted(swarm_phase(i) for i in range(swarms))
    assert all(0.0 <= p < 1.0 for p in phases)
    gaps = [b - a for a, b in itertools.pairwise(phases)] + [1.0 - phases[-1] + phases[0]]
    # an even spread has gaps of 1/swarms; none here is under 0.45 or over 1.8 of that
    assert min(gaps) * swarms > 0.45
    assert max(gaps) * swarms < 1.8
    assert [swarm_phase(i) for i in range(swarms)] == [swarm_phase(i) for i in range(swarms)]


def test_the_agents_of_a_swarm_phase_send_in_the_same_tick() -> None:
    schedule: ProcessSchedule[tuple[int, int]] = ProcessSchedule(rate=100, base_ns=0)
    for swarm in range(5):
        for agent in range(10):
            schedule.add((swarm, agent), swarm_phase(swarm))
    ticks: dict[int, list[tuple[int, int]]] = {}
    schedule.run_due(100 * MS - 1, None, lambda m, t: ticks.setdefault(t, []).append(m), 10**6)
    assert len(ticks) == 5 * 10  # 5 rounds per 10 ms interval, 10 intervals
    for members in ticks.values():
        assert len(members) == 10 and len({swarm for swarm, _ in members}) == 1


def test_a_late_wakeup_sends_the_overdue_slots_without_moving_the_schedule() -> None:
    schedule: ProcessSchedule[str] = ProcessSchedule(rate=1000, base_ns=0)  # 1 ms
    schedule.add("a", 0.5)
    assert _sent(schedule, now=0) == []
    assert schedule.next_ns() == 500_000
    late = _sent(schedule, now=5 * MS)  # woke 4.5 ms late: five slots overdue
    assert [t for _, t in late] == [500_000 + k * MS for k in range(5)]
    assert schedule.next_ns() == 5_500_000
    assert _sent(schedule, now=5_600_000) == [("a", 5_500_000)]


def test_the_window_end_and_the_per_tick_limit_bound_a_run() -> None:
    schedule: ProcessSchedule[str] = ProcessSchedule(rate=1000, base_ns=0)
    for i in range(10):
        schedule.add(f"a{i}", i / 10)
    assert len(_sent(schedule, now=100 * MS, limit=7)) == 7
    rest = _sent(schedule, now=100 * MS, end=3 * MS)
    assert len(rest) == 30 - 7 and all(t < 3 * MS for _, t in rest)
    assert _sent(schedule, now=100 * MS, end=3 * MS) == []


def test_agents_join_and_leave_without_disturbing_the_others() -> None:
    schedule: ProcessSchedule[str] = ProcessSchedule(rate=1000, base_ns=0)
    schedule.add("a", 0.2)
    schedule.add("c", 0.8)
    assert _sent(schedule, now=500_000) == [("a", 200_000)]
    schedule.add("b", 0.1)  # its slot in this period has passed: first send next period
    schedule.add("d", 0.9)
    assert _sent(schedule, now=MS + 500_000) == [
        ("c", 800_000), ("d", 900_000), ("b", 1_100_000), ("a", 1_200_000)]
    assert sorted(schedule.next_for_each()) == [1_800_000, 1_900_000, 2_100_000, 2_200_000]
    assert schedule.remove("c") and not schedule.remove("c")
    assert [m for m, _ in _sent(schedule, now=3 * MS)] == ["d", "b", "a", "d"]
    assert len(schedule) == 3


def test_a_schedule_refuses_a_bad_rate_or_phase() -> None:
    with pytest.raises(InvalidOptionError, match="rate"):
        ProcessSchedule(rate=0, base_ns=0)
    with pytest.raises(InvalidOptionError, match="phase"):
        ProcessSchedule(rate=10, base_ns=0).add("a", 1.0)


def test_publish_rows_count_every_publish_per_type() -> None:
    ticks = PublishTicks()
    ticks.add(10, 0.001)
    ticks.add(30, 0.009)
    rows = ticks.rows(["state.update", "task.assign"], [25, 15], round)
    assert [(r.name, r.count) for r in rows] == [("state.update", 25), ("task.assign", 15)]
    assert all(r.request_type == "publish" for r in rows)
    assert rows[0].total_ms == pytest.approx(25 * 0.25)
    assert (rows[0].min_ms, rows[0].max_ms) == pytest.approx((0.1, 0.3))
    assert ticks.rows(["state.update", "task.assign"], [25, 16], round)[0].count == 1


def _event(kind: str, priority: int, measured: int, intended: int, ts: int) -> Any:
    return SimpleNamespace(type=kind, priority=priority, ts=ts,
                           data={"t": intended, "m": measured})


def test_a_per_agent_tap_counts_what_its_agent_received() -> None:
    recorder = DeliveryRecorder()
    codes = TypeCodes({"consensus.result"})
    tally = recorder.add_subscriber("s1", "a1", 0)
    tap = DeliveryTap(codes, own=tally)
    on_event, on_message = tap.on_event(), tap.on_message()
    for _ in range(20):
        on_event(_event("state.update", 5, 1, 0, 0))
    on_event(_event("cfn.loop.phase", 9, 1, 0, 0))
    on_event(_event("state.update", 5, 0, 0, 0))  # warm-up: arrives, not measured
    on_message(SimpleNamespace(envelope=SimpleNamespace(
        type="message", priority=8, ts=0, data={"t": 0, "m": 1, "k": "consensus.result"})))
    batch = tap.count()
    assert batch is not None and len(batch) == 23
    assert tally.arrivals == 23
    assert tally.received[5] == 20 and tally.received[9] == 1 and tally.received[8] == 1
    assert tap.count() is None and tally.arrivals == 23


def test_shared_listeners_are_credited_exactly_even_when_they_missed_events() -> None:
    recorder = DeliveryRecorder()
    codes = TypeCodes()
    tap = DeliveryTap(codes)
    on_event = tap.on_event()
    tallies = [recorder.add_subscriber("s1", f"a{i}", 0) for i in range(3)]
    lists = [tap.add_listener(t) for t in tallies]

    def deliver(event: Any) -> None:  # what the bus does: the tap first, then each agent
        on_event(event)
        for i, received in enumerate(lists):
            if not (i == 2 and event.priority == 9):  # agent 2 misses the critical ones
                received.append(event)

    for _ in range(10):
        deliver(_event("state.update", 5, 1, 0, 0))
    deliver(_event("cfn.loop.phase", 9, 1, 0, 0))
    batch = tap.count()
    assert batch is not None
    assert [t.received[5] for t in tallies] == [10, 10, 10]
    assert [t.received[9] for t in tallies] == [1, 1, 0]
    assert [t.arrivals for t in tallies] == [11, 11, 10]
    assert int(batch.weights.sum()) == 11 * 3
    tap.remove_listener(lists[0])
    deliver(_event("state.update", 5, 1, 0, 0))
    assert tap.count() is not None
    assert [t.received[5] for t in tallies] == [10, 11, 11]


def test_a_fold_records_every_delivery_once_and_gives_locust_rows() -> None:
    recorder = DeliveryRecorder()
    codes = TypeCodes({"consensus.result"})
    tap = DeliveryTap(codes)
    on_event = tap.on_event()
    tap.add_listener(recorder.add_subscriber("s1", "a1", 0))
    tap.add_listener(recorder.add_subscriber("s1", "a2", 0))
    now = time.time_ns()
    latencies = [0.4, 0.6, 1.4, 250.0]
    for ms in latencies:
        on_event(_event("agent.spawn", 7, 1, now - int(ms * MS), now - int(ms * MS)))
    on_event(_event("agent.spawn", 7, 0, now, now))  # not measured: not recorded
    batch = tap.count()
    assert batch is not None
    pauses: list[int] = []
    (row,) = fold(recorder, batch, codes, lambda ms: int(round(ms, -1)) if ms >= 100
                  else round(ms), lambda: pauses.append(1))
    assert (row.request_type, row.name, row.count) == ("deliver", "agent.spawn", 8)
    assert pauses
    assert recorder.deliveries == 8
    histogram = recorder.latency[("deliver", "agent.spawn")]
    assert histogram.count == 8 and recorder.transit.count == 8
    assert histogram.percentile(100) >= 250 * MS
    assert sum(row.buckets.values()) == 8 and 0 in row.buckets and 250 in row.buckets


def test_bulk_recording_equals_recording_one_by_one() -> None:
    rng = random.Random(7)
    values = [rng.choice([-5, 0, 61_000_000_000]) if rng.random() < 0.01
              else int(rng.lognormvariate(12, 2)) for _ in range(30_000)]
    weights = [rng.randint(0, 4) for _ in values]
    one, bulk = LatencyHistogram(), LatencyHistogram()
    for v, w in zip(values, weights, strict=True):
        for _ in range(w):
            one.record(v)
    bulk.record_array(np.array(values), np.array(weights))
    assert bulk.count == one.count and bulk.clamped == one.clamped
    assert bulk.percentiles() == one.percentiles()
    unweighted = LatencyHistogram()
    unweighted.record_array(np.array(values))
    reference = LatencyHistogram()
    reference.record_many(values)
    assert unweighted.percentiles() == reference.percentiles()


def test_a_tap_hands_the_clock_to_the_pacing_loop_once_its_deadline_has_passed() -> None:
    codes = TypeCodes({"consensus.result"})
    deadline = Deadline()
    seen: list[int] = []

    def catch_up(now: int) -> None:
        seen.append(now)
        deadline.due[0] = NEVER_NS  # what the runtime does: once per sleep of the loop

    deadline.catch_up = catch_up
    tap = DeliveryTap(codes, deadline=deadline)
    on_event, on_message = tap.on_event(), tap.on_message()
    message = SimpleNamespace(envelope=SimpleNamespace(
        type="message", priority=8, ts=0, data={"t": 0, "m": 1, "k": "consensus.result"}))
    on_event(_event("state.update", 5, 1, 0, 0))
    on_message(message)
    assert seen == []  # the loop is not sleeping: nothing is due
    deadline.due[0] = time.time_ns() + 60 * 10**9
    on_event(_event("state.update", 5, 1, 0, 0))
    assert seen == []  # not yet
    before = time.time_ns()
    deadline.due[0] = before
    on_event(_event("state.update", 5, 1, 0, 0))
    on_event(_event("state.update", 5, 1, 0, 0))
    assert len(seen) == 1 and seen[0] >= before
    deadline.due[0] = time.time_ns()
    on_message(message)
    assert len(seen) == 2
    batch = tap.count()  # the deliveries are counted whatever the loop did
    assert batch is not None and len(batch) == 6


def test_a_tap_without_a_pacing_loop_never_calls_one() -> None:
    tap = DeliveryTap(TypeCodes())
    assert tap.deadline.due[0] == NEVER_NS
    tap.on_event()(_event("state.update", 5, 1, 0, 0))
    assert tap.count() is not None


def test_send_lags_flushed_in_bulk_are_each_recorded_once_with_bad_ones_clamped() -> None:
    recorder = DeliveryRecorder()
    lags = [0, 1_000, 2_000_000, 7_000_000] * 6_000  # 24,000: more than one slice
    recorder.lag_pending.extend(lags)
    pauses: list[int] = []
    recorder.flush(round, lambda: pauses.append(1))
    assert len(recorder.lag_pending) == 0
    assert recorder.send_lag.count == len(lags)
    assert recorder.send_lag.clamped == 6_000  # the zeros: below the histogram's range
    assert recorder.send_lag.percentile(99) == pytest.approx(7e6, rel=0.01)
    assert len(pauses) >= 2
    recorder.flush(round)
    assert recorder.send_lag.count == len(lags)


def test_the_shared_tick_floor_is_fine_for_a_sparse_process_and_coarse_for_a_dense_one() -> None:
    assert tick_floor_ms(None, 10_000) == 0.25  # 100 shared agents at 100/s in one process
    assert tick_floor_ms(None, 25_000) == 1.0  # 250 a process: writes cost more than waits
    assert tick_floor_ms(None, 10_001) == 1.0
    assert tick_floor_ms(2.0, 50) == 2.0 and tick_floor_ms(0.1, 10**6) == 0.1  # as asked


def test_the_fold_warm_up_runs_numpys_lazy_imports_before_the_window() -> None:
    # the first fold of a process imported numpy.ma inside np.unique: 7-8 ms of a held loop
    code = (
        "import sys\n"
        "from pytest_cfn.measure.loadgen.taps import warm_up_fold\n"
        "assert 'numpy.ma' not in sys.modules, 'numpy.ma already imported'\n"
        "warm_up_fold(round)\n"
        "print('numpy.ma' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
