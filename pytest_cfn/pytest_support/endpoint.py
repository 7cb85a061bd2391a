"""The Redis a test run talks to: one at a URL, an embedded redis-server, or fakeredis's TCP server.

A URL typed on the command line (``--cfn-redis``) is checked at session start (a
``pytest.UsageError``, exit 4, when nothing usable is there): the user asked for that server in
this very command. A URL from ``CFN_REDIS_URL`` or ini ``cfn_redis`` may be meant for another
project, so it is checked only when the first test needs a server (``check_url_for_tests``);
when it is unusable that test, and every later one that needs a server, errors with
:class:`NoServerError` saying which URL, where it came from, what failed and how to fix it.
The embedded server and fakeredis's server start only when the first test asks for one (see
``session``); a missing binary then fails only the tests that need a server, the same way.
Nothing heavy is imported here until it is used.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

from pytest_cfn.pytest_support.settings import ENV_REDIS_URL, RedisChoice

if TYPE_CHECKING:
    from pytest_cfn.measure.results import RedisInfo
    from pytest_cfn.server import ServerChoice

PING_TIMEOUT = 3.0
Backend = Literal["redis-server", "fakeredis"]
FAKEREDIS_INSTALL = "pip install 'fakeredis[lua]>=2.31.1'"
ALLOWED_URLS = (
    "redis://[user:password@]host:port/db, rediss://... (TLS), unix:///path or fakeredis://"
)
ZERO_INSTALL = (
    "or, with no binary at all, --cfn-redis=fakeredis:// (fakeredis's TCP server on loopback, "
    f"{FAKEREDIS_INSTALL}: functional tests only, figures not representative)"
)


class StoppableServer(Protocol):
    def stop(self) -> None: ...


class NoServerError(pytest.fail.Exception):  # type: ignore[misc, name-defined]
    """A test needs a Redis server and none could be started; an error of that test only."""


def _redact(url: str) -> str:
    from pytest_cfn.measure.results import redact_url

    return redact_url(url)


@dataclass(frozen=True)
class RedisEndpoint:
    """Plain facts about the run's server, small enough to travel to xdist workers."""

    url: str
    backend: Backend = "redis-server"
    version: str = ""
    embedded: bool = False
    pid: int | None = None
    source: str = "default"
    binary: str = ""
    why: str = ""
    """For an embedded server: why this binary was chosen (named, or the newest found)."""

    @property
    def is_fake(self) -> bool:
        return self.backend == "fakeredis"

    def describe(self) -> str:
        if self.is_fake:
            return (
                f"{self.version} TCP server at {self.url}, in-process: figures are not "
                "representative"
            )
        what = "embedded redis-server" if self.embedded else "redis-server"
        pid = f", pid {self.pid}" if self.pid else ""
        return f"{what} {self.version} at {_redact(self.url)}{pid}"

    def to_info(self) -> RedisInfo:
        from pytest_cfn.measure.results import RedisInfo

        return RedisInfo(
            version=self.version,
            backend=self.backend,
            embedded=self.embedded,
            url=_redact(self.url),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RedisEndpoint:
        return cls(**data)


def check_url(choice: RedisChoice) -> RedisEndpoint:
    """At start-up, for a ``--cfn-redis`` URL: PING the server and read its version; one
    UsageError if unusable."""
    from pytest_cfn.server_probe import ServerCheckError, check_server

    try:
        version = check_server(choice.url, PING_TIMEOUT)
    except ServerCheckError as exc:
        raise pytest.UsageError(
            f"{choice.source}: {exc} (or leave --cfn-redis out and pytest-cfn starts a "
            "redis-server for the run)"
        ) from None
    return RedisEndpoint(url=choice.url, version=version, source=choice.source)


def _how_to_fix(choice: RedisChoice, *, allowed: bool = True) -> str:
    """What the user can do about a URL from the environment or the ini file."""
    forms = f" ({ALLOWED_URLS})" if allowed else ""
    if choice.source == ENV_REDIS_URL:
        return (
            f"point {ENV_REDIS_URL} at a running Redis{forms}, or unset it and pytest-cfn "
            "starts a redis-server for the run"
        )
    return (
        f"fix cfn_redis in {choice.origin}{forms}, or remove it and pytest-cfn starts a "
        f"redis-server for the run; --cfn-redis=URL and {ENV_REDIS_URL} override it"
    )


def describe_choice(choice: RedisChoice) -> str:
    """``CFN_REDIS_URL=redis://...`` (from the environment), password redacted."""
    url = _redact(choice.url)
    return f"{choice.source}={url!r} (from {choice.origin})"


def check_url_for_tests(choice: RedisChoice) -> RedisEndpoint:
    """The lazy check of a URL from the environment or the ini file, when the first test
    needs a server: a bad URL or an unusable server is a :class:`NoServerError` naming the
    URL, its source, what failed and how to fix it (the session goes on)."""
    if choice.problem:
        problem = choice.problem.replace(choice.url, _redact(choice.url))
        raise NoServerError(
            f"pytest-cfn: {describe_choice(choice)} is not a Redis URL: {problem}; "
            f"{_how_to_fix(choice, allowed=False)}",
            pytrace=False,
        )
    from pytest_cfn.server_probe import ServerCheckError, check_server

    try:
        version = check_server(choice.url, PING_TIMEOUT)
    except ServerCheckError as exc:
        raise NoServerError(
            f"pytest-cfn: {describe_choice(choice)}, checked when a test first needed a "
            f"server: {exc}; or {_how_to_fix(choice)}",
            pytrace=False,
        ) from None
    return RedisEndpoint(url=choice.url, version=version, source=choice.source)


def choose_binary(binary: str | None, origin: str = "") -> ServerChoice:
    """The redis-server the embedded server will run; NoServerError naming the ways to get one
    (and ``origin``, where a given binary was set, e.g. the ini option)."""
    from pytest_cfn._errors import ServerNotFoundError
    from pytest_cfn.server import choose_redis_server

    try:
        return choose_redis_server(binary)
    except ServerNotFoundError as exc:
        where = f"{origin}: " if binary and origin else ""
        raise NoServerError(f"pytest-cfn: {where}{exc}; {ZERO_INSTALL}", pytrace=False) from None


def start_embedded(
    binary: str | None, choice: ServerChoice | None = None
) -> tuple[RedisEndpoint, StoppableServer]:
    """Start a private redis-server on a free loopback port (``choice`` if already made, as
    the xdist controller's header does); NoServerError when impossible."""
    from pytest_cfn._errors import ServerStartError
    from pytest_cfn.server import RedisServer

    choice = choice if choice is not None else choose_binary(binary)
    try:
        server = RedisServer(choice.path)
        server.start()
    except ServerStartError as exc:
        raise NoServerError(
            f"pytest-cfn: the embedded redis-server ({choice.describe()}) did not start: {exc}",
            pytrace=False,
        ) from None
    endpoint = RedisEndpoint(
        url=server.url,
        version=str(server.version),
        embedded=True,
        pid=server.pid,
        source="embedded",
        binary=choice.path,
        why=choice.why,
    )
    return endpoint, server


def fakeredis_problem(choice: RedisChoice) -> str | None:
    """Why fakeredis:// cannot be served here (no fakeredis, or one without its TCP server)."""
    try:
        import fakeredis
    except ImportError:
        return f"{choice.source}=fakeredis:// needs the fakeredis package ({FAKEREDIS_INSTALL})"
    if not hasattr(fakeredis, "TcpFakeServer"):
        return (
            f"{choice.source}=fakeredis:// needs fakeredis's TCP server, which fakeredis "
            f"{getattr(fakeredis, '__version__', '?')} lacks ({FAKEREDIS_INSTALL})"
        )
    return None


def require_fakeredis(choice: RedisChoice) -> None:
    """At start-up, for ``--cfn-redis=fakeredis://``: a usable fakeredis, or a UsageError."""
    problem = fakeredis_problem(choice)
    if problem is not None:
        raise pytest.UsageError(problem)


class FakeRedisServer:
    """fakeredis's TCP server (real sockets speaking RESP) on a free loopback port, served
    by a daemon thread of this process, so the library's own connections work against it."""

    def __init__(self) -> None:
        import fakeredis

        self.version = f"fakeredis {getattr(fakeredis, '__version__', '')}".strip()
        self._server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"redis://{host!s}:{int(port)}/0"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cfn-fakeredis", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def start_fakeredis(choice: RedisChoice) -> tuple[RedisEndpoint, StoppableServer]:
    """fakeredis's TCP server, when the first test needs it; NoServerError when this
    fakeredis cannot serve it (checked here, not at start-up, for fakeredis:// from the
    environment or the ini file)."""
    problem = fakeredis_problem(choice)
    if problem is not None:
        raise NoServerError(f"pytest-cfn: {problem} (from {choice.origin})", pytrace=False)
    server = FakeRedisServer()
    endpoint = RedisEndpoint(
        url=server.url, backend="fakeredis", version=server.version, source=choice.source
    )
    return endpoint, server
