"""A Redis URL from CFN_REDIS_URL or ini cfn_redis never breaks a session that needs no server.

It may be meant for another project: it is not contacted until a test needs a server (not by
the xdist controller, not by a worker), and then only the tests that need one error, with the
URL, where it came from, what failed and how to fix it; a dead server is tried once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from not_redis import EXPECTED, not_redis_url
from plugin_runs import free_port, output, project, read_json, run

pytest_plugins = ["pytester"]

XDIST = pytest.param(("-n", "2"), id="xdist")
PLAIN = pytest.param((), id="plain")

NO_CFN = """
    def test_one():
        assert 1

    def test_two():
        assert 2
"""
ONE_NEEDS_A_SERVER = """
    def test_needs_redis(cfn_redis):
        assert cfn_redis.ping()

    def test_plain():
        assert 1
"""
THREE_NEED_A_SERVER = """
    def test_redis(cfn_redis):
        pass

    def test_bus(cfn_event_bus):
        pass

    def test_url(cfn_redis_url):
        pass

    def test_plain():
        assert 1
"""


class CountingListener:
    """A loopback port that counts the connections made to it. ``answer=False`` holds each
    one open and says nothing (a hung server); otherwise each is closed at once."""

    def __init__(self, *, answer: bool) -> None:
        self.answer = answer
        self.connections = 0
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.answer:
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def closing_listener() -> Iterator[CountingListener]:
    listener = CountingListener(answer=True)
    yield listener
    listener.close()


@pytest.fixture
def silent_listener() -> Iterator[CountingListener]:
    listener = CountingListener(answer=False)
    yield listener
    listener.close()


# One check of a URL opens up to two connections: the PING, and a TLS-handshake probe when
# the PING got no answer (see pytest_cfn.server_probe). A check per test would open more.
MAX_CONNECTIONS_PER_CHECK = 2


def _dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def _name_url(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str,
              url: str) -> None:
    if source == "env":
        monkeypatch.setenv("CFN_REDIS_URL", url)
    else:
        ini = (pytester.path / "tox.ini").read_text().rstrip("\n")
        (pytester.path / "tox.ini").write_text(f"{ini}\ncfn_redis = {url}\n")


@pytest.mark.parametrize("xdist", [PLAIN, XDIST])
def test_a_suite_without_cfn_tests_passes_when_the_environment_names_a_dead_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: tuple[str, ...]
) -> None:
    project(pytester, monkeypatch, test_a=NO_CFN)
    url = _dead_url()
    monkeypatch.setenv("CFN_REDIS_URL", url)
    result = run(pytester, *xdist)
    assert result.ret == pytest.ExitCode.OK, output(result)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [f"cfn: CFN_REDIS_URL='{url}' (from the environment); not checked until a test first "
         "needs a server*"]
    )
    assert "ERROR" not in output(result)

    without_plugin = run(pytester, "-p", "no:cfn", *xdist)
    assert without_plugin.ret == pytest.ExitCode.OK, output(without_plugin)
    without_plugin.assert_outcomes(passed=2)
    assert "cfn:" not in output(without_plugin)


@pytest.mark.parametrize(
    ("source", "xdist"),
    [pytest.param("env", (), id="env-plain"), pytest.param("ini", ("-n", "2"), id="ini-xdist")],
)
def test_nobody_contacts_the_url_until_a_test_needs_a_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    closing_listener: CountingListener, source: str, xdist: tuple[str, ...],
) -> None:
    if xdist:
        pytest.importorskip("xdist")
    project(pytester, monkeypatch, test_a=NO_CFN)
    _name_url(pytester, monkeypatch, source, closing_listener.url)
    report = pytester.path / "result.json"
    result = run(pytester, "--cfn-gate", f"--cfn-report={report}", *xdist)
    assert result.ret == pytest.ExitCode.OK, output(result)
    result.assert_outcomes(passed=2)
    assert closing_listener.connections == 0, "the URL was contacted by a session needing none"
    assert read_json(report)["extra"]["server_source"] == "none started"

    (pytester.path / "test_b.py").write_text("def test_needs(cfn_redis):\n    pass\n")
    result = run(pytester, *xdist)
    result.assert_outcomes(passed=2, errors=1)
    assert 0 < closing_listener.connections <= MAX_CONNECTIONS_PER_CHECK, (
        "the test that needs a server did not check it (or checked it more than once)"
    )


@pytest.mark.parametrize(
    ("source", "xdist"),
    [pytest.param("env", (), id="env-plain"), pytest.param("ini", (), id="ini-plain"),
     pytest.param("env", ("-n", "2"), id="env-xdist")],
)
def test_only_the_test_that_needs_the_server_errors_and_says_why(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str,
    xdist: tuple[str, ...],
) -> None:
    if xdist:
        pytest.importorskip("xdist")
    project(pytester, monkeypatch, test_a=ONE_NEEDS_A_SERVER)
    url = _dead_url()
    port = url.rsplit(":", 1)[1].split("/")[0]
    _name_url(pytester, monkeypatch, source, url)
    result = run(pytester, "-rE", *xdist)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(passed=1, errors=1)
    named = (f"CFN_REDIS_URL='{url}' (from the environment)" if source == "env" else
             f"ini option cfn_redis='{url}' (from {pytester.path / 'tox.ini'})")
    fix = "or unset it" if source == "env" else "fix cfn_redis in"
    result.stdout.fnmatch_lines(
        [f"pytest-cfn: {named}, checked when a test first needed a server: cannot reach "
         f"Redis at 127.0.0.1:{port}: connection refused*{fix}*"]
    )
    text = output(result)
    assert "ERROR at setup of test_needs_redis" in text
    assert "Traceback" not in text and "INTERNALERROR" not in text


@pytest.mark.slow
def test_a_dead_server_is_tried_once_not_once_per_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    silent_listener: CountingListener,
) -> None:
    project(pytester, monkeypatch, test_a=THREE_NEED_A_SERVER)
    monkeypatch.setenv("CFN_REDIS_URL", silent_listener.url)
    result = run(pytester, "-rE")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(passed=1, errors=3)
    assert 0 < silent_listener.connections <= MAX_CONNECTIONS_PER_CHECK, (
        f"{silent_listener.connections} connections: the tests tried the hung server again"
    )
    assert output(result).count("answered nothing to PING") >= 3, output(result)


@pytest.mark.parametrize("kind", ["http", "tls", "wrong-password", "no-password"])
def test_each_way_an_environment_url_is_unusable_is_named_in_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kind: str, tmp_path: Path
) -> None:
    project(pytester, monkeypatch, test_a=ONE_NEEDS_A_SERVER)
    with ExitStack() as stack:
        url = not_redis_url(kind, stack, tmp_path)
        monkeypatch.setenv("CFN_REDIS_URL", url)
        result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.assert_outcomes(passed=1, errors=1)
    shown = url.replace("//:wrong-one@", "//***@")
    result.stdout.fnmatch_lines(
        [f"pytest-cfn: CFN_REDIS_URL='{shown}' (from the environment), checked when a test "
         f"first needed a server: *{EXPECTED[kind]}*"]
    )
    assert "wrong-one" not in output(result)


def test_a_malformed_environment_url_breaks_neither_help_nor_an_unrelated_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(pytester, monkeypatch, test_a=NO_CFN)
    monkeypatch.setenv("CFN_REDIS_URL", "http://127.0.0.1:6379")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.OK, output(result)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["cfn: CFN_REDIS_URL='http://127.0.0.1:6379' (from the environment) is not a Redis URL "
         "(has scheme 'http'); tests that need a server will error*"]
    )
    shown = run(pytester, "--help")
    assert shown.ret == pytest.ExitCode.OK, output(shown)
    text = " ".join(shown.stdout.str().split())
    assert "CFN_REDIS_URL or ini cfn_redis, checked only when a test first needs a server" in text
    assert "A URL given here is PINGed at start-up (exit 4 when unusable)" in text


def test_a_url_checked_by_the_workers_is_the_one_the_report_names(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, cfn_redis_url: str
) -> None:
    pytest.importorskip("xdist")
    project(
        pytester, monkeypatch,
        test_a="""
        def test_figures(cfn_perf):
            cfn_perf.record_throughput(1000, 1.0)
        """,
    )
    monkeypatch.setenv("CFN_REDIS_URL", cfn_redis_url)
    report = pytester.path / "result.json"
    result = run(pytester, "-n", "2", "--dist", "each", f"--cfn-report={report}")
    assert result.ret == pytest.ExitCode.OK, output(result)
    result.assert_outcomes(passed=2)
    data = read_json(report)
    assert data["extra"]["server_source"] == "CFN_REDIS_URL"
    assert data["redis"]["url"] == cfn_redis_url and data["redis"]["version"]


@pytest.mark.parametrize("source", ["command-line", "env"])
def test_fakeredis_missing_stops_only_a_run_that_asked_for_it_on_the_command_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    project(pytester, monkeypatch, test_a=ONE_NEEDS_A_SERVER)
    shadow = pytester.mkdir("shadow")
    (shadow / "fakeredis").mkdir()
    (shadow / "fakeredis" / "__init__.py").write_text("raise ImportError('no fakeredis')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    if source == "env":
        monkeypatch.setenv("CFN_REDIS_URL", "fakeredis://")
        result = run(pytester)
        assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(
            ["pytest-cfn: CFN_REDIS_URL=fakeredis:// needs the fakeredis package (pip install "
             "*) (from the environment)*"]
        )
        return
    result = run(pytester, "--cfn-redis=fakeredis://")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output(result)
    result.stderr.fnmatch_lines(["ERROR: --cfn-redis=fakeredis:// needs the fakeredis package*"])
