"""The plugin's state for one pytest process, kept in ``config.stash[SESSION_KEY]``.

Roles: without xdist one process opens the server, runs the tests and reports. Under
xdist the controller opens the server once and hands its URL to every worker through
``workerinput``; workers run tests and ship their performance samples back through
``workeroutput``; the controller merges them and reports and gates once.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from pytest_cfn._errors import CfnError
from pytest_cfn.pytest_support.endpoint import (
    RedisEndpoint,
    StoppableServer,
    check_url,
    fakeredis_endpoint,
    start_embedded,
)
from pytest_cfn.pytest_support.perf_sample import PerfSample, from_builtins, to_builtins
from pytest_cfn.pytest_support.settings import Settings, load_settings, read_baseline

if TYPE_CHECKING:
    from pytest_cfn.pytest_support.summary import Outcome
    from pytest_cfn.results import RunResult

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
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.worker = worker
        self.is_worker = is_worker
        self.endpoint = endpoint
        self.samples: list[PerfSample] = []
        self.workers_reported: list[str] = []
        self.workers_missing: list[str] = []
        self.outcome: Outcome | None = None
        self.baseline: RunResult | None = None
        self._server: StoppableServer | None = None
        self._fake_server: Any = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> CfnSession:
        settings = load_settings(config)
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        if workerinput is not None and WORKER_KEY in workerinput:
            data = workerinput[WORKER_KEY]
            return cls(
                settings,
                run_id=data["run_id"],
                worker=str(workerinput.get("workerid", "gw")),
                is_worker=True,
                endpoint=RedisEndpoint.from_dict(data["endpoint"]),
            )
        if workerinput is not None:
            return cls(
                settings,
                run_id=str(workerinput.get("testrunuid", uuid.uuid4().hex))[:12],
                worker=str(workerinput.get("workerid", "gw")),
                is_worker=True,
            )
        session = cls(settings, run_id=uuid.uuid4().hex[:12], worker="main", is_worker=False)
        if settings.baseline_path is not None:
            session.baseline = read_baseline(settings.baseline_path, "--cfn-baseline")
        return session

    def open(self) -> RedisEndpoint:
        """Start or check the run's server (not on a worker); UsageError when impossible."""
        if self.endpoint is not None:
            return self.endpoint
        if self.is_worker:
            raise pytest.UsageError(
                "pytest-cfn: this xdist worker got no Redis endpoint from the controller "
                "(is the plugin disabled there?); workers never start a server of their own"
            )
        choice = self.settings.redis
        if choice.kind == "fakeredis":
            self.endpoint = fakeredis_endpoint(choice)
        elif choice.kind == "url":
            self.endpoint = check_url(choice)
        else:
            self.endpoint, self._server = start_embedded(self.settings.server_binary)
        return self.endpoint

    def close(self) -> None:
        """Stop the embedded server if this process started it."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def require_endpoint(self) -> RedisEndpoint:
        if self.endpoint is None:
            raise RuntimeError(
                "pytest-cfn has no Redis endpoint: the session did not start (was "
                "pytest_sessionstart skipped?)"
            )
        return self.endpoint

    def client(self) -> Any:
        """A new synchronous client of the run's server (a FakeRedis one for fakeredis)."""
        endpoint = self.require_endpoint()
        if endpoint.is_fake:
            import fakeredis

            if self._fake_server is None:
                self._fake_server = fakeredis.FakeServer()
            return fakeredis.FakeRedis(server=self._fake_server)
        import redis

        return redis.Redis.from_url(endpoint.url, protocol=2)

    def worker_input(self) -> dict[str, Any]:
        """What a worker needs: the server (never started again there) and the run id."""
        return {"run_id": self.run_id, "endpoint": self.require_endpoint().to_dict()}

    def add_sample(self, sample: PerfSample) -> None:
        if not sample.is_empty():
            self.samples.append(sample)

    def worker_output(self) -> dict[str, Any]:
        return {"worker": self.worker, "samples": [to_builtins(s) for s in self.samples]}

    def absorb_worker_output(self, node_id: str, output: dict[str, Any] | None) -> None:
        """Take a finished worker's samples; a crashed worker sends none and is noted."""
        if not output or WORKER_KEY not in output:
            self.workers_missing.append(node_id)
            return
        data = output[WORKER_KEY]
        self.workers_reported.append(str(data.get("worker", node_id)))
        self.samples.extend(from_builtins(item) for item in data.get("samples", []))

    def finish(self) -> Outcome:
        """Merge every sample, judge it, compare with the baseline; once, at the end."""
        from pytest_cfn.pytest_support.summary import build_outcome

        self.outcome = build_outcome(self.samples, self.settings, self.baseline,
                                     self._reference())
        return self.outcome

    def _reference(self) -> dict[str, Any] | None:
        """The same-run reference a comparison with a baseline needs, measured on a real
        server when figures are compared or written (see ``pytest_cfn.results``)."""
        endpoint = self.endpoint
        wanted = self.baseline is not None or self.settings.report is not None
        if endpoint is None or endpoint.is_fake or not self.samples or not wanted:
            return None
        from pytest_cfn.sweep.references import same_run_reference

        try:
            return same_run_reference(endpoint.url, f"cfn-reference:{self.run_id}")
        except (CfnError, OSError):
            return None

    def result(self) -> RunResult:
        from pytest_cfn.pytest_support.summary import build_result

        outcome = self.outcome if self.outcome is not None else self.finish()
        return build_result(outcome, self.require_endpoint(), self.report_extra())

    def report_extra(self) -> dict[str, Any]:
        endpoint = self.require_endpoint()
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
