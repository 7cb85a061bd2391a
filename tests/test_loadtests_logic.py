"""The load harness's Locust-free logic: options, pacing, accounting, gates (no locust import)."""

from __future__ import annotations

import itertools
import sys
from collections import Counter

import pytest

from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.measure.loadgen import options as o
from pytest_cfn.measure.loadgen.accounting import DeliveryRecorder, RunTotals, merge
from pytest_cfn.measure.loadgen.connections import count_connections
from pytest_cfn.measure.loadgen.report import (
    RunFacts,
    build_metrics,
    build_result,
    generator_note,
    render_table,
)
from pytest_cfn.measure.loadgen.traffic import (
    MeasurementWindow,
    Schedule,
    ScheduleLag,
    aligned_end,
    padding_for,
    role_mix,
    traffic_cycle,
)
from pytest_cfn.measure.loadgen.verdicts import (
    GeneratorLimit,
    generator_limit,
    help_text,
    run_outcome,
)
from pytest_cfn.measure.metrics.latency import LatencyHistogram
from pytest_cfn.measure.results import Metric, RedisInfo, RunResult

MS = 1_000_000
S = 1_000_000_000


def test_locust_is_not_imported_by_the_harness_logic() -> None:
    assert "locust" not in sys.modules


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (o.parse_rate, "0", "rate"),
        (o.parse_rate, "abc", "rate"),
        (o.parse_rate, "1e9", "limit"),
        (o.parse_model, "pooled", "per-agent, shared"),
        (o.parse_mix, "state.update", "has no '='"),
        (o.parse_mix, "state.update=3@10", "priorities are 1-9"),
        (o.parse_mix, "a*b=1", "glob"),
        (o.parse_mix, "x=0", "weight above 0"),
        (o.parse_gates, "latency", "unknown gate"),
        (o.parse_target, "max_p99_ms", "NAME=VALUE"),
        (o.parse_target, "p99=2", "unknown target"),
        (o.parse_redis, "http://127.0.0.1:6379", "redis://"),
        (o.parse_payload, "-1", "between 0"),
        (o.parse_swarms, "two", "whole number"),
        (o.parse_phase, "random", "use one of: swarm, agent"),
        (o.parse_window, "0", "longer than 0 s"),
        (o.parse_window, "soon", ">= 0"),
        (o.parse_seconds, "-1", ">= 0"),
    ],
)
def test_bad_option_values_say_what_is_allowed(parse: object, text: str, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        parse(text)  # type: ignore[operator]


def test_option_values_are_plain_data_and_round_trip() -> None:
    assert o.parse_mix(" state.update=6 , cfn.loop.phase=1@9") == (
        "state.update=6@5,cfn.loop.phase=1@9"
    )
    assert o.parse_gates("p99,throughput") == "p99,throughput"
    values = {
        "cfn_mix": "state.update=6@5",
        "cfn_gate": "p99",
        "cfn_target": ["max_p99_ms=2.5"],
        "cfn_model": "shared",
        "cfn_rate": None,
        "cfn_total_rate": 10_000.0,
    }
    options = o.HarnessOptions.from_values(values)
    assert options.gates == frozenset({"p99"})
    assert options.targets.max_p99_ms == 2.5
    assert options.model == "shared"
    assert options.agent_rate(500) == 20.0
    assert options.swarm_count(95) == 10
    assert options.mix == (o.MixEntry("state.update", 5, 6),)
    assert options.flush_ms is None  # the default tick floor (pacing.tick_floor_ms)
    assert o.HarnessOptions.from_values({"cfn_flush_ms": 0.5}).flush_ms == 0.5


def test_traffic_cycle_keeps_exact_shares_interleaved() -> None:
    mix = role_mix("implementer")
    picks = list(itertools.islice(traffic_cycle(mix), 100))
    counts = Counter(e.type for e in picks)
    assert counts == {"state.update": 60, "task.assign": 20, "agent.spawn": 10,
                      "agent.complete": 10}
    first_ten = Counter(e.type for e in picks[:10])
    assert first_ten["state.update"] == 6


def test_mix_override_keeps_the_roles_messages() -> None:
    mix = role_mix("validator", [o.MixEntry("state.update", 5, 1)])
    assert [e.type for e in mix] == ["state.update", "consensus.result"]
    assert mix[1].message and mix[1].priority == 8
    with pytest.raises(InvalidOptionError, match="roles are"):
        role_mix("tester")


def test_schedule_does_not_drift_when_sends_are_late() -> None:
    schedule = Schedule(rate=1000.0, start_ns=10 * MS, phase=0.5)
    first = schedule.take()
    assert first == 10 * MS + 500_000
    # A sender that only comes back much later still gets the original times, in order.
    later = [schedule.take() for _ in range(3)]
    assert later == [first + MS, first + 2 * MS, first + 3 * MS]


@pytest.mark.parametrize("phase", [0.0, 0.13, 0.5, 0.999])
def test_aligned_window_holds_the_same_number_of_slots_for_any_phase(phase: float) -> None:
    rate = 30.0
    schedule = Schedule(rate, start_ns=0, phase=phase)
    start = 1_234_567_891
    end = aligned_end(start, start + 2_000_000_000, schedule.interval_ns)
    window = MeasurementWindow()
    window.open(start)
    window.close(end)
    slots = [schedule.take() for _ in range(200)]
    assert sum(window.measured(t) for t in slots) == (end - start) // schedule.interval_ns
    assert window.seconds == pytest.approx(2.0, abs=1 / rate)


def test_padding_brings_an_event_to_the_requested_size() -> None:
    from pytest_cfn._core.envelope import Codec, Envelope

    pad = padding_for(400, "swarm-001", "implementer-0-1", "implementer-0-1.00000000", "x.y")
    env = Envelope(id="implementer-0-1.00000000-12", swarm="swarm-001", source="implementer-0-1",
                   type="x.y", priority=5, seq=12, ts=1_700_000_000_000_000_000,
                   publisher="implementer-0-1.00000000",
                   data={"t": 1_700_000_000_000_000_000, "m": 1, "a": "implementer-0-1",
                         "p": pad})
    assert abs(len(Codec("json").encode(env)) - 400) <= 16


def _process(
    recorder_swarm_counts: dict[str, list[int]],
    subscribers: list[tuple[str, int, list[int]]],
    latencies_ms: list[float],
) -> dict[str, object]:
    recorder = DeliveryRecorder()
    for swarm, counts in recorder_swarm_counts.items():
        recorder.published_counts(swarm)[:] = counts
    for swarm, ready, received in subscribers:
        tally = recorder.add_subscriber(swarm, f"a{len(recorder.subscribers)}", ready)
        tally.received[:] = received
    values = recorder.values_for("deliver", "state.update")
    values.extend(int(v * MS) for v in latencies_ms)
    rows = recorder.flush(lambda ms: round(ms))
    assert sum(r.count for r in rows) == len(latencies_ms)
    bus = [{"cache_hits": 99, "cache_misses": 1, "lost": 2}]
    return recorder.snapshot(bus, sums={"cpu_s": 1.0})


def _counts(**by_priority: int) -> list[int]:
    counts = [0] * 10
    for key, value in by_priority.items():
        counts[int(key[1:])] = value
    return counts


def test_merge_counts_loss_per_swarm_and_priority_and_skips_late_subscribers() -> None:
    # Two processes; swarm s1 gets 100 events at p5 and 10 at p9 (all from process A).
    a = _process({"s1": _counts(p5=100, p9=10)},
                 [("s1", 5, _counts(p5=100, p9=10)), ("s1", 5, _counts(p5=98, p9=9))],
                 [0.2, 0.4, 3.0])
    b = _process({}, [("s1", 5, _counts(p5=100, p9=10)), ("s1", 50, _counts(p5=1))], [0.3])
    totals = merge([a, b], window_start_ns=10)
    assert totals.processes == 2
    assert totals.late_subscribers == 1
    assert totals.listeners == {"s1": 3}
    assert totals.expected() == 330
    assert totals.lost() == 3
    assert totals.lost((8, 9)) == 1
    assert totals.worst_subscriber_loss() == 3
    assert totals.all_latency.count == 4
    assert totals.bus["cache_hits"] == 198 and totals.bus["lost"] == 4
    assert totals.sums["cpu_s"] == 2.0
    assert totals.delivered_events() == pytest.approx(327 / 3)


def test_flush_gives_locust_rows_in_whole_milliseconds() -> None:
    recorder = DeliveryRecorder()
    values = recorder.values_for("deliver", "agent.spawn")
    values.extend([400_000, 600_000, 1_400_000, 250 * MS])
    (row,) = recorder.flush(lambda ms: int(round(ms, -1)) if ms >= 100 else round(ms))
    assert (row.request_type, row.name, row.count) == ("deliver", "agent.spawn", 4)
    assert row.buckets == {0: 1, 1: 2, 250: 1}
    assert row.min_ms == 0.4 and row.max_ms == 250.0
    assert values == []
    assert recorder.flush(round) == []


def test_connections_are_counted_per_owner_and_subsystem() -> None:
    entries = [
        {"name": "cfn:events-pub:swarm-000:a1@ns1"},
        {"name": "cfn:events-sub:swarm-000:a1@ns1"},
        {"name": "cfn:messages-sub:swarm-000:a1@ns1"},
        {"name": "cfn:events-sub:swarm-000:a2@ns1"},
        {"name": "cfn:events-sub:swarm-000:a2@other"},
        {"name": "cfn-sampler"},
        {"name": ""},
    ]
    count = count_connections(entries, "ns1")
    assert count.total == 4
    assert count.owners == 2
    assert count.max_per_subsystem == 2
    assert count.by_role == {"events-pub": 1, "events-sub": 2, "messages-sub": 1}


def _facts(**kw: object) -> RunFacts:
    base: dict[str, object] = dict(agents=10, swarms=1, agent_rate=100.0, window_s=2.0,
                                   harness_cpu_s=0.5, connections=count_connections(
                                       [{"name": "cfn:events-pub:s:a@n"}], "n"),
                                   maxclients=10_000, max_connected_clients=50)
    base.update(kw)
    return RunFacts(**base)  # type: ignore[arg-type]


def _totals(latency_ms: float) -> object:
    recorder = DeliveryRecorder()
    recorder.mark_window_start(0)
    recorder.published_counts("s")[9] = 100
    recorder.published_total = 100
    tally = recorder.add_subscriber("s", "a", 0)
    tally.received[9] = tally.arrivals = 100
    recorder.mark_window_end(2 * S, ScheduleLag())
    recorder.values_for("deliver", "x").extend([int(latency_ms * MS)] * 100)
    recorder.flush(round)
    return merge([recorder.snapshot([{"cache_hits": 999, "cache_misses": 1}])], 1)


def test_gates_pass_and_fail_against_targets() -> None:
    options = o.HarnessOptions.from_values(
        {"cfn_gate": "throughput,p99,critical-loss", "cfn_target": ["min_throughput=50"]}
    )
    fast = build_metrics(options, _totals(0.5), _facts())  # type: ignore[arg-type]
    metrics = {m.name: m for m in fast}
    assert metrics["throughput"].value == pytest.approx(50.0)
    assert metrics["throughput"].verdict == "pass"
    assert metrics["delivery_p99"].verdict == "pass"
    assert metrics["critical_loss"].verdict == "pass"
    assert metrics["cache_hit_rate"].verdict == "info"
    late = build_metrics(options, _totals(5.0), _facts())  # type: ignore[arg-type]
    slow = {m.name: m for m in late}
    assert slow["delivery_p99"].verdict == "fail"
    assert slow["delivery_p99"].latency is not None


def test_a_run_with_no_window_fails_its_gates_and_says_why() -> None:
    options = o.HarnessOptions()
    empty = merge([DeliveryRecorder().snapshot([])], 0)
    facts = _facts(window_s=0.0, connections=None, maxclients=None)
    facts.notes.append("the run ended before the measurement window opened")
    metrics = build_metrics(options, empty, facts)
    gated = [m for m in metrics if m.target is not None]
    assert len(gated) == 6 and all(m.verdict == "fail" for m in gated)
    table = render_table(options, metrics, facts)
    assert "gates: FAILED" in table and "measurement window" in table
    assert LatencyHistogram().count == 0


def test_window_rates_count_what_arrived_between_each_process_marks() -> None:
    # Process A: 2 subscribers of s1, marks 2 s apart; B: 1 subscriber of s1, marks 4 s apart.
    a, b = DeliveryRecorder(), DeliveryRecorder()
    a_subs = [a.add_subscriber("s1", f"a{i}", 0) for i in range(2)]
    b_sub = b.add_subscriber("s1", "b0", 0)
    for tally in (*a_subs, b_sub):
        tally.arrivals = 50  # before the window: not counted
    a.published_total = 7
    a.mark_window_start(1 * S)
    b.mark_window_start(1 * S)
    for tally in a_subs:
        tally.arrivals += 200
    b_sub.arrivals += 400
    a.published_total += 300
    a.mark_window_end(3 * S, ScheduleLag.at(3 * S, [3 * S - 5 * MS, 3 * S - 1 * MS]))
    b.mark_window_end(5 * S, ScheduleLag.at(5 * S, [5 * S + 1]))
    late = b.add_subscriber("s1", "b1", 2 * S)  # subscribed after the window opened
    late.arrivals = 10_000
    totals = merge([a.snapshot([]), b.snapshot([])], window_start_ns=1 * S)
    assert totals.marked_processes == 2
    assert totals.arrival_rate == {"s1": pytest.approx(100 + 100 + 100)}
    assert totals.arrivals_per_s() == pytest.approx(300.0)
    # Three on-time subscribers each got 100 deliveries/s: 100 events/s.
    assert totals.sustained_events_per_s() == pytest.approx(100.0)
    assert totals.sent_per_s == pytest.approx(150.0)
    assert totals.lag_at_end == ScheduleLag(6 * MS, 5 * MS, 3)
    assert totals.lag_at_end.mean_s == pytest.approx(0.002)


def test_schedule_lag_is_the_mean_backlog_and_the_furthest_behind_agent() -> None:
    lag = ScheduleLag.at(10 * S, [10 * S + 1, 9 * S, None, 7 * S])
    assert (lag.total_ns, lag.max_ns, lag.agents) == (4 * S, 3 * S, 3)
    assert lag.mean_s == pytest.approx(4 / 3) and lag.max_s == 3.0
    assert ScheduleLag.at(10 * S, [11 * S, None]) == ScheduleLag(0, 0, 1)
    assert ScheduleLag.at(10 * S, []).mean_s == 0.0


def _simulate(capacity_per_s: float) -> tuple[RunTotals, RunFacts]:
    """10 agents at 100 events/s each (1,000/s offered) fed by one sender that can publish
    ``capacity_per_s`` events/s; 2 subscribers receive each event 1 ms after its actual send.
    Like the harness, the sender keeps going after the window's end until every event
    intended inside the window is sent, and the marks count what happened between them."""
    agents, rate, transit = 10, 100.0, 1 * MS
    cost = int(S / capacity_per_s)
    schedules = [Schedule(rate, 0, i / agents) for i in range(agents)]
    window = MeasurementWindow()
    start = 1 * S
    end = aligned_end(start, 3 * S, schedules[0].interval_ns)
    window.open(start)
    window.close(end)
    clock, behind = 0, None
    timeline: list[tuple[int, int, bool]] = []  # (time, 0 publish / 1 delivery, measured)
    while True:
        agent = min(schedules, key=Schedule.next_ns)
        if agent.next_ns() >= end:
            break
        sent = max(clock, agent.next_ns())
        if sent >= end and behind is None:
            behind = ScheduleLag.at(end, (s.next_ns() for s in schedules))
        intended = agent.take()
        clock = sent + cost
        measured = window.measured(intended)
        timeline.append((sent, 0, measured))
        timeline.extend([(sent + transit, 1, measured)] * 2)
    recorder = DeliveryRecorder()
    tallies = [recorder.add_subscriber("s", f"sub{i}", 0) for i in range(2)]
    deliveries = recorder.values_for("deliver", "state.update")
    which = 0
    for at, kind, measured in sorted(timeline):
        if at >= start and recorder.start_mark_ns is None:
            recorder.mark_window_start(start)
        if at >= end and recorder.end_mark_ns is None:
            recorder.mark_window_end(end, behind or ScheduleLag.at(end, []))
        if kind == 0:
            recorder.published_total += 1
            recorder.published_counts("s")[5] += measured
            continue
        tally = tallies[which]
        which ^= 1
        tally.arrivals += 1
        tally.received[5] += measured
        if measured:
            deliveries.append(at - start)
    recorder.flush(round)
    totals = merge([recorder.snapshot([])], window_start_ns=start)
    facts = RunFacts(agents=agents, swarms=1, agent_rate=rate, window_s=(end - start) / S)
    return totals, facts


def test_a_saturated_generator_yields_a_throughput_below_the_offered_rate() -> None:
    options = o.HarnessOptions.from_values({"cfn_gate": "throughput",
                                            "cfn_target": ["min_throughput=900"]})
    totals, facts = _simulate(capacity_per_s=400.0)
    # Counted by intended send time, every offered event shows up as delivered (the old bug).
    assert totals.delivered_events() / facts.window_s == pytest.approx(1000.0, rel=0.01)
    metrics = {m.name: m for m in build_metrics(options, totals, facts)}
    assert metrics["offered_rate"].value == 1000.0
    assert metrics["throughput"].value == pytest.approx(400.0, rel=0.02)
    assert metrics["sent_rate"].value == pytest.approx(400.0, rel=0.02)
    assert metrics["deliveries_per_s"].value == pytest.approx(800.0, rel=0.02)
    # The generator, not Redis, set the figure: neither a pass nor a fail.
    assert metrics["throughput"].verdict == "not-judged"
    assert metrics["throughput"].method.startswith("not judged: load generator limit (agents")
    assert "delivery time" in metrics["throughput"].method
    # Sending since t=0 at 40 % of the offered rate, at the end (3 s) it is 1.8 s behind.
    assert metrics["generator_behind"].value == pytest.approx(1.8, abs=0.05)
    note = generator_note(totals)
    assert note is not None and note.startswith("load generator behind schedule by 1.8")
    assert "generator's limit, not Redis's" in note
    facts.notes.append(note)
    table = render_table(options, list(metrics.values()), facts)
    assert "note: load generator behind schedule by" in table
    assert "gates: NOT JUDGED (not judged: load generator limit): throughput" in table
    assert "--processes N" in table and "--master and --worker" in table
    assert "exit code 3: not judged: load generator limit" in table
    assert "FAILED" not in table and "all passed" not in table
    result = build_result(options, list(metrics.values()), totals, facts, RedisInfo(version=""),
                          {}, {})
    assert result.extra["generator_saturated"] is True
    assert result.extra["generator_behind_s"] == pytest.approx(1.8, abs=0.05)
    assert result.extra["verdict"]["outcome"] == "not-judged"
    assert result.extra["verdict"]["exit_code"] == 3
    assert result.extra["verdict"]["not_judged"] == ["throughput"]


def test_a_generator_on_schedule_sustains_the_offered_rate() -> None:
    options = o.HarnessOptions.from_values({"cfn_gate": "throughput",
                                            "cfn_target": ["min_throughput=900"]})
    totals, facts = _simulate(capacity_per_s=5000.0)
    metrics = {m.name: m for m in build_metrics(options, totals, facts)}
    assert metrics["throughput"].value == pytest.approx(1000.0, rel=0.01)
    assert metrics["throughput"].verdict == "pass"
    assert metrics["generator_behind"].value < 0.01
    assert generator_note(totals) is None
    result = build_result(options, list(metrics.values()), totals, facts, RedisInfo(version=""),
                          {}, {})
    assert result.extra["generator_saturated"] is False


@pytest.mark.parametrize(("delivered", "verdict"), [(19_980, "pass"), (20_000, "pass"),
                                                    (19_898, "fail")])
def test_throughput_is_judged_at_the_resolution_of_its_count(delivered: int, verdict: str) -> None:
    # 100 agents offering exactly the 10,000 events/s target over a 2 s window: the count is
    # good to about one event per agent (50 events/s), so 9,990 meets it and 9,949 does not.
    recorder = DeliveryRecorder()
    tally = recorder.add_subscriber("s", "a", 0)
    recorder.mark_window_start(0)
    tally.arrivals = delivered
    recorder.mark_window_end(2 * S, ScheduleLag())
    totals = merge([recorder.snapshot([])], 1)
    options = o.HarnessOptions.from_values({"cfn_gate": "throughput"})
    metrics = {m.name: m for m in build_metrics(options, totals, _facts(agents=100))}
    assert metrics["throughput"].value == delivered / 2
    assert metrics["throughput"].verdict == verdict
    assert "+/- 50.0 events/s" in metrics["throughput"].method


def _judged(capacity_per_s: float, gate: str, *targets: str, **facts_changes: object) -> tuple[
    dict[str, Metric], str, RunResult
]:
    options = o.HarnessOptions.from_values({"cfn_gate": gate, "cfn_target": list(targets)})
    totals, facts = _simulate(capacity_per_s=capacity_per_s)
    facts.connections = _facts().connections
    for name, value in facts_changes.items():
        setattr(facts, name, value)
    metrics = build_metrics(options, totals, facts)
    table = render_table(options, metrics, facts)
    result = build_result(options, metrics, totals, facts, RedisInfo(version=""), {}, {})
    return {m.name: m for m in metrics}, table, result


def test_a_target_the_offered_rate_cannot_reach_is_not_applicable_not_a_failure() -> None:
    # 10 agents x 100 events/s = 1,000/s can never deliver the ADR's 10,000/s.
    metrics, table, result = _judged(5000.0, "throughput,connections")
    assert metrics["throughput"].verdict == "n/a"
    assert "offer 1,000 events/s, below the 10,000 target" in metrics["throughput"].method
    assert "not applicable (cannot be met by construction): throughput" in table
    assert "gates: all passed" in table and "exit code 0" in table
    assert result.extra["verdict"]["not_applicable"] == ["throughput"]
    assert result.extra["verdict"]["exit_code"] == 0


def test_a_run_that_asks_for_no_gate_says_nothing_was_judged_not_all_passed() -> None:
    # cfn bench's steps run the harness with --cfn-gate none and judge the figures themselves
    metrics, table, result = _judged(5000.0, "none")
    assert all(m.verdict == "info" for m in metrics.values())
    assert "gates: none asked for (--cfn-gate none)" in table
    assert "all passed" not in table
    assert result.extra["verdict"]["gated"] == 0
    _, gated_table, gated_result = _judged(5000.0, "connections")
    assert "gates: all passed" in gated_table and "none asked for" not in gated_table
    assert gated_result.extra["verdict"]["gated"] == 1


def test_a_send_lag_over_the_limit_or_a_busy_process_means_not_judged() -> None:
    # On schedule (behind 0 s), but a process at 97 % of a core: load gates not judged,
    # the connection gate is still judged.
    metrics, table, result = _judged(
        5000.0, "throughput,p99,connections", "min_throughput=900", "max_p99_ms=1000",
        process_cpu_percent={"process 0": 97.0, "process 1": 40.0},
    )
    assert metrics["throughput"].verdict == "not-judged"
    assert metrics["delivery_p99"].verdict == "not-judged"
    assert metrics["connections_per_subsystem"].verdict == "pass"
    assert "process 0 97 %" in metrics["throughput"].method
    assert "process 1" not in metrics["throughput"].method
    assert result.extra["verdict"]["exit_code"] == 3
    assert "NOT JUDGED" in table and "PASS" in table


def test_send_lag_p99_over_the_limit_is_a_generator_limit() -> None:
    limit = generator_limit(12.5, 0.0, {}, send_lag_limit_ms=5.0)
    assert limit.limited and limit.text() == "send_lag_p99 12.5 ms > 5 ms"
    assert not generator_limit(4.9, 0.05, {"process 0": 94.0}).limited


def test_a_run_with_lost_deliveries_never_passes_throughput() -> None:
    metrics, table, _ = _judged(5000.0, "throughput", "min_throughput=900", late=3)
    assert metrics["throughput"].verdict == "fail"
    assert metrics["throughput"].method.startswith("3 deliveries late;")
    assert metrics["late"].value == 3
    assert "gates: FAILED: throughput" in table and "exit code 1" in table
    totals, facts = _simulate(capacity_per_s=5000.0)
    totals.received["s"][5] -= 7  # seven deliveries never arrived
    options = o.HarnessOptions.from_values({"cfn_gate": "throughput",
                                            "cfn_target": ["min_throughput=900"]})
    judged = {m.name: m for m in build_metrics(options, totals, facts)}
    assert judged["lost"].value == 7 and judged["late"].value == 0
    assert judged["throughput"].verdict == "fail"
    assert judged["throughput"].method.startswith("7 deliveries lost;")


def test_an_abnormal_end_wins_over_every_verdict_and_exits_4() -> None:
    reason = "worker w1 missed heartbeats (Locust marked it missing)"
    metrics, table, result = _judged(5000.0, "connections", abnormal=[reason])
    assert metrics["connections_per_subsystem"].verdict == "pass"
    assert f"run: ABNORMAL END: {reason}" in table
    assert "all passed" not in table and "exit code 4: the run ended abnormally" in table
    assert result.extra["verdict"]["outcome"] == "abnormal"
    assert result.extra["verdict"]["exit_code"] == 4
    assert result.extra["abnormal"] == [reason]


@pytest.mark.parametrize(
    ("verdicts", "abnormal", "code"),
    [(["pass", "n/a", "info"], [], 0), (["pass", "fail", "not-judged"], [], 1),
     (["pass", "not-judged"], [], 3), (["fail"], ["worker quit"], 4), ([], [], 0)],
)
def test_the_exit_code_follows_the_documented_precedence(
    verdicts: list[str], abnormal: list[str], code: int
) -> None:
    metrics = [Metric(name=f"m{i}", value=0.0, unit="x", method="", verdict=v)  # type: ignore[arg-type]
               for i, v in enumerate(verdicts)]
    assert run_outcome(metrics, GeneratorLimit(), abnormal).exit_code == code
    assert str(code) in help_text()


def test_harness_cpu_percent_counts_the_window_not_the_drain() -> None:
    """An overloaded run drains for seconds after its window: that CPU is not the window's."""
    drained = _facts(harness_cpu_s=5.0, harness_window_cpu_s=1.5)
    metrics = build_metrics(o.HarnessOptions(), _totals(1.0), drained)  # type: ignore[arg-type]
    assert {m.name: m.value for m in metrics}["harness_cpu_percent"] == pytest.approx(75.0)
    older = _facts(harness_cpu_s=1.0)  # a snapshot without the window's own CPU
    metrics = build_metrics(o.HarnessOptions(), _totals(1.0), older)  # type: ignore[arg-type]
    assert {m.name: m.value for m in metrics}["harness_cpu_percent"] == pytest.approx(50.0)


def test_the_exact_channels_are_every_intra_swarm_type_and_the_mix_s() -> None:
    from pytest_cfn.measure.loadgen.options import MixEntry
    from pytest_cfn.measure.loadgen.traffic import ROLE_MIXES, event_types_of

    types = event_types_of()
    assert types == sorted(types)
    assert "state.update" in types and "task.assign" in types
    messages = {e.type for mix in ROLE_MIXES.values() for e in mix if e.message}
    assert messages and not messages & set(types)
    assert "custom.kind" in event_types_of((MixEntry("custom.kind", 1, 5),))
