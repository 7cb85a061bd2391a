"""The conductor: runs in the master (or in the only process) and owns the run as a whole.

At init it checks the options, starts an embedded redis-server when no ``--cfn-redis`` is given,
and starts the server samplers. At each test start (headless, or the web UI's START) it writes
the settings every worker must share into the parsed options (Locust sends them with the spawn
message): the swarms for the number of users asked for, and a dense slot per worker. Once
spawning is complete and every agent has reported its subscriptions confirmed (``cfn_ready``),
it opens the measurement window after the warm-up.

When the test stops (the run time, the STOP button, a signal, or Locust itself) a finishing
greenlet of its own closes the window, gathers every process's snapshot (``cfn_final``), merges
them, judges the gates and writes the JSON; whoever stops or quits waits for it, so no run ends
without its table and its result. While the test runs, an EndWatch (``endwatch.py``) notes what
makes an end abnormal (a worker missing heartbeats, quitting or crashing; Locust stopping the
test itself; exceptions in users); the exit code, set at ``quitting``, follows
:mod:`pytest_cfn.measure.loadgen.verdicts`. The table is printed at ``test_stop`` under the web
UI, and at ``quit`` (after Locust's own statistics) when headless.
"""

from __future__ import annotations

import logging
import math
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
from locust.stats import StatsError

from cfn_harness.endwatch import EndWatch
from cfn_harness.timers import loop_backend
from pytest_cfn.cluster_nodes import client_list_of_every_master
from pytest_cfn.measure.loadgen.accounting import merge
from pytest_cfn.measure.loadgen.connections import ConnectionCount, count_connections, keep_largest
from pytest_cfn.measure.loadgen.machine_load import (
    MachineMark,
    others_cpu_s,
    others_note,
    runs_here,
    steal_cpu_s,
    steal_note,
)
from pytest_cfn.measure.loadgen.options import DEFAULT_AGENTS_PER_SWARM, HarnessOptions
from pytest_cfn.measure.loadgen.pacing import late_wake_note
from pytest_cfn.measure.loadgen.report import (
    RunFacts,
    build_metrics,
    build_result,
    generator_note,
    late_counts,
    outcome_of,
    process_cpu_percent,
    render_table,
)
from pytest_cfn.measure.loadgen.traffic import aligned_end
from pytest_cfn.measure.loadgen.verdicts import (
    EXIT_ABNORMAL,
    EXIT_CODES,
    EXIT_GATE_FAILED,
    EXIT_NOT_JUDGED,
    EXIT_PASSED,
)
from pytest_cfn.measure.metrics import ServerSampler, machine_info
from pytest_cfn.measure.metrics.server_cpu import CpuReading, cpu_delta, read_cpu
from pytest_cfn.measure.results import RedisInfo, RunResult, redact_url, write_result
from pytest_cfn.server_probe import check_server

log = logging.getLogger("cfn.harness")
time_ns = time.time_ns
END_LEAD_S = 0.3
STOP_AHEAD_S = 0.1
"""With ``-t`` (or ``--cfn-window``), the window ends this long before Locust stops the test:
Locust's ``stop()`` first builds ``inspect.stack()`` for a debug line, which held a stand-alone
process's loop 15-25 ms (greenlet switches traced here), and there the agents being measured
run: inside the window it made the last 300 ms's deliveries the run's p99.9 (10 ms)."""
FINAL_GRACE_S = 10.0
SETTLE_GRACE_S = 2.0
"""How long after the window's end plus the drain the workers are told to settle even if one
has not said it sent its last measured event (a stalled or lost worker)."""
READY_TIMEOUT_S = 60
EXIT_RANK = {EXIT_PASSED: 0, EXIT_NOT_JUDGED: 1, EXIT_GATE_FAILED: 2, EXIT_ABNORMAL: 3}


class Conductor:
    """Master-side (or stand-alone) control of the harness's runs."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.options = HarnessOptions()
        self.server: Any = None
        self.sampler: ServerSampler | None = None
        self.client: redis.Redis | None = None
        self.agents = 0
        self.exit_code: int | None = None
        self.runs = 0
        self._auto_swarms = True
        self._greenlets: list[gevent.Greenlet] = []
        self.watch = EndWatch(environment)
        self._new_run()

    def _new_run(self) -> None:
        """Forget the previous run (the web UI can start several in one process)."""
        self.window_start: int | None = None
        self.finals: dict[str, dict[str, Any]] = {}
        self.sent: set[str] = set()
        self.settled = False
        self.expected: set[str] = set()
        self.participants: set[str] = set()
        self.peak: ConnectionCount | None = None
        self.server_cpu_start: dict[str, CpuReading] | None = None
        self.server_cpu_end: dict[str, CpuReading] | None = None
        self.machine_start: MachineMark | None = None
        self.machine_end: MachineMark | None = None
        self.failed: bool | None = None
        self.ready: dict[str, tuple[int, int]] = {}
        self.unready = 0
        self.subscribe_s = 0.0
        self.printed = False
        self.table = ""
        self.report_path: Path | None = None
        self.started = False
        self._finishing: gevent.Greenlet | None = None
        self._opening: gevent.Greenlet | None = None
        self.window_end: int | None = None
        self._spawned_at = time.monotonic()

    def start(self) -> None:
        """At init: settings, the server, the samplers."""
        parsed = self.environment.parsed_options
        assert parsed is not None
        values = vars(parsed)
        self.options = HarnessOptions.from_values(values)
        self._auto_swarms = not self.options.swarms
        self._total_rate = self.options.total_rate
        self.agents = int(values.get("num_users") or 0) or 1
        if not self.options.redis:
            from pytest_cfn.server import RedisServer

            self.server = RedisServer().start()
            parsed.cfn_redis = self.server.url
            log.info("cfn: started an embedded redis-server %s at %s (%s)", self.server.version,
                     self.server.url, self.server.choice.describe())
        if not self.options.namespace:
            parsed.cfn_namespace = f"lt{os.getpid()}x{os.urandom(3).hex()}"
        self._share_settings(self.agents)
        url = str(self.options.redis)
        check_server(url)
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, client_name="cfn-sampler")
        self.client.ping()
        self.sampler = ServerSampler.from_url(url, interval=1.0).start()
        self._greenlets.append(gevent.spawn(self._count_connections))

    def _share_settings(self, agents: int) -> None:
        """Swarms, per-agent rate and worker slots for ``agents`` users, into the options
        Locust ships to the workers with the spawn message."""
        parsed = self.environment.parsed_options
        assert parsed is not None
        options = self.options
        parsed.cfn_swarms = options.swarm_count(agents) if self._auto_swarms else options.swarms
        parsed.cfn_swarm_size = DEFAULT_AGENTS_PER_SWARM if self._auto_swarms else 0
        if self._total_rate is not None:
            parsed.cfn_rate = self._total_rate / max(1, agents)
        else:
            parsed.cfn_rate = options.rate
        parsed.cfn_total_rate = None
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            active = runner.clients.ready + runner.clients.running + runner.clients.spawning
            ids = sorted(str(c.id) for c in active)
            parsed.cfn_worker_slots = {client_id: i for i, client_id in enumerate(ids)}
            # each worker's agents take one block of consecutive slots, so a swarm lives in
            # one process (its events are read once there, not once per process)
            parsed.cfn_worker_block = math.ceil(agents / len(ids)) if ids else 0
            self.participants = set(ids)
        self.options = HarnessOptions.from_values(vars(parsed))

    def on_test_start(self, **_: Any) -> None:
        """Before any user spawns: a fresh run, dealt for the number of users asked for."""
        if self._finishing is not None:
            self._new_run()
        self.started = True
        self.runs += 1
        parsed = self.environment.parsed_options
        assert parsed is not None
        self.agents = int(getattr(parsed, "num_users", 0) or 0) or self.agents
        self._share_settings(self.agents)
        self.watch.begin(self.participants)
        run_time = getattr(parsed, "run_time", None)
        if run_time:  # Locust's -t timer started just before this (see STOP_AHEAD_S)
            self._greenlets.append(gevent.spawn_later(
                max(0.0, run_time - END_LEAD_S - STOP_AHEAD_S), self._end_ahead, self.runs))

    def _count_connections(self) -> None:
        while self.client is not None:
            if self.started and self._finishing is None:
                try:
                    # On Redis Cluster: every master's clients (each bus is on its swarm's).
                    entries = client_list_of_every_master(self.client)
                    sample = count_connections(entries, self.options.namespace)
                    self.peak = keep_largest(self.peak, sample)
                except (redis.RedisError, OSError) as exc:
                    log.debug("CLIENT LIST failed: %s", exc)
            gevent.sleep(1.0)

    def _server_cpu(self) -> dict[str, CpuReading] | None:
        """used_cpu_sys + used_cpu_user of the server (on Redis Cluster: of every master,
        each with its run id, so a failover or restart in the window is told apart)."""
        if self.client is None:
            return None
        try:
            return read_cpu(self.client)
        except (redis.RedisError, OSError):
            return None

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
        self.machine_start = MachineMark.now()
        if self.options.window is not None:
            self._greenlets.append(gevent.spawn_later(
                # the end is announced END_LEAD_S ahead (see _gather_and_report)
                max(0.0, (self.window_start - time_ns()) / 1e9 + self.options.window - END_LEAD_S),
                self._window_done, self.window_start,
            ))

    def _window_done(self, window_start: int) -> None:
        """``--cfn-window`` has passed: end the test as ``-t`` would (headless: quit; under
        the web UI: stop, the UI stays up), unless that test already ended."""
        runner = self.environment.runner
        assert runner is not None
        if self.window_start != window_start or self._finishing is not None:
            return
        log.info("cfn: the %g s window is complete, stopping the test", self.options.window)
        finishing = self._begin_finishing()
        while self.window_end is None and not finishing.ready():
            gevent.sleep(0.01)
        gevent.sleep(max(0.0, ((self.window_end or 0) - time_ns()) / 1e9 + STOP_AHEAD_S))
        if getattr(self.environment.parsed_options, "headless", False):
            runner.quit()
        else:
            runner.stop()

    def _end_ahead(self, run: int) -> None:
        """``-t`` is STOP_AHEAD_S + END_LEAD_S away: end this run's window before it."""
        if self.runs == run and self.started:
            self._begin_finishing()

    def _mark_end(self) -> None:
        """At the window's end: the server's and the machine's CPU (the drain left out)."""
        self.server_cpu_end = self._server_cpu()
        self.machine_end = MachineMark.now()

    def on_final(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        self.finals[str(msg.node_id)] = msg.data

    def on_sent(self, environment: Environment, msg: RpcMessage, **_: Any) -> None:
        """A worker has sent its last measured event: once every worker has, they settle."""
        self.sent.add(str(msg.node_id))
        if self.expected and self.expected - set(self.watch.gone) <= self.sent:
            self._settle()

    def _settle(self) -> None:
        """Tell every worker to count its deliveries to the end: no process sends a measured
        event any more (a worker that settled before another sent its last ones counted
        those as never arrived)."""
        runner = self.environment.runner
        if not self.settled and isinstance(runner, MasterRunner):
            self.settled = True
            runner.send_message("cfn_settle", {})

    def finish(self) -> None:
        """Close the window, gather, judge and write (once per run); waits until that is done,
        in a greenlet of its own that Locust's stop or quit cannot kill half-way."""
        if not self.started:
            return
        self._begin_finishing().join()

    def _begin_finishing(self) -> gevent.Greenlet:
        if self._finishing is None:
            self.watch.stopping = True
            self._finishing = gevent.spawn(self._finish)
        return self._finishing

    def _finish(self) -> None:
        try:
            self._gather_and_report()
        except Exception as exc:  # the run must still end with a table, a result, an exit code
            log.exception("cfn: building the report failed")
            self._write_fallback(f"the harness failed to build its report: {exc!r}")

    def _gather_and_report(self) -> None:
        runner = self.environment.runner
        assert runner is not None
        interval = round(1e9 / self.options.rate)
        now = time_ns()
        start = self.window_start
        end = now if start is None else aligned_end(start, now + int(END_LEAD_S * 1e9), interval)
        self.window_end = end
        if isinstance(runner, MasterRunner):
            self.expected = self.watch.participants | {str(c.id) for c in runner.clients.all}
            wanted = int(getattr(self.environment.parsed_options, "expect_workers", 0) or 0)
            if wanted and len(self.expected) < wanted:
                self.watch.note(f"{len(self.expected)} worker(s) took part, "
                                   f"{wanted} expected (--expect-workers)")
        else:
            self.expected = {"local"}
        if self._opening is not None and start is None:
            self._opening.kill(block=False)
        runner.send_message("cfn_stop", {"end_ns": end})
        end_mark = gevent.spawn_later(max(0.0, (end - time_ns()) / 1e9), self._mark_end)
        until_end = max(0.0, (end - time_ns()) / 1e9)
        settle_by = time.monotonic() + until_end + self.options.drain + SETTLE_GRACE_S
        deadline = time.monotonic() + until_end + 2 * self.options.drain + FINAL_GRACE_S
        while time.monotonic() < deadline and not self.expected - set(self.watch.gone) <= set(
            self.finals
        ):
            if not self.settled and (
                time.monotonic() > settle_by or self.expected - set(self.watch.gone) <= self.sent
            ):
                self._settle()  # every worker sent its last, or one is late: settle anyway
            gevent.sleep(0.1)
        missing = sorted(self.expected - set(self.finals))
        if missing:
            self.watch.note(f"{len(self.expected) - len(missing)} of {len(self.expected)} "
                               f"process(es) sent their final report; none from {missing}")
        self.watch.note_exceptions(runner)
        end_mark.join(timeout=FINAL_GRACE_S)
        self._report(start, end, self.server_cpu_end)
        self._show_lost_as_failures()

    def _report(
        self, start: int | None, end: int, server_cpu_end: dict[str, CpuReading] | None
    ) -> None:
        options = self.options
        window_s = (end - start) / 1e9 if start is not None and end > start else 0.0
        snapshots = [self.finals[k] for k in sorted(self.finals)]
        totals = merge(snapshots, start if start is not None else end)
        self.totals = totals
        summary = self.sampler.summary() if self.sampler is not None else None
        server_cpu = None
        topology_note = None
        if self.server_cpu_start and server_cpu_end:
            delta = cpu_delta(self.server_cpu_start, server_cpu_end)
            server_cpu, topology_note = delta.cpu_s, delta.note()
        late, critical_late = late_counts(snapshots)
        others = steal = None
        mark_start, mark_end = self.machine_start, self.machine_end
        if mark_start is not None and mark_end is not None:
            steal = steal_cpu_s(mark_start, mark_end)
            if runs_here((str(s.get("host", "")) for s in snapshots), options.redis or ""):
                others = others_cpu_s(
                    mark_start, mark_end,
                    sum(float(s.get("sums", {}).get("window_cpu_s", 0.0)) for s in snapshots),
                    server_cpu, master_apart=isinstance(self.environment.runner, MasterRunner),
                )
        facts = RunFacts(
            agents=sum(int(s.get("agents", 0)) for s in snapshots) or self.agents,
            swarms=len(totals.listeners) or options.swarms,
            agent_rate=options.rate,
            window_s=window_s,
            harness_cpu_s=totals.sums.get("cpu_s", 0.0),
            harness_window_cpu_s=totals.sums.get("window_cpu_s"),
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
            late=late,
            critical_late=critical_late,
            process_cpu_percent=process_cpu_percent(snapshots),
            others_cpu_s=others,
            steal_cpu_s=steal,
            abnormal=list(self.watch.reasons),
        )
        saturation = generator_note(totals)
        if saturation is not None:
            facts.notes.append(saturation)
        facts.notes.extend(self._notes(totals.late_subscribers, window_s, snapshots))
        for note in (others_note(others, window_s), steal_note(steal, window_s),
                     late_wake_note(totals.sums), topology_note):
            if note is not None:
                facts.notes.append(note)
        metrics = build_metrics(options, totals, facts)
        self.table = render_table(options, metrics, facts)
        outcome = outcome_of(metrics, facts)
        self.failed = outcome.exit_code != EXIT_PASSED
        self._keep_exit_code(outcome.exit_code)
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
                "channels": sorted({str(s.get("channels")) for s in snapshots}),
                "monkey_patched": all(bool(s.get("monkey_patched")) for s in snapshots)
                and bool(snapshots),
                "processes_reported": sorted(self.finals),
                "processes_expected": sorted(self.expected),
                "agents_per_swarm": dict(sorted(totals.listeners.items())),
                "late_exact": all(bool((s.get("late") or {}).get("exact", True))
                                  for s in snapshots),
                "overdue_unmeasured": int(totals.sums.get("overdue_unmeasured", 0.0)),
                "run": self.runs,
                "window_start_ns": start,
                "window_end_ns": end,
                "conductor_backend": loop_backend(),
                "subscribed_after_s": round(self.subscribe_s, 3),
                "server_samples": msgspec.to_builtins(self.sampler.samples)
                if self.sampler is not None
                else [],
            },
        )
        self.report_path = write_result(self._report_file(facts.agents), result)
        self.watch.end()

    def _report_file(self, agents: int) -> Path:
        options = self.options
        if options.report:
            path = Path(options.report)
            return path if self.runs <= 1 else path.with_stem(f"{path.stem}-run{self.runs}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path("reports") / f"locust-{options.model}-{agents}-{stamp}-{self.runs}.json"

    def _write_fallback(self, reason: str) -> None:
        """The result of a run whose report could not be built: the reason, exit code 4."""
        abnormal = [r for r in self.watch.reasons if r != reason] + [reason]
        self.watch.end()
        verdict = {"outcome": "abnormal", "exit_code": EXIT_ABNORMAL, "abnormal": abnormal}
        self.table = "\n".join([
            "pytest-cfn load harness: no figures",
            "run: ABNORMAL END: " + "; ".join(abnormal),
            f"exit code {EXIT_ABNORMAL}: {EXIT_CODES[EXIT_ABNORMAL]}",
        ])
        self._keep_exit_code(EXIT_ABNORMAL)
        self.failed = True
        result = RunResult(tool="locust", redis=RedisInfo(version=""), machine=machine_info(),
                           extra={"abnormal": abnormal, "verdict": verdict,
                                  "processes_reported": sorted(self.finals),
                                  "processes_expected": sorted(self.expected)})
        try:
            self.report_path = write_result(self._report_file(self.agents), result)
        except OSError as exc:
            log.error("cfn: cannot write the result: %s", exc)

    def _keep_exit_code(self, code: int) -> None:
        if self.exit_code is None or EXIT_RANK[code] > EXIT_RANK[self.exit_code]:
            self.exit_code = code

    def _show_lost_as_failures(self) -> None:
        """Lost deliveries in Locust's failure column: one ``deliver`` row of requests that
        never got a response (the master's statistics are the ones Locust prints and shows)."""
        lost = self.totals.lost()
        if not lost:
            return
        stats = self.environment.stats
        name = "lost (never arrived)"
        bus = self.totals.bus
        error = (f"{lost} measured deliveries never arrived (bus sequence gaps "
                 f"{bus.get('lost', 0)}, queue drops {bus.get('dropped', 0)})")
        second = int(time.time())
        for entry in (stats.get(name, "deliver"), stats.total):
            entry.num_requests += lost
            entry.num_none_requests += lost
            entry.num_failures += lost
            entry.num_reqs_per_sec[second] += lost
            entry.num_fail_per_sec[second] += lost
        stats.errors[StatsError.create_key("deliver", name, error)] = StatsError(
            "deliver", name, error, occurrences=lost
        )

    def _notes(self, late: int, window_s: float, snapshots: list[dict[str, Any]]) -> list[str]:
        notes = []
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
        overdue = sum(int((s.get("sums") or {}).get("overdue_unmeasured", 0)) for s in snapshots)
        if overdue:
            notes.append(
                f"{overdue:,} event(s) intended inside the window went out more than "
                f"--cfn-drain ({self.options.drain:g} s) after its end: sent unmeasured, left "
                "out of throughput, loss and latency (their send lag is in send_lag_p99)"
            )
        inexact = [str(s.get("process")) for s in snapshots
                   if not (s.get("late") or {}).get("exact", True)]
        if inexact:
            notes.append(f"process(es) {', '.join(inexact)} heard of the window's end long after "
                         "it (stalled): their late count is a lower bound")
        backends = {str(s.get("gevent_backend")) for s in snapshots}
        if backends - {"linux_iouring", "select"}:
            notes.append(
                f"gevent loop backend {sorted(backends)} wakes timers ~1 ms late: send lag and "
                "latency from the intended time include it"
            )
        return notes

    def on_test_stop(self, **_: Any) -> None:
        """After the test stopped: under the web UI the table is printed now (STOP)."""
        self.finish()
        parsed = self.environment.parsed_options
        if not getattr(parsed, "headless", False):
            self.print_table()

    def gate_exit_code(self) -> None:
        """At quitting: finish a run that is still going, then the worst run's exit code."""
        if self.started:
            self.finish()
        if self.exit_code is not None:
            self.environment.process_exit_code = self.exit_code

    def print_table(self) -> None:
        if self.table and not self.printed:
            self.printed = True
            print(self.table, flush=True)
            if self.report_path is not None:
                print(f"cfn: result written to {self.report_path}", flush=True)

    def print_and_stop(self) -> None:
        """At quit: the table last (unless the STOP button printed it), then the server goes."""
        self.print_table()
        self.watch.close()
        gevent.killall(self._greenlets, block=False)
        if self.sampler is not None:
            self.sampler.stop()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.server is not None:
            self.server.stop()
            self.server = None


def is_conductor(environment: Environment) -> bool:
    return isinstance(environment.runner, (MasterRunner, LocalRunner))
