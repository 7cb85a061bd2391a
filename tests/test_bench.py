"""The benchmark command: every figure printed with its method, valid JSON, usage errors.

The quick run goes through a subprocess against the session's real server, as a
user would run it; the parsing helpers are checked directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_cfn.measure.microbench.command import parse_config
from pytest_cfn.measure.microbench.explain import explain, explain_lines
from pytest_cfn.measure.microbench.printout import Figure
from pytest_cfn.measure.microbench.reference import parse_redis_benchmark
from pytest_cfn.measure.microbench.workloads import event_data
from pytest_cfn.measure.results import read_result
from pytest_cfn.measure.worker_processes import StepFailedError

FIGURES = {
    "redis_benchmark_publish_p1": "redis-benchmark PUBLISH -P 1",
    "redis_benchmark_publish_p100": "redis-benchmark PUBLISH -P 100",
    "redis_py_drain": "redis-py PubSub drain (reference)",
    "redis_py_pipeline_publish": "redis-py pipeline publish (reference)",
    "redis_py_e2e": "redis-py end to end (reference)",
    "timer_floor_p99": "timer floor p99 at 2,000/s (reference)",
    "timer_floor_p99_at_1000": "timer floor p99 at 1,000/s (reference)",
    "redis_py_latency_p99": "redis-py latency p99 at 2,000/s (reference)",
    "publish_rate": "our publish rate (EventBus)",
    "e2e_delivered": "our end-to-end delivered (EventBus)",
    "e2e_plain_delivered": "our plain end-to-end delivered (EventBus)",
    "aio_e2e_delivered": "our asyncio end-to-end delivered (EventBus)",
    "aio_e2e_plain_delivered": "our asyncio plain end-to-end delivered (EventBus)",
    "cpu_per_publish_us": "sync CPU per publish",
    "cpu_per_delivery_us": "sync CPU per delivery",
    "aio_cpu_per_publish_us": "asyncio CPU per publish",
    "aio_cpu_per_delivery_us": "asyncio CPU per delivery",
    "e2e_missing": "our end-to-end missing (EventBus)",
    "latency_p99": "latency p99 at 2,000 events/s",
    "latency_p50": "latency p50 at 2,000 events/s",
    "latency_p99_9": "latency p99.9 at 2,000 events/s",
    "latency_max": "latency max at 2,000 events/s",
    "aio_latency_p99": "asyncio latency p99 at 2,000 events/s",
    "aio_latency_p99_9": "asyncio latency p99.9 at 2,000 events/s",
    "redis_py_latency_p99_at_1000": "redis-py latency p99 at 1,000/s (reference)",
    "latency_p99_at_1000": "latency p99 at 1,000 events/s",
    "latency_p99_9_at_1000": "latency p99.9 at 1,000 events/s",
    "aio_latency_p99_at_1000": "asyncio latency p99 at 1,000 events/s",
    "aio_latency_p99_9_at_1000": "asyncio latency p99.9 at 1,000 events/s",
    "paced_subscriber_cpu_us": "subscriber CPU per event at 2,000 events/s",
    "aio_paced_subscriber_cpu_us": "asyncio subscriber CPU per event at 2,000 events/s",
    "paced_subscriber_cpu_us_at_1000": "subscriber CPU per event at 1,000 events/s",
    "aio_paced_subscriber_cpu_us_at_1000": "asyncio subscriber CPU per event at 1,000 events/s",
    "idle_bus_heap_bytes": "memory per idle bus (Python heap)",
    "windowed_events_delivered": "Event Bus 200 B delivered",
    "windowed_events_mb_per_s": "Event Bus 200 B MB/s",
    "windowed_events_missing": "Event Bus 200 B missing",
    "messenger_delivered": "Messenger 5,120 B delivered",
    "messenger_mb_per_s": "Messenger 5,120 B MB/s",
    "messenger_missing": "Messenger 5,120 B missing",
    "signing_e2e_unsigned": "end to end, unsigned",
    "signing_e2e_signed": "end to end, signed (HMAC-SHA256)",
    "signing_cost_us_per_event": "signing cost per event (CPU, both ends)",
}
GATED = {"publish_rate", "e2e_delivered", "latency_p99", "idle_bus_heap_bytes",
         "messenger_mb_per_s", "e2e_plain_delivered", "aio_e2e_delivered",
         "aio_e2e_plain_delivered", "cpu_per_publish_us", "cpu_per_delivery_us",
         "aio_cpu_per_publish_us", "aio_cpu_per_delivery_us", "latency_p99_9",
         "aio_latency_p99", "aio_latency_p99_9", "latency_p99_at_1000",
         "latency_p99_9_at_1000", "aio_latency_p99_at_1000", "aio_latency_p99_9_at_1000"}
MISSING = {"e2e_missing", "windowed_events_missing", "messenger_missing"}
DIFFERENCES = {"signing_cost_us_per_event"}  # a difference of two CPU figures: any sign


def run_bench(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_cfn.measure.microbench", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture(scope="module")
def quick_run(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("bench") / "result.json"
    done = run_bench("--quick", "--redis", redis_server.url, "--json", str(path))
    return {"done": done, "path": path}


def test_quick_run_prints_every_figure_followed_by_its_method(quick_run: dict[str, Any]) -> None:
    done = quick_run["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for title in FIGURES.values():
        at = [i for i, line in enumerate(lines) if line.strip().startswith(title)]
        assert at, f"{title!r} not printed:\n{done.stdout}"
        following = lines[at[0] + 1 : at[0] + 5]
        assert any(line.strip().startswith("method: ") for line in following), following
    assert "Redis " in lines[0] and "redis-py " in done.stdout
    for ratio in ("x redis-py pipeline", "x redis-py end to end", "x redis-py p99",
                  "x our batch()", "x redis-py publisher", "x redis-py subscriber",
                  "x unsigned", "x redis-py's"):
        assert ratio in done.stdout, ratio


def test_quick_run_writes_a_valid_result_with_gated_metrics(quick_run: dict[str, Any]) -> None:
    assert quick_run["done"].returncode == 0, quick_run["done"].stderr
    result = read_result(quick_run["path"])
    assert result.tool == "bench"
    assert result.redis.version.count(".") == 2
    metrics = {metric.name: metric for metric in result.metrics}
    assert set(metrics) == set(FIGURES)
    for name in MISSING:
        assert metrics[name].value == 0, name
    for name, metric in metrics.items():
        assert metric.value > 0 or name in MISSING | DIFFERENCES, name
        assert metric.method, name
        if name in GATED:
            assert metric.target is not None and metric.op is not None, name
            assert metric.verdict in ("pass", "fail", "not-judged"), name
        else:
            assert metric.verdict == "info", name
    for name in ("latency_p99", "redis_py_latency_p99", "aio_latency_p99"):
        latency = metrics[name].latency
        assert latency is not None and latency["count"] >= 900 and latency["encoded"], name
    raw = json.loads(Path(quick_run["path"]).read_text())
    assert raw["extra"]["failed_steps"] == []


def test_end_to_end_pairs_report_the_servers_cpu_per_event(quick_run: dict[str, Any]) -> None:
    raw = json.loads(Path(quick_run["path"]).read_text())
    pairs = [step for step in raw["steps"]
             if step["step"] in ("redis_py_e2e", "e2e", "e2e_plain", "aio_e2e", "aio_e2e_plain")]
    assert len(pairs) == 5, [step["step"] for step in raw["steps"]]
    for step in pairs:
        assert 0 < step["server_cpu_us_per_event"] < 1000, step
    printed = quick_run["done"].stdout
    assert "redis-server " in printed and "(the three: " in printed


def test_quick_run_prints_the_messenger_beside_the_event_bus_with_its_window(
    quick_run: dict[str, Any],
) -> None:
    done = quick_run["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    heading = lines.index("[7] The Messenger beside the Event Bus, receiver-paced")
    section = lines[heading:]
    messenger = next(i for i, line in enumerate(section) if "Messenger 5,120 B delivered" in line)
    assert "messages/s" in section[messenger]
    assert "x the Event Bus's events/s in this run" in section[messenger + 1]
    method = next(line for line in section[messenger:] if line.strip().startswith("method: "))
    for words in ("one sender process and one receiver process", "batch()",
                  "at most 16 MiB on the wire", "32 MB pub/sub output-buffer limit",
                  "5,120 B data", "Messenger.send()"):
        assert words in method, words
    for title in ("Event Bus 200 B missing", "Messenger 5,120 B missing"):
        missing = next(i for i, line in enumerate(section) if line.strip().startswith(title))
        assert "sent 2,000, delivered 2,000" in section[missing + 1], section[missing + 1]
    result = read_result(quick_run["path"])
    metrics = {metric.name: metric for metric in result.metrics}
    bus, messenger_mb = metrics["windowed_events_mb_per_s"], metrics["messenger_mb_per_s"]
    assert messenger_mb.target == pytest.approx(bus.value) and messenger_mb.op == ">="
    assert "receiver-paced window" in metrics["messenger_delivered"].method


def test_message_bytes_sets_the_messenger_size_only(redis_server: Any) -> None:
    done = run_bench("--quick", "--only", "messenger", "--message-bytes", "1024",
                     "--redis", redis_server.url, timeout=120.0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Messenger 1,024 B delivered" in done.stdout
    assert "Event Bus 200 B delivered" in done.stdout
    assert "[2-4]" not in done.stdout and "[6]" not in done.stdout


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--message-bytes", "5KB"], "--message-bytes"),
        (["--message-bytes", "31"], "--message-bytes"),
        (["--message-bytes", "300000"], "--message-bytes"),
        (["--window-mb", "0"], "--window-mb"),
        (["--only", "messages"], "--only"),
        (["--events", "0"], "--events"),
        (["--rate", "fast"], "--rate"),
        (["--payload", "-5"], "--payload"),
        (["--redis", "http://127.0.0.1:6379"], "--redis"),
        (["--rate", "1", "--duration", "0.5"], "schedules no event"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--also-rates", "1000,,2000"], "--also-rates"),
        (["--also-rates", "0"], "--also-rates"),
    ],
)
def test_bad_arguments_are_a_usage_error_with_status_2(argv: list[str], complaint: str) -> None:
    done = run_bench(*argv, timeout=60.0)
    assert done.returncode == 2
    assert "usage:" in done.stderr and complaint in done.stderr
    assert done.stdout == ""


def test_quick_defaults_yield_to_explicit_flags() -> None:
    config = parse_config(["--quick", "--events", "5000", "--payload", "64"])
    assert (config.events, config.payload, config.repeat, config.rate) == (5000, 64, 1, 2000.0)
    full = parse_config([])
    assert (full.events, full.rate, full.duration, full.repeat) == (200_000, 10_000.0, 5.0, 3)
    assert (full.message_bytes, full.window_bytes) == (5120, 16 * 2**20)
    assert full.steps[-2:] == ("messenger", "signing")
    assert (full.also_rates, full.explain) == ((1000.0, 20000.0), False)
    assert parse_config(["--quick"]).also_rates == (1000.0,)
    # by default a low rate records longer, to 20,000 events; a --duration given is kept
    assert [full.latency_duration(r) for r in (10_000, 1_000, 20_000)] == [5.0, 20.0, 5.0]
    given = parse_config(["--duration", "5"])
    assert [given.latency_duration(r) for r in (10_000, 1_000)] == [5.0, 5.0]
    assert parse_config(["--quick"]).latency_duration(1_000) == 0.5
    assert parse_config(["--also-rates", "none", "--explain"]).also_rates == ()
    assert parse_config(["--also-rates", "500, 5_000"]).also_rates == (500.0, 5000.0)
    only = parse_config(["--only", "messenger", "--message-bytes", "10_240", "--window-mb", "8"])
    assert (only.steps, only.message_bytes, only.window_bytes) == (
        ("messenger",), 10_240, 8 * 2**20)


def test_redis_benchmark_output_is_parsed_from_its_last_progress_line() -> None:
    output = (
        b"publish event:b:x xxx: rps=0.0 (overall: 0.0) avg_msec=-nan\r   \r"
        b"publish event:b:x xxx: rps=52410.4 (overall: 52202.4) avg_msec=0.616\r   \r"
        b"publish event:b:x xxx: 56593.10 requests per second, p50=0.551 msec\n"
    )
    assert parse_redis_benchmark(output) == pytest.approx(56593.10)
    with pytest.raises(StepFailedError, match="requests per second"):
        parse_redis_benchmark(b"ERR unknown command\n")


@pytest.mark.parametrize("payload", [32, 200, 4096])
def test_event_data_encodes_to_the_requested_payload_size(payload: int) -> None:
    import msgspec

    data = event_data(payload, stamp=1_764_000_000_000_000_000)
    assert len(msgspec.json.encode(data)) == payload


def test_ratio_and_verdict_follow_reference_and_target() -> None:
    figure = Figure(
        key="publish_rate", title="t", value=150.0, unit="events/s", method="m",
        reference_title="ref", reference_value=100.0, target=100.0, op=">=",
    )
    assert figure.ratio == pytest.approx(1.5)
    assert figure.verdict == "pass"
    assert figure.to_metric().verdict == "pass"
    figure.value = 50.0
    assert figure.verdict == "fail"
    assert Figure(key="k", title="t", value=1.0, unit="u", method="m").verdict == "info"


def test_window_holds_the_configured_bytes_and_data_has_the_requested_size() -> None:
    from pytest_cfn.measure.microbench.windowed import data_size, layer_wire_size, window_messages

    wire = layer_wire_size("messages", 5120)
    assert data_size(5120) == 5120 and 5120 < wire < 5120 + 400
    window = window_messages(16 * 2**20, wire)
    assert window * wire <= 16 * 2**20 < (window + 1) * wire
    assert window_messages(1000, 5000) == 1


def test_sender_gives_up_when_the_receivers_count_stalls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from pytest_cfn.measure.microbench import windowed

    monkeypatch.setattr(windowed, "STALL_SECONDS", 0.05)
    with pytest.raises(StepFailedError, match="stayed at 10 of 3,000 sent"):
        windowed._hold(SimpleNamespace(value=10), needed=2000, sent=3000)
    assert windowed._hold(SimpleNamespace(value=2000), needed=2000, sent=3000) == pytest.approx(
        0.0, abs=0.01)


def test_explain_names_the_stage_that_owns_the_tail() -> None:
    # 1,000 events with 10 µs in every stage; 20 of them wait 5 ms in transit.
    written, stages = {}, {}
    for seq in range(1, 1001):
        intended = seq * 1_000_000
        call = intended + 10_000
        wrote = call + 10_000
        read = wrote + (5_000_000 if seq % 50 == 0 else 10_000)
        decoded = read + 10_000
        written[seq] = wrote
        stages[seq] = (intended, call, decoded + 10_000, read, decoded)
    stages[2000] = (1, 2, 3, 4, 5)  # never written: left out
    summary = explain(written, stages)
    assert summary["events"] == 1000
    assert summary["p99_owner"] == "transit" and summary["p99_9_owner"] == "transit"
    assert summary["stages"]["transit"]["mean_in_p99_tail_us"] == pytest.approx(5000.0)
    assert summary["stages"]["decode"]["p50_us"] == pytest.approx(10.0)
    lines = explain_lines("sync EventBus at 1,000/s", summary)
    assert "tail owner" in lines[-1] and "transit" in lines[-1]
    assert explain_lines("x", explain({}, {}))[0].endswith("no event was stamped at both ends")
