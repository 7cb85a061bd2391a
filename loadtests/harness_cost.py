"""What the load harness costs beside what it measures: one command, one table.

    python loadtests/harness_cost.py                       # embedded redis-server, ~7 min
    python loadtests/harness_cost.py --runs shared:100 --duration 20

Runs, against one real Redis server and in this order:

1. the bus's own figures, ``python -m pytest_cfn.measure.microbench`` (throughput and latency
   steps): the subscriber's CPU per event flat out (one publisher process driving one
   subscriber as fast as they go), and paced at the event rate each harness run's subscriber
   connections see (the latency step's open-model sender at that rate), with the bus's
   delivery p99 at those rates;
2. each harness run, ``locust -f loadtests/swarm.py --headless`` in a subprocess of its own
   session (Locust is never imported here), ADR-002's 100 events/s per agent;

3. before each per-agent run, ``python loadtests/bare_agents.py`` with the same agents and
   processes: the library alone at that load (the same agents, connections, traffic and
   pacing in gevent processes, without Locust or the harness's accounting), its CPU per
   delivery and send lag, the floor under the harness's own figures;

then prints, per run, the capacity figures (offered, delivered, lost, late, critical loss,
send lag p99, delivery p99, the other processes' CPU) and the harness's CPU per delivery with
its ratio to both bus figures, against the targets: <= 1.3x in the per-agent model (each agent
has a subscriber connection of its own, like the bus's benchmark subscriber), <= 0.3x in the
shared model (a swarm's events are read once per process and handed to its ten agents).

Which reference is like for like: a subscriber's CPU per event falls steeply with its rate
(a read returns one event at 1,000/s, hundreds flat out), so the paced figure at the rate the
harness's connections see is the comparison of the same work; the flat-out figure is printed
beside it, with its ratio, and the verdict names the reference it used.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_cfn.measure.loadgen.machine_load import blocking_wake_cpu_us
from pytest_cfn.measure.loadgen.options import DEFAULT_AGENTS_PER_SWARM, MODELS, HarnessOptions
from pytest_cfn.measure.loadgen.verdicts import SEND_LAG_LIMIT_MS
from pytest_cfn.measure.results import Metric, ResultFormatError, read_result
from pytest_cfn.measure.sweep.harness import stop_group
from pytest_cfn.server import RedisServer

SWARM = Path(__file__).resolve().parent / "swarm.py"
BARE = Path(__file__).resolve().parent / "bare_agents.py"
AGENT_RATE = HarnessOptions().rate
"""ADR-002's 100 events/s per agent: the harness's default."""
SWARM_SIZE = DEFAULT_AGENTS_PER_SWARM
DEFAULT_RUNS = ("shared:10,shared:100,shared:500:2,per-agent:10,per-agent:100:2,"
                "per-agent:500:2")
CAPACITY_TARGETS = {("shared", 500), ("per-agent", 100)}
"""The runs the issue sets a capacity target for; every other run's capacity is shown, as
held or not, without a verdict."""
TARGET_RATIO = {"per-agent": 1.3, "shared": 0.3}
P99_WITHIN = 2.0
"""The harness's delivery p99 within this factor of the bus's p99 at the same offered rate,
at 100 agents in the shared model."""
P99_TARGET_AGENTS = 100


class UsageError(Exception):
    """A bad command line: the message says what was wrong and what is allowed."""


@dataclass(frozen=True)
class RunSpec:
    model: str
    agents: int
    processes: int = 1

    @property
    def label(self) -> str:
        tail = f", {self.processes} processes" if self.processes > 1 else ""
        return f"{self.model} {self.agents}{tail}"

    @property
    def offered(self) -> float:
        return self.agents * AGENT_RATE

    @property
    def socket_rate(self) -> float:
        """Events/s one subscriber connection of this run reads: an agent's own connection
        gets its swarm's events; a process's shared one, its agents' swarms' (block dealing:
        each process holds whole swarms)."""
        if self.model == "per-agent":
            return min(self.agents, SWARM_SIZE) * AGENT_RATE
        return math.ceil(self.agents / self.processes) * AGENT_RATE


def parse_runs(text: str) -> list[RunSpec]:
    """``MODEL:AGENTS[:PROCESSES]`` items, comma-separated."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[0] not in MODELS:
            raise UsageError(f"--runs item {item!r}: write MODEL:AGENTS[:PROCESSES] with MODEL "
                             f"one of {', '.join(MODELS)}, e.g. shared:500:2")
        try:
            agents, processes = int(parts[1]), int(parts[2]) if len(parts) == 3 else 1
        except ValueError:
            raise UsageError(
                f"--runs item {item!r}: AGENTS and PROCESSES are whole numbers"
            ) from None
        if not 1 <= agents <= 5000 or not 1 <= processes <= 64:
            raise UsageError(f"--runs item {item!r}: AGENTS 1-5000, PROCESSES 1-64")
        runs.append(RunSpec(parts[0], agents, processes))
    if not runs:
        raise UsageError("--runs names no run; e.g. --runs shared:100,per-agent:100:2")
    return runs


@dataclass
class RunFigures:
    spec: RunSpec
    error: str = ""
    figures: dict[str, float | None] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)


def _run(command: list[str], log: Path, deadline_s: float) -> int | None:
    """The command in a session of its own, output to ``log``; stopped at the deadline."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=log.parent)
        try:
            return proc.wait(deadline_s)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            return None


def _metrics(path: Path) -> tuple[dict[str, Metric], dict[str, Any]]:
    """A result's metrics by name, and its extra facts."""
    result = read_result(path)
    return {metric.name: metric for metric in result.metrics}, result.extra


def bench_references(url: str, rates: list[float], args: argparse.Namespace,
                     work: Path) -> dict[str, Any]:
    report = work / "bus-benchmark.json"
    rate, *more = sorted(set(rates))
    command = [sys.executable, "-m", "pytest_cfn.measure.microbench", "--redis", url,
               "--only", "throughput", "--only", "latency", "--repeat", "1",
               "--events", str(args.bench_events), "--duration", f"{args.bench_duration:g}",
               "--rate", f"{rate:g}", "--also-rates", ",".join(f"{r:g}" for r in more) or "none",
               "--json", str(report)]
    print(f"bus benchmark: {' '.join(command[1:])}", flush=True)
    code = _run(command, work / "bus-benchmark.log", 600)
    if not report.exists():
        raise RuntimeError(f"the bus benchmark wrote no result (exit {code}); see "
                           f"{work / 'bus-benchmark.log'}")
    try:
        metrics, _ = _metrics(report)
    except ResultFormatError as exc:
        raise RuntimeError(f"the bus benchmark's result is unreadable: {exc}") from exc

    def value(key: str) -> float | None:
        metric = metrics.get(key)
        return None if metric is None else float(metric.value)

    def suffix(r: float) -> str:
        return "" if r == rate else f"_at_{r:g}"

    return {
        "flat_out_cpu_us": value("cpu_per_delivery_us"),
        "paced_cpu_us": {r: value(f"paced_subscriber_cpu_us{suffix(r)}") for r in rates},
        "latency_p99_us": {r: value(f"latency_p99{suffix(r)}") for r in rates},
        "exit_code": code,
    }


def harness_run(spec: RunSpec, url: str, args: argparse.Namespace, work: Path) -> RunFigures:
    tag = f"{spec.model}-{spec.agents}-p{spec.processes}"
    report = work / f"{tag}.json"
    command = [sys.executable, "-m", "locust", "-f", str(args.locustfile), "--headless",
               "--only-summary", "-u", str(spec.agents), "-r", str(min(spec.agents, 250)),
               "-t", f"{args.duration:g}s", "--cfn-redis", url, "--cfn-model", spec.model,
               "--cfn-rate", f"{AGENT_RATE:g}", "--cfn-report", str(report)]
    if spec.processes > 1:
        command += ["--processes", str(spec.processes)]
    print(f"harness: locust {' '.join(command[4:])}", flush=True)
    code = _run(command, work / f"{tag}.log", args.duration + 120 + spec.agents / 5)
    run = RunFigures(spec)
    if not report.exists():
        run.error = f"the harness wrote no result (exit {code}); see {work / (tag + '.log')}"
        return run
    try:
        metrics, extra = _metrics(report)
    except ResultFormatError as exc:
        run.error = str(exc)
        return run
    for key in ("throughput", "send_lag_p99", "delivery_p99", "lost", "late", "critical_loss",
                "harness_cpu_us_per_delivery", "other_cpu_percent", "steal_percent",
                "harness_cpu_busiest_process"):
        run.figures[key] = float(metrics[key].value) if key in metrics else None
    run.figures["abnormal"] = float(len(extra.get("abnormal") or []))
    run.figures["exit_code"] = None if code is None else float(code)
    return run


def bare_run(spec: RunSpec, url: str, args: argparse.Namespace,
             work: Path) -> dict[str, float | None]:
    """The library alone at a per-agent run's load (``bare_agents.py``): its CPU per
    delivery, send lag p99 and delivered/s as ``bare_*`` figures (none when it failed: it
    is a reference, it judges nothing)."""
    tag = f"bare-{spec.agents}-p{spec.processes}"
    report = work / f"{tag}.json"
    seconds = min(args.duration, 20.0)
    command = [sys.executable, str(BARE), "--redis", url, "--agents", str(spec.agents),
               "--processes", str(spec.processes), "--rate", f"{AGENT_RATE:g}",
               "--duration", f"{seconds:g}", "--json", str(report)]
    print(f"bare library: {' '.join(command[1:])}", flush=True)
    code = _run(command, work / f"{tag}.log", seconds + 60 + spec.agents / 5)
    try:
        bare = json.loads(report.read_text())
    except (OSError, ValueError):
        print(f"the bare-library run wrote no result (exit {code}); see {work / tag}.log",
              flush=True)
        return {}
    return {
        "bare_cpu_us": bare.get("cpu_us_per_delivery"),
        "bare_send_lag_p99": bare.get("send_lag_p99_ms"),
        "bare_delivered": bare.get("delivered_per_s"),
    }


def judge(run: RunFigures, refs: dict[str, Any]) -> None:
    f, spec = run.figures, run.spec
    cpu = f.get("harness_cpu_us_per_delivery")
    paced = refs["paced_cpu_us"].get(spec.socket_rate)
    flat = refs["flat_out_cpu_us"]
    target = TARGET_RATIO[spec.model]
    f["paced_ref_us"], f["flat_ref_us"] = paced, flat
    f["ratio_paced"] = cpu / paced if cpu and paced else None
    f["ratio_flat"] = cpu / flat if cpu and flat else None
    if f["ratio_paced"] is not None:
        run.verdicts["cpu"] = (f"{'PASS' if f['ratio_paced'] <= target else 'FAIL'} "
                               f"(<= {target}x the paced reference)")
    delivered_all = (f.get("throughput") or 0) >= spec.offered * 0.999
    clean = not (f.get("lost") or f.get("late") or f.get("critical_loss") or f.get("abnormal"))
    lag_ok = (f.get("send_lag_p99") or math.inf) < SEND_LAG_LIMIT_MS
    checks = ((delivered_all, "delivered < offered"), (clean, "lost, late or abnormal"),
              (lag_ok, f"send lag p99 >= {SEND_LAG_LIMIT_MS:g} ms"))
    missed = [why for ok, why in checks if not ok]
    bare_cpu, bare_lag = f.get("bare_cpu_us"), f.get("bare_send_lag_p99")
    f["ratio_bare"] = cpu / bare_cpu if cpu and bare_cpu else None
    if not lag_ok and bare_lag is not None and bare_lag >= SEND_LAG_LIMIT_MS:
        missed[-1] += f" (the library alone: {bare_lag:.1f} ms)"
    if (spec.model, spec.agents) in CAPACITY_TARGETS:
        run.verdicts["capacity"] = "FAIL: " + ", ".join(missed) if missed else "PASS"
    else:
        run.verdicts["capacity"] = ("not held: " + ", ".join(missed) if missed else "held") + (
            " (no target)")
    bus_p99 = refs["latency_p99_us"].get(spec.offered)
    p99 = f.get("delivery_p99")
    if bus_p99 and p99 is not None:
        f["bus_p99_ms"] = bus_p99 / 1000
        ratio = f["p99_ratio"] = p99 / (bus_p99 / 1000)
        if spec.model == "shared" and spec.agents == P99_TARGET_AGENTS:
            run.verdicts["p99"] = (f"{'PASS' if ratio <= P99_WITHIN else 'FAIL'} "
                                   f"(<= {P99_WITHIN:g}x the bus's p99 at {spec.offered:,.0f}/s)")
        else:
            run.verdicts["p99"] = "no target (the issue sets it for 100 agents, shared)"


def _fmt(value: float | None, spec: str = ",.2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(runs: list[RunFigures], refs: dict[str, Any]) -> None:
    print(f"\nbus subscriber CPU per event, flat out: {_fmt(refs['flat_out_cpu_us'])} µs; "
          "paced: " + ", ".join(f"{_fmt(v)} µs at {r:,.0f}/s"
                                for r, v in sorted(refs["paced_cpu_us"].items())))
    if refs.get("wake_cpu_us") is not None:
        print(f"this machine: a blocking 0.2 ms sleep and its wake-up cost "
              f"{_fmt(refs['wake_cpu_us'])} µs of CPU (a paced reader pays it per read)")
    head = ("run", "offered/s", "delivered/s", "lost", "late", "crit", "lag p99", "p99",
            "other CPU", "steal", "CPU/deliv", "x paced", "x flat", "capacity", "CPU target")
    rows: list[tuple[str, ...]] = [head]
    for run in runs:
        f = run.figures
        if run.error:
            rows.append((run.spec.label, f"{run.spec.offered:,.0f}", run.error,
                         *("",) * (len(head) - 3)))
            continue
        rows.append((
            run.spec.label, f"{run.spec.offered:,.0f}", _fmt(f.get("throughput"), ",.0f"),
            _fmt(f.get("lost"), ",.0f"), _fmt(f.get("late"), ",.0f"),
            _fmt(f.get("critical_loss"), ",.0f"), _fmt(f.get("send_lag_p99")) + " ms",
            _fmt(f.get("delivery_p99")) + " ms", _fmt(f.get("other_cpu_percent"), ".0f") + " %",
            _fmt(f.get("steal_percent"), ".0f") + " %",
            _fmt(f.get("harness_cpu_us_per_delivery")) + " µs", _fmt(f.get("ratio_paced")) + "x",
            _fmt(f.get("ratio_flat")) + "x", run.verdicts.get("capacity", "-"),
            run.verdicts.get("cpu", "-"),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    for row in rows:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    for run in runs:
        f = run.figures
        if f.get("bare_cpu_us") is not None:
            print(f"{run.spec.label}: the library alone (bare_agents.py, same agents, traffic "
                  f"and pacing, no Locust, no accounting) {_fmt(f.get('bare_delivered'), ',.0f')}"
                  f" deliveries/s, {_fmt(f.get('bare_cpu_us'))} µs CPU per delivery, send lag "
                  f"p99 {_fmt(f.get('bare_send_lag_p99'))} ms; the harness "
                  f"{_fmt(f.get('harness_cpu_us_per_delivery'))} µs "
                  f"({_fmt(f.get('ratio_bare'))}x), send lag p99 "
                  f"{_fmt(f.get('send_lag_p99'))} ms")
    for run in runs:
        if "p99" in run.verdicts:
            print(f"{run.spec.label}: delivery p99 {_fmt(run.figures.get('delivery_p99'))} ms, "
                  f"the bus's {_fmt(run.figures.get('bus_p99_ms'))} ms at the same offered rate "
                  f"({_fmt(run.figures.get('p99_ratio'))}x): {run.verdicts['p99']}")
    print("\nmethod: capacity (a target for shared 500 and per-agent 100, shown for the other "
          "runs) = delivered >= 99.9 % of offered, zero lost, zero late, zero "
          "critical loss, send lag p99 "
          f"< {SEND_LAG_LIMIT_MS:g} ms, no abnormal end; CPU/deliv = CPU of every Locust process "
          "between the window's marks / deliveries in it; x paced = over the bus subscriber's CPU "
          "per event paced at the rate one subscriber connection of the run reads (per-agent: "
          "its swarm's 1,000/s; shared: its process's swarms'); x flat = over the flat-out "
          "figure; other CPU = what else ran on the machine (a busy machine spoils a run).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python loadtests/harness_cost.py",
        description="The load harness's own CPU per delivery beside the bus's, and its "
                    "capacity figures, at ADR-002's 100 events/s per agent (see the module "
                    "docstring for the method).")
    parser.add_argument("--redis", metavar="URL", help="server to use (default: start an "
                        "embedded redis-server on a free loopback port and stop it at the end)")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="MODEL:AGENTS[:PROCESSES], "
                        f"comma-separated (default {DEFAULT_RUNS})")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="Locust -t of each harness run, seconds (default 30)")
    parser.add_argument("--bench-events", type=int, default=100_000,
                        help="events of the bus benchmark's throughput run (default 100000)")
    parser.add_argument("--bench-duration", type=float, default=5.0,
                        help="seconds recorded per rate in the bus benchmark (default 5)")
    parser.add_argument("--locustfile", type=Path, default=SWARM, help="the harness")
    parser.add_argument("--work", type=Path, default=None,
                        help="directory for each run's JSON and log (default: a new temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    try:
        runs = parse_runs(args.runs)
        if args.duration < 5 or args.bench_duration <= 0 or args.bench_events < 1000:
            raise UsageError("--duration is at least 5 s, --bench-duration above 0, "
                             "--bench-events at least 1000")
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="cfn-harness-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    url = args.redis
    if url is None:
        server = RedisServer()
        server.start()
        url = server.url
        print(f"embedded redis-server {server.version} at {url} (pid {server.pid})", flush=True)
    started = time.monotonic()
    try:
        rates = sorted({spec.socket_rate for spec in runs} | {spec.offered for spec in runs
                                                              if spec.model == "shared"})
        try:
            refs = bench_references(url, rates, args, work)
            refs["wake_cpu_us"] = blocking_wake_cpu_us()
        except RuntimeError as exc:
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            return 1
        results = []
        for spec in runs:
            bare = bare_run(spec, url, args, work) if spec.model == "per-agent" else {}
            run = harness_run(spec, url, args, work)
            run.figures.update(bare)
            if not run.error:
                judge(run, refs)
            results.append(run)
    finally:
        if server is not None:
            server.stop()
    print_table(results, refs)
    took = time.monotonic() - started
    print(f"\n{len(results)} harness runs and the bus benchmark in {took:.0f} s; each run's JSON "
          f"and log in {work}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "references": {k: ({f"{r:g}": v for r, v in val.items()} if isinstance(val, dict)
                               else val) for k, val in refs.items()},
            "runs": [asdict(run) for run in results],
        }, indent=2))
    failed = [r for r in results if r.error or "FAIL" in " ".join(r.verdicts.values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
