"""One benchmark run: the steps in order, each bounded in time, against one server.

Throughput steps run ``repeat`` rounds, interleaving each reference with our
figure (drain, pipeline, our publish, end to end) so that a change in the
machine's load hits both sides of a ratio alike; the median of the rounds is
the figure. A step that fails or overruns is reported as failed and the run
goes on with the next one.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, TextIO

from pytest_cfn._errors import CfnError
from pytest_cfn.measure.metrics.server_cpu import CpuReading, cpu_delta, read_cpu_at
from pytest_cfn.measure.microbench.aio_workloads import (
    aio_latency_subscriber,
    aio_paced_publisher,
    aio_subscriber,
    aio_unpaced_publisher,
)
from pytest_cfn.measure.microbench.config import BenchConfig, Target
from pytest_cfn.measure.microbench.e2e_figures import Item
from pytest_cfn.measure.microbench.memory import idle_bus_memory
from pytest_cfn.measure.microbench.pacing import lone_sleeper
from pytest_cfn.measure.microbench.printout import Figure, StepFailure, print_section
from pytest_cfn.measure.microbench.reference import (
    redis_py_drain,
    redis_py_paced_publisher,
    redis_py_pipeline_publish,
    redis_py_subscriber,
    redis_py_unpaced_publisher,
    run_redis_benchmark,
)
from pytest_cfn.measure.microbench.shard_references import ReferenceChannel, reference_channel
from pytest_cfn.measure.microbench.signing import signing_step
from pytest_cfn.measure.microbench.step_figures import (
    ceiling_figure,
    latency_figures,
    memory_figure,
    throughput_figures,
    timer_floor_figure,
    windowed_figures,
)
from pytest_cfn.measure.microbench.tls_cost import measure_tls_cost
from pytest_cfn.measure.microbench.windowed import (
    LAYERS,
    data_size,
    layer_wire_size,
    window_messages,
    windowed_receiver,
    windowed_sender,
)
from pytest_cfn.measure.microbench.workloads import (
    latency_subscriber,
    our_publish,
    our_subscriber,
    our_unpaced_publisher,
    paced_publisher,
)
from pytest_cfn.measure.worker_processes import (
    StepFailedError,
    Worker,
    WorkerFunction,
    new_counter,
    new_event,
    sink_subscriber,
    wait_ready,
)

FRONTS: dict[str, tuple[WorkerFunction, WorkerFunction, WorkerFunction, WorkerFunction]] = {
    "sync": (our_subscriber, our_unpaced_publisher, latency_subscriber, paced_publisher),
    "asyncio": (aio_subscriber, aio_unpaced_publisher, aio_latency_subscriber, aio_paced_publisher),
}
"""Per front end: end-to-end subscriber and publisher, latency subscriber and paced publisher."""
E2E_RUNS = {
    "e2e": ("sync", False),
    "e2e_plain": ("sync", True),
    "aio_e2e": ("asyncio", False),
    "aio_e2e_plain": ("asyncio", True),
}
"""Our end-to-end runs: (front end, plain publish() loop instead of batch())."""

READY_TIMEOUT = 20.0
REDIS_BENCHMARK_TIMEOUT = 120.0
SECTIONS = {
    "ceiling": "[1] Server ceiling: redis-benchmark PUBLISH",
    "throughput": "[2-4] Throughput: redis-py references and our bus",
    "tls": "[4b] TLS: the cost per event against the same server in plain text",
    "latency": "[5] Latency at fixed offered rates, from the intended send time",
    "memory": "[6] Memory per idle bus",
    "messenger": "[7] The Messenger beside the Event Bus, receiver-paced",
    "signing": "[8] Signed envelopes (signing_key=) beside unsigned, end to end",
}


class BenchRun:
    """Runs every step and collects figures, failures and raw per-step data."""

    def __init__(self, config: BenchConfig, target: Target, stream: TextIO = sys.stdout) -> None:
        self.config = config
        self.target = target
        self.stream = stream
        self.swarm = f"cfnbench-{secrets.token_hex(3)}"
        self.figures: list[Figure] = []
        self.failures: list[StepFailure] = []
        self.steps: list[dict[str, Any]] = []
        self._swarms = 0

    def run(self) -> None:
        steps: dict[str, Callable[[], list[Item]]] = {
            "ceiling": self._server_ceiling,
            "throughput": self._throughput,
            "tls": self._tls_cost,
            "latency": self._latency,
            "memory": self._memory,
            "messenger": self._messenger,
            "signing": lambda: signing_step(self),
        }
        for name in self.config.steps:
            heading = SECTIONS[name]
            items = steps[name]()
            for item in items:
                if isinstance(item, Figure):
                    self.figures.append(item)
                else:
                    self.failures.append(item)
            print_section(self.stream, heading, items)

    def _next_swarm(self) -> str:
        self._swarms += 1
        return f"{self.swarm}-{self._swarms}"

    def _reference(self, swarm: str) -> ReferenceChannel:
        """The server and channel a reference of ``swarm`` uses: the kind our bus uses; a
        cluster that cannot say who owns the slot fails the step, not the run."""
        try:
            return reference_channel(self.target.url, swarm, self.target.cluster)
        except (CfnError, OSError) as exc:
            raise StepFailedError(f"cannot find the master of {swarm!r}'s slot: {exc}") from None

    def _record(self, step: str, result: dict[str, Any]) -> None:
        bulky = ("histogram", "from_send", "stages", "written")
        plain = {k: v for k, v in result.items() if k not in bulky}
        self.steps.append({"step": step, **plain})

    def _server_ceiling(self) -> list[Item]:
        binary = self.target.redis_benchmark
        if binary is None:
            return [StepFailure(
                "redis-benchmark PUBLISH", "no redis-benchmark binary found", skipped=True
            )]
        items: list[Item] = []
        try:
            where = self._reference(self.swarm)
        except StepFailedError as exc:
            return [StepFailure("redis-benchmark PUBLISH", str(exc))]
        for pipeline, requests in ((1, self.config.events), (100, self.config.events * 5)):
            try:
                result = run_redis_benchmark(
                    binary, where.url, requests=requests, pipeline=pipeline,
                    channel=where.channel, payload=self.config.payload,
                    timeout=REDIS_BENCHMARK_TIMEOUT, command=where.publish_command,
                )
            except StepFailedError as exc:
                items.append(StepFailure(f"redis-benchmark PUBLISH -P {pipeline}", str(exc)))
                continue
            self._record(f"redis_benchmark_p{pipeline}", result)
            items.append(ceiling_figure(result, self.config, self.target))
        return items

    def _throughput(self) -> list[Item]:
        rounds: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("drain", self._drain_once),
            ("pipeline", self._pipeline_once),
            ("ours", self._our_publish_once),
            ("redis_py_e2e", self._redis_py_e2e_once),
            *((name, partial(self._e2e_once, *E2E_RUNS[name])) for name in E2E_RUNS),
        ]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in rounds}
        errors: dict[str, str] = {}
        for round_index in range(self.config.repeat):
            for name, once in rounds:
                try:
                    result = once()
                except StepFailedError as exc:
                    errors.setdefault(name, str(exc))
                    continue
                result["round"] = round_index + 1
                runs[name].append(result)
                self._record(name, result)
        return throughput_figures(runs, errors, self.config, self.target)

    def _drain_once(self) -> dict[str, Any]:
        where = self._reference(self._next_swarm())
        worker = Worker(
            "redis-py drain", redis_py_drain, url=where.url, channel=where.channel,
            events=self.config.events, payload=self.config.payload, sharded=where.sharded,
        ).start()
        try:
            return worker.result(self.config.step_budget(self.config.events * 2))
        finally:
            worker.stop()

    def _pipeline_once(self) -> dict[str, Any]:
        swarm = self._next_swarm()
        where = self._reference(swarm)
        return self._publish_with_sink(
            "redis-py pipeline publisher", redis_py_pipeline_publish, swarm,
            url=where.url, channel=where.channel,
            events=self.config.events, payload=self.config.payload,
            warmup=self.config.warmup_events, sharded=where.sharded,
        )

    def _our_publish_once(self) -> dict[str, Any]:
        swarm = self._next_swarm()
        return self._publish_with_sink(
            "EventBus publisher", our_publish, swarm,
            url=self.target.url, swarm=swarm, events=self.config.events,
            payload=self.config.payload, warmup=self.config.warmup_events,
        )

    def _publish_with_sink(
        self, name: str, function: WorkerFunction, sink_swarm: str, **kwargs: Any
    ) -> dict[str, Any]:
        """Run a publisher worker while a sink subscriber process reads the swarm's pattern
        (on a cluster: its shard channel, on the master that owns it)."""
        ready, stop = new_event(), new_event()
        where = self._reference(sink_swarm)
        sink = Worker(
            "sink subscriber", sink_subscriber, url=where.url,
            pattern=where.pattern, ready=ready, stop=stop, sharded=where.sharded,
        ).start()
        try:
            wait_ready(ready, READY_TIMEOUT, sink)
            publisher = Worker(name, function, **kwargs).start()
            try:
                result = publisher.result(self.config.step_budget(self.config.events))
            finally:
                publisher.stop()
            stop.set()
            result["sink_bytes"] = sink.result(10.0)["bytes"]
            return result
        finally:
            stop.set()
            sink.stop()

    def _pair(
        self,
        subscriber: tuple[str, WorkerFunction, dict[str, Any]],
        publisher: tuple[str, WorkerFunction, dict[str, Any]],
        expected: int,
        budget: float,
        url: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start a subscriber process, wait until it is subscribed, run a publisher
        process, tell the subscriber when the publisher is done; both results."""
        url = url or self.target.url
        ready, publisher_done = new_event(), new_event()
        sub_name, sub_function, sub_kwargs = subscriber
        pub_name, pub_function, pub_kwargs = publisher
        receiving = Worker(
            sub_name, sub_function, url=url, expected=expected, ready=ready,
            publisher_done=publisher_done, deadline=budget, **sub_kwargs,
        ).start()
        try:
            wait_ready(ready, READY_TIMEOUT, receiving)
            sending = Worker(pub_name, pub_function, url=url, **pub_kwargs).start()
            try:
                sent = sending.result(budget)
            finally:
                publisher_done.set()
                sending.stop()
            received = receiving.result(budget + 10.0)
        finally:
            publisher_done.set()
            receiving.stop()
        return sent, received

    def _tls_cost(self) -> list[Item]:
        # The sync front end's batch() pair: the same run as "e2e", over each URL.
        return measure_tls_cost(
            self.config, self.target, partial(self._e2e_once, "sync", False), self._record
        )

    def _e2e_once(self, front: str, plain: bool, url: str | None = None) -> dict[str, Any]:
        swarm = self._next_swarm()
        events = self.config.events
        subscriber, publisher, _, _ = FRONTS[front]
        before = read_cpu_at(url or self.target.url)
        published, delivered = self._pair(
            (f"{front} EventBus subscriber", subscriber, {"swarm": swarm}),
            (f"{front} EventBus publisher", publisher,
             {"swarm": swarm, "events": events, "payload": self.config.payload,
              "plain": plain}),
            events, self.config.step_budget(events), url=url,
        )
        return {
            **_server_cpu_per_event(url or self.target.url, before, events),
            "rate": delivered["rate"],
            "published": published["published"],
            "publish_seconds": published["seconds"],
            "delivered": delivered["delivered"],
            "seconds": delivered["seconds"],
            "publisher_cpu_us_per_event": published["cpu_us_per_event"],
            "subscriber_cpu_us_per_event": delivered["cpu_us_per_event"],
            "subscriber_stats": delivered["stats"],
            "publisher_stats": published["stats"],
        }

    def _redis_py_e2e_once(self) -> dict[str, Any]:
        where = self._reference(self._next_swarm())
        events = self.config.events
        before = read_cpu_at(where.url)
        published, delivered = self._pair(
            ("redis-py subscriber", redis_py_subscriber,
             {"channel": where.channel, "sharded": where.sharded}),
            ("redis-py publisher", redis_py_unpaced_publisher,
             {"channel": where.channel, "events": events, "payload": self.config.payload,
              "sharded": where.sharded}),
            events, self.config.step_budget(events), url=where.url,
        )
        return {
            **_server_cpu_per_event(where.url, before, events),
            "rate": delivered["rate"],
            "published": published["published"],
            "delivered": delivered["delivered"],
            "seconds": delivered["seconds"],
            "publisher_cpu_us_per_event": published["cpu_us_per_event"],
            "subscriber_cpu_us_per_event": delivered["cpu_us_per_event"],
        }

    def _latency(self) -> list[Item]:
        items: list[Item] = []
        for rate in (self.config.rate, *self.config.also_rates):
            items.extend(self._latency_at(rate))
        return items

    def _latency_at(self, rate: float) -> list[Item]:
        """redis-py, then our sync and asyncio front ends, at one offered rate."""
        cfg = self.config
        duration = cfg.latency_duration(rate)
        total = int((duration + cfg.latency_warmup) * rate)
        budget = duration + cfg.latency_warmup + 30.0
        schedule = {
            "rate": rate, "duration": duration, "warmup": cfg.latency_warmup,
            "payload": cfg.payload,
        }
        tag = f"{rate:g}"
        items: list[Item] = []
        floor = Worker(
            "timer floor", lone_sleeper, rate=rate, duration=cfg.duration,
            warmup=cfg.latency_warmup,
        ).start()
        try:
            floor_result = floor.result(cfg.duration + cfg.latency_warmup + 30.0)
        except StepFailedError as exc:
            items.append(StepFailure(f"timer floor at {rate:,.0f}/s", str(exc)))
        else:
            self._record(f"timer_floor_{tag}", floor_result)
            items.append(timer_floor_figure(floor_result, cfg, rate))
        finally:
            floor.stop()
        reference: tuple[dict[str, Any], dict[str, Any]] | None = None
        try:
            where = self._reference(self._next_swarm())
            reference = self._pair(
                ("redis-py latency subscriber", redis_py_subscriber,
                 {"channel": where.channel, "latency": True, "sharded": where.sharded}),
                ("redis-py paced publisher", redis_py_paced_publisher,
                 {"channel": where.channel, "sharded": where.sharded, **schedule}),
                total, budget, url=where.url,
            )
        except StepFailedError as exc:
            reference_error = str(exc)
        else:
            reference_error = ""
            self._record(f"redis_py_latency_publisher_{tag}", reference[0])
            self._record(f"redis_py_latency_subscriber_{tag}", reference[1])
        for front in FRONTS:
            _, _, subscriber, publisher = FRONTS[front]
            try:
                swarm = self._next_swarm()
                sent, received = self._pair(
                    (f"{front} latency subscriber", subscriber,
                     {"swarm": swarm, "explain": cfg.explain}),
                    (f"{front} paced publisher", publisher,
                     {"swarm": swarm, "explain": cfg.explain, **schedule}),
                    total, budget,
                )
            except StepFailedError as exc:
                items.append(StepFailure(f"{front} latency at {rate:,.0f}/s", str(exc)))
                continue
            self._record(f"{front}_latency_publisher_{tag}", sent)
            self._record(f"{front}_latency_subscriber_{tag}", received)
            items.extend(latency_figures(
                sent, received, reference, reference_error, cfg, self.target,
                rate=rate, front=front, with_reference=front == "sync",
            ))
        return items

    def _memory(self) -> list[Item]:
        cfg = self.config
        worker = Worker(
            "idle buses", idle_bus_memory, url=self.target.url, swarm=self._next_swarm(),
            buses=cfg.idle_buses,
        ).start()
        try:
            result = worker.result(60.0 + cfg.idle_buses)
        except StepFailedError as exc:
            return [StepFailure("memory per idle bus", str(exc))]
        finally:
            worker.stop()
        self._record("idle_bus_memory", result)
        return [memory_figure(result, cfg, self.target)]

    def _messenger(self) -> list[Item]:
        """Event Bus and Messenger rounds, interleaved; redis-benchmark at both sizes."""
        runs: dict[str, list[dict[str, Any]]] = {layer: [] for layer in LAYERS}
        errors: dict[str, str] = {}
        for round_index in range(self.config.repeat):
            for layer in LAYERS:
                try:
                    result = self._windowed_once(layer)
                except StepFailedError as exc:
                    errors.setdefault(layer, str(exc))
                    continue
                result["round"] = round_index + 1
                runs[layer].append(result)
                self._record(f"windowed_{layer}", result)
        ceilings = self._ceilings_at_layer_sizes()
        return windowed_figures(runs, errors, ceilings, self.config, self.target)

    def _ceilings_at_layer_sizes(self) -> dict[str, float]:
        """redis-benchmark's pipelined PUBLISH (no subscriber) at each layer's size,
        requests/s; a layer is left out when redis-benchmark is missing or fails."""
        binary = self.target.redis_benchmark
        ceilings: dict[str, float] = {}
        if binary is None:
            return ceilings
        try:
            where = self._reference(self.swarm)
        except StepFailedError:
            return ceilings
        for layer in LAYERS:
            try:
                result = run_redis_benchmark(
                    binary, where.url, requests=self.config.events, pipeline=100,
                    channel=where.channel, payload=self._layer_bytes(layer),
                    timeout=REDIS_BENCHMARK_TIMEOUT, command=where.publish_command,
                )
            except StepFailedError:
                continue
            self._record(f"redis_benchmark_p100_{layer}", result)
            ceilings[layer] = result["rate"]
        return ceilings

    def _layer_bytes(self, layer: str) -> int:
        return self.config.message_bytes if layer == "messages" else self.config.payload

    def _windowed_once(self, layer: str) -> dict[str, Any]:
        """One sender and one receiver process of ``layer``, the sender held to the window."""
        cfg = self.config
        payload = self._layer_bytes(layer)
        wire = layer_wire_size(layer, payload)
        window = window_messages(cfg.window_bytes, wire)
        receiver = self._next_swarm()
        sender = self._next_swarm() if layer == "messages" else receiver
        progress = new_counter()
        budget = cfg.step_budget(cfg.events)
        sent, received = self._pair(
            (f"{layer} receiver", windowed_receiver,
             {"layer": layer, "swarm": receiver, "progress": progress}),
            (f"{layer} sender", windowed_sender,
             {"layer": layer, "swarm": sender, "to_swarm": receiver, "count": cfg.events,
              "payload": payload, "window": window, "progress": progress}),
            cfg.events, budget,
        )
        elapsed = received["last_wall"] - sent["started_wall"]
        delivered = received["delivered"]
        rate = delivered / elapsed if delivered and elapsed > 0 else 0.0
        return {
            "rate": rate,
            "mb_per_s": rate * data_size(payload) / 1e6,
            "bytes": data_size(payload),
            "wire_bytes": wire,
            "window_messages": window,
            "published": sent["published"],
            "delivered": delivered,
            "seconds": elapsed,
            "send_seconds": sent["seconds"],
            "held_seconds": sent["held_seconds"],
            "sender_cpu_us_per_message": sent["cpu_us_per_message"],
            "receiver_cpu_us_per_message": received["cpu_us_per_message"],
            "receiver_stats": received["stats"],
            "sender_stats": sent["stats"],
        }


def _server_cpu_per_event(
    url: str, before: dict[str, CpuReading] | None, events: int
) -> dict[str, float]:
    """The server's CPU µs per event over an end-to-end pair (from before the subscriber
    started to after both ended), when it could be read at both ends and no master changed."""
    after = read_cpu_at(url) if before is not None else None
    if before is None or after is None:
        return {}
    delta = cpu_delta(before, after)
    if not delta.complete or not events:
        return {}
    return {"server_cpu_us_per_event": delta.cpu_s / events * 1e6}
