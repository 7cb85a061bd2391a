"""``cfn bench``'s run: one Redis server, the reference measurements, the harness steps at each
agent count, each reported as it finishes, then the document, the figures and the summary.

Every step is bounded in time and a failed step is recorded and skipped, so one bad step
cannot lose the rest of the run. Progress goes to ``stream`` as ``[i/N elapsed] what`` lines,
with a heartbeat while a harness step runs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import redis

from pytest_cfn._errors import CfnError
from pytest_cfn.measure.calibration.calibrate import (
    DELAYS_MS,
    DROP_EVENTS,
    calibrate,
    calibration_lines,
)
from pytest_cfn.measure.embedded_server import measured_server, server_facts
from pytest_cfn.measure.metrics.machine import machine_info
from pytest_cfn.measure.metrics.server_cpu import CpuReading, cpu_delta, read_cpu
from pytest_cfn.measure.results import RedisInfo, RunResult, redact_url, write_result
from pytest_cfn.measure.sweep.cache_sweep import cache_sweep
from pytest_cfn.measure.sweep.client_models import (
    MODELS,
    combine_model_runs,
    run_model,
    with_raw_ratio,
)
from pytest_cfn.measure.sweep.cluster_target import CALIBRATION_ON_CLUSTER, SweepServer
from pytest_cfn.measure.sweep.document import build_result, saturated, saturation_text
from pytest_cfn.measure.sweep.harness import (
    CLUSTER_SPAWN_PER_AGENT_S,
    LOAD,
    PROBE,
    StepSpec,
    find_locustfile,
    require_locust,
    run_step,
    spawn_per_agent,
    step_row,
)
from pytest_cfn.measure.sweep.references import publish_round_trip, server_ceiling
from pytest_cfn.measure.worker_processes import StepFailedError, Worker

DEFAULT_AGENTS = (10, 50, 100, 500)
DEFAULT_REPEAT = 3
DEFAULT_DURATION_S = 4.0
REFERENCES = ("ceiling", "round-trip", "cache", "client-models", "calibrate")
SKIPPABLE = (*REFERENCES, "probe")
MODELS_OF_HARNESS = ("shared", "per-agent")
WORKER_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class SweepConfig:
    """What ``cfn bench`` runs (see ``pytest_cfn.cli.bench`` for the command line)."""

    agents: tuple[int, ...] = DEFAULT_AGENTS
    duration: float = DEFAULT_DURATION_S
    repeat: int = DEFAULT_REPEAT
    rate: float = 100.0
    model: str = "shared"
    probe_rate: float = 2.0
    probe_duration: float = 2.0
    warmup: float = 1.0
    payload: int = 200
    out: Path = Path("reports")
    redis_url: str | None = None
    locustfile: Path | None = None
    skip: frozenset[str] = frozenset()

    @property
    def probe_model(self) -> str:
        """The connection model the probe steps count: the one the load steps do not run."""
        return "per-agent" if self.model == "shared" else "shared"

    def specs(self, cluster: bool = False) -> list[tuple[int, StepSpec]]:
        """(repeat, step) in run order: the load points interleaved (10, 50, 100, 500, 10,
        ...), so a drift of the machine during the run spreads over every point alike
        (``cluster``: a Redis Cluster node, where agents take longer to subscribe)."""
        loads = [(r, StepSpec(LOAD, self.model, n, self.rate, self.duration, self.warmup,
                              self.payload, spawn_per_agent(self.model, cluster)))
                 for r in range(self.repeat) for n in self.agents]
        if "probe" in self.skip:
            return loads
        probes = [(0, StepSpec(PROBE, self.probe_model, n, self.probe_rate,
                               self.probe_duration, min(self.warmup, 0.5), self.payload,
                               spawn_per_agent(self.probe_model, cluster)))
                  for n in self.agents]
        return loads + probes


@dataclass
class SweepOutcome:
    result: RunResult
    results_path: Path
    wall_s: float
    failures: list[str] = field(default_factory=list)


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ms(us: float | None) -> str:
    if us is None:
        return "-"
    ms = us / 1000.0
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.2f} ms"


class SweepRun:
    """One ``cfn bench`` run against one server."""

    def __init__(self, config: SweepConfig, stream: TextIO = sys.stdout) -> None:
        self.config = config
        self.stream = stream
        self.started = time.monotonic()
        self.tag = f"cfnsweep{os.getpid()}x{os.urandom(2).hex()}"
        self.extra: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self._index = 0
        self._total = 0
        self.server = SweepServer("")

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _step(self, what: str) -> None:
        self._index += 1
        elapsed = time.monotonic() - self.started
        self.say(f"[{self._index:>2}/{self._total} {elapsed:4.0f} s] {what}")

    def _detail(self, text: str) -> None:
        self.say(f"{'':>13}{text}")

    def run(self) -> SweepOutcome:
        """Everything, in order; returns the document (also written to ``results.json``)."""
        config = self.config
        require_locust()
        locustfile = find_locustfile(config.locustfile)
        references = [name for name in REFERENCES if name not in config.skip]
        config.out.mkdir(parents=True, exist_ok=True)
        with measured_server(config.redis_url) as server:
            url, embedded, benchmark, where = (server.url, server.embedded,
                                               server.redis_benchmark, server.description)
            version, maxclients = server_facts(url)
            self.server = SweepServer.detect(url)
            if self.server.cluster:
                where += f", {self.server.describe()}"
                maxclients = self.server.maxclients
                self.extra["cluster"] = self.server.facts()
                self.extra.setdefault("notes", []).extend(self._cluster_notes())
            specs = config.specs(cluster=self.server.cluster)
            self._total = len(references) + len(specs)
            self.say(
                f"cfn bench: Redis {version}, {where}; {os.cpu_count()} CPUs; agents "
                f"{', '.join(str(n) for n in config.agents)} ({config.model} model) at "
                f"{config.rate:g} events/s each, {config.duration:g} s per step; "
                f"harness {locustfile}"
            )
            self.extra.update(maxclients=maxclients, settings=self._settings(locustfile))
            runners: dict[str, Callable[[str, str | None], None]] = {
                "ceiling": self._ceiling, "round-trip": self._round_trip,
                "cache": self._cache, "client-models": self._client_models,
                "calibrate": lambda u, b: self._calibrate(u, locustfile),
            }
            for name in references:
                runners[name](url, benchmark)
            for repeat, spec in specs:
                self._harness_step(spec, repeat, locustfile, url)
        wall = time.monotonic() - self.started
        self.extra["wall_s"] = round(wall, 1)
        self.extra["failures"] = self.failures
        result = build_result(
            self.rows,
            redis=RedisInfo(version=version, embedded=embedded, url=redact_url(url)),
            machine=machine_info(),
            extra=self.extra,
        )
        path = write_result(config.out / "results.json", result)
        return SweepOutcome(result, path, wall, list(self.failures))

    def _settings(self, locustfile: Path) -> dict[str, Any]:
        c = self.config
        return {
            "agents": list(c.agents), "repeat": c.repeat, "duration_s": c.duration,
            "rate_per_agent": c.rate,
            "model": c.model, "probe_model": c.probe_model, "probe_rate": c.probe_rate,
            "probe_duration_s": c.probe_duration, "warmup_s": c.warmup,
            "payload_bytes": c.payload, "skipped": sorted(c.skip), "locustfile": str(locustfile),
        }

    def _cluster_notes(self) -> list[str]:
        masters = self.server.masters
        notes = [
            f"Redis Cluster of {masters} masters (given the URL of one node): the load steps' "
            "Event Buses and Messengers SPUBLISH / SSUBSCRIBE their swarms' shard channels on "
            "each swarm's master; server CPU (server_cpu_percent) is used_cpu_sys + "
            f"used_cpu_user summed over the {masters} masters, in % of one core; connections "
            "are counted on every master",
        ]
        notes.append(
            "ramp-up on a Redis Cluster: every bus first asks which master owns its swarm "
            "(INFO cluster, CLUSTER SLOTS) before it subscribes, so each step allows "
            + ", ".join(f"{s:g} s per agent in the {m} model"
                        for m, s in CLUSTER_SPAWN_PER_AGENT_S.items())
            + " before its warm-up (1 / 500 s per agent on one server)"
        )
        if self.config.model == "shared" or self.config.probe_model == "shared":
            notes.append(
                "shared model on a Redis Cluster: SharedConnections serve one server, so the "
                "harness gives each swarm's bus connections of its own on that swarm's master "
                "(the connection counts of the shared rows are those of connections per bus)"
            )
        return notes

    def _cluster_cpu(self, url: str) -> dict[str, CpuReading] | None:
        """Every master's CPU counter (Redis Cluster only; None on one server or a failure)."""
        if not self.server.cluster:
            return None
        client = redis.Redis.from_url(url, protocol=2, socket_connect_timeout=5,
                                      socket_timeout=5)
        try:
            return read_cpu(client)
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()

    def _topology_change(self, url: str, before: dict[str, CpuReading] | None) -> str | None:
        """On a cluster: why the step's server CPU cannot be trusted (its masters changed
        during the step: a failover, a restart), else None."""
        after = self._cluster_cpu(url) if before is not None else None
        if before is None or after is None:
            return None
        note = cpu_delta(before, after).note()
        if note is None:
            return None
        return ("the cluster's masters changed during this step, so its server CPU figure "
                f"(the harness sums every master at each end) is left out: {note}")

    def _fail(self, what: str, reason: str) -> None:
        self.failures.append(f"{what}: {reason.splitlines()[0] if reason else 'failed'}")
        self._detail(f"FAILED: {reason}")

    def _ceiling(self, url: str, benchmark: str | None) -> None:
        verb = "SPUBLISH" if self.server.cluster else "PUBLISH"
        self._step(f"reference: redis-benchmark {verb} ceiling (pipeline 1 and 100)")
        if benchmark is None:
            note = "redis-benchmark ceiling skipped: no redis-benchmark binary beside the " \
                "server or on PATH"
            self.extra.setdefault("notes", []).append(note)
            self._detail("SKIPPED: no redis-benchmark binary found")
            return
        try:
            where = self.server.reference(f"{self.tag}-ceiling") if self.server.cluster \
                else None
            entries = server_ceiling(
                benchmark, where.url if where else url,
                where.channel if where else f"{self.tag}:ceiling", self.config.payload,
                sharded=where is not None, method_suffix=self.server.method_suffix(),
            )
        except (StepFailedError, CfnError, OSError) as exc:
            self._fail("redis-benchmark ceiling", str(exc))
            return
        self.extra["ceiling"] = entries
        self._detail(", ".join(f"{e['rate']:,.0f} {verb}/s at -P {e['pipeline']}"
                               for e in entries))

    def _round_trip(self, url: str, benchmark: str | None) -> None:
        verb = "SPUBLISH" if self.server.cluster else "PUBLISH"
        self._step(f"reference: {verb} round trip on one connection (the latency floor)")
        try:
            where = self.server.reference(f"{self.tag}-round-trip") if self.server.cluster \
                else None
            trip = publish_round_trip(
                where.url if where else url, where.channel if where else f"{self.tag}:round-trip",
                self.config.payload, sharded=where is not None,
                method_suffix=self.server.method_suffix(),
            )
        except (StepFailedError, CfnError, OSError) as exc:
            self._fail("round trip", str(exc))
            return
        self.extra["round_trip"] = trip
        self._detail(f"p50 {trip['p50_us']:,.1f} µs, p99 {trip['p99_us']:,.1f} µs")

    def _worker(self, name: str, function: Callable[..., dict[str, Any]],
                **kwargs: Any) -> dict[str, Any] | None:
        worker = Worker(name, function, **kwargs).start()
        try:
            return worker.result(WORKER_TIMEOUT_S)
        except StepFailedError as exc:
            self._fail(name, str(exc))
            return None
        finally:
            worker.stop()

    def _cache(self, url: str, benchmark: str | None) -> None:
        self._step("reference: route cache hit rate vs size (10,000 / 1,000 / 100 / none)")
        result = self._worker("route cache sweep", cache_sweep, url=url, swarm="cache",
                              namespace=self.tag, repeat=self.config.repeat,
                              masters=self.server.masters)
        if result is None:
            return
        self.extra["cache"] = result
        for workload in ("adr", "zipf"):
            rates = [f"{r['hit_rate'] * 100:.2f} %" for r in result["rows"]
                     if r["workload"] == workload]
            self._detail(f"{workload} workload: {' / '.join(rates)}")

    def _client_models(self, url: str, benchmark: str | None) -> None:
        self._step(f"reference: client models ({len(MODELS)} connection layouts, "
                   f"{self.config.repeat} run(s) each)")
        passes: list[dict[str, dict[str, Any]]] = []
        for attempt in range(self.config.repeat):
            rows: dict[str, dict[str, Any]] = {}
            for model in MODELS:
                row = self._worker(f"client model {model['key']}", run_model, url=url,
                                   key=model["key"], swarm=f"models-{model['key']}-{attempt}",
                                   namespace=self.tag, masters=self.server.masters)
                if row is not None:
                    rows[model["key"]] = row
            passes.append(rows)
        runs: dict[str, list[dict[str, Any]]] = {}
        for rows in with_raw_ratio(passes):
            for key, row in rows.items():
                runs.setdefault(key, []).append(row)
        combined = [combine_model_runs(runs[m["key"]]) for m in MODELS if m["key"] in runs]
        for row in combined:
            spread = f" ({row['rate_low']:,.0f}-{row['rate_high']:,.0f})" if row["runs"] > 1 \
                else ""
            self._detail(f"{row['key']:<17} {row['rate']:>11,.0f} events/s{spread} "
                         f"({row['connections']} connection(s))")
        self.extra["client_models"] = combined

    def _calibrate(self, url: str, locustfile: Path) -> None:
        self._step("calibration: the harness through a delay proxy (+"
                   + " ms, +".join(f"{d:g}" for d in DELAYS_MS)
                   + f" ms one-way) and {DROP_EVENTS} dropped events")
        if self.server.cluster:
            reason = f"not measured on a cluster: {CALIBRATION_ON_CLUSTER}"
            self.extra.setdefault("not_measured", {})["calibration"] = reason
            self.extra.setdefault("notes", []).append(f"calibration {reason}")
            self._detail(reason)
            return
        try:
            result = calibrate(url, locustfile, self.config.out / "steps" / "calibration",
                               say=self._detail)
        except (CfnError, OSError) as exc:
            self._fail("calibration", str(exc))
            return
        self.extra["calibration"] = result
        for line in calibration_lines(result):
            self._detail(line)

    def _harness_step(self, spec: StepSpec, repeat: int, locustfile: Path, url: str) -> None:
        what = "load" if spec.kind == LOAD else "connection probe"
        run_of = f", run {repeat + 1} of {self.config.repeat}" if spec.kind == LOAD \
            and self.config.repeat > 1 else ""
        self._step(f"{what}: {spec.agents} agents, {spec.model} model, "
                   f"{spec.offered:,.0f} events/s offered{run_of}, a {spec.duration:g} s window "
                   f"(Locust -t {spec.run_time}s at most)")
        before = self._cluster_cpu(url)
        run = run_step(spec, locustfile, url, self.config.out / "steps" / f"run{repeat + 1}",
                       heartbeat=lambda s: self._detail(f"... running, {s:.0f} s"))
        topology = self._topology_change(url, before)
        if run.result is None:
            self.rows.append({"kind": spec.kind, "model": spec.model, "agents": spec.agents,
                              "agent_rate": spec.rate, "offered": spec.offered,
                              "repeat": repeat, "status": "failed", "error": run.error})
            self._fail(f"{what} {spec.agents} agents{run_of}", run.error)
            return
        row = step_row(run.result, spec.kind)
        if topology is not None:
            # The harness sums every master at each end of its window: across another set
            # of masters that sum is not the server's CPU.
            row["notes"].append(topology)
            row["server_cpu_percent"] = None
        row["repeat"] = repeat
        row["wall_s"] = round(run.wall_s, 1)
        row["harness_json"] = str(run.report.relative_to(self.config.out.resolve()))
        if row["status"] != "ok":
            row["error"] = "; ".join(row["abnormal"] or row["notes"]) or "no measurement window"
            self.rows.append(row)
            self._fail(f"{what} {spec.agents} agents{run_of}", row["error"])
            return
        self.rows.append(row)
        flag = f" ({saturation_text(row)}: its limit, not Redis's)" if saturated(row) else ""
        self._detail(
            f"delivered {_fmt_rate(row['delivered_per_s'])} events/s{flag}, p50 "
            f"{_fmt_ms(row['p50_us'])}, p99 {_fmt_ms(row['p99_us'])}, loss "
            f"{(row['loss_rate'] or 0) * 100:.2f} %, {row['connections']:,} connections "
            f"({run.wall_s:.0f} s)"
        )


