"""The plugin's state for one pytest process, kept in ``config.stash[SESSION_KEY]``.

Roles: without xdist one process runs the tests and reports. Under xdist the controller
hands every worker the run's choice of server through ``workerinput`` (and, for a
``--cfn-redis`` URL, the endpoint it checked at start-up); workers run tests and ship their
performance samples (and the endpoint they checked or started) back through
``workeroutput``; the controller merges them and reports and gates once.

Nothing starts or contacts a server until a test asks for one (``endpoint_for_tests``,
called by the session-scoped ``cfn_server`` fixture that every server fixture depends on):
a URL from ``CFN_REDIS_URL`` or ini ``cfn_redis`` is PINGed then (by each xdist worker that
needs it, never by the controller), an embedded server is started then (under xdist by the
first worker that needs it, for all; see ``shared_server``). Only a ``--cfn-redis`` URL is
checked at session start. A server that cannot be had fails only the tests that need it,
each at once with the reason found the first time (a dead server is not tried again per
test); the reason is said once more at the end of the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_cfn.pytest_support.settings import (
    RedisChoice,
    Settings,
    load_settings,
    read_baseline,
)

if TYPE_CHECKING:
    from pytest_cfn.measure.results import RunResult
    from pytest_cfn.pytest_support.endpoint import RedisEndpoint, StoppableServer
    from pytest_cfn.pytest_support.perf_sample import PerfSample
    from pytest_cfn.pytest_support.shared_server import SharedServer
    from pytest_cfn.pytest_support.summary import Outcome
    from pytest_cfn.server import ServerChoice

WORKER_KEY = "cfn"


class CfnSession:
    """Settings, the server, the run id, and the performance samples of this process."""

    def __init__(
        self,
        settings: Settings,
        *,
        run_id: str,
        worker: str,
        is_worker: bool,
        endpoint: RedisEndpoint | None = None,
        binary: str | None = None,
        choice: ServerChoice | None = None,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.worker = worker
        self.is_worker = is_worker
        self.endpoint = endpoint
        self.binary = binary if binary is not None else settings.server_binary
        self.samples: list[PerfSample] = []
        self.workers_reported: list[str] = []
        self.workers_missing: list[str] = []
        self.outcome: Outcome | None = None
        self.baseline: RunResult | None = None
        self.server_failures: dict[str, int] = {}
        """Why no server could be had -> how many tests needed one (all workers')."""
        self.no_server_tests = 0
        self._server_failure: str | None = None
        self._test_failure = ""
        """What each test that needs a server is told once ``_server_failure`` is known."""
        self._choice = choice
        self._server: StoppableServer | None = None
        self._shared: SharedServer | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> CfnSession:
        settings = load_settings(config)
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        if workerinput is not None:
            from pytest_cfn.pytest_support.endpoint import RedisEndpoint

            data = workerinput.get(WORKER_KEY) or {}
            endpoint = data.get("endpoint")
            if data.get("redis"):
                # The controller's choice, so every worker uses (and checks) the same URL.
                settings = replace(settings, redis=RedisChoice(**data["redis"]))
            return cls(
                settings,
                run_id=str(data.get("run_id") or workerinput.get("testrunuid", ""))[:12]
                or uuid.uuid4().hex[:12],
                worker=str(workerinput.get("workerid", "gw")),
                is_worker=True,
                endpoint=RedisEndpoint.from_dict(endpoint) if endpoint else None,
                binary=data.get("binary"),
                choice=_choice_from(data.get("choice")),
            )
        session = cls(settings, run_id=uuid.uuid4().hex[:12], worker="main", is_worker=False)
        if settings.baseline_path is not None:
            session.baseline = read_baseline(settings.baseline_path, "--cfn-baseline")
        return session

    def open(self) -> None:
        """At session start: check what the user named on this command line (a
        ``--cfn-redis`` URL is PINGed, fakeredis looked up); a ``UsageError`` when it is
        unusable. A URL from ``CFN_REDIS_URL`` or ini ``cfn_redis`` is not touched here: it
        may be meant for another project, and a suite that needs no server must run. No
        server is started here."""
        choice = self.settings.redis
        if self.is_worker or choice.kind == "embedded" or not choice.checked_at_start:
            return
        from pytest_cfn.pytest_support.endpoint import check_url, require_fakeredis

        if choice.kind == "url":
            self.endpoint = check_url(choice)
        else:
            require_fakeredis(choice)

    def header(self) -> str:
        """One line for pytest's header: which server, and why."""
        choice = self.settings.redis
        run = f"(run {self.run_id})"
        if self.endpoint is not None:
            return f"cfn: {self.endpoint.describe()}, from {self.endpoint.source} {run}"
        if choice.kind == "url":
            from pytest_cfn.pytest_support.endpoint import describe_choice

            if choice.problem:
                what = choice.problem.split("; ", 1)[0].removeprefix(f"Redis URL {choice.url!r} ")
                return (
                    f"cfn: {describe_choice(choice)} is not a Redis URL ({what}); tests that "
                    f"need a server will error with the reason, the rest run {run}"
                )
            return (
                f"cfn: {describe_choice(choice)}; not checked until a test first needs "
                f"a server {run}"
            )
        if choice.kind == "fakeredis":
            return (
                f"cfn: fakeredis:// from {choice.source}: fakeredis's TCP server on loopback, "
                f"started when a test first needs it; figures are not representative {run}"
            )
        from pytest_cfn.pytest_support.endpoint import NoServerError

        try:
            chosen = self._choose_binary()
        except NoServerError:
            return (
                "cfn: no usable redis-server found; tests that need one will error (why, and "
                f"how to get one, is said at the end of the run) {run}"
            )
        return (
            f"cfn: embedded {chosen.describe()}; started when a test first needs "
            f"it {run}"
        )

    def _choose_binary(self) -> ServerChoice:
        """The embedded server's binary, once; NoServerError naming where a bad one was set."""
        if self._choice is None:
            from pytest_cfn.pytest_support.endpoint import choose_binary

            self._choice = choose_binary(self.binary, self.settings.server_binary_origin)
        return self._choice

    def endpoint_for_tests(self, shared_directory: Callable[[], Path]) -> RedisEndpoint:
        """The run's server, started now if this is the first test that needs one."""
        if self.endpoint is not None:
            return self.endpoint
        from pytest_cfn.pytest_support.endpoint import (
            NoServerError,
            check_url_for_tests,
            start_embedded,
            start_fakeredis,
        )

        if self._server_failure is not None:
            raise NoServerError(self._test_failure, pytrace=False)
        choice = self.settings.redis
        try:
            if choice.kind == "url":
                self.endpoint = check_url_for_tests(choice)
            elif choice.kind == "fakeredis":
                self.endpoint, self._server = start_fakeredis(choice)
            elif self.is_worker:
                from pytest_cfn.pytest_support.shared_server import SharedServer

                self._choose_binary()
                self._shared = SharedServer(shared_directory(), self.binary, self._choice)
                self.endpoint = self._shared.acquire()
            else:
                self._choose_binary()
                self.endpoint, self._server = start_embedded(self.binary, self._choice)
        except NoServerError as exc:
            self._server_failure = str(exc.msg)
            # A URL's reason is short and says how to fix it; a missing binary's is long.
            self._test_failure = (
                self._server_failure if choice.kind == "url" else _short(self._server_failure)
            )
            raise NoServerError(self._test_failure, pytrace=False) from None
        return self.endpoint

    def count_no_server(self) -> None:
        """A test failed for want of a server (counted by the report hook)."""
        self.no_server_tests += 1
        if self._server_failure is not None:
            self.server_failures[self._server_failure] = self.no_server_tests

    @property
    def started_server(self) -> bool:
        """True when this process started the run's server (not one it was handed)."""
        return self._server is not None or bool(self._shared and self._shared.started_here)

    def release_server(self) -> None:
        """Stop the server this process started (an xdist owner waits for the other users)."""
        server, self._server = self._server, None
        shared, self._shared = self._shared, None
        if server is not None:
            server.stop()
        if shared is not None:
            shared.release()

    def close(self) -> None:
        self.release_server()

    def require_endpoint(self) -> RedisEndpoint:
        if self.endpoint is None:
            raise RuntimeError(
                "pytest-cfn has no Redis endpoint yet: it is started by the cfn_server "
                "fixture, which every server fixture depends on"
            )
        return self.endpoint

    def report_endpoint(self) -> RedisEndpoint:
        """The server the run used, or a placeholder when no test needed one."""
        if self.endpoint is not None:
            return self.endpoint
        from pytest_cfn.pytest_support.endpoint import RedisEndpoint

        return RedisEndpoint(url="", version="", embedded=True, source="none started")

    def client(self) -> Any:
        """A new synchronous redis-py client of the run's server (fakeredis's too: TCP)."""
        import redis

        return redis.Redis.from_url(self.require_endpoint().url, protocol=2)

    def worker_input(self) -> dict[str, Any]:
        """What a worker needs: the run id, the run's choice of server (a URL from the
        environment or the ini file is passed unchecked: each worker checks it when a test
        first needs it), a ``--cfn-redis`` URL's endpoint (checked here once), and the
        binary the header named, so every worker runs the same one."""
        made = self._choice
        choice = None if made is None else {"path": made.path, "version": made.version,
                                            "why": made.why}
        endpoint = self.endpoint.to_dict() if self.endpoint is not None else None
        return {"run_id": self.run_id, "endpoint": endpoint, "binary": self.binary,
                "choice": choice, "redis": asdict(self.settings.redis)}

    def add_sample(self, sample: PerfSample) -> None:
        if not sample.is_empty():
            self.samples.append(sample)

    def worker_output(self) -> dict[str, Any]:
        from pytest_cfn.pytest_support.perf_sample import to_builtins

        return {
            "worker": self.worker,
            "samples": [to_builtins(s) for s in self.samples],
            # The server this worker started or checked, for the controller's report.
            "endpoint": self.endpoint.to_dict() if self.endpoint is not None else None,
            "server_failures": dict(self.server_failures),
        }

    def absorb_worker_output(self, node_id: str, output: dict[str, Any] | None) -> None:
        """Take a finished worker's samples; a crashed worker sends none and is noted."""
        if not output or WORKER_KEY not in output:
            self.workers_missing.append(node_id)
            return
        from pytest_cfn.pytest_support.perf_sample import from_builtins

        data = output[WORKER_KEY]
        self.workers_reported.append(str(data.get("worker", node_id)))
        self.samples.extend(from_builtins(item) for item in data.get("samples", []))
        if self.endpoint is None and data.get("endpoint"):
            from pytest_cfn.pytest_support.endpoint import RedisEndpoint

            self.endpoint = RedisEndpoint.from_dict(data["endpoint"])
        for reason, count in (data.get("server_failures") or {}).items():
            self.server_failures[reason] = self.server_failures.get(reason, 0) + int(count)

    def finish(self) -> Outcome | None:
        """Merge every sample, judge it, compare with the baseline; once, at the end. None
        (and nothing imported) for a run with no figures that asked for no gate or report."""
        settings = self.settings
        if not (self.samples or self.baseline or settings.gate or settings.report):
            return None
        from pytest_cfn.pytest_support.summary import build_outcome

        self.outcome = build_outcome(self.samples, settings, self.baseline, self._reference())
        return self.outcome

    def _reference(self) -> dict[str, Any] | None:
        """The same-run reference a comparison with a baseline needs, measured on a real
        server when figures are compared or written (see ``pytest_cfn.measure.results``)."""
        endpoint = self.endpoint
        wanted = self.baseline is not None or self.settings.report is not None
        if endpoint is None or endpoint.is_fake or not self.samples or not wanted:
            return None
        from pytest_cfn._errors import CfnError
        from pytest_cfn.measure.sweep.references import same_run_reference

        try:
            return same_run_reference(endpoint.url, f"cfn-reference:{self.run_id}")
        except (CfnError, OSError):
            return None

    def result(self) -> RunResult:
        from pytest_cfn.pytest_support.summary import build_result

        outcome = self.outcome if self.outcome is not None else self.finish()
        if outcome is None:
            from pytest_cfn.pytest_support.summary import build_outcome

            outcome = self.outcome = build_outcome(self.samples, self.settings, self.baseline)
        return build_result(outcome, self.report_endpoint(), self.report_extra())

    def report_extra(self) -> dict[str, Any]:
        endpoint = self.report_endpoint()
        return {
            "run_id": self.run_id,
            "server_pid": endpoint.pid,
            "server_source": endpoint.source,
            "workers": sorted(self.workers_reported),
            "workers_without_results": sorted(self.workers_missing),
            "targets_from": list(self.settings.target_sources),
        }


SESSION_KEY = pytest.StashKey[CfnSession]()


def get_session(config: pytest.Config) -> CfnSession:
    return config.stash[SESSION_KEY]


def _short(reason: str) -> str:
    """The per-test form of a no-server reason: its first clause; the rest is said once."""
    return (
        f"{reason.split('; ', 1)[0]} (this test needs a Redis server; how to get one is said "
        "once, at the end of the run)"
    )


def _choice_from(data: dict[str, str] | None) -> ServerChoice | None:
    if not data:
        return None
    from pytest_cfn.server import ServerChoice

    return ServerChoice(data["path"], data["version"], data["why"])
