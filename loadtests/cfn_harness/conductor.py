"""The conductor: runs in the master (or in the only process) and owns the run as a whole.

At init it checks the options, starts an embedded redis-server when no ``--cfn-redis`` is given,
and writes the settings every worker must share into the parsed options (Locust sends them
with the spawn message). Once spawning is complete and every agent has reported its
subscriptions confirmed (``cfn_ready``), it opens the measurement window after the warm-up.
When the test stops it closes the window, gathers every process's snapshot (``cfn_final``),
merges them, judges the gates, writes the JSON and sets the exit code in ``quitting``. The gate
table is printed at ``quit``, after Locust's own statistics.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import gevent
import msgspec
import redis
from locust.env import Environment
from locust.rpc.protocol import Message as RpcMessage
from locust.runners import LocalRunner, MasterRunner

from cfn_harness.timers import loop_backend
from pytest_cfn.loadgen.accounting import merge
from pytest_cfn.loadgen.connections import ConnectionCount, count_connections, keep_largest
from pytest_cfn.loadgen.options import HarnessOptions
from pytest_cfn.loadgen.report import (
    RunFacts,
    build_metrics,
    build_result,
    generator_note,
    render_table,
)
from pytest_cfn.loadgen.traffic import aligned_end
from pytest_cfn.metrics import ServerSampler, machine_info
from pytest_cfn.results import RedisInfo, redact_url, write_result
from pytest_cfn.server_probe import check_server

log = logging.getLogger("cfn.harness")
time_ns = time.time_ns
END_LEAD_S = 0.3
FINAL_GRACE_S = 10.0
READY_TIMEOUT_S = 60


class Conductor:
    """Master-side (or stand-alone) control of one harness run."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.options = HarnessOptions()
        self.server: Any = None
        self.sampler: ServerSampler | None = None
        self.client: redis.Redis | None = None
        self.agents = 0
        self.window_start: int | None = None
        self.finals: dict[str, dict[str, Any]] = {}
        self.expected: set[str] = set()
        self.peak: ConnectionCount | None = None
        self.server_cpu_start: float | None = None
        self.failed: bool | None = None
        self.table = ""
        self.report_path: Path | None = None
        self._finished = False
        self._greenlets: list[gevent.Greenlet] = []
        self._opening: gevent.Greenlet | None = None
        self._spawned_at = time.monotonic()
        self.ready: dict[str, tuple[int, int]] = {}
        self.unready = 0
        self.subscribe_s = 0.0

    def start(self) -> None:
        """At init: settings, the server, the samplers."""
        parsed = self.environment.parsed_options
        assert parsed is not None
        values = vars(parsed)
        self.options = HarnessOptions.from_values(values)
        self.agents = int(values.get("num_users") or 0) or 1
        if not self.options.redis:
            from pytest_cfn.server import RedisServer

            self.server = RedisServer().start()
            parsed.cfn_redis = self.server.url
            log.info("cfn: started an embedded redis-server %s at %s (%s)", self.server.version,
                     self.server.url, self.server.choice.describe())
        if not self.options.namespace:
            parsed.cfn_namespace = f"lt{os.getpid()}x{os.urandom(3).hex()}"
        parsed.cfn_swarms = self.options.swarm_count(self.agents)
        parsed.cfn_rate = self.options.agent_rate(self.agents)
        parsed.cfn_total_rate = None
        self.options = HarnessOptions.from_values(vars(parsed))
        url = str(self.options.redis)
        check_server(url)
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, client_name="cfn-sampler")
        self.client.ping()
        self.sampler = ServerSampler.from_url(url, interval=1.0).start()
        self._greenlets.append(gevent.spawn(self._count_connections))

    def _count_connections(self) -> None:
        while not self._finished and self.client is not None:
            try:
                sample = count_connections(self.client.client_list(), self.options.namespace)
                self.peak = keep_largest(self.peak, sample)
            except (redis.RedisError, OSError) as exc:
                log.debug("CLIENT LIST failed: %s", exc)
            gevent.sleep(1.0)

    def _server_cpu(self) -> float | None:
        try:
            info = self.client.info("cpu") if self.client is not None else {}
        except (redis.RedisError, OSError):
            return None
        return float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))

    def on_spawning_complete(self, user_count: int, **_: Any) -> None:
        """Open the window once every agent has subscribed (or READY_TIMEOUT_S has passed),
        after the warm-up."""
        if self._opening is not None or self.window_start is not None:
            return
        self.agents = user_count
        self._spawned_at = time.monotonic()
        self._opening = gevent.spawn(self._open_window, user_count)
        self._greenlets.append(self._opening)

    def on_ready(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        self.ready[str(msg.node_id)] = (int(msg.data["ready"]), int(msg.data["failed"]))

    def _settled(self) -> tuple[int, int]:
        return (sum(r for r, _ in self.ready.values()), sum(f for _, f in self.ready.values()))

    def _open_window(self, user_count: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while sum(self._settled()) < user_count and time.monotonic() < deadline:
            gevent.sleep(0.1)
        ready, failed = self._settled()
        if ready < user_count:
            log.warning("cfn: %d of %d agents subscribed (%d failed) after %.1f s; measuring",
                        ready, user_count, failed, time.monotonic() - self._spawned_at)
            self.unready = user_count - ready
        self.subscribe_s = time.monotonic() - self._spawned_at
        self.window_start = time_ns() + int(self.options.warmup * 1e9)
        assert self.environment.runner is not None
        self.environment.runner.send_message("cfn_window", {"start_ns": self.window_start})
        gevent.sleep(self.options.warmup)
        self.server_cpu_start = self._server_cpu()

    def on_final(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        self.finals[str(msg.node_id)] = msg.data

    def finish(self) -> None:
        """Close the window, gather every process's snapshot, judge, write the JSON (once)."""
        if self._finished:
            return
        self._finished = True
        runner = self.environment.runner
        assert runner is not None
        interval = round(1e9 / self.options.rate)
        now = time_ns()
        start = self.window_start
        end = now if start is None else aligned_end(start, now + int(END_LEAD_S * 1e9), interval)
        if isinstance(runner, MasterRunner):
            self.expected = {str(c.id) for c in runner.clients.all}
        else:
            self.expected = {"local"}
        if self._opening is not None and start is None:
            self._opening.kill(block=False)
        runner.send_message("cfn_stop", {"end_ns": end})
        deadline = time.monotonic() + max(0.0, (end - time_ns()) / 1e9) + 2 * self.options.drain
        deadline += FINAL_GRACE_S
        while time.monotonic() < deadline and not self.expected <= set(self.finals):
            gevent.sleep(0.1)
        server_cpu_end = self._server_cpu()
        self._report(start, end, server_cpu_end)

    def _report(self, start: int | None, end: int, server_cpu_end: float | None) -> None:
        options = self.options
        window_s = (end - start) / 1e9 if start is not None and end > start else 0.0
        snapshots = [self.finals[k] for k in sorted(self.finals)]
        totals = merge(snapshots, start if start is not None else end)
        summary = self.sampler.summary() if self.sampler is not None else None
        server_cpu = None
        if self.server_cpu_start is not None and server_cpu_end is not None:
            server_cpu = server_cpu_end - self.server_cpu_start
        facts = RunFacts(
            agents=sum(int(s.get("agents", 0)) for s in snapshots) or self.agents,
            swarms=options.swarms,
            agent_rate=options.rate,
            window_s=window_s,
            harness_cpu_s=totals.sums.get("cpu_s", 0.0),
            server_cpu_s=server_cpu,
            connections=self.peak,
            maxclients=summary.maxclients if summary else None,
            max_connected_clients=summary.max_connected_clients if summary else 0,
            server={
                "max_omem": summary.max_omem if summary else None,
                "max_used_memory": summary.max_used_memory if summary else None,
                "max_pubsub_numpat": summary.max_pubsub_numpat if summary else None,
                "ops_per_sec_mean": summary.ops_per_sec_mean if summary else None,
                "commands_per_sec": summary.commands_per_sec if summary else None,
                "samples": summary.samples if summary else 0,
            },
        )
        saturation = generator_note(totals)
        if saturation is not None:
            facts.notes.append(saturation)
        facts.notes.extend(self._notes(totals.late_subscribers, window_s, snapshots))
        metrics = build_metrics(options, totals, facts)
        self.table = render_table(options, metrics, facts)
        self.failed = any(m.verdict == "fail" for m in metrics)
        version = summary.redis_version if summary and summary.redis_version else ""
        result = build_result(
            options,
            metrics,
            totals,
            facts,
            RedisInfo(
                version=version,
                embedded=self.server is not None,
                url=redact_url(str(options.redis)),
            ),
            machine_info(),
            {
                "namespace": options.namespace,
                "gevent_backends": sorted({str(s.get("gevent_backend")) for s in snapshots}),
                "monkey_patched": all(bool(s.get("monkey_patched")) for s in snapshots)
                and bool(snapshots),
                "processes_reported": sorted(self.finals),
                "processes_expected": sorted(self.expected),
                "conductor_backend": loop_backend(),
                "subscribed_after_s": round(self.subscribe_s, 3),
                "server_samples": msgspec.to_builtins(self.sampler.samples)
                if self.sampler is not None
                else [],
            },
        )
        path = Path(options.report) if options.report else Path("reports") / (
            f"locust-{options.model}-{facts.agents}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        )
        self.report_path = write_result(path, result)

    def _notes(self, late: int, window_s: float, snapshots: list[dict[str, Any]]) -> list[str]:
        notes = []
        missing = self.expected - set(self.finals)
        if missing:
            notes.append(f"no final report from {len(missing)} process(es): {sorted(missing)}")
        if window_s == 0.0:
            notes.append(
                "the run ended before the measurement window opened (ramp-up + "
                f"{self.options.warmup:g} s warm-up); run longer"
            )
        unmarked = sum(1 for s in snapshots if not s.get("window_marks"))
        if window_s and unmarked:
            notes.append(
                f"{unmarked} process(es) did not mark the window's start and end: their "
                "deliveries are missing from throughput, sent_rate and deliveries_per_s"
            )
        if self.unready:
            notes.append(
                f"{self.unready} agent(s) had not subscribed when the window opened (see the log "
                "for agents whose start failed)"
            )
        if late:
            notes.append(
                f"{late} agent(s) subscribed after the window opened; raise --cfn-warmup"
            )
        backends = {str(s.get("gevent_backend")) for s in snapshots}
        if backends - {"linux_iouring", "select"}:
            notes.append(
                f"gevent loop backend {sorted(backends)} wakes timers ~1 ms late: send lag and "
                "latency from the intended time include it"
            )
        return notes

    def gate_exit_code(self) -> None:
        """At quitting: finish if the test did not stop normally, and fail the run on a miss."""
        if not self._finished:
            self.finish()
        if self.failed:
            self.environment.process_exit_code = 1

    def print_and_stop(self) -> None:
        """At quit: the gate table last, then the embedded server goes."""
        if self.table:
            print(self.table, flush=True)
            if self.report_path is not None:
                print(f"cfn: result written to {self.report_path}", flush=True)
        gevent.killall(self._greenlets, block=False)
        if self.sampler is not None:
            self.sampler.stop()
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()
            self.server = None


def is_conductor(environment: Environment) -> bool:
    return isinstance(environment.runner, (MasterRunner, LocalRunner))
